"""redisquota through Redis Sentinel (``redis+sentinel://``) on real servers: a primary, a replica
and three Sentinels started for each test. Counting happens on the primary the Sentinels name;
when it is killed, quota calls keep answering within the timeout with the failure policy's answer
until the new primary is found; when a live primary is failed over (``SENTINEL FAILOVER``), the
handler moves to the new one at its next check of the Sentinels (every 0.5 s).

Every wait is a poll with a deadline; the bounds are written for a busy 2-core machine and say
why they are what they are.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.adapter import Code, ManualClock, QuotaResult, SystemClock
from mixerd.adapters.redisquota import RedisQuotaHandler
from mixerd.adapters.redisquota.handler import FAIL_OPEN_VALIDITY, PRIMARY_CHECK_INTERVAL
from mixerd.adapters.redisquota.policy import RETRY_INTERVAL, THRESHOLD
from mixerd.api.mixer_v1.client import build_check_request, decode_check_response
from tests.support.net import wait_for
from tests.support.redis_server import SentinelServers
from tests.support.redisquota_handlers import Handlers, ask

from .mixerd_proc import MixerdProcess, start_mixerd

BIG = 10**9  # limits never reached in the failover tests: every grant comes from Redis or the policy
TIMEOUT = 0.25
"""The redisquota timeout of the failover tests: longer than the default 100 ms so that a busy
machine does not turn slow answers from a healthy primary into failures the tests would blame on
the failover."""
SLACK = 0.5
"""Time on top of the timeout for everything else in one call on a busy 2-core machine."""


def kind(result: QuotaResult) -> str:
    """'redis' (counted by Redis), 'fail_open' (granted without Redis), 'fail_close' (denied
    without Redis) or what else it was."""
    if result.status.code is Code.UNAVAILABLE:
        return "fail_close"
    if result.status.code is Code.OK and result.amount == 1:
        return "fail_open" if result.valid_duration == FAIL_OPEN_VALIDITY else "redis"
    return f"unexpected {result.status.code.name} {result.amount}"


def counter(server: Any, quota: str) -> int:
    """Units a fixed window (without dimensions) holds on ``server`` (the one-server key names)."""
    return int(server.query("GET", f"{quota}.data") or 0)


# -- counting through Sentinel --------------------------------------------------------------------


async def test_counts_on_the_primary_the_sentinels_name(
    redis_sentinel: SentinelServers, handlers: Handlers
) -> None:
    primary, replica = redis_sentinel.primary(), redis_sentinel.replica()
    clock = ManualClock()
    quota = {"name": "q", "maxAmount": 50, "validDuration": "600s"}
    a = handlers.build(redis_sentinel.url, quota, clock)
    b = handlers.build(redis_sentinel.url, quota, clock)
    results = await asyncio.gather(*(ask(h, 2, best_effort=True) for h in (a, b) * 100))
    assert sum(r.amount for r in results) == 50
    assert a.stats.failures == b.stats.failures == 0
    # the keys mixerd always used on one server, on the primary, and replicated
    assert counter(primary, "q") == 50
    assert primary.query("WAIT", 1, 5000) == 1
    assert counter(replica, "q") == 50

    # a master name the Sentinels do not know: the failure policy answers, within the timeout
    unknown = redis_sentinel.url.rsplit("/", 1)[0] + "/nosuch"
    h = handlers.build(unknown, quota, clock, timeout="100ms", failurePolicy="FAIL_CLOSE")
    await handlers.settled()  # the script preload has failed (a failure of its own)
    before = h.stats.failures
    started = time.perf_counter()
    r = await ask(h)
    assert time.perf_counter() - started < 0.1 + SLACK
    assert (r.status.code, r.amount) == (Code.UNAVAILABLE, 0)
    assert h.stats.failures == before + 1


# -- the primary killed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    quota: str
    started: float
    ended: float
    kind: str


@dataclass
class QuotaLoad:
    """``concurrency`` callers per handler asking for 1 unit in a loop, each pausing ``pause``
    seconds between calls (pacing, not synchronisation)."""

    handlers: dict[str, RedisQuotaHandler]
    concurrency: int = 3
    pause: float = 0.005
    calls: list[Call] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> QuotaLoad:
        for quota, handler in self.handlers.items():
            for _ in range(self.concurrency):
                self._tasks.append(asyncio.create_task(self._run(quota, handler)))
        return self

    async def _run(self, quota: str, handler: RedisQuotaHandler) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            result = await ask(handler, 1, quota=quota)
            self.calls.append(Call(quota, started, time.monotonic(), kind(result)))
            await asyncio.sleep(self.pause)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def answered_by_redis_since(self, t: float) -> bool:
        return {c.quota for c in self.calls if c.started > t and c.kind == "redis"} == set(self.handlers)

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
            await asyncio.sleep(0.02)
        return time.monotonic()


async def test_failover_after_the_primary_is_killed(
    redis_sentinel: SentinelServers, handlers: Handlers
) -> None:
    clock = SystemClock()
    quota = {"maxAmount": BIG, "validDuration": "600s"}
    built = {
        name: handlers.build(
            redis_sentinel.url, dict(quota, name=name), clock, timeout=f"{TIMEOUT}s", failurePolicy=policy
        )
        for name, policy in (("open", "FAIL_OPEN"), ("close", "FAIL_CLOSE"))
    }
    await handlers.settled()
    load = QuotaLoad(built).start()
    try:
        await load.until(lambda: load.answered_by_redis_since(0), 10, "quota answered by Redis")
        old = redis_sentinel.primary()
        killed = time.monotonic()
        old.kill()
        new = await asyncio.to_thread(redis_sentinel.wait_for_failover, old, 15)
        switched = time.monotonic()
        recovered = await load.until(
            lambda: load.answered_by_redis_since(switched), 10, "quota answered by the new primary"
        )
    finally:
        await load.stop()

    answers = {q: Counter(c.kind for c in load.calls if c.quota == q) for q in built}
    # FAIL_OPEN grants and FAIL_CLOSE denies without Redis; nothing else, nothing raised
    assert set(answers["open"]) == {"redis", "fail_open"}, answers
    assert set(answers["close"]) == {"redis", "fail_close"}, answers
    worst = max(c.ended - c.started for c in load.calls)
    assert worst < TIMEOUT + SLACK, f"a quota call took {worst:.3f}s"
    # policy answers only during the switch: from the kill until the Sentinels name the new
    # primary, plus the breaker's retry interval (calls stop waiting on Redis for 0.5 s after 3
    # failures) and slack
    policy = [c for c in load.calls if c.kind != "redis"]
    assert min(c.ended for c in policy) > killed
    assert max(c.started for c in policy) < switched + RETRY_INTERVAL + 1.0
    # bounded errors: a handler fails at most the calls it has in flight per retry interval (the
    # rest are answered at once), not one per request
    outage = recovered - killed
    bound = load.concurrency * (math.ceil(outage / RETRY_INTERVAL) + 2)
    for name, handler in built.items():
        assert THRESHOLD <= handler.stats.failures <= bound, (name, handler.stats, bound)

    # after the failover, allocations go to the new primary
    counted = {q: counter(new, q) for q in built}
    for _ in range(10):
        assert kind(await ask(built["open"], 1, quota="open")) == "redis"
    assert counter(new, "open") == counted["open"] + 10
    # and it holds what Redis granted, give or take the calls in flight at the kill (a grant the
    # old primary made but had not yet sent to its replica; a call that timed out after counting)
    for q in built:
        granted = answers[q]["redis"]
        assert abs(granted - counted[q]) <= load.concurrency, (q, granted, counted[q])
    print(
        f"\n[sentinel kill] {len(load.calls)} calls; switch seen {switched - killed:.2f}s after the kill, "
        f"Redis answering again after {outage:.2f}s; failures open/close "
        f"{built['open'].stats.failures}/{built['close'].stats.failures} (bound {bound}); policy answers "
        f"{answers['open']['fail_open']}/{answers['close']['fail_close']}; worst call {worst * 1e3:.0f} ms; "
        f"granted-counted {answers['open']['redis'] - counted['open']}/{answers['close']['redis'] - counted['close']}"
    )


# -- a live primary failed over, end to end -----------------------------------------------------

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: {q}, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params: {{dimensions: {{}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: {q}-redis, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{url}"
    failurePolicy: {policy}
    timeout: {timeout}s
    quotas: [{{name: {q}.instance.istio-system, maxAmount: {limit}, validDuration: 600s}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {q}, namespace: istio-system}}
spec:
  actions: [{{handler: {q}-redis, instances: [{q}]}}]
"""


def test_failover_of_a_live_primary_through_mixerd(
    tmp_path: Path, redis_sentinel: SentinelServers, mixerd_procs: list[MixerdProcess]
) -> None:
    """``SENTINEL FAILOVER`` promotes the replica while the old primary is still up: it goes on
    accepting writes until Sentinel reconfigures it, 8 s or more later, and then drops them.
    mixerd asks the Sentinels where the primary is every 0.5 s and leaves the old one then."""
    config = tmp_path / "quota.yaml"
    config.write_text(
        "---\n".join(
            CONFIG.format(q=q, url=redis_sentinel.url, policy=policy, timeout=TIMEOUT, limit=BIG)
            for q, policy in (("openq", "FAIL_OPEN"), ("closeq", "FAIL_CLOSE"))
        )
    )
    mixerd = start_mixerd(tmp_path, [config])
    mixerd_procs.append(mixerd)

    lock = threading.Lock()
    calls: list[Call] = []
    errors: list[str] = []
    stop = threading.Event()

    def check(stub: mixer_pb2_grpc.MixerStub, quota: str, dedup: str) -> Call:
        started = time.monotonic()
        request = build_check_request({}, quotas={quota: 1}, dedup_id=dedup)
        q = decode_check_response(stub.Check(request, timeout=5))["quotas"][quota]
        ended = time.monotonic()
        if q["status"] == "UNAVAILABLE":
            answer = "fail_close"
        elif (q["status"], q["granted_amount"]) == ("OK", 1):
            answer = "fail_open" if q["valid_duration"] == "1s" else "redis"
        else:
            answer = f"unexpected {q}"
        return Call(quota, started, ended, answer)

    def worker(index: int) -> None:
        quota = ("openq", "closeq")[index % 2]
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    call = check(stub, quota, f"w{index}-{n}")
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                with lock:
                    calls.append(call)
                stop.wait(0.005)

    def redis_since(t: float) -> bool:
        with lock:
            return {c.quota for c in calls if c.started > t and c.kind == "redis"} == {"openq", "closeq"}

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: redis_since(0), timeout=10, what="quota answered by Redis")
        old = redis_sentinel.primary()
        failed_over = time.monotonic()
        # What was granted before this instant must survive the failover (checked below): let
        # the replica catch up with it first (the calls in between may be lost, as in life).
        redis_sentinel.wait_replicated(old)
        redis_sentinel.failover()
        new = redis_sentinel.wait_for_failover(old, 15)
        switched = time.monotonic()
        # both handlers leave the old primary at their next check of the Sentinels
        wait_for(
            lambda: (
                mixerd.log().count(f"the Sentinels moved the primary from {old.address} to {new.address}")
                == 2
            ),
            timeout=10,
            what="both handlers to leave the old primary",
        )
        moved = time.monotonic()
        wait_for(lambda: redis_since(moved), timeout=10, what="quota answered by the new primary")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a load thread is stuck"

    assert errors == []
    answers = {q: Counter(c.kind for c in calls if c.quota == q) for q in ("openq", "closeq")}
    assert set(answers["openq"]) <= {"redis", "fail_open"}, answers
    assert set(answers["closeq"]) <= {"redis", "fail_close"}, answers
    worst = max(c.ended - c.started for c in calls)
    assert worst < TIMEOUT + SLACK, f"a Check took {worst:.3f}s"
    assert moved - switched < PRIMARY_CHECK_INTERVAL + 2.0  # the next check, on a busy machine

    # The new primary holds every unit granted before the failover started and after mixerd left
    # the old primary; what the old primary counted in between is lost with it when Sentinel
    # makes it a replica: the price of asynchronous replication without fencing, about what
    # arrives between the promotion and the Sentinels announcing it, plus one check interval.
    def granted(quota: str, keep: Callable[[Call], bool]) -> int:
        return sum(1 for c in calls if c.quota == quota and c.kind == "redis" and keep(c))

    lost = {}
    for quota in ("openq", "closeq"):
        key = f"{quota}.instance.istio-system"
        on_new = counter(new, key)
        safe = granted(quota, lambda c: c.ended < failed_over) + granted(
            quota, lambda c: c.started > moved + 0.5
        )
        assert safe <= on_new <= answers[quota]["redis"] + 4, (quota, safe, on_new, answers[quota])
        lost[quota] = answers[quota]["redis"] - on_new
    # and allocations go to the new primary from now on
    before = counter(new, "openq.instance.istio-system")
    with grpc.insecure_channel(mixerd.grpc_address) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        for i in range(10):
            assert check(stub, "openq", f"after-{i}").kind == "redis"
    assert counter(new, "openq.instance.istio-system") == before + 10
    print(
        f"\n[sentinel failover] {len(calls)} Checks; switch seen {switched - failed_over:.2f}s after SENTINEL "
        f"FAILOVER, mixerd moved {moved - switched:.2f}s later; answers {dict(answers['openq'])} / "
        f"{dict(answers['closeq'])}; units lost with the old primary {lost}; worst {worst * 1e3:.0f} ms"
    )
    assert mixerd.stop() == 0, mixerd.log()[-3000:]
