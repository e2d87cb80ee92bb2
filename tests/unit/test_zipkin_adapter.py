"""The zipkin adapter: span conversion (tests/data/zipkin_spans.yaml), sampling, config
validation, and the handler's batching, timeouts and drops against a collector on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2
from mixerd.adapter import Env
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.zipkin import (
    INFO,
    ZipkinHandler,
    otlp_request,
    parse_config,
    sampled,
    span_of,
    tags_of,
    zipkin_json,
)
from mixerd.attribute import parse_ip
from mixerd.templates import TraceSpanInstance

DATA = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "zipkin_spans.yaml").read_text())
CASES: list[dict[str, Any]] = DATA["cases"]


def instance(fields: dict[str, Any]) -> TraceSpanInstance:
    f = dict(fields)
    for t in ("start_time", "end_time"):
        if t in f:
            f[t] = dt.datetime.fromisoformat(f[t].replace("Z", "+00:00"))
    for ip in ("source_ip", "destination_ip"):
        if ip in f:
            f[ip] = parse_ip(f[ip])
    return TraceSpanInstance(name="span.instance.istio-system", **f)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_span_conversion(case: dict[str, Any]) -> None:
    span = span_of(instance(case["instance"]))
    if "zipkin" in case and case["zipkin"] is None:
        assert span is None
        return
    assert span is not None
    (z,) = json.loads(zipkin_json([span]))
    if "zipkin" in case:
        assert {k: v for k, v in z.items() if k != "tags"} == case["zipkin"]
    if "tags" in case:
        assert z["tags"] == case["tags"] == dict(tags_of(span))
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(otlp_request([span]))
    (rs,) = req.resource_spans
    (ss,) = rs.scope_spans
    (o,) = ss.spans
    want = case.get("otlp", {})
    for field in ("trace_id", "span_id", "parent_span_id"):
        if field in want:
            assert getattr(o, field).hex() == want[field], field
    if "kind" in want:
        assert trace_pb2.Span.SpanKind.Name(o.kind) == want["kind"]
    for field in ("start_time_unix_nano", "end_time_unix_nano"):
        if field in want:
            assert getattr(o, field) == want[field]
    if "service" in want:
        assert rs.resource.attributes[0].key == "service.name"
        assert rs.resource.attributes[0].value.string_value == want["service"]
    if "events" in want:
        assert [e.name for e in o.events] == want["events"]
    if "status" in want:
        assert [trace_pb2.Status.StatusCode.Name(o.status.code), o.status.message] == want["status"]
    if "attributes" in want:
        got = {}
        for kv in o.attributes:
            got[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
        assert got == pytest.approx(want["attributes"])


@pytest.mark.parametrize(("prefix", "probability", "expected"), DATA["sampling"])
def test_sampling_by_trace_id(prefix: str, probability: float, expected: bool) -> None:
    assert sampled(bytes.fromhex(prefix + "0" * 16), probability) is expected


def test_spans_of_two_endpoints_are_two_otlp_resources() -> None:
    a = span_of(instance({"trace_id": "01", "span_id": "02", "destination_name": "a"}))
    b = span_of(instance({"trace_id": "01", "span_id": "03", "destination_name": "b"}))
    c = span_of(instance({"trace_id": "01", "span_id": "04", "destination_name": "a"}))
    assert a and b and c
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(otlp_request([a, b, c]))
    assert [
        (rs.resource.attributes[0].value.string_value, [s.span_id.hex() for s in rs.scope_spans[0].spans])
        for rs in req.resource_spans
    ] == [("a", ["0000000000000002", "0000000000000004"]), ("b", ["0000000000000003"])]


U = "http://z/api/v2/spans"
CONFIG_ERRORS = [
    ({}, ["url: required"]),
    ({"url": "zipkin:9411"}, ["url: expected an http:// or https:// URL with a host"]),
    ({"url": U, "sampleProbability": 1.5}, ["sampleProbability: must be between 0 and 1 inclusive"]),
    (
        {"url": U, "exportFormat": "thrift"},
        ["exportFormat: expected one of ZIPKIN_JSON, OTLP_PROTOBUF, got 'thrift'"],
    ),
    (
        {"url": U, "maxQueueSize": 0, "timeout": "0s"},
        ["timeout: must be greater than zero", "maxQueueSize: must be >= 1, got 0"],
    ),
    ({"url": U, "endpoint": "x"}, ["endpoint: unknown field"]),
    ({"url": "https://z:9411/api/v2/spans", "sampleProbability": 1, "exportFormat": "OTLP_PROTOBUF"}, []),
]


@pytest.mark.parametrize(("config", "errors"), CONFIG_ERRORS)
def test_config_validation(config: dict[str, Any], errors: list[str]) -> None:
    assert [str(e) for e in parse_config(config)[1]] == errors


# --- the handler against a collector on loopback -----------------------------------------------


class Collector:
    """An HTTP endpoint taking POSTed spans; ``status`` and ``hang`` (answer only at close) shape
    its answers."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.status = 202
        self.hang = False
        self._release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hang:
            await self._release.wait()
        self.bodies.append((request.headers.get("Content-Type", ""), body))
        self.arrived.set()
        return web.Response(status=self.status)

    async def start(self) -> Collector:
        app = web.Application()
        app.router.add_post("/api/v2/spans", self._post)
        app.router.add_post("/v1/traces", self._post)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        async def enough() -> None:
            while len(self.bodies) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)

    async def close(self) -> None:
        self._release.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = await Collector().start()
    yield c
    await c.close()


SPAN = {"trace_id": "463ac35c9f6413ad48485a3953bb6124", "span_id": "0102030405060708", "span_name": "GET /"}


def handler(config: dict[str, Any], drops: list[tuple[int, str]]) -> ZipkinHandler:
    parsed, errors = parse_config({"sampleProbability": 1.0, **config})
    assert not errors
    return ZipkinHandler(parsed, Env("z.handler.istio-system", on_drop=lambda n, r: drops.append((n, r))))


async def test_spans_are_posted_in_batches_of_max_batch_size(collector: Collector) -> None:
    drops: list[tuple[int, str]] = []
    h = handler({"url": collector.url + "/api/v2/spans", "maxBatchSize": 2, "flushInterval": "10s"}, drops)
    h.handle_tracespan([instance({**SPAN, "span_id": f"{i:016x}"}) for i in range(1, 6)])
    await collector.wait(2)  # two full batches go at once; the fifth waits for the interval or close
    await h.close()
    assert [(ct, [s["id"] for s in json.loads(body)]) for ct, body in collector.bodies] == [
        ("application/json", ["0000000000000001", "0000000000000002"]),
        ("application/json", ["0000000000000003", "0000000000000004"]),
        ("application/json", ["0000000000000005"]),
    ]
    assert (h.sent, h.posts, drops) == (5, 3, [])


async def test_otlp_export(collector: Collector) -> None:
    drops: list[tuple[int, str]] = []
    h = handler(
        {"url": collector.url + "/v1/traces", "exportFormat": "OTLP_PROTOBUF", "flushInterval": "10ms"}, drops
    )
    h.handle_tracespan([instance(SPAN)])
    await collector.wait(1)
    await h.close()
    ((ct, body),) = collector.bodies
    assert ct == "application/x-protobuf"
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert req.resource_spans[0].scope_spans[0].spans[0].name == "GET /"


async def test_a_full_queue_and_unparsable_ids_drop_spans_counted() -> None:
    drops: list[tuple[int, str]] = []
    h = handler({"url": "http://127.0.0.1:9/api/v2/spans", "maxQueueSize": 2, "flushInterval": "10s"}, drops)
    h.handle_tracespan([instance(SPAN), instance(SPAN), instance(SPAN), instance({**SPAN, "trace_id": "zz"})])
    assert drops == [(1, "queue_full"), (1, "bad_id")]
    assert h.queued == 2
    h.flush_timeout = 0.0
    await h.close()  # nothing listens on port 9: the two queued spans are lost, and counted
    assert sum(n for n, _ in drops) == 4


async def test_a_failing_or_slow_collector_drops_the_batch(collector: Collector) -> None:
    drops: list[tuple[int, str]] = []
    collector.status = 500
    h = handler({"url": collector.url + "/api/v2/spans", "flushInterval": "10ms"}, drops)
    h.handle_tracespan([instance(SPAN)])
    await collector.wait(1)
    await h.close()
    assert drops == [(1, "send_failed")] and h.sent == 0

    drops.clear()
    collector.status, collector.hang = 202, True
    h = handler({"url": collector.url + "/api/v2/spans", "flushInterval": "10ms", "timeout": "50ms"}, drops)
    h.handle_tracespan([instance(SPAN), instance(SPAN)])

    async def dropped() -> None:
        while not drops:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(dropped(), 10)
    await h.close()
    assert drops == [(2, "send_failed")]


async def test_an_unreachable_collector_and_close_count_what_is_lost() -> None:
    drops: list[tuple[int, str]] = []
    h = handler({"url": "http://127.0.0.1:9/api/v2/spans", "flushInterval": "10s"}, drops)
    h.flush_timeout = 0.0
    h.handle_tracespan([instance(SPAN)])
    await h.close()
    assert sum(n for n, _ in drops) == 1 and {r for _, r in drops} <= {"shutdown", "send_failed"}
    h.handle_tracespan([instance(SPAN)])  # after close
    assert drops[-1] == (1, "shutdown")


async def test_probability_zero_exports_nothing_as_in_mixer() -> None:
    drops: list[tuple[int, str]] = []
    h = handler({"url": "http://127.0.0.1:9/api/v2/spans", "sampleProbability": 0}, drops)
    h.handle_tracespan([instance(SPAN)])
    assert h.queued == 0 and drops == []
    await h.close()


async def test_the_harness_builds_it_from_a_tracespan_instance(collector: Collector) -> None:
    harness = AdapterHarness(
        INFO,
        {"url": collector.url + "/api/v2/spans", "sampleProbability": 1, "flushInterval": "10ms"},
        {
            "span": (
                "tracespan",
                {
                    "traceId": 'request.headers["x-b3-traceid"]',
                    "spanId": 'request.headers["x-b3-spanid"]',
                    "spanName": "request.path",
                    "httpStatusCode": "response.code",
                    "clientSpan": "false",
                    "rewriteClientSpanId": "false",
                },
            )
        },
    )
    await harness.report(
        "span",
        [
            {
                "request.headers": {
                    "x-b3-traceid": "0af7651916cd43dd8448eb211c80319c",
                    "x-b3-spanid": "b7ad6b7169203331",
                },
                "request.path": "/x",
                "response.code": 503,
            }
        ],
    )
    await collector.wait(1)
    await harness.close()
    (z,) = json.loads(collector.bodies[0][1])
    assert (z["traceId"], z["id"], z["name"], z["tags"]["census.status_code"]) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "/x",
        "UNAVAILABLE",
    )
    with pytest.raises(HarnessConfigError, match="url: required"):
        AdapterHarness(INFO, {}, {})
