"""memquota against Mixer's own tables (shared/conformance/memquota_cases.json)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest

from mixerd.adapter import Env, InstanceInfo, ManualClock, QuotaArgs
from mixerd.adapters.memquota import INFO, MemQuotaHandler
from mixerd.adapters.memquota.rolling_window import RollingWindow
from mixerd.attribute import IPAddress
from mixerd.templates import QuotaInstance as Instance
from tests.conformance_data import conformance_dir, params


@cache
def cases() -> dict[str, Any]:
    return json.loads((conformance_dir() / "memquota_cases.json").read_text())  # type: ignore[no-any-return]


# Mixer's TestAllocAndRelease puts time.Now() in dimension L5; any fixed value keeps the
# dimension set (and so the counter key) the same for every step, which is all the test needs.
FIXED_NOW_DIMENSION = "2019-11-13T00:00:00Z"


def decode(value: Any) -> Any:
    """A value in the conformance JSON encoding, as mixerd represents it."""
    if not isinstance(value, dict) or "@type" not in value:
        return value
    kind = value["@type"]
    if kind == "duration":
        return dt.timedelta(microseconds=value["nanos"] / 1000)
    if kind == "ip":
        return IPAddress(base64.b64decode(value["bytes"]))
    if kind == "string_map":
        return dict(value["value"])
    if kind == "bytes":
        return base64.b64decode(value["value"])
    if kind == "go_expr" and value["source"] == "time.Now()":
        return FIXED_NOW_DIMENSION
    raise AssertionError(f"no decoding for {value}")


def build(config: Mapping[str, Any], names: list[str], clock: ManualClock) -> MemQuotaHandler:
    builder = INFO.builder(config, {n: InstanceInfo(n, "quota") for n in names})
    assert builder.validate() == []
    handler = builder.build(Env("memquota.conformance", clock=clock))
    assert isinstance(handler, MemQuotaHandler)
    return handler


def test_alloc_and_release() -> None:
    table = cases()["alloc_and_release"]
    config = params(table["config"])
    dims = {k: decode(v) for k, v in table["instance_dimensions"].items()}
    clock = ManualClock()
    handler = build(config, [q["name"] for q in config["quotas"]], clock)
    offset = 0.0
    assert len(table["steps"]) == 18
    for step in table["steps"]:
        clock.advance(step["now_offset_seconds"] - offset)
        offset = step["now_offset_seconds"]
        instance = Instance(step["quota"], dims)
        alloc = step["alloc"]
        got = handler.handle_quota(
            instance, QuotaArgs(alloc["amount"], alloc["best_effort"], alloc["dedup_id"])
        )
        where = f"step {step['step']} (line {step['source']['line']})"
        assert got.status.ok, where
        assert got.amount == alloc["expect_amount"], where
        assert got.valid_duration == decode(alloc["expect_valid_duration"]), where
        release = step["release"]
        got = handler.handle_quota(instance, QuotaArgs(release["amount"], False, release["dedup_id"]))
        assert got.status.ok, where
        assert got.amount == release["expect_amount"], where


@pytest.mark.parametrize("case", cases()["limit_override_cases"], ids=lambda c: c["id"])
def test_limit_override(case: dict[str, Any]) -> None:
    config = {"quotas": [{"name": "q", **params(case["quota_config"])}]}
    handler = build(config, ["q"], ManualClock())
    dims = {k: decode(v) for k, v in case["instance_dimensions"].items()}
    # a request for 0 units charges nothing and reports the effective limit
    assert handler.handle_quota(Instance("q", dims), QuotaArgs(amount=0)).limit == case["expect_max_amount"]
    # and the limit is enforced: the effective maximum is granted, one more unit is not
    granted = handler.handle_quota(Instance("q", dims), QuotaArgs(amount=case["expect_max_amount"]))
    assert granted.amount == case["expect_max_amount"]
    assert handler.handle_quota(Instance("q", dims), QuotaArgs(amount=1)).amount == 0


def test_rolling_window_alloc() -> None:
    table = cases()["rolling_window_alloc"]
    window = RollingWindow(table["window"]["limit"], table["window"]["ticks_in_window"])
    assert len(table["steps"]) == 15
    for step in table["steps"]:
        where = f"step {step['step']}"
        assert window.alloc(step["amount"], step["tick"]) is step["result"], where
        assert window.available() == step["avail"], where


def test_rolling_window_release() -> None:
    table = cases()["rolling_window_release"]
    window = RollingWindow(table["window"]["limit"], table["window"]["ticks_in_window"])
    assert len(table["steps"]) == 7
    for step in table["steps"]:
        where = f"step {step['step']}"
        assert window.alloc(step["allocAmount"], step["allocTick"]), where
        assert window.release(step["releaseAmount"], step["releaseTick"]) == step["releaseResult"], where
        assert window.available() == step["avail"], where
