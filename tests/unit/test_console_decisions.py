"""Every front-end records its decisions for the console: verdict, deciding rule and handler,
status, quota grants, the transaction key (including one minted by the answer itself)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from mixerd._proto.mixer.v1 import check_pb2
from mixerd.adapter import CheckResult, ManualClock, SystemClock
from mixerd.api.decisions import DECISIONS, DecisionRecorder, recorder_of
from mixerd.api.ext_authz import ExtAuthzService
from mixerd.api.mixer_v1.client import encode_attributes
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.attribute import Condition, FrozenReferences
from mixerd.config import MemoryStore, parse_text
from mixerd.console.model import Decision, Frontend, Verdict
from mixerd.runtime import CheckOutcome, Runtime
from mixerd.runtime.checkcache import CachedCheck

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: blocked, namespace: istio-system}
spec: {compiledAdapter: denier, params: {status: {code: 7, message: you are blocked}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions: [{handler: blocked, instances: [denyrequest]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: transaction-id, namespace: istio-system}
spec:
  requestHeaderOperations:
  - name: x-transaction-id
    values: ['request.headers["x-transaction-id"] | request.headers["x-request-id"]']
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: api, namespace: istio-system}
spec: {compiledTemplate: quota}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: onepersecond, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params: {quotas: [{name: api.instance.istio-system, maxAmount: 1, validDuration: 1s}]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: limit-api, namespace: istio-system}
spec:
  actions: [{handler: onepersecond, instances: [api]}]
"""

RID = "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50"


class _Sink:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def add_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)


class _Context:
    def __init__(self) -> None:
        self.code: Any = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise RuntimeError(details)


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Runtime, _Sink]]:
    sink = _Sink()
    clock = ManualClock()
    recorder = DecisionRecorder(sink, clock)
    rt = Runtime(MemoryStore(parse_text(CONFIG).resources), clock=clock, services={DECISIONS: recorder})
    await rt.start()
    assert not rt.status.errors, rt.status.errors
    yield rt, sink
    await rt.close()


def _mixer(rt: Runtime) -> MixerService:
    return MixerService(rt.dispatcher, recorder=recorder_of(rt))


async def test_a_mixer_check_denial_names_its_rule_and_handler(recorded: tuple[Runtime, _Sink]) -> None:
    rt, sink = recorded
    svc = _mixer(rt)
    attrs = {
        "request.headers": {"x-user": "blocked", "x-request-id": RID},
        "source.namespace": "shop",
        "source.workload.name": "frontend",
        "destination.service.host": "cart.shop.svc.cluster.local",
        "request.path": "/cart",
    }
    resp = await svc.Check(check_pb2.CheckRequest(attributes=encode_attributes(attrs)), _Context())
    await svc.aclose()
    assert resp.precondition.status.code == 7
    (d,) = sink.decisions
    assert d.frontend is Frontend.MIXER_CHECK
    assert d.verdict is Verdict.DENY and d.status_code == 7
    assert d.rule == "deny-blocked.rule.istio-system"
    assert d.handler == "blocked.handler.istio-system"
    assert "you are blocked" in d.message
    assert d.transaction_id == RID
    assert d.source.namespace == "shop" and d.source.workload == "frontend"
    assert d.destination.service == "cart.shop.svc.cluster.local"
    assert d.path == "/cart" and d.request_id == RID
    assert "request.headers" in d.attributes


async def test_recording_does_not_change_the_referenced_attributes(recorded: tuple[Runtime, _Sink]) -> None:
    rt, _ = recorded
    attrs = {"request.headers": {"x-user": "alice"}, "source.namespace": "shop", "request.path": "/"}
    req = check_pb2.CheckRequest(attributes=encode_attributes(attrs))
    with_recorder = await _mixer(rt).Check(req, _Context())
    without = await MixerService(rt.dispatcher).Check(req, _Context())
    assert with_recorder.precondition.referenced_attributes == without.precondition.referenced_attributes


async def test_an_allowed_ext_authz_check_is_keyed_by_the_transaction_id_it_mints(
    recorded: tuple[Runtime, _Sink],
) -> None:
    rt, sink = recorded
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.headers["x-request-id"] = RID
    http.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    http.method, http.path, http.host = "GET", "/items", "shop.example"
    resp = await ExtAuthzService(rt).Check(req, _Context())
    assert resp.status.code == 0
    (d,) = sink.decisions
    assert d.frontend is Frontend.EXT_AUTHZ_GRPC and d.verdict is Verdict.ALLOW
    # The hop behind this check carries the minted x-transaction-id, which wins over traceparent.
    assert d.transaction_id == RID
    assert (d.method, d.host, d.path) == ("GET", "shop.example", "/items")
    assert d.rule == "" and d.handler == ""


async def test_a_rate_limit_over_the_limit_is_quota_exhausted(recorded: tuple[Runtime, _Sink]) -> None:
    rt, sink = recorded
    svc = RateLimitService(rt.dispatcher, recorder=recorder_of(rt))
    req = rls_pb2.RateLimitRequest(domain="api")
    req.descriptors.add().entries.add(key="user", value="alice")
    await svc.ShouldRateLimit(req, _Context())
    await svc.ShouldRateLimit(req, _Context())
    first, second = sink.decisions
    assert first.frontend is Frontend.RATELIMIT
    assert (first.verdict, first.quotas) == (Verdict.ALLOW, {"api": 1})
    assert (second.verdict, second.quotas, second.status_code) == (Verdict.QUOTA_EXHAUSTED, {"api": 0}, 8)


async def test_without_a_recorder_nothing_is_recorded() -> None:
    rt = Runtime(MemoryStore(parse_text(CONFIG).resources))
    await rt.start()
    try:
        svc = MixerService(rt.dispatcher)
        assert svc.recorder is None
        assert ExtAuthzService(rt).authorizer.recorder is None
    finally:
        await rt.close()


PODS = """
apiVersion: v1
kind: List
items:
- metadata:
    name: frontend-v1-5f9b8-x2k4p
    namespace: shop
    labels: {app: frontend, version: v1, pod-template-hash: 5f9b8}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: frontend-v1-5f9b8, controller: true}]
  status: {podIP: 10.0.0.1}
- metadata:
    name: cart-v2-7c6d5-q8r9s
    namespace: shop
    labels: {app: cart, version: v2, pod-template-hash: 7c6d5}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: cart-v2-7c6d5, controller: true}]
  status: {podIP: 10.0.0.2}
"""

KUBERNETESENV = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: pods, namespace: istio-system}}
spec: {{compiledAdapter: kubernetesenv, params: {{podsFile: {pods}}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: peers, namespace: istio-system}}
spec:
  compiledTemplate: kubernetes
  params:
    source_ip: source.ip | ip("0.0.0.0")
    destination_ip: destination.ip | ip("0.0.0.0")
  attributeBindings:
    source.namespace: $out.source_namespace | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
    source.workload.name: $out.source_workload_name | "unknown"
    destination.namespace: $out.destination_namespace | "unknown"
    destination.labels: $out.destination_labels | emptyStringMap()
    destination.workload.name: $out.destination_workload_name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: peers, namespace: istio-system}}
spec:
  actions: [{{handler: pods, instances: [peers]}}]
"""


async def test_a_decision_names_the_workloads_attribute_generators_found(tmp_path: Path) -> None:
    # Regression: decisions were built from the request's own attributes, so an ext_authz
    # decision behind kubernetesenv had no source or destination workload although its rules saw
    # them (and the console could not tell which call of a transaction it was made for).
    pods = tmp_path / "pods.yaml"
    pods.write_text(PODS)
    sink = _Sink()
    clock = ManualClock()
    config = CONFIG + "\n---\n" + KUBERNETESENV.format(pods=pods)
    rt = Runtime(
        MemoryStore(parse_text(config).resources),
        clock=clock,
        services={DECISIONS: DecisionRecorder(sink, clock)},
    )
    await rt.start()
    try:
        assert not rt.status.errors, rt.status.errors
        req = external_auth_pb2.CheckRequest()
        req.attributes.source.address.socket_address.address = "10.0.0.1"
        req.attributes.destination.address.socket_address.address = "10.0.0.2"
        http = req.attributes.request.http
        http.headers["x-request-id"] = RID
        http.headers["x-user"] = "blocked"
        http.method, http.path = "GET", "/cart"
        resp = await ExtAuthzService(rt).Check(req, _Context())
        assert resp.status.code == 7
    finally:
        await rt.close()
    (d,) = sink.decisions
    assert d.verdict is Verdict.DENY
    assert (d.source.namespace, d.source.workload, d.source.app, d.source.version) == (
        "shop",
        "frontend-v1",
        "frontend",
        "v1",
    )
    assert (d.destination.namespace, d.destination.workload, d.destination.app, d.destination.version) == (
        "shop",
        "cart-v2",
        "cart",
        "v2",
    )
    assert d.transaction_id == RID and d.request_id == RID


def _cached_outcome(entry: CachedCheck) -> CheckOutcome:
    return CheckOutcome(result=entry.result, references=entry.references, cached=entry)


def test_an_answer_from_the_decision_cache_names_its_references_once_per_entry() -> None:
    sink = _Sink()
    recorder = DecisionRecorder(sink, ManualClock())
    refs: FrozenReferences = (
        (("request.path", None), Condition.EXACT),
        (("request.headers", "x-user"), Condition.EXACT),
        (("request.headers", "x-request-id"), Condition.ABSENCE),
    )
    entry = CachedCheck(CheckResult(), "", "", "", refs, frozenset(), {}, 0.0, 1)
    other = CachedCheck(CheckResult(), "", "", "", refs[:1], frozenset(), {}, 0.0, 1)
    for outcome in (_cached_outcome(entry), _cached_outcome(entry), _cached_outcome(other)):
        recorder.record(Frontend.MIXER_CHECK, {}, code=0, message="", outcome=outcome)
    first, again, third = sink.decisions
    assert first.attributes == ("request.headers", "request.path")
    assert again.attributes is first.attributes  # the entry's names, not computed again
    assert third.attributes == ("request.path",)


def test_the_real_clock_stamps_decisions_in_microseconds() -> None:
    sink = _Sink()
    recorder = DecisionRecorder(sink, SystemClock())
    before = time.time_ns() // 1000
    recorder.record(Frontend.EXT_AUTHZ_HTTP, {"request.path": "/"}, code=0, message="")
    after = time.time_ns() // 1000
    (d,) = sink.decisions
    assert before <= d.time_us <= after


def test_a_manual_clock_stamps_decisions_with_its_time() -> None:
    sink = _Sink()
    clock = ManualClock()
    recorder = DecisionRecorder(sink, clock)
    recorder.record(Frontend.EXT_AUTHZ_HTTP, {}, code=7, message="no")
    (d,) = sink.decisions
    assert d.time_us == int(clock.now().timestamp()) * 1_000_000 + clock.now().microsecond
    assert d.verdict is Verdict.DENY
