"""Mixer's expression test tables (``expressions.json``), one test per case.

What each kind of case checks here:

* ``il.TestData`` (eval): compile against the case's manifest; a ``compile_error`` must equal
  :attr:`CompileError.reason` exactly; else the static type must match, evaluation over a plain
  dict, a :class:`DictBag` and a :class:`TrackingBag` must give ``result`` (exact type, IP bytes
  exactly, times by instant, maps by content) or an error starting with ``error``, and the
  tracker's log must equal ``referenced`` when given.
* ``cel.BenchmarkAccessLog`` (compile_only): the expression must compile as CEXL and as COMPAT
  (CEL semantics over CEXL syntax), as Mixer's benchmark compiles both.
* ``il.TestData`` again in COMPAT (``test_expression_case_compat``): see :func:`run_compat`.
* ``checker.TestTypeCheck``, ``ast.TestInternalTypeCheck`` (typecheck): :func:`infer_type` (with
  the case's functions only, when it replaces the built-ins) gives ``type``, or an error
  containing ``compile_error``.
* ``ast.TestGoodParse`` / ``ast.TestBadParse`` (parse): ``str(parse(expr))`` is the postfix form,
  or parsing fails with a reason containing ``compile_error``.
* ``ast.TestExtractMatches``: :func:`extract_eq_matches`; ``ast.TestNewConstant``: the typed
  constant (``new_constant``).
* ``cel.TestCELExpressions`` (``lang: cel``) compile with ``dialect="cel"`` against ``cel.attrs``:
  a ``compile_error`` must be contained in the reason; else the result (a CEL map literal,
  ``cel_map``, compares by content like a string map) or the exact error message, and the
  reference log (``[]`` when not given) must be Mixer's.
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

from mixerd.attribute import DictBag, IPAddress, ValueType, parse_timestamp
from mixerd.lang import (
    FUNCTIONS,
    CompileError,
    EvaluationError,
    Function,
    compile,
    extract_eq_matches,
    infer_type,
    parse,
)
from mixerd.lang.syntax import ConstantError, new_constant
from tests.conformance_data import conformance_file

CONFORMANCE = conformance_file("expressions.json").parent

CASES: list[dict[str, Any]] = json.loads((CONFORMANCE / "expressions.json").read_text("utf-8"))["cases"]
CASES_BY_ID = {case["id"]: case for case in CASES}
_MANIFEST_DATA = json.loads((CONFORMANCE / "expression_manifest.json").read_text("utf-8"))
MANIFESTS: dict[str, dict[str, str]] = {
    name: info["attributes"] for name, info in _MANIFEST_DATA["manifests"].items()
}
UNSUPPORTED: dict[str, str] = (
    yaml.safe_load((Path(__file__).parent / "unsupported.yaml").read_text("utf-8")) or {}
)


# --- values ----------------------------------------------------------------------------------


def decode(value: Any) -> Any:
    """A JSON-encoded Mixer value (README "value encoding") as mixerd's runtime value."""
    if not isinstance(value, dict) or "@type" not in value:
        return value
    kind = value["@type"]
    if kind == "timestamp":
        return parse_timestamp(value["value"])
    if kind == "duration":
        return dt.timedelta(microseconds=value["nanos"] // 1000)
    if kind == "ip":
        return IPAddress(base64.b64decode(value["bytes"]))
    if kind in ("string_map", "cel_map"):
        return dict(value["value"])
    if kind == "go_int":  # a deliberately wrong-typed bag value; an int is as wrong for a STRING
        return int(value["value"])
    raise ValueError(f"cannot decode {value!r}")


def assert_same(actual: Any, expected: Any) -> None:
    """Mixer's ``attribute.Equal``: exact type, IP bytes exactly, times by instant, maps by content."""
    want = decode(expected)
    if isinstance(expected, dict):
        kind = expected["@type"]
        if kind == "ip":
            assert isinstance(actual, IPAddress) and actual.packed == want.packed, (actual, want)
        elif kind == "timestamp":
            assert isinstance(actual, dt.datetime) and actual == want, (actual, want)
        elif kind == "duration":
            assert isinstance(actual, dt.timedelta) and actual == want, (actual, want)
        elif kind in ("string_map", "cel_map"):
            assert isinstance(actual, Mapping) and dict(actual) == want, (actual, want)
        else:
            raise AssertionError(f"unexpected result encoding {expected!r}")
    elif isinstance(want, bool):
        assert actual is want, (actual, want)
    elif isinstance(want, int):
        assert type(actual) is int and actual == want, (actual, want)
    elif isinstance(want, float):
        assert type(actual) is float and actual == want, (actual, want)
    else:
        assert isinstance(actual, str) and str(actual) == want, (actual, want)


# --- functions a case registers ---------------------------------------------------------------

# Implementations of the Go function literals the tables register (by their documented semantics).
_EXTERN_IMPLS: dict[str, Callable[..., Any]] = {"reverse": lambda s: s[::-1]}


def case_functions(case: dict[str, Any]) -> dict[str, Function] | None:
    """The extern catalogue for a case: its ``fns`` (with the built-ins unless they replace them)."""
    if "fns" not in case:
        return None
    declared = {
        meta["name"]: Function(
            meta["name"],
            ValueType.parse(meta["return_type"]),
            tuple(ValueType.parse(t) for t in meta["argument_types"]),
            instance=meta["instance"],
            target_type=ValueType.parse(meta["target_type"]),
            impl=_EXTERN_IMPLS.get(meta["name"]),
        )
        for meta in case["fns"]
    }
    if case.get("fns_replace_builtins"):
        return declared
    return {**FUNCTIONS, **declared}


def _manifest(case: dict[str, Any]) -> dict[str, str]:
    if case.get("manifest_inline") is not None:
        return dict(case["manifest_inline"])
    return MANIFESTS[case.get("manifest") or _MANIFEST_DATA["default_manifest"]]


def _expect_compile_error(case: dict[str, Any], reason: str) -> None:
    want = case["compile_error"]
    if case.get("compile_error_match") == "exact":
        assert reason == want
    else:
        assert want in reason, (want, reason)


# --- runners ---------------------------------------------------------------------------------


def run_eval(case: dict[str, Any], dialect: str = "cexl") -> None:
    manifest = _manifest(case)
    functions = case_functions(case)
    if "compile_error" in case:
        with pytest.raises(CompileError) as info:
            compile(case["expr"], manifest, dialect=dialect, functions=functions)
        _expect_compile_error(case, info.value.reason)
        return
    expr = compile(case["expr"], manifest, dialect=dialect, functions=functions)
    if case.get("type") is not None:
        assert expr.result_type.name == case["type"]
    attrs = {name: decode(value) for name, value in case["attrs"].items()}
    for bag in (attrs, DictBag(attrs)):
        if "error" in case:
            with pytest.raises(EvaluationError) as err:
                expr.evaluate(bag)
            assert str(err.value).startswith(case["error"]), (str(err.value), case["error"])
        else:
            assert_same(expr.evaluate(bag), case["result"])
    value, tracker = expr.referenced(DictBag(attrs))
    if "error" in case:
        assert isinstance(value, EvaluationError) and str(value).startswith(case["error"])
    else:
        assert_same(value, case["result"])
    if "referenced" in case:
        assert tracker.log() == sorted(case["referenced"])


def run_cel(case: dict[str, Any]) -> None:
    """A CEL-only case: CEL semantics (exact error text, references always checked)."""
    manifest = _manifest(case)
    if "compile_error" in case:
        with pytest.raises(CompileError) as info:
            compile(case["expr"], manifest, dialect="cel")
        assert case["compile_error"] in info.value.reason
        return
    expr = compile(case["expr"], manifest, dialect="cel")
    value, tracker = expr.referenced({name: decode(v) for name, v in case["attrs"].items()})
    if "error" in case:
        assert isinstance(value, EvaluationError) and str(value) == case["error"]
    else:
        assert_same(value, case["result"])
    assert tracker.log() == sorted(case.get("referenced", []))


def run_compat(case: dict[str, Any]) -> None:
    """An ``il.TestData`` case in COMPAT (CEXL syntax, CEL semantics), by the rules of Mixer's
    ``TestCEXLCompatibility``: a case with a ``compile_error`` passes whether COMPAT compiles it
    or not; else the type must match; an evaluation error passes when the case expects one
    (``error``, or an error containing ``cel_error``); a value must equal ``cel_result``, else
    ``result`` (or ``result_also_given``); then the reference log must equal ``referenced_cel``,
    else ``referenced``, when given."""
    manifest = _manifest(case)
    try:
        expr = compile(case["expr"], manifest, dialect="compat")
    except CompileError:
        if "compile_error" in case:
            return
        raise
    if "compile_error" in case:
        return
    assert expr.result_type.name == case["type"]
    value, tracker = expr.referenced({name: decode(v) for name, v in case["attrs"].items()})
    if isinstance(value, EvaluationError):
        if "error" in case or case.get("cel_error", "\0") in str(value):
            return
        raise AssertionError(f"unexpected evaluation error: {value}")
    assert "cel_error" not in case, f"expected an error containing {case['cel_error']!r}, got {value!r}"
    for key in ("cel_result", "result", "result_also_given"):
        if key in case:
            assert_same(value, case[key])
            break
    else:
        raise AssertionError(f"expected an error starting with {case['error']!r}, got {value!r}")
    referenced = case.get("referenced_cel", case.get("referenced"))
    if referenced is not None:
        assert tracker.log() == sorted(referenced)


def run_compile_only(case: dict[str, Any]) -> None:
    """Mixer's access-log benchmark compiles each expression as CEXL and as CEL (COMPAT)."""
    compile(case["expr"], _manifest(case))
    compile(case["expr"], _manifest(case), dialect="compat")


def run_typecheck(case: dict[str, Any]) -> None:
    manifest = _manifest(case)
    functions = case_functions(case)
    if "compile_error" in case:
        with pytest.raises(CompileError) as info:
            infer_type(case["expr"], manifest, functions=functions)
        _expect_compile_error(case, info.value.reason)
        return
    assert infer_type(case["expr"], manifest, functions=functions).name == case["type"]


def run_parse(case: dict[str, Any]) -> None:
    if "compile_error" in case:
        with pytest.raises(CompileError) as info:
            parse(case["expr"])
        _expect_compile_error(case, info.value.reason)
        return
    assert str(parse(case["expr"])) == case["postfix"]


def run_extract(case: dict[str, Any]) -> None:
    found = extract_eq_matches(case["expr"])
    assert found == case["eq_matches"]
    for name, value in found.items():
        assert type(value) is type(case["eq_matches"][name])


def run_constant(case: dict[str, Any]) -> None:
    kind = ValueType.parse(case["type"])
    if "compile_error" in case:
        with pytest.raises(ConstantError) as info:
            new_constant(case["expr"], kind)
        assert case["compile_error"] in str(info.value)
        return
    constant = new_constant(case["expr"], kind)
    assert constant.type is kind
    assert_same(constant.value, case["result"])


def run_case(case: dict[str, Any]) -> None:
    if case["lang"] == "cel":
        run_cel(case)
        return
    runner = {
        "eval": run_eval,
        "compile_only": run_compile_only,
        "typecheck": run_typecheck,
        "parse": run_parse,
        "extract_eq_matches": run_extract,
        "constant": run_constant,
    }[case["check"]]
    runner(case)


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = [pytest.mark.conformance(f"expressions[{case['suite']}]")]
        if case["id"] in UNSUPPORTED:
            marks.append(pytest.mark.skip(reason=f"unsupported: {UNSUPPORTED[case['id']]}"))
        params.append(pytest.param(case, id=case["id"], marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_expression_case(case: dict[str, Any]) -> None:
    run_case(case)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case["id"], marks=pytest.mark.conformance("expressions[il.TestData/compat]"))
        for case in CASES
        if case["suite"] == "il.TestData"
    ],
)
def test_expression_case_compat(case: dict[str, Any]) -> None:
    run_compat(case)


def test_unsupported_list_is_current() -> None:
    """``unsupported.yaml`` lists only real cases, each with a reason, none of which passes."""
    extern_ids = {
        c["id"] for c in json.loads((CONFORMANCE / "extern_functions.json").read_text("utf-8"))["cases"]
    }
    problems = []
    for case_id, reason in UNSUPPORTED.items():
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"{case_id}: give a reason")
        if case_id in extern_ids:
            continue  # checked by test_extern_functions
        case = CASES_BY_ID.get(case_id)
        if case is None:
            problems.append(f"{case_id}: no such case")
            continue
        try:
            run_case(case)
        except Exception:
            continue
        problems.append(f"{case_id}: passes now; remove it from unsupported.yaml")
    assert not problems, "\n".join(problems)


def test_every_cexl_case_is_supported() -> None:
    """Only CEL-only cases may be listed as unsupported."""
    listed = [cid for cid in UNSUPPORTED if cid in CASES_BY_ID and CASES_BY_ID[cid]["lang"] != "cel"]
    assert listed == []
