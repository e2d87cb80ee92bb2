"""The access-log service over a real Runtime: the stock Istio telemetry config fed by ALS entries,
and bounded backpressure with a deliberately slow handler."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from mixerd.adapter import Builder, ConfigError, Env, Info, InstanceInfo, load_adapters
from mixerd.adapters.kubernetesenv import INFO as KUBERNETESENV
from mixerd.adapters.prometheus import PrometheusExporter, make_info
from mixerd.api.accesslog.convert import StreamState
from mixerd.api.accesslog.service import AccessLogService
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime

CONFORMANCE = Path(
    os.environ.get("MIXERD_CONFORMANCE_DIR") or Path(__file__).parents[3] / "shared" / "conformance"
)
STOCK = CONFORMANCE / "stock-telemetry-config" / "rendered"

PODS = """
apiVersion: v1
kind: Pod
metadata:
  name: productpage-v1-6c8f
  namespace: default
  labels: {app: productpage, version: v1}
  ownerReferences: [{kind: ReplicaSet, name: productpage-v1-6c8f9d, apiVersion: apps/v1, controller: true}]
spec:
  serviceAccountName: bookinfo-productpage
  containers: [{name: productpage, ports: [{containerPort: 9080}]}]
status: {podIP: 10.0.0.2, hostIP: 192.168.0.10}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: productpage-v1-6c8f9d
  namespace: default
  ownerReferences: [{kind: Deployment, name: productpage-v1, apiVersion: apps/v1, controller: true}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-5f9b
  namespace: default
  labels: {app: reviews, version: v1}
  ownerReferences: [{kind: ReplicaSet, name: reviews-v1-5f9b7c, apiVersion: apps/v1, controller: true}]
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 10.0.0.1, hostIP: 192.168.0.11}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: reviews-v1-5f9b7c
  namespace: default
  ownerReferences: [{kind: Deployment, name: reviews-v1, apiVersion: apps/v1, controller: true}]
"""

IDENTIFIER = {
    "node": {
        "id": "sidecar~10.0.0.1~reviews-v1-5f9b.default~default.svc.cluster.local",
        "cluster": "reviews",
    },
    "logName": "als",
}


def _http_entry(
    code: int, *, user_agent: str = "python-requests", flags: Mapping[str, bool] | None = None
) -> Any:
    return {
        "commonProperties": {
            "downstreamRemoteAddress": {"socketAddress": {"address": "10.0.0.2", "portValue": 41000}},
            "downstreamLocalAddress": {"socketAddress": {"address": "10.0.0.1", "portValue": 9080}},
            "startTime": "2024-05-06T07:08:09Z",
            "duration": "0.030s",
            "upstreamCluster": "inbound|9080|http|reviews.default.svc.cluster.local",
            "responseFlags": dict(flags or {}),
            "tlsProperties": {
                "localCertificateProperties": {
                    "subjectAltName": [{"uri": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}]
                },
                "peerCertificateProperties": {
                    "subjectAltName": [{"uri": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"}]
                },
            },
        },
        "request": {
            "requestMethod": "GET",
            "authority": "reviews:9080",
            "path": "/reviews/1",
            "userAgent": user_agent,
            "requestHeadersBytes": 200,
            "requestBodyBytes": 0,
        },
        "response": {"responseCode": code, "responseHeadersBytes": 100, "responseBodyBytes": 420},
    }


def _message(body: Mapping[str, Any], *, identifier: bool = False) -> Any:
    data = dict(body)
    if identifier:
        data["identifier"] = IDENTIFIER
    return json_format.ParseDict(data, als_pb2.StreamAccessLogsMessage())


def _stock_config(pods_file: Path) -> str:
    docs: list[Any] = []
    for name in ("attributemanifests.yaml", "handlers.yaml", "instances.yaml", "rules.yaml"):
        docs.extend(d for d in yaml.safe_load_all((STOCK / name).read_text()) if d)
    for d in docs:
        if d["kind"] == "handler" and d["metadata"]["name"] == "kubernetesenv":
            d["spec"]["params"] = {"podsFile": str(pods_file)}
    return yaml.safe_dump_all(docs)


async def _runtime(config: str, adapters: Mapping[str, Info]) -> Runtime:
    parsed = parse_text(config, file="test")
    assert not parsed.errors, parsed.errors
    rt = Runtime(MemoryStore(parsed.resources), adapters={**load_adapters(), **adapters})
    await rt.start()
    assert not rt.status.errors, rt.status.errors
    return rt


@pytest.fixture
async def stock(tmp_path: Path) -> AsyncIterator[tuple[Runtime, PrometheusExporter]]:
    pods = tmp_path / "pods.yaml"
    pods.write_text(PODS)
    exporter = PrometheusExporter()
    rt = await _runtime(
        _stock_config(pods), {"prometheus": make_info(exporter), "kubernetesenv": KUBERNETESENV}
    )
    yield rt, exporter
    await rt.close()


def _samples(exporter: PrometheusExporter, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(exporter.render().decode()):
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), s.value))
    return out


async def _stream(port: int, messages: Iterable[Any]) -> None:
    async def requests() -> AsyncIterator[Any]:
        for m in messages:
            yield m

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = als_pb2_grpc.AccessLogServiceStub(channel)
        await stub.StreamAccessLogs(requests(), timeout=10)


async def _serve(service: AccessLogService) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    service.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _dropped(rt: Runtime, reason: str) -> float:
    return rt.metrics.value("mixerd_report_dropped_total", {"api": "accesslog", "reason": reason})


EXPECTED_LABELS = {
    "reporter": "destination",
    "source_app": "productpage",
    "source_principal": "cluster.local/ns/default/sa/bookinfo-productpage",
    "source_workload": "productpage-v1",
    "source_workload_namespace": "default",
    "source_version": "v1",
    "destination_app": "reviews",
    "destination_principal": "cluster.local/ns/default/sa/bookinfo-reviews",
    "destination_workload": "reviews-v1",
    "destination_workload_namespace": "default",
    "destination_version": "v1",
    "destination_service": "reviews.default.svc.cluster.local",
    "destination_service_name": "reviews",
    "destination_service_namespace": "default",
    "request_protocol": "http",
    "response_code": "200",
    "response_flags": "-",
    "permissive_response_code": "none",
    "permissive_response_policyid": "none",
    "connection_security_policy": "mutual_tls",
}


Stock = tuple[Runtime, PrometheusExporter]


async def test_http_entries_move_the_stock_prometheus_series(stock: Stock) -> None:
    rt, exporter = stock
    svc = AccessLogService(rt.dispatcher)
    server, port = await _serve(svc)
    try:
        await _stream(
            port,
            [
                _message({"httpLogs": {"logEntry": [_http_entry(200), _http_entry(200)]}}, identifier=True),
                _message({"httpLogs": {"logEntry": [_http_entry(503, flags={"noHealthyUpstream": True})]}}),
                # kube-probe requests are excluded by the stock promhttp rule
                _message({"httpLogs": {"logEntry": [_http_entry(200, user_agent="kube-probe/1.29")]}}),
            ],
        )
        assert await svc.flush(5)
    finally:
        await server.stop(None)
        await svc.aclose()
    series = {
        frozenset(labels.items()): value for labels, value in _samples(exporter, "istio_requests_total")
    }
    ok = frozenset(EXPECTED_LABELS.items())
    failed = frozenset({**EXPECTED_LABELS, "response_code": "503", "response_flags": "UH"}.items())
    assert series == {ok: 2.0, failed: 1.0}
    durations = {
        frozenset(labels.items()): value
        for labels, value in _samples(exporter, "istio_request_duration_seconds_sum")
        if labels["response_code"] == "200"
    }
    assert durations == {ok: pytest.approx(0.06)}
    sizes = _samples(exporter, "istio_response_bytes_sum")
    assert sorted(v for _, v in sizes) == [420.0, 840.0]


async def test_tcp_entries_move_the_stock_tcp_series(stock: Stock) -> None:
    rt, exporter = stock
    svc = AccessLogService(rt.dispatcher)
    common = {
        "downstreamRemoteAddress": {"socketAddress": {"address": "10.0.0.2", "portValue": 41001}},
        "downstreamLocalAddress": {"socketAddress": {"address": "10.0.0.1", "portValue": 9080}},
        "upstreamCluster": "inbound|9080|tcp|reviews.default.svc.cluster.local",
        "streamId": "c1",
    }
    entries = [
        {"commonProperties": {**common, "accessLogType": "TcpUpstreamConnected"}},
        {
            "commonProperties": {**common, "accessLogType": "TcpPeriodic"},
            "connectionProperties": {"receivedBytes": 100, "sentBytes": 1000},
        },
        {
            "commonProperties": {**common, "accessLogType": "TcpConnectionEnd"},
            "connectionProperties": {"receivedBytes": 150, "sentBytes": 3000},
        },
    ]
    state = StreamState()
    await svc.accept(state, _message({"tcpLogs": {"logEntry": entries[:1]}}, identifier=True))
    for e in entries[1:]:
        await svc.accept(state, _message({"tcpLogs": {"logEntry": [e]}}))
    assert await svc.flush(5)
    await svc.aclose()

    def total(name: str) -> float:
        samples = _samples(exporter, name)
        values = [v for labels, v in samples if labels["destination_workload"] == "reviews-v1"]
        assert len(values) == 1, (name, values)
        assert all(labels["reporter"] == "destination" for labels, _ in samples)
        return values[0]

    assert total("istio_tcp_connections_opened_total") == 1
    assert total("istio_tcp_connections_closed_total") == 1
    assert total("istio_tcp_received_bytes_total") == 150
    assert total("istio_tcp_sent_bytes_total") == 3000


# -- backpressure --------------------------------------------------------------------------------


class _Gate:
    """A metric handler that holds every batch until the gate opens."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.received = 0

    async def handle_metric(self, instances: Sequence[Any]) -> None:
        await self.open.wait()
        self.received += len(instances)


GATE = _Gate()


class _GateBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> _Gate:
        return GATE


def _gate_builder(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> Builder:
    return _GateBuilder(config, instances)


SLOW = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: slow, namespace: istio-system}
spec: {compiledAdapter: gate}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: count, namespace: istio-system}
spec:
  compiledTemplate: metric
  params: {value: "1", dimensions: {code: response.code | 0}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: everything, namespace: istio-system}
spec:
  actions: [{handler: slow, instances: [count]}]
"""


@pytest.fixture
async def slow() -> AsyncIterator[Runtime]:
    GATE.open = asyncio.Event()
    GATE.received = 0
    rt = await _runtime(SLOW, {"gate": Info("gate", "holds reports", ("metric",), _gate_builder)})
    yield rt
    GATE.open.set()
    await rt.close()


def _batch(n: int) -> Any:
    return _message({"httpLogs": {"logEntry": [_http_entry(200) for _ in range(n)]}})


@pytest.mark.parametrize("drop", ["oldest", "newest"])
async def test_a_slow_handler_gets_bounded_backpressure_and_counted_drops(slow: Runtime, drop: str) -> None:
    svc = AccessLogService(slow.dispatcher, queue_entries=10, batch_entries=5, enqueue_timeout=0.1, drop=drop)
    state = StreamState()
    before = _dropped(slow, "queue_full")
    waits = []
    for _ in range(6):  # 30 entries: 5 in flight (held), 10 queued, 15 dropped
        start = time.monotonic()
        await svc.accept(state, _batch(5))
        waits.append(time.monotonic() - start)
        await asyncio.sleep(0)  # let the worker take the first batch
    assert _dropped(slow, "queue_full") - before == 15
    assert svc.queued == 10
    # The three readers whose entries were dropped waited for room for the whole enqueue timeout
    # first (a lower bound on elapsed time holds on any machine); none waited unboundedly (the
    # upper bound is generous: a loaded machine may be slow to resume a reader, not to time out).
    assert sorted(waits)[-3] >= 0.09  # (the event loop may fire a timer a hair early)
    assert max(waits) < 2.0
    GATE.open.set()
    assert await svc.flush(5)
    assert GATE.received == 15  # nothing lost silently: 15 dispatched + 15 counted as dropped
    await svc.aclose()


async def test_waiting_readers_proceed_as_soon_as_there_is_room(slow: Runtime) -> None:
    svc = AccessLogService(slow.dispatcher, queue_entries=5, batch_entries=5, enqueue_timeout=5)
    state = StreamState()
    before = _dropped(slow, "queue_full")
    await svc.accept(state, _batch(5))
    await asyncio.sleep(0)
    await svc.accept(state, _batch(5))  # fills the queue
    blocked = asyncio.create_task(svc.accept(state, _batch(5)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    GATE.open.set()
    await asyncio.wait_for(blocked, 2)
    assert await svc.flush(5)
    assert GATE.received == 15
    assert _dropped(slow, "queue_full") == before
    await svc.aclose()


async def test_aclose_flushes_within_its_bound_and_counts_the_rest(slow: Runtime) -> None:
    svc = AccessLogService(slow.dispatcher, queue_entries=100, batch_entries=5, flush_timeout=0.1)
    state = StreamState()
    before = _dropped(slow, "shutdown")
    for _ in range(3):
        await svc.accept(state, _batch(5))
        await asyncio.sleep(0)
    start = time.monotonic()
    await svc.aclose()
    assert time.monotonic() - start < 1.0
    assert _dropped(slow, "shutdown") - before == 15  # 5 in flight + 10 queued
    await svc.accept(state, _batch(2))  # after close: counted, not queued
    assert _dropped(slow, "shutdown") - before == 17
    assert svc.queued == 0


async def test_aclose_delivers_what_is_queued(slow: Runtime) -> None:
    GATE.open.set()
    svc = AccessLogService(slow.dispatcher, batch_entries=7)
    state = StreamState()
    before = slow.metrics.value("mixerd_report_batches_total", {"api": "accesslog"})
    for _ in range(5):
        await svc.accept(state, _batch(3))
    await svc.aclose()
    assert GATE.received == 15
    # Whole messages, at most 7 entries per batch: 3+3, 3+3, 3.
    assert slow.metrics.value("mixerd_report_batches_total", {"api": "accesslog"}) - before == 3
