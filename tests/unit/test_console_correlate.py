"""Correlation keys against ``tests/data/console_keys.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.console.correlate import (
    DEFAULT_ORDER,
    TraceIds,
    correlation,
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
