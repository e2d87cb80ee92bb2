"""The rate-limit converter against ``tests/data/ratelimit_cases.yaml``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format

from mixerd.adapter import QuotaResult, Status
from mixerd.api.ratelimit.convert import (
    Allocation,
    BadRequest,
    decide,
    decode_request,
    encode_response,
    limit_unit,
)
from mixerd.attribute import DictBag, builtin_manifest, parse_duration, type_of

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "ratelimit_cases.yaml").read_text())
_RateLimit = rls_pb2.RateLimitResponse.RateLimit


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def _duration(text: str | None) -> dt.timedelta | None:
    return None if text is None else parse_duration(str(text))


@pytest.mark.parametrize("case", CASES["decode"], ids=_ids(CASES["decode"]))
def test_decode(case: dict[str, Any]) -> None:
    request = json_format.ParseDict(case["request"], rls_pb2.RateLimitRequest())
    if "error" in case:
        with pytest.raises(BadRequest) as info:
            decode_request(request)
        assert str(info.value) == case["error"]
        return
    got = decode_request(request)
    want = case["allocations"]
    assert len(got) == len(want)
    for a, w in zip(got, want, strict=True):
        assert isinstance(a.bag, DictBag)
        assert (a.quota, a.amount, a.shadow, a.key, a.domain) == (
            w["quota"],
            w["amount"],
            w["shadow"],
            w["key"],
            request.domain,
        )
        assert dict(a.bag) == w["bag"]


def _result(spec: dict[str, Any]) -> QuotaResult:
    return QuotaResult(
        status=Status(spec.get("status", 0)),
        valid_duration=_duration(spec.get("valid_duration")) or dt.timedelta(0),
        amount=spec["amount"],
        limit=spec.get("limit"),
        remaining=spec.get("remaining"),
        reset_after=_duration(spec.get("reset_after")),
    )


@pytest.mark.parametrize("case", CASES["respond"], ids=_ids(CASES["respond"]))
def test_respond(case: dict[str, Any]) -> None:
    decisions = []
    for d in case["decisions"]:
        allocation = Allocation(d["quota"], d["requested"], False, "", "api", DictBag({}))
        decisions.append(
            decide(
                allocation,
                _result(d["result"]),
                shadow=d.get("shadow", False),
                window=_duration(d.get("window")),
            )
        )
    response = encode_response(decisions)
    assert json_format.MessageToDict(response) == case["response"]
    # The wire form round-trips (what Envoy parses).
    assert rls_pb2.RateLimitResponse.FromString(response.SerializeToString()) == response


@pytest.mark.parametrize("case", CASES["limit_unit"], ids=[str(c) for c in CASES["limit_unit"]])
def test_limit_unit(case: list[Any]) -> None:
    limit, window, per_unit, unit = case
    got = limit_unit(limit, _duration(window))
    if unit is None:
        assert got is None
    else:
        assert got == (per_unit, _RateLimit.Unit.Value(unit))


def test_decision_codes() -> None:
    a = Allocation("q", 2, False, "", "d", DictBag({}))
    assert decide(a, QuotaResult(amount=2)).code_name == "OK"
    over = decide(a, QuotaResult(amount=1))
    assert (over.code_name, over.enforced) == ("OVER_LIMIT", True)
    shadowed = decide(a, QuotaResult(amount=0), shadow=True)
    assert (shadowed.code_name, shadowed.enforced) == ("OVER_LIMIT", False)
    failed = decide(a, QuotaResult(status=Status(14, "redis down")))
    assert (failed.code_name, failed.enforced, failed.error) == ("ERROR", False, "UNAVAILABLE: redis down")


def test_every_attribute_produced_is_declared_with_its_type() -> None:
    manifest = builtin_manifest()
    for case in CASES["decode"]:
        if "error" in case:
            continue
        for a in decode_request(json_format.ParseDict(case["request"], rls_pb2.RateLimitRequest())):
            for name, value in a.bag.items():
                assert name in manifest, f"{name} is not in the stock or mixerd manifest"
                assert type_of(value) == manifest[name], name
