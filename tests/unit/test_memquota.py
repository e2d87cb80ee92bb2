"""memquota: validation, limit/remaining/reset hints, deduplication, overrides, sweeping."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from mixerd.adapter import Code, Env, InstanceInfo, ManualClock, QuotaArgs, QuotaResult
from mixerd.adapters.memquota import INFO, MemQuotaHandler
from mixerd.adapters.memquota.dedup import DedupCache
from mixerd.adapters.memquota.dims import stringify
from mixerd.adapters.memquota.rolling_window import RollingWindow
from mixerd.attribute import IPAddress
from mixerd.templates import QuotaInstance as Instance

S = dt.timedelta(seconds=1)


def errors(config: Mapping[str, Any], *names: str) -> list[str]:
    builder = INFO.builder(config, {n: InstanceInfo(n, "quota") for n in names})
    return [str(e) for e in builder.validate()]


def build(config: Mapping[str, Any], clock: ManualClock | None = None) -> tuple[MemQuotaHandler, ManualClock]:
    clock = clock or ManualClock()
    builder = INFO.builder(config, {})
    assert builder.validate() == []
    handler = builder.build(Env("memquota.test", clock=clock))
    assert isinstance(handler, MemQuotaHandler)
    return handler, clock


def quota(handler: MemQuotaHandler, name: str = "q", amount: int = 1, **kw: Any) -> QuotaResult:
    dims = kw.pop("dims", {})
    return handler.handle_quota(Instance(name, dims), QuotaArgs(amount, **kw))


# -- validation ---------------------------------------------------------------------------------


def test_a_good_config_validates() -> None:
    config = {
        "quotas": [
            {"name": "q", "maxAmount": 5, "validDuration": "1s", "overrides": [{"dimensions": {"a": "b"}}]}
        ],
        "minDeduplicationDuration": "2s",
    }
    assert errors(config, "q") == []
    assert errors(INFO.default_config) == []


def test_every_error_has_its_field_path() -> None:
    config = {
        "quotas": [
            {"name": "q", "maxAmount": -1, "validDuration": "-1s", "bogus": 1},
            {"maxAmount": "many", "overrides": [{"maxAmount": -3, "validDuration": "soon"}]},
            {"name": "q", "max_amount": 1},
        ],
        "minDeduplicationDuration": "0s",
        "extra": True,
    }
    assert errors(config, "q", "other") == [
        "quotas[0].maxAmount: must be >= 0, got -1",
        "quotas[0].validDuration: must not be negative",
        "quotas[0].bogus: unknown field",
        "quotas[1].name: required",
        "quotas[1].maxAmount: expected an integer, got 'many'",
        "quotas[1].overrides[0].maxAmount: must be >= 0, got -3",
        "quotas[1].overrides[0].validDuration: expected a duration such as '10s' or '500ms', got 'soon'",
        "quotas[2].name: duplicate quota name 'q' (also quotas[0])",
        "minDeduplicationDuration: deduplication window of 0s is invalid, must be > 0",
        "extra: unknown field",
        "quotas: did not find limit defined for quota other",
    ]


def test_negative_dedup_window_is_reported_once() -> None:
    assert errors({"minDeduplicationDuration": "-1s"}) == ["minDeduplicationDuration: must not be negative"]


# -- allocation counters (validDuration 0) ----------------------------------------------------


def test_counter_reports_limit_and_remaining_and_never_resets() -> None:
    h, clock = build({"quotas": [{"name": "q", "maxAmount": 10}]})
    r = quota(h, amount=4)
    assert (r.status.code, r.amount, r.valid_duration, r.limit, r.remaining, r.reset_after) == (
        Code.OK,
        4,
        dt.timedelta(0),
        10,
        6,
        None,
    )
    clock.advance(3600)
    r = quota(h, amount=7, best_effort=True)
    assert (r.amount, r.remaining) == (6, 0)
    assert quota(h, amount=1).amount == 0
    r = quota(h, amount=-3)
    assert (r.amount, r.remaining) == (3, 3)
    assert quota(h, amount=-100).amount == 7
    assert h.counter_count == 0  # a fully released counter holds no state


def test_zero_amount_peeks_without_charging() -> None:
    h, _ = build({"quotas": [{"name": "q", "maxAmount": 3, "validDuration": "1s"}]})
    assert quota(h, amount=2).amount == 2
    r = quota(h, amount=0)
    assert (r.amount, r.valid_duration, r.limit, r.remaining) == (0, dt.timedelta(0), 3, 1)
    assert quota(h, amount=1).amount == 1


# -- rolling windows ----------------------------------------------------------------------------


def test_window_hints_limit_remaining_and_reset_after() -> None:
    h, clock = build({"quotas": [{"name": "q", "maxAmount": 5, "validDuration": "2s"}]})
    r = quota(h, amount=2)
    assert (r.amount, r.valid_duration, r.limit, r.remaining, r.reset_after) == (2, 2 * S, 5, 3, 2 * S)
    clock.advance(0.5)
    r = quota(h, amount=3)
    # the oldest allocation (0.0 s) leaves the window at 2.0 s: 1.5 s from now
    assert (r.amount, r.remaining, r.reset_after) == (3, 0, dt.timedelta(seconds=1.5))
    denied = quota(h, amount=1)
    assert (denied.status.code, denied.amount, denied.valid_duration) == (Code.OK, 0, dt.timedelta(0))
    assert (denied.remaining, denied.reset_after) == (0, dt.timedelta(seconds=1.5))
    clock.advance(1.5)  # t = 2.0: the first 2 units are back
    r = quota(h, amount=5, best_effort=True)
    assert (r.amount, r.remaining, r.reset_after) == (2, 0, dt.timedelta(seconds=0.5))


def test_sub_second_windows_use_100ms_ticks() -> None:
    h, clock = build({"quotas": [{"name": "q", "maxAmount": 1, "validDuration": "300ms"}]})
    assert quota(h).amount == 1
    clock.advance(0.2)
    assert quota(h).amount == 0
    clock.advance(0.1)
    assert quota(h).amount == 1


def test_release_in_a_window_gives_back_newest_units() -> None:
    h, clock = build({"quotas": [{"name": "q", "maxAmount": 4, "validDuration": "1s"}]})
    assert quota(h, amount=2).amount == 2
    clock.advance(0.5)
    assert quota(h, amount=2).amount == 2
    assert quota(h, amount=-1).amount == 1
    clock.advance(0.5)  # the first two units expire; one of the later two is left
    r = quota(h, amount=0)
    assert r.remaining == 3
    assert quota(h, amount=-5).amount == 1
    assert quota(h, amount=-5).amount == 0


def test_counters_are_per_dimension_set() -> None:
    h, _ = build({"quotas": [{"name": "q", "maxAmount": 1, "validDuration": "1s"}]})
    assert quota(h, dims={"a": "1", "b": "2"}).amount == 1
    assert quota(h, dims={"b": "2", "a": "1"}).amount == 0  # same set, any order
    assert quota(h, dims={"a": "1", "b": "3"}).amount == 1
    assert quota(h, dims={"a": 1, "b": "3"}).amount == 0  # compared as strings


def test_overrides_first_match_wins_and_windows_are_inherited() -> None:
    config = {
        "quotas": [
            {
                "name": "q",
                "maxAmount": 1,
                "validDuration": "10s",
                "overrides": [
                    {"dimensions": {"ip": "10.0.0.1"}, "maxAmount": 2},
                    {"dimensions": {"ip": "10.0.0.1", "x": ""}, "maxAmount": 100},
                    {"dimensions": {"kind": "batch"}, "maxAmount": 1, "validDuration": "0s"},
                ],
            }
        ]
    }
    h, clock = build(config)
    ip = {"ip": IPAddress.parse("10.0.0.1")}
    r = quota(h, amount=5, best_effort=True, dims=ip)
    assert (r.amount, r.valid_duration, r.limit) == (2, 10 * S, 2)
    batch = {"kind": "batch"}
    r = quota(h, dims=batch)
    assert (r.amount, r.valid_duration, r.reset_after) == (1, dt.timedelta(0), None)  # explicit 0s: counter
    clock.advance(10)
    assert quota(h, dims=ip, amount=2).amount == 2  # window inherited: it rolled over
    assert quota(h, dims=batch).amount == 0  # the counter did not


def test_unknown_quota_name_grants_nothing_with_ok() -> None:
    h, _ = build({"quotas": [{"name": "q", "maxAmount": 1}]})
    r = quota(h, "nope", amount=1)
    assert (r.status.code, r.amount) == (Code.OK, 0)


# -- deduplication ------------------------------------------------------------------------------


def test_retry_returns_same_amount_and_remaining_validity() -> None:
    h, clock = build(
        {"quotas": [{"name": "q", "maxAmount": 5, "validDuration": "10s"}], "minDeduplicationDuration": "5s"}
    )
    first = quota(h, amount=3, dedup_id="d1")
    clock.advance(4)
    again = quota(h, amount=3, dedup_id="d1")
    assert (again.amount, again.valid_duration) == (3, 6 * S)
    assert quota(h, amount=2).amount == 2  # charged once: 3 + 2 = 5
    assert first.amount == 3
    clock.advance(7)  # 11 s: the id is at least 1, at most 2 periods old... now forgotten
    assert quota(h, amount=3, dedup_id="d1").amount == 3


def test_dedup_ids_are_per_quota_and_dimensions() -> None:
    config = {"quotas": [{"name": "a", "maxAmount": 1}, {"name": "b", "maxAmount": 1}]}
    h, _ = build(config)
    assert quota(h, "a", dedup_id="same").amount == 1
    assert quota(h, "b", dedup_id="same").amount == 1
    assert quota(h, "a", dedup_id="same", dims={"x": "1"}).amount == 1


def test_dedup_cache_ping_pongs() -> None:
    cache: DedupCache[int] = DedupCache(1.0, now=0.0)
    cache.put("a", 1, now=0.5)
    assert cache.get("a", now=1.2) == 1  # rotated once: in the old map
    cache.put("b", 2, now=1.3)
    assert cache.get("a", now=2.1) is None  # rotated twice
    assert cache.get("b", now=2.1) == 2
    assert cache.get("b", now=4.5) is None  # long idle: both maps dropped
    assert len(cache) == 0
    with pytest.raises(ValueError):
        DedupCache(0.0, now=0.0)


# -- housekeeping and concurrency --------------------------------------------------------------


def test_sweep_drops_expired_windows() -> None:
    h, clock = build({"quotas": [{"name": "q", "maxAmount": 5, "validDuration": "1s"}]})
    for i in range(10):
        quota(h, dims={"i": str(i)})
    assert h.counter_count == 10
    clock.advance(0.5)
    assert h.sweep() == 0
    clock.advance(0.5)
    assert h.sweep() == 10
    assert h.counter_count == 0


async def test_exact_under_concurrent_requests() -> None:
    env = Env("memquota.test", clock=ManualClock())
    h = INFO.builder({"quotas": [{"name": "q", "maxAmount": 100, "validDuration": "1m"}]}, {}).build(env)

    async def one() -> int:
        await asyncio.sleep(0)
        return quota(h, amount=3, best_effort=True).amount

    granted = await asyncio.gather(*(one() for _ in range(200)))
    await env.aclose()
    assert sum(granted) == 100
    assert sorted(set(granted)) == [0, 1, 3]


async def test_sweeper_runs_in_background_and_stops_on_close() -> None:
    builder = INFO.builder({"quotas": [{"name": "q", "maxAmount": 1}]}, {})
    env = Env("memquota.test", clock=ManualClock())
    builder.build(env)
    assert env.task_count == 1
    await env.aclose()
    assert env.task_count == 0


# -- the pure parts -----------------------------------------------------------------------------


def test_rolling_window_edges() -> None:
    w = RollingWindow(3, 2)
    assert w.reset_tick() is None
    assert w.allocate(5, 10, best_effort=True) == 3
    assert w.reset_tick() == 12
    assert w.allocate(1, 9, best_effort=True) == 0  # an earlier tick counts as the newest one
    assert w.allocate(1, 12, best_effort=False) == 1
    assert w.release(0, 12) == 0
    with pytest.raises(ValueError):
        RollingWindow(-1, 1)
    with pytest.raises(ValueError):
        RollingWindow(1, 0)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("s", "s"),
        (True, "true"),
        (12, "12"),
        (3.0, "3"),
        (0.1, "0.1"),
        (1e21, "1000000000000000000000"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Inf"),
        (dt.datetime(2013, 2, 3, tzinfo=dt.UTC), "2013-02-03T00:00:00.000000Z"),
        (dt.timedelta(seconds=90), "1m30s"),
        (IPAddress.parse("1.2.3.4"), "1.2.3.4"),
        ({"c": "d", "a": "b"}, "a=b&c=d"),
        (b"\x00\x01", "[0 1]"),
    ],
)
def test_stringify(value: Any, text: str) -> None:
    assert stringify(value) == text
