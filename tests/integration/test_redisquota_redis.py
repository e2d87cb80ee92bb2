"""redisquota on a real ``redis-server``: exact counting shared by handlers and processes, and
what happens when Redis stops, stalls and comes back."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from mixerd.adapter import Code, ManualClock, QuotaArgs, QuotaResult, SystemClock
from mixerd.adapters.redisquota import RedisQuotaHandler
from mixerd.adapters.redisquota.policy import RETRY_INTERVAL, THRESHOLD
from mixerd.templates import QuotaInstance as Instance
from tests.support.redisquota_handlers import Handlers, ask

FIXED = {"name": "q", "maxAmount": 50, "validDuration": "60s"}
ROLLING = {
    "name": "q",
    "maxAmount": 50,
    "validDuration": "60s",
    "bucketDuration": "1s",
    "rateLimitAlgorithm": "ROLLING_WINDOW",
}


# -- exact counting under concurrency ---------------------------------------------------------


@pytest.mark.parametrize("quota", [FIXED, ROLLING], ids=["fixed", "rolling"])
async def test_two_handlers_never_admit_more_than_the_limit(
    quota: dict[str, Any], redis_server_module: Any, handlers: Handlers
) -> None:
    redis_server_module.flush()
    clock = ManualClock()
    a = handlers.build(redis_server_module.address, quota, clock, timeout="2s")
    b = handlers.build(redis_server_module.address, quota, clock, timeout="2s")
    results = await asyncio.gather(*(ask(h, 2, best_effort=True) for h in (a, b) * 100))
    assert sum(r.amount for r in results) == 50
    assert all(r.status.code in (Code.OK, Code.RESOURCE_EXHAUSTED) for r in results)
    assert a.stats.failures == b.stats.failures == 0
    # the same holds for all-or-nothing requests
    redis_server_module.flush()
    results = await asyncio.gather(*(ask(h, 3) for h in (a, b) * 50))
    assert sum(r.amount for r in results) == 48  # 16 grants of 3 fit in 50


async def test_real_clock_two_handlers(redis_server_module: Any, handlers: Handlers) -> None:
    redis_server_module.flush()
    a = handlers.build(redis_server_module.address, ROLLING, SystemClock(), timeout="2s")
    b = handlers.build(redis_server_module.address, ROLLING, SystemClock(), timeout="2s")
    granted = 0
    for _ in range(4):  # a few rounds, well inside the 60 s window
        results = await asyncio.gather(*(ask(h) for h in (a, b) * 20))
        granted += sum(r.amount for r in results)
    assert granted == 50


_WORKER = r"""
import asyncio, datetime as dt, json, sys
from mixerd.adapter import Env, ManualClock, QuotaArgs
from mixerd.adapters.redisquota import INFO

class Instance:
    def __init__(self, name):
        self.name = name
        self.dimensions = {"tenant": "t1"}

async def main(address, requests):
    quotas = [
        {"name": "fixed", "maxAmount": 500, "validDuration": "60s"},
        {"name": "rolling", "maxAmount": 500, "validDuration": "60s", "bucketDuration": "1s",
         "rateLimitAlgorithm": "ROLLING_WINDOW"},
    ]
    config = {"quotas": quotas, "redisServerUrl": address, "timeout": "2s", "connectionPoolSize": 8}
    env = Env("worker", clock=ManualClock(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    handler = INFO.builder(config, {}).build(env)
    await handler.load_scripts()
    print("ready", flush=True)
    sys.stdin.readline()
    granted = {"fixed": 0, "rolling": 0}
    instances = [Instance("fixed"), Instance("rolling")] * 25
    for _ in range(0, requests, len(instances)):
        results = await asyncio.gather(*(handler.handle_quota(i, QuotaArgs(1)) for i in instances))
        for inst, result in zip(instances, results):
            granted[inst.name] += result.amount
    print(json.dumps({"granted": granted, "failures": handler.stats.failures}), flush=True)
    await handler.close()
    await env.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_two_processes_never_admit_more_than_the_limit(redis_server_module: Any) -> None:
    redis_server_module.flush()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_server_module.address, "700"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        for w in workers:  # start both together
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        reports = []
        for w in workers:
            out, _ = w.communicate(timeout=60)
            assert w.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert [r["failures"] for r in reports] == [0, 0]
    for algorithm in ("fixed", "rolling"):  # 700 asked of each, exactly the limit granted
        assert sum(r["granted"][algorithm] for r in reports) == 500, algorithm
        assert all(r["granted"][algorithm] > 0 for r in reports), algorithm


# -- shared state: dedup, dimensions, hints, key lifetimes --------------------------------------


async def test_dedup_is_shared_between_handlers(redis_server_module: Any, handlers: Handlers) -> None:
    redis_server_module.flush()
    clock = ManualClock()
    a = handlers.build(redis_server_module.address, FIXED, clock)
    b = handlers.build(redis_server_module.address, FIXED, clock)
    first = await ask(a, 30, dedup_id="req-1")
    clock.advance(10)
    retry = await ask(b, 30, dedup_id="req-1")
    assert (retry.amount, retry.valid_duration) == (30, dt.timedelta(seconds=50))
    assert first.amount == 30
    assert (await ask(b, 30)).amount == 0  # charged once: 20 left
    assert (await ask(b, 20)).amount == 20


async def test_counters_are_per_dimension_set_and_overrides_set_limits(
    redis_server_module: Any, handlers: Handlers
) -> None:
    redis_server_module.flush()
    quota = dict(FIXED, maxAmount=2, overrides=[{"dimensions": {"tier": "gold"}, "maxAmount": 5}])
    h = handlers.build(redis_server_module.address, quota, ManualClock())
    for user in ("ann", "bob"):
        granted = [(await ask(h, dims={"user": user})).amount for _ in range(3)]
        assert granted == [1, 1, 0]
    gold = [(await ask(h, dims={"user": u, "tier": "gold"})).amount for u in ("ann", "ann", "bob")]
    assert gold == [1, 1, 1]
    r = await ask(h, 10, best_effort=True, dims={"user": "ann", "tier": "gold"})
    assert (r.amount, r.limit, r.remaining) == (3, 5, 0)
    # a counter is per dimension text: True ("true") is not 1 ("1"), though True == 1 (the
    # handler remembers each set's keys, and must not hand 1's to True); "1" and 1.0 read "1"
    flags = [(await ask(h, 2, dims={"n": v})).amount for v in (1, True, "1", 1.0, True)]
    assert flags == [2, 2, 0, 0, 0]


async def test_hints_and_key_lifetimes(redis_server_module: Any, handlers: Handlers) -> None:
    redis_server_module.flush()
    clock = ManualClock()
    fixed = handlers.build(redis_server_module.address, dict(FIXED, name="f"), clock)
    rolling = handlers.build(
        redis_server_module.address, dict(ROLLING, name="r", bucketDuration="10s"), clock
    )

    r = await fixed.handle_quota(Instance("f"), QuotaArgs(20))
    assert (r.amount, r.valid_duration, r.limit, r.remaining, r.reset_after) == (
        20,
        dt.timedelta(seconds=60),
        50,
        30,
        dt.timedelta(seconds=60),
    )
    clock.advance(15)
    r = await fixed.handle_quota(Instance("f"), QuotaArgs(40))
    assert (r.status.code, r.amount, r.remaining, r.reset_after) == (
        Code.RESOURCE_EXHAUSTED,
        0,
        30,
        dt.timedelta(seconds=45),
    )

    r = await rolling.handle_quota(Instance("r"), QuotaArgs(20))
    assert (r.remaining, r.reset_after) == (30, dt.timedelta(seconds=60))
    clock.advance(15)  # a new bucket; the first one (20 units, started at 0 s) leaves at 60 s
    r = await rolling.handle_quota(Instance("r"), QuotaArgs(10))
    assert (r.remaining, r.reset_after) == (20, dt.timedelta(seconds=45))
    clock.advance(45)
    r = await rolling.handle_quota(Instance("r"), QuotaArgs(0))  # nothing asked: exhausted, but hints
    assert (r.status.code, r.remaining, r.reset_after) == (
        Code.RESOURCE_EXHAUSTED,
        40,
        dt.timedelta(seconds=15),
    )

    for key in ("f.meta", "f.data", "r.rolling.meta", "r.rolling.data"):
        ttl = int(redis_server_module.command("PTTL", key)[1:].split(b"\r\n")[0])
        assert 0 < ttl <= 60_000, key


async def test_changing_the_algorithm_starts_afresh(redis_server_module: Any, handlers: Handlers) -> None:
    redis_server_module.flush()
    clock = ManualClock()
    fixed = handlers.build(redis_server_module.address, FIXED, clock)
    rolling = handlers.build(redis_server_module.address, ROLLING, clock)  # the same quota, reloaded
    assert (await ask(fixed, 30)).amount == 30
    assert (await ask(rolling, 30)).amount == 30
    assert (await ask(fixed, 30)).amount == 0
    assert fixed.stats.failures == rolling.stats.failures == 0


async def test_scripts_are_reloaded_after_script_flush(redis_server_module: Any, handlers: Handlers) -> None:
    redis_server_module.flush()
    h = handlers.build(redis_server_module.address, FIXED, ManualClock())
    assert (await ask(h, 10)).amount == 10
    assert redis_server_module.command("SCRIPT", "FLUSH").startswith(b"+OK")
    r = await ask(h, 10)
    assert (r.amount, r.remaining) == (10, 30)
    assert h.stats.failures == 0


# -- Redis stops, stalls and comes back -------------------------------------------------------

TIMEOUT = 0.1
SLACK = 0.5  # generous: CI machines have 2 cores and may be busy; the point is "bounded, no hang"


async def timed(handler: RedisQuotaHandler, amount: int = 1) -> tuple[QuotaResult, float]:
    started = time.perf_counter()
    result = await ask(handler, amount)
    return result, time.perf_counter() - started


async def test_fail_open_while_redis_is_down_then_back(redis_server: Any, handlers: Handlers) -> None:
    clock = ManualClock()
    h = handlers.build(redis_server.address, dict(FIXED, maxAmount=5), clock, timeout="100ms")
    assert await h.load_scripts()
    assert [(await ask(h)).amount for _ in range(3)] == [1, 1, 1]
    await handlers.settled()

    redis_server.stop()
    for _ in range(10):
        r, took = await timed(h)
        assert took < TIMEOUT + SLACK
        assert (r.status.code, r.amount, r.valid_duration, r.limit) == (
            Code.OK,
            1,
            dt.timedelta(seconds=1),
            5,
        )
    # three calls tried Redis, then the handler stopped waiting on it
    assert (h.stats.failures, h.stats.skipped, h.stats.fail_open_grants) == (THRESHOLD, 10 - THRESHOLD, 10)
    r = await ask(h, 6)
    assert (r.status.code, r.amount) == (Code.RESOURCE_EXHAUSTED, 0)  # never beyond the maximum

    redis_server.start()  # same port, empty: no keys, no scripts
    clock.advance(RETRY_INTERVAL)
    r = await ask(h, 2)
    assert (r.status.code, r.amount, r.remaining) == (Code.OK, 2, 3)  # counted in Redis again
    assert h.stats.failures == THRESHOLD
    assert [(await ask(h)).amount for _ in range(4)] == [1, 1, 1, 0]


async def test_fail_close_while_redis_is_down_then_back(redis_server: Any, handlers: Handlers) -> None:
    clock = ManualClock()
    h = handlers.build(redis_server.address, FIXED, clock, timeout="100ms", failurePolicy="FAIL_CLOSE")
    assert (await ask(h)).amount == 1
    await handlers.settled()
    redis_server.stop()
    for _ in range(5):
        r, took = await timed(h)
        assert took < TIMEOUT + SLACK
        assert (r.status.code, r.amount, r.valid_duration) == (Code.UNAVAILABLE, 0, dt.timedelta(0))
        assert r.status.message == "redisquota: quota backend unavailable (FAIL_CLOSE)"
    assert h.stats.fail_close_denials == 5
    redis_server.start()
    clock.advance(RETRY_INTERVAL)
    r = await ask(h)
    assert (r.status.code, r.amount) == (Code.OK, 1)


async def test_a_stalled_redis_costs_at_most_the_timeout(redis_server: Any, handlers: Handlers) -> None:
    # A longer timeout than the others here: a busy machine must not time out the calls made
    # while Redis is healthy, or the failure count below would be off.
    h = handlers.build(redis_server.address, FIXED, ManualClock(), timeout="300ms")
    assert (await ask(h, 5)).amount == 5
    await handlers.settled()  # the script preload is done (it answered) before Redis stalls
    assert h.stats.failures == 0
    assert redis_server.command("CLIENT", "PAUSE", "1500", "ALL").startswith(b"+OK")
    for _ in range(2):  # below the threshold: each call waits on Redis, and gives up in time
        r, took = await timed(h)
        assert took < 0.3 + SLACK
        assert (r.status.code, r.amount) == (Code.OK, 1)
    assert h.stats.failures == 2
    await asyncio.sleep(1.6)  # the pause ends; the abandoned replies must not be read as new ones
    results = [await ask(h, 5) for _ in range(3)]
    assert [(r.amount, r.remaining) for r in results] == [(5, 40), (5, 35), (5, 30)]


# -- closing: no connection outlives the handler -------------------------------------------------


def _no_unclosed_connections_after_gc() -> None:
    """Collect garbage with every warning recorded: an open connection left behind would warn
    ``unclosed Connection`` (a ResourceWarning) from its finalizer."""
    unraisable: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u.exc_value))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert unraisable == []


async def test_close_waits_for_a_call_still_connecting(
    redis_server_module: Any, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler is closed (a config change, shutdown) while a call is still opening its
    # connection; the connection opens after that. It must be closed with the handler, not
    # left open in a closed pool (it used to be, and warned "unclosed Connection" whenever the
    # garbage collector met it, failing whichever test was running then).
    gate = asyncio.Event()
    connecting: list[Connection] = []
    connect = Connection._connect

    async def slow_connect(self: Connection) -> None:
        connecting.append(self)
        await gate.wait()
        await connect(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(Connection, "_connect", slow_connect)
    h = handlers.build(redis_server_module.address, FIXED, SystemClock())
    call = asyncio.create_task(ask(h))
    while len(connecting) < 2:  # the script preload's connection and the call's
        await asyncio.sleep(0.001)
    closing = asyncio.create_task(h.close())
    done, _ = await asyncio.wait([closing], timeout=0.05)
    assert not done, "close() returned while a call was still connecting"
    gate.set()
    await closing
    assert (await call).amount == 1  # it was answered by Redis before the handler closed
    assert h.open_connections() == 0
    _no_unclosed_connections_after_gc()


async def test_callers_cancelled_in_flight_leave_no_connection(redis_server: Any, handlers: Handlers) -> None:
    # Callers cancelled (by the dispatcher's deadline) while Redis holds their round trip: the
    # round trip is the handler's, not theirs, so no connection is dropped half way or left to be
    # released in the background; closing waits for it (bounded by the timeout) and closes all.
    h = handlers.build(redis_server.address, FIXED, SystemClock(), timeout="1s")
    assert (await ask(h)).amount == 1
    await handlers.settled()
    redis_server.freeze()
    try:
        callers = [asyncio.create_task(ask(h)) for _ in range(5)]
        while h.round_trips[0] < 2:  # the callers' round trip has left
            await asyncio.sleep(0.001)
        for c in callers:
            c.cancel()
        for c in callers:
            with pytest.raises(asyncio.CancelledError):
                await c
        assert h.round_trips == (2, 1)  # still waiting on Redis
        started = time.monotonic()
        await h.close()
        assert time.monotonic() - started < 1 + SLACK
    finally:
        redis_server.thaw()
    assert h.round_trips[1] == 0
    assert h.open_connections() == 0
    r = await ask(h)  # a closed handler answers by its failure policy, without Redis
    assert (r.status.code, r.amount, r.valid_duration) == (Code.OK, 1, dt.timedelta(seconds=1))
    _no_unclosed_connections_after_gc()
