"""Correlation keys against ``tests/data/console_keys.yaml``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.console.correlate import (
    DEFAULT_ORDER,
    TraceIds,
    correlation,
    headers_read,
    parse_order,
    request_id_key,
    trace_ids,
    transaction_key,
)

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "console_keys.yaml").read_text())


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", CASES["transaction_key"], ids=_ids(CASES["transaction_key"]))
def test_transaction_key(case: dict[str, Any]) -> None:
    order = parse_order(case["order"]) if "order" in case else DEFAULT_ORDER
    assert transaction_key(case["headers"], order) == case["key"]


@pytest.mark.parametrize("case", CASES["trace_ids"], ids=_ids(CASES["trace_ids"]))
def test_trace_ids(case: dict[str, Any]) -> None:
    assert trace_ids(case["headers"]) == TraceIds(*case["ids"])


@pytest.mark.parametrize(
    "case",
    CASES["transaction_key"] + CASES["trace_ids"],
    ids=_ids(CASES["transaction_key"] + CASES["trace_ids"]),
)
def test_correlation_is_key_and_trace_ids(case: dict[str, Any]) -> None:
    order = parse_order(case["order"]) if "order" in case else DEFAULT_ORDER
    headers = case["headers"]
    assert correlation(headers, order) == (transaction_key(headers, order), trace_ids(headers))


class _Headers(Mapping[str, str]):
    """Headers that remember every name looked up (and refuse to be read whole)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the headers are iterated")

    def __len__(self) -> int:
        raise AssertionError("the headers are counted")


@pytest.mark.parametrize(
    "case",
    CASES["transaction_key"] + CASES["trace_ids"],
    ids=_ids(CASES["transaction_key"] + CASES["trace_ids"]),
)
def test_correlation_reads_only_the_headers_it_declares(case: dict[str, Any]) -> None:
    # A Report decodes only these entries of request.headers for the console: the answer from
    # just those headers is the answer from all of them.
    order = parse_order(case["order"]) if "order" in case else DEFAULT_ORDER
    declared = headers_read(order)
    for functions in ((correlation,), (transaction_key,), (lambda h, o: trace_ids(h),)):
        headers = _Headers(case["headers"])
        found = functions[0](headers, order)
        assert headers.read <= declared, headers.read - declared
        assert functions[0]({k: v for k, v in case["headers"].items() if k in declared}, order) == found


def _general_or_error(headers: dict[str, Any]) -> Any:
    from mixerd.console import correlate

    try:
        return correlate._correlation(headers, tuple(DEFAULT_ORDER))
    except Exception as exc:  # an odd-typed value: the fast path must fail the same way
        return type(exc)


@pytest.mark.parametrize("case", CASES["header_shapes"], ids=_ids(CASES["header_shapes"]))
def test_the_fast_path_answers_as_the_general_path(case: dict[str, Any]) -> None:
    from mixerd.console import correlate

    headers = case["headers"]
    assert (correlate.usual_correlation(headers) is not None) == case["usual"]
    expected = _general_or_error(headers)
    if isinstance(expected, type):
        with pytest.raises(expected):
            correlation(headers, DEFAULT_ORDER)
    else:
        assert correlation(headers, DEFAULT_ORDER) == expected


def test_the_fast_path_answers_as_the_general_path_near_the_usual_shapes() -> None:
    """Random B3 and request-id headers near the valid shapes: the fast path, when it decides,
    gives the general path's answer."""
    import random

    from mixerd.console import correlate

    rng = random.Random(11)
    alphabet = "00000000aAfF9gG x\t\u00e9\u0660-"
    decided = 0

    def text(lengths: tuple[int, ...]) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.choice(lengths)))

    for _ in range(20_000):
        headers: dict[str, Any] = {}
        for name, lengths in (
            (correlate.B3, (15, 16, 16, 32, 32, 33)),
            ("x-b3-spanid", (15, 16, 16, 17)),
            ("x-b3-parentspanid", (16, 16, 17)),
            (correlate.REQUEST_ID, (0, 1, 36, 36, 129)),
        ):
            if rng.random() < 0.6:
                headers[name] = text(lengths)
        usual = correlate.usual_correlation(headers)
        if usual is not None:
            decided += 1
            key, ids = correlate._correlation(headers, DEFAULT_ORDER)
            assert usual == (key, *ids), headers
    assert decided > 1_000  # the shapes reach the fast path


@pytest.mark.parametrize(("request_id", "key"), CASES["request_id_key"])
def test_request_id_key(request_id: str, key: str) -> None:
    assert request_id_key(request_id) == key
    assert request_id_key(key) == key


@pytest.mark.parametrize("case", CASES["parse_order"], ids=[c["setting"] for c in CASES["parse_order"]])
def test_parse_order(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ValueError) as info:
            parse_order(case["setting"])
        assert str(info.value) == case["error"]
    else:
        assert parse_order(case["setting"]) == tuple(case["order"])


def test_default_order_is_the_issue_order() -> None:
    assert parse_order("x-transaction-id,traceparent,x-b3-traceid,x-request-id") == DEFAULT_ORDER


def test_the_id_checks_accept_what_their_patterns_describe() -> None:
    """The checks are ``str`` methods (cheaper than regular expressions on every hop); they accept
    exactly what these patterns match, over random strings near the valid shapes."""
    import random
    import re

    from mixerd.console import correlate

    visible = re.compile("[!-~]+")
    uuid = re.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
    b3_trace = re.compile(r"(?!0+\Z)(?:[0-9a-fA-F]{16}){1,2}")
    b3_span = re.compile("(?!0{16})[0-9a-fA-F]{16}")
    rng = random.Random(7)
    alphabet = "0000000000aAfFgG9-_ x\t\u00e9\u0660"
    for _ in range(20_000):
        n = rng.choice((0, 1, 15, 16, 17, 31, 32, 33, 36, rng.randrange(60)))
        text = "".join(rng.choice(alphabet) for _ in range(n))
        if n == 36 and rng.random() < 0.7:
            text = "-".join((text[:8], text[9:13], text[14:18], text[19:23], text[24:]))
        if text:  # its callers have ruled out an empty id
            assert correlate._visible(text) == (visible.fullmatch(text) is not None), text
        assert correlate._is_uuid(text) == (uuid.fullmatch(text) is not None), text
        assert correlate._b3_trace_id(text) == (b3_trace.fullmatch(text) is not None), text
        assert (correlate._span(text) != "") == (b3_span.fullmatch(text.strip()) is not None), text
