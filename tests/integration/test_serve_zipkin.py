"""`mixerd serve` as a real process with the zipkin adapter: a Mixer API Report's tracespan
instances reach a Zipkin JSON v2 collector and an OTLP/HTTP receiver, both served by the test on
127.0.0.1, and `mixerd validate` accepts the config."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import grpc
from aiohttp import web

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.attribute import IPAddress

from .mixerd_proc import start_mixerd

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: span, namespace: istio-system}}
spec:
  compiledTemplate: tracespan
  params:
    traceId: request.headers["x-b3-traceid"]
    spanId: request.headers["x-b3-spanid"]
    parentSpanId: request.headers["x-b3-parentspanid"] | ""
    spanName: request.path | "/"
    startTime: request.time
    endTime: response.time
    clientSpan: (context.reporter.kind | "inbound") == "outbound"
    rewriteClientSpanId: "false"
    destinationName: destination.workload.name | ""
    destinationIp: destination.ip | ip("0.0.0.0")
    httpStatusCode: response.code | 0
    spanTags:
      http.method: request.method | ""
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: zipkin, namespace: istio-system}}
spec:
  compiledAdapter: zipkin
  params: {{url: "{zipkin}", sampleProbability: 1.0, flushInterval: 20ms}}
---
apiVersion: config.istio.io/v1alpha2
kind: zipkin
metadata: {{name: otel, namespace: istio-system}}
spec: {{url: "{otlp}", sampleProbability: 1.0, exportFormat: OTLP_PROTOBUF, flushInterval: 20ms}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tracing, namespace: istio-system}}
spec:
  actions:
  - {{handler: zipkin, instances: [span]}}
  - {{handler: otel.zipkin, instances: [span]}}
"""


async def test_serve_exports_report_spans_to_zipkin_and_otlp(tmp_path: Path) -> None:
    received: dict[str, list[tuple[str, bytes]]] = {"/api/v2/spans": [], "/v1/traces": []}
    arrived = asyncio.Event()

    async def collect(request: web.Request) -> web.Response:
        received[request.path].append((request.headers.get("Content-Type", ""), await request.read()))
        arrived.set()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/v2/spans", collect)
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(zipkin=base + "/api/v2/spans", otlp=base + "/v1/traces"))
        validate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mixerd.cli.main", "validate", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
        mixerd = await asyncio.to_thread(start_mixerd, tmp_path, [config])
        try:
            start = dt.datetime(2021, 3, 4, 5, 6, 7, 250000, tzinfo=dt.UTC)
            sets = [
                {
                    "request.headers": {
                        "x-b3-traceid": "0af7651916cd43dd8448eb211c80319c",
                        "x-b3-spanid": "b7ad6b7169203331",
                        "x-b3-parentspanid": "05e3ac9a4f6e3b90",
                    },
                    "request.path": "/reviews/1",
                    "request.method": "GET",
                    "request.time": start,
                    "response.time": start + dt.timedelta(milliseconds=12),
                    "response.code": 503,
                    "destination.workload.name": "reviews-v1",
                    "destination.ip": IPAddress(bytes([10, 0, 0, 7])),
                }
            ]

            def report() -> None:
                with grpc.insecure_channel(mixerd.grpc_address) as channel:
                    mixer_pb2_grpc.MixerStub(channel).Report(build_report_request(sets), timeout=5)

            await asyncio.to_thread(report)

            async def both() -> None:
                while not (received["/api/v2/spans"] and received["/v1/traces"]):
                    arrived.clear()
                    await arrived.wait()

            await asyncio.wait_for(both(), 15)
        finally:
            assert await asyncio.to_thread(mixerd.stop) == 0, mixerd.log()
    finally:
        await runner.cleanup()

    ((ct, body),) = received["/api/v2/spans"]
    assert ct == "application/json"
    assert json.loads(body) == [
        {
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "id": "b7ad6b7169203331",
            "parentId": "05e3ac9a4f6e3b90",
            "kind": "SERVER",
            "name": "/reviews/1",
            "timestamp": 1614834367250000,
            "duration": 12000,
            "localEndpoint": {"serviceName": "reviews-v1", "ipv4": "10.0.0.7"},
            "annotations": [
                {"timestamp": 1614834367250000, "value": "Received 0 bytes"},
                {"timestamp": 1614834367262000, "value": "Sent 0 bytes"},
            ],
            "tags": {
                "http.method": "GET",
                "http.status_code": "503",
                "census.status_code": "UNAVAILABLE",
                "census.status_description": "UNAVAILABLE",
            },
        }
    ]
    ((ct, body),) = received["/v1/traces"]
    assert ct == "application/x-protobuf"
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    (rs,) = req.resource_spans
    assert [(a.key, a.value.string_value) for a in rs.resource.attributes] == [
        ("service.name", "reviews-v1"),
        ("net.host.ip", "10.0.0.7"),
    ]
    (span,) = rs.scope_spans[0].spans
    assert (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "05e3ac9a4f6e3b90",
        "/reviews/1",
    )
    assert span.end_time_unix_nano - span.start_time_unix_nano == 12_000_000
