"""Mixer-style config through the runtime to real local receivers: log entries to a Fluentd
forward-protocol receiver (TCP), metrics to a StatsD and a DogStatsD listener (UDP), all on
127.0.0.1. The adapters' Info objects are passed to the runtime explicitly (they are entry points
of the package once it is installed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mixerd.adapter import load_adapters
from mixerd.adapters.dogstatsd import INFO as DOGSTATSD_INFO
from mixerd.adapters.fluentd import INFO as FLUENTD_INFO
from mixerd.adapters.statsd import INFO as STATSD_INFO
from mixerd.attribute import DictBag, IPAddress
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime
from tests.support.fluent_forward import EventTime, ForwardReceiver
from tests.support.udp_listener import UdpListener

ADAPTERS = {**load_adapters(), "fluentd": FLUENTD_INFO, "statsd": STATSD_INFO, "dogstatsd": DOGSTATSD_INFO}

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    timestamp: request.time
    variables:
      method: request.method | ""
      url: request.path | ""
      responseCode: response.code | 0
      latency: response.duration | "0ms"
      sourceIp: source.ip | ip("0.0.0.0")
      destination: destination.service.host | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requestcount, namespace: istio-system}}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      destination: destination.service.host | "unknown"
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requestduration, namespace: istio-system}}
spec:
  compiledTemplate: metric
  params:
    value: response.duration | "0ms"
    dimensions:
      destination: destination.service.host | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: fluentd
metadata: {{name: handler, namespace: istio-system}}
spec:
  address: "{fluentd}"
  pushIntervalDuration: 20ms
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: statsd, namespace: istio-system}}
spec:
  compiledAdapter: statsd
  params:
    address: "{statsd}"
    prefix: mesh
    flushDuration: 20ms
    metrics:
      requestcount.instance.istio-system:
        type: COUNTER
        nameTemplate: "requests.{{{{.destination}}}}.{{{{.code}}}}"
      requestduration.instance.istio-system:
        type: DISTRIBUTION
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: datadog, namespace: istio-system}}
spec:
  compiledAdapter: dogstatsd
  params:
    address: "{dogstatsd}"
    globalTags: {{mesh: test}}
    metrics:
      requestcount.instance.istio-system: {{name: request.count, type: COUNTER}}
      requestduration.instance.istio-system: {{name: request.duration, type: DISTRIBUTION}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: telemetry, namespace: istio-system}}
spec:
  match: context.protocol == "http"
  actions:
  - handler: handler.fluentd
    instances: [accesslog]
  - handler: statsd
    instances: [requestcount, requestduration]
  - handler: datadog
    instances: [requestcount, requestduration]
"""

T0 = dt.datetime(2020, 5, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)


async def test_reports_reach_fluentd_statsd_and_dogstatsd(tmp_path: Path) -> None:
    async with ForwardReceiver() as fluent, UdpListener() as statsd, UdpListener() as dogstatsd:
        text = CONFIG.format(fluentd=fluent.address, statsd=statsd.address, dogstatsd=dogstatsd.address)
        parsed = parse_text(text)
        assert not parsed.errors, parsed.errors
        runtime = Runtime(MemoryStore(parsed.resources), adapters=ADAPTERS)
        await runtime.start()
        try:
            assert not runtime.status.errors, runtime.status.errors
            bags = [
                DictBag(
                    {
                        "context.protocol": "http",
                        "request.time": T0,
                        "request.method": "GET",
                        "request.path": f"/reviews/{i}",
                        "response.code": 200 if i else 503,
                        "response.duration": dt.timedelta(milliseconds=10 + i),
                        "source.ip": IPAddress(bytes([10, 0, 0, 7])),
                        "destination.service.host": "reviews",
                    }
                )
                for i in range(3)
            ]
            await runtime.dispatcher.report(bags)
            events = await fluent.wait_events(3)
            assert [e.tag for e in events] == ["accesslog.instance.istio-system"] * 3
            assert all(e.time == EventTime(1588334400, 250000000) for e in events)
            assert events[0].record == {
                "destination": "reviews",
                "latency": "10ms",
                "method": "GET",
                "responseCode": 503,
                "severity": "Info",
                "sourceIp": "10.0.0.7",
                "url": "/reviews/0",
            }
            assert sorted(await statsd.wait_lines(6)) == sorted(
                [
                    "mesh.requests.reviews.503:1|c",
                    "mesh.requests.reviews.200:1|c",
                    "mesh.requests.reviews.200:1|c",
                    "mesh.requestduration.instance.istio-system:10|ms",
                    "mesh.requestduration.instance.istio-system:11|ms",
                    "mesh.requestduration.instance.istio-system:12|ms",
                ]
            )
            assert sorted(await dogstatsd.wait_lines(6)) == sorted(
                [
                    "istio.request.count:1|c|#mesh:test,code:503,destination:reviews",
                    "istio.request.count:1|c|#mesh:test,code:200,destination:reviews",
                    "istio.request.count:1|c|#mesh:test,code:200,destination:reviews",
                    "istio.request.duration:10.000000|ms|#mesh:test,destination:reviews",
                    "istio.request.duration:11.000000|ms|#mesh:test,destination:reviews",
                    "istio.request.duration:12.000000|ms|#mesh:test,destination:reviews",
                ]
            )
        finally:
            await runtime.close()
        assert fluent.errors == []


async def test_fluentd_drops_while_unreachable_are_in_the_runtime_metrics() -> None:
    async with ForwardReceiver() as fluent:
        address = fluent.address
    # nothing listens on `address` any more: entries wait, then the queue overflows
    text = CONFIG.split("---\napiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {{name: statsd")[
        0
    ]
    text = text.replace("pushIntervalDuration: 20ms", "pushIntervalDuration: 20ms\n  instanceBufferSize: 2")
    text += (
        "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {{name: logs, namespace: istio-system}}\n"
        "spec:\n  actions: [{{handler: handler.fluentd, instances: [accesslog]}}]\n"
    )
    parsed = parse_text(text.format(fluentd=address))
    assert not parsed.errors, parsed.errors
    runtime = Runtime(MemoryStore(parsed.resources), adapters=ADAPTERS)
    await runtime.start()
    try:
        assert not runtime.status.errors, runtime.status.errors
        await runtime.dispatcher.report([DictBag({"request.time": T0}) for _ in range(5)])
        labels = {"handler": "handler.fluentd.istio-system", "reason": "queue_full"}
        assert runtime.metrics.value("mixerd_adapter_dropped_total", labels) == 3
    finally:
        await runtime.close()
