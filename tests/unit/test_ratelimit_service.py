"""The rate limit service over a real Runtime (MemoryStore config, memquota on a manual clock)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from mixerd.adapter import (
    Builder,
    Code,
    ConfigError,
    Env,
    Info,
    InstanceInfo,
    ManualClock,
    QuotaArgs,
    QuotaResult,
    load_adapters,
)
from mixerd.adapters.memquota import INFO as MEMQUOTA
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.attribute import DictBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import DispatchError, Runtime

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
MINUTE = rls_pb2.RateLimitResponse.RateLimit.MINUTE

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotahandler, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: api.instance.istio-system
      maxAmount: 3
      validDuration: 60s
      overrides:
      - {dimensions: {user: vip}, maxAmount: 5}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: api, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: ratelimit.descriptor["user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: api-quota, namespace: istio-system}
spec:
  match: ratelimit.domain == "api"
  actions:
  - {handler: quotahandler, instances: [api]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: broken, namespace: istio-system}
spec: {compiledAdapter: brokenquota}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: fragile, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {d: ratelimit.descriptor_key}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: fragile-quota, namespace: istio-system}
spec:
  actions:
  - {handler: broken, instances: [fragile]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: shopquota, namespace: shop}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - {name: shop.instance.shop, maxAmount: 1, validDuration: 1s}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: shop, namespace: shop}
spec:
  compiledTemplate: quota
  params: {dimensions: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: shop-quota, namespace: shop}
spec:
  actions:
  - {handler: shopquota, instances: [shop]}
"""


class _Broken:
    def handle_quota(self, instance: Any, args: QuotaArgs) -> Any:
        raise ConnectionError("backend unreachable")


class _BrokenBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> _Broken:
        return _Broken()


def _broken_builder(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> Builder:
    return _BrokenBuilder(config, instances)


BROKEN = Info("brokenquota", "a quota handler that always fails", ("quota",), _broken_builder)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    parsed = parse_text(CONFIG, file="test")
    assert not parsed.errors, parsed.errors
    store = MemoryStore(parsed.resources)
    adapters = {**load_adapters(), "memquota": MEMQUOTA, "brokenquota": BROKEN}
    rt = Runtime(store, adapters=adapters, clock=ManualClock())
    await rt.start()
    assert not rt.status.errors, rt.status.errors
    yield rt
    await rt.close()


class _Aborted(Exception):
    pass


class _Context:
    """The part of a grpc.aio servicer context the service uses."""

    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


def _request(domain: str, *descriptors: dict[str, str], hits: int = 0) -> Any:
    req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for entries in descriptors:
        d = req.descriptors.add()
        for k, v in entries.items():
            d.entries.add(key=k, value=v)
    return req


def _decisions(runtime: Runtime, **labels: str) -> float:
    return runtime.metrics.value("mixerd_ratelimit_decisions_total", labels)


def _errors(runtime: Runtime, domain: str) -> float:
    return runtime.metrics.value("mixerd_ratelimit_errors_total", {"domain": domain})


async def test_allowed_up_to_the_limit_then_over_limit(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    over_before = _decisions(runtime, domain="api", quota="api", code="OVER_LIMIT", shadow="false")
    ok_before = _decisions(runtime, domain="api", quota="api", code="OK", shadow="false")
    remaining = []
    for _ in range(3):
        resp = await svc.ShouldRateLimit(_request("api", {"user": "bob"}), _Context())
        assert resp.overall_code == OK
        assert not resp.response_headers_to_add
        (status,) = resp.statuses
        assert status.code == OK
        assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (3, MINUTE)
        assert status.current_limit.name == "api"
        remaining.append(status.limit_remaining)
    assert remaining == [2, 1, 0]

    resp = await svc.ShouldRateLimit(_request("api", {"user": "bob"}), _Context())
    assert resp.overall_code == OVER_LIMIT
    (status,) = resp.statuses
    assert status.code == OVER_LIMIT
    assert status.limit_remaining == 0
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (3, MINUTE)
    assert dt.timedelta(0) < status.duration_until_reset.ToTimedelta() <= dt.timedelta(seconds=60)
    assert [(h.key, h.value) for h in resp.response_headers_to_add] == [("x-mixerd-quota", "api")]

    # Other users have their own counters; overrides apply per dimension.
    assert (await svc.ShouldRateLimit(_request("api", {"user": "alice"}), _Context())).overall_code == OK
    vip = [(await svc.ShouldRateLimit(_request("api", {"user": "vip"}), _Context())) for _ in range(6)]
    assert [r.overall_code for r in vip] == [OK] * 5 + [OVER_LIMIT]
    assert (
        _decisions(runtime, domain="api", quota="api", code="OVER_LIMIT", shadow="false") - over_before == 2
    )
    assert _decisions(runtime, domain="api", quota="api", code="OK", shadow="false") - ok_before == 9


async def test_the_window_resets_on_the_runtime_clock(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    for _ in range(3):
        await svc.ShouldRateLimit(_request("api", {}), _Context())
    assert (await svc.ShouldRateLimit(_request("api", {}), _Context())).overall_code == OVER_LIMIT
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    clock.advance(61)
    assert (await svc.ShouldRateLimit(_request("api", {}), _Context())).overall_code == OK


async def test_hits_addend_and_several_descriptors(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    resp = await svc.ShouldRateLimit(_request("api", {"user": "carol"}, {"user": "dave"}, hits=2), _Context())
    assert [s.limit_remaining for s in resp.statuses] == [1, 1]
    resp = await svc.ShouldRateLimit(_request("api", {"user": "carol"}, {"user": "erin"}, hits=2), _Context())
    assert resp.overall_code == OVER_LIMIT
    assert [s.code for s in resp.statuses] == [OVER_LIMIT, OK]


async def test_shadow_mode_never_denies_but_counts(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher, shadow=True)
    before = _decisions(runtime, domain="api", quota="api", code="OVER_LIMIT", shadow="true")
    codes = [(await svc.ShouldRateLimit(_request("api", {"user": "sam"}), _Context())) for _ in range(5)]
    assert [r.overall_code for r in codes] == [OK] * 5
    assert [r.statuses[0].limit_remaining for r in codes] == [2, 1, 0, 0, 0]
    assert all(not r.response_headers_to_add for r in codes)
    assert _decisions(runtime, domain="api", quota="api", code="OVER_LIMIT", shadow="true") - before == 2


async def test_shadow_per_domain_and_per_descriptor(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher, shadow_domains=["api"])
    for _ in range(4):
        resp = await svc.ShouldRateLimit(_request("api", {"user": "tom"}), _Context())
    assert resp.overall_code == OK and resp.statuses[0].limit_remaining == 0

    svc = RateLimitService(runtime.dispatcher, shadow_domains=["other"])
    for _ in range(3):
        await svc.ShouldRateLimit(_request("api", {"user": "uma"}), _Context())
    shadowed = await svc.ShouldRateLimit(_request("api", {"user": "uma", "shadow": "true"}), _Context())
    assert shadowed.overall_code == OK  # a different descriptor key, but the same quota counter (user=uma)
    enforced = await svc.ShouldRateLimit(_request("api", {"user": "uma"}), _Context())
    assert enforced.overall_code == OVER_LIMIT


async def test_a_failing_handler_is_answered_ok_and_counted(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    before = _errors(runtime, "api")
    decided = _decisions(runtime, domain="api", quota="fragile", code="ERROR", shadow="false")
    resp = await svc.ShouldRateLimit(_request("api", {"quota": "fragile"}, {"user": "bob"}), _Context())
    assert resp.overall_code == OK
    assert [s.code for s in resp.statuses] == [OK, OK]
    assert not resp.statuses[0].HasField("current_limit")
    assert resp.statuses[1].current_limit.requests_per_unit == 3  # the other descriptor was still charged
    assert _errors(runtime, "api") - before == 1
    assert _decisions(runtime, domain="api", quota="fragile", code="ERROR", shadow="false") - decided == 1


async def test_failure_warnings_are_spaced_on_the_runtime_clock(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    svc = RateLimitService(runtime.dispatcher)
    clock = runtime.clock
    assert isinstance(clock, ManualClock)

    async def fail() -> None:
        await svc.ShouldRateLimit(_request("api", {"quota": "fragile"}), _Context())

    with caplog.at_level("WARNING", logger="mixerd.api.ratelimit.service"):
        await fail()
        await fail()  # within 10 s of the runtime's clock: counted, not logged
        clock.advance(11)
        await fail()
    warnings = [r.getMessage() for r in caplog.records if "quota fragile" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].endswith("failures: 1")
    assert warnings[1].endswith("failures: 2 in the last 11s")  # the one counted, and this one


async def test_failure_mode_error_fails_the_call_for_envoy_to_decide(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    svc = RateLimitService(runtime.dispatcher, failure_mode="error")
    ctx = _Context()
    with caplog.at_level("ERROR"), pytest.raises(_Aborted):
        await svc.ShouldRateLimit(_request("api", {"quota": "fragile"}), ctx)
    assert ctx.code == grpc.StatusCode.UNAVAILABLE
    # The caller gets a fixed phrase and an id; the handler's words are logged under that id.
    assert ctx.details.startswith("handler failure (request id ")
    assert "backend unreachable" not in ctx.details
    rid = ctx.details.rsplit(" ", 1)[1].rstrip(")")
    [line] = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
    assert "ratelimit ShouldRateLimit failed" in line and "backend unreachable" in line
    with pytest.raises(ValueError):
        RateLimitService(runtime.dispatcher, failure_mode="deny")


async def test_unconfigured_quota_is_ok(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    resp = await svc.ShouldRateLimit(_request("nobody", {"user": "x"}), _Context())
    assert resp.overall_code == OK
    assert not resp.statuses[0].HasField("current_limit")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request("api"), "rate limit descriptor list must not be empty"),
        (_request("", {"user": "x"}), "rate limit domain must not be empty"),
        (_request("api", {"": "x"}), "descriptors[0].entries[0]: the key must not be empty"),
    ],
)
async def test_nonsense_requests_are_invalid_arguments(runtime: Runtime, request_: Any, message: str) -> None:
    ctx = _Context()
    with pytest.raises(_Aborted):
        await RateLimitService(runtime.dispatcher).ShouldRateLimit(request_, ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and ctx.details == message


async def test_a_namespace_entry_brings_that_namespace_config(runtime: Runtime) -> None:
    svc = RateLimitService(runtime.dispatcher)
    # Without the namespace only istio-system config applies: "shop" is not configured there.
    for _ in range(3):
        assert (await svc.ShouldRateLimit(_request("shop", {}), _Context())).overall_code == OK
    ns = {"namespace": "shop"}
    assert (await svc.ShouldRateLimit(_request("shop", ns), _Context())).overall_code == OK
    assert (await svc.ShouldRateLimit(_request("shop", ns), _Context())).overall_code == OVER_LIMIT


async def test_over_grpc(runtime: Runtime) -> None:
    server = grpc.aio.server()
    RateLimitService(runtime.dispatcher).register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            codes = [
                (await stub.ShouldRateLimit(_request("api", {"user": "grpc"}), timeout=5)).overall_code
                for _ in range(4)
            ]
        assert codes == [OK, OK, OK, OVER_LIMIT]
    finally:
        await server.stop(None)


# -- an asynchronous quota handler: its deadline and its own failures ---------------------------


class _Async:
    """Answers after ``delay`` seconds, or raises ``raises``."""

    def __init__(self, delay: float, raises: BaseException | None) -> None:
        self.delay, self.raises = delay, raises

    async def handle_quota(self, instance: Any, args: QuotaArgs) -> Any:
        await asyncio.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        return QuotaResult(amount=args.amount, valid_duration=dt.timedelta(seconds=1))


ASYNC_CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: remote, namespace: istio-system}
spec: {compiledAdapter: asyncquota}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: api, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: api-quota, namespace: istio-system}
spec:
  actions:
  - {handler: remote, instances: [api]}
"""


@pytest.mark.parametrize(
    ("delay", "raises", "expected"),
    [
        (0.0, None, None),
        (5.0, None, r"handler remote\.handler\.istio-system did not answer within 0\.05s"),
        (0.0, TimeoutError("backend slow"), r"failed: TimeoutError: backend slow"),
        (0.0, asyncio.CancelledError(), r"failed: CancelledError"),
    ],
    ids=["answers", "deadline", "its-own-timeout", "its-own-cancellation"],
)
async def test_an_asynchronous_quota_answer_under_the_deadline(
    delay: float, raises: BaseException | None, expected: str | None
) -> None:
    class _AsyncBuilder(Builder):
        def validate(self) -> list[ConfigError]:
            return []

        def build(self, env: Env) -> _Async:
            return _Async(delay, raises)

    info = Info("asyncquota", "an asynchronous quota handler", ("quota",), _AsyncBuilder)
    parsed = parse_text(ASYNC_CONFIG, file="test")
    rt = Runtime(
        MemoryStore(parsed.resources),
        adapters={**load_adapters(), "asyncquota": info},
        clock=ManualClock(),
        check_deadline=0.05,
    )
    await rt.start()
    try:
        if expected is None:
            r = await rt.dispatcher.quota(DictBag({}), "api", QuotaArgs(3))
            assert r.amount == 3
            return
        with pytest.raises(DispatchError, match=expected) as err:
            await rt.dispatcher.quota(DictBag({}), "api", QuotaArgs(3))
        if delay:
            assert err.value.code == Code.DEADLINE_EXCEEDED
    finally:
        await rt.close()
