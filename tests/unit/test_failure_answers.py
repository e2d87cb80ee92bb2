"""A failing handler answers every front-end with a fixed phrase and a request id, never its detail.

The detail (which here names a password, a host and a path) is logged once, on one line with the
same id and the handler's name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from mixerd._proto.mixer.v1 import check_pb2, report_pb2
from mixerd.adapter import Builder, ConfigError, Env, Info, load_adapters
from mixerd.api.ext_authz import ExtAuthzService
from mixerd.api.mixer_v1.client import encode_attributes
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime

SECRET = "password=hunter2 host=db.internal.example path=/etc/mixerd/secret"


class _Failing:
    def handle_checknothing(self, instance: Any) -> Any:
        raise RuntimeError(SECRET)

    def handle_quota(self, instance: Any, args: Any) -> Any:
        raise RuntimeError(SECRET)

    def handle_metric(self, instances: Any) -> None:
        raise RuntimeError(SECRET)


class _FailingBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> _Failing:
        return _Failing()


FAILING = Info(
    "failing", "raises with a secret (tests only)", ("checknothing", "quota", "metric"), _FailingBuilder
)

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: vault, namespace: istio-system}
spec: {compiledAdapter: failing}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: checkrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: api, namespace: istio-system}
spec: {compiledTemplate: quota}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec: {compiledTemplate: metric, params: {value: "1"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: everything, namespace: istio-system}
spec:
  actions: [{handler: vault, instances: [checkrequest, api, requestcount]}]
"""


class _Aborted(Exception):
    pass


class _Context:
    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(MemoryStore(parse_text(CONFIG).resources), adapters={**load_adapters(), "failing": FAILING})
    await rt.start()
    assert not rt.status.errors, rt.status.errors
    yield rt
    await rt.close()


async def _mixer_check(rt: Runtime) -> tuple[Any, str]:
    svc, ctx = MixerService(rt.dispatcher), _Context()
    req = check_pb2.CheckRequest(attributes=encode_attributes({"request.id": "envoy-req-1"}))
    with pytest.raises(_Aborted):
        await svc.Check(req.SerializeToString(), ctx)
    await svc.aclose()
    return ctx.code, ctx.details


async def _mixer_report(rt: Runtime) -> tuple[Any, str]:
    svc, ctx = MixerService(rt.dispatcher, queue_reports=False), _Context()
    req = report_pb2.ReportRequest(attributes=[encode_attributes({"request.id": "envoy-req-1"})])
    with pytest.raises(_Aborted):
        await svc.Report(req.SerializeToString(), ctx)
    await svc.aclose()
    return ctx.code, ctx.details


async def _ext_authz(rt: Runtime) -> tuple[Any, str]:
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.headers["x-request-id"] = "envoy-req-1"
    resp = await ExtAuthzService(rt).Check(req, _Context())
    assert resp.error_response.body == resp.status.message
    return resp.status.code, resp.status.message


async def _ratelimit(rt: Runtime) -> tuple[Any, str]:
    svc, ctx = RateLimitService(rt.dispatcher, failure_mode="error"), _Context()
    req = rls_pb2.RateLimitRequest(domain="api")
    req.descriptors.add().entries.add(key="user", value="alice")
    with pytest.raises(_Aborted):
        await svc.ShouldRateLimit(req, ctx)
    return ctx.code, ctx.details


FRONT_ENDS: list[tuple[str, Callable[[Runtime], Awaitable[tuple[Any, str]]], Any, str, bool]] = [
    # (front-end, call, code, phrase, whether the caller's x-request-id is logged)
    ("mixer Check", _mixer_check, grpc.StatusCode.INTERNAL, "handler failure", True),
    ("mixer Report", _mixer_report, grpc.StatusCode.UNKNOWN, "report dispatch failure", False),
    ("ext_authz", _ext_authz, 13, "handler failure", True),
    ("ratelimit", _ratelimit, grpc.StatusCode.UNAVAILABLE, "handler failure", False),
]


@pytest.mark.parametrize(
    ("call", "code", "phrase", "logs_xrid"), [f[1:] for f in FRONT_ENDS], ids=[f[0] for f in FRONT_ENDS]
)
async def test_the_caller_gets_a_phrase_and_an_id_and_the_log_gets_the_rest(
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
    call: Callable[[Runtime], Awaitable[tuple[Any, str]]],
    code: Any,
    phrase: str,
    logs_xrid: bool,
) -> None:
    with caplog.at_level(logging.WARNING):
        got_code, message = await call(runtime)
    assert got_code == code
    m = re.fullmatch(re.escape(phrase) + r" \(request id ([0-9a-f]{16})\)", message)
    assert m is not None, message
    rid = m.group(1)
    for secret in ("hunter2", "db.internal", "/etc/mixerd", "vault"):
        assert secret not in message
    [line] = [r for r in caplog.records if rid in r.getMessage()]
    assert line.levelno == logging.ERROR
    text = line.getMessage()
    assert "hunter2" in text and "vault.handler.istio-system" in text
    assert ("x-request-id envoy-req-1" in text) is logs_xrid
