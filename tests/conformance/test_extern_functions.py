"""Mixer's extern function tests (``extern_functions.json``): each case calls the Python
implementation of the Go function under test (``mixerd.lang.functions``) and checks the outcome
(``ok`` with ``result``, or an :class:`EvaluationError`). The ``X ==`` functions are the typed
equalities the compiler uses for ``==``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.attribute import IPAddress, parse_timestamp
from mixerd.lang import EvaluationError, compile
from mixerd.lang import functions as fns
from tests.conformance_data import conformance_file

CONFORMANCE = conformance_file("extern_functions.json").parent

CASES: list[dict[str, Any]] = json.loads((CONFORMANCE / "extern_functions.json").read_text("utf-8"))["cases"]
UNSUPPORTED: dict[str, str] = (
    yaml.safe_load((Path(__file__).parent / "unsupported.yaml").read_text("utf-8")) or {}
)

GO_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ExternIP": fns.ip,
    "ExternIPEqual": fns.ip_equal,
    "externTimestamp": fns.timestamp,
    "externTimestampEqual": fns.timestamp_equal,
    "ExternDNSName": fns.dns_name,
    "ExternDNSNameEqual": fns.dns_name_equal,
    "ExternEmail": fns.email,
    "ExternEmailEqual": fns.email_equal,
    "getEmailParts": fns.email_parts,
    "ExternURI": fns.uri,
    "ExternURIEqual": fns.uri_equal,
    "ExternMatch": fns.match,
    "externMatches": fns.matches,
    "ExternStartsWith": fns.starts_with,
    "ExternEndsWith": fns.ends_with,
    "externEmptyStringMap": fns.empty_string_map,
    "externConditionalString": fns.conditional_string,
}

# Expression-level form of the typed equalities, to check the compiler uses them for `==`.
_EQ_TYPES = {"dnsName ==": "DNS_NAME", "email ==": "EMAIL_ADDRESS", "uri ==": "URI", "ip ==": "IP_ADDRESS"}


def decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind = value["@type"]
    if kind == "ip":
        return IPAddress(base64.b64decode(value["bytes"]))
    if kind == "timestamp":
        return parse_timestamp(value["value"])
    if kind == "string_map":
        return dict(value["value"])
    raise ValueError(f"cannot decode {value!r}")


def assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        want = decode(expected)
        if expected["@type"] == "ip":
            assert isinstance(actual, IPAddress) and actual.packed == want.packed
        elif expected["@type"] == "timestamp":
            assert isinstance(actual, dt.datetime) and actual == want
        else:
            assert isinstance(actual, Mapping) and dict(actual) == want
    elif isinstance(expected, list):
        assert list(actual) == expected
    elif isinstance(expected, bool):
        assert actual is expected
    else:
        assert isinstance(actual, str) and actual == expected


def run_case(case: dict[str, Any]) -> None:
    function = GO_FUNCTIONS[case["go_function"]]
    args = [decode(a) for a in case["args"]]
    if case["expect"] == "error":
        with pytest.raises(EvaluationError):
            function(*args)
    else:
        assert_same(function(*args), case["result"])
    value_type = _EQ_TYPES.get(case.get("mixer_function") or "")
    if value_type is not None:
        # The same comparison through a compiled `==` on attributes of that type.
        expr = compile("x == y", {"x": value_type, "y": value_type})
        attrs = dict(zip(("x", "y"), args, strict=True))
        if case["expect"] == "error":
            with pytest.raises(EvaluationError):
                expr.evaluate(attrs)
        else:
            assert expr.evaluate(attrs) is case["result"]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = [pytest.mark.conformance("extern_functions")]
        if case["id"] in UNSUPPORTED:
            marks.append(pytest.mark.skip(reason=f"unsupported: {UNSUPPORTED[case['id']]}"))
        params.append(pytest.param(case, id=case["id"], marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_extern_function_case(case: dict[str, Any]) -> None:
    run_case(case)


def test_unsupported_extern_cases_still_fail() -> None:
    by_id = {case["id"]: case for case in CASES}
    passing = []
    for case_id in UNSUPPORTED:
        case = by_id.get(case_id)
        if case is None:
            continue  # an expression case (test_expressions checks it exists)
        try:
            run_case(case)
        except Exception:
            continue
        passing.append(case_id)
    assert passing == [], f"remove from unsupported.yaml, these pass now: {passing}"
