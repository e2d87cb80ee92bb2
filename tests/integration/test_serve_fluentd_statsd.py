"""`mixerd serve` as a real process with the fluentd, statsd and dogstatsd adapters found through
their entry points: Mixer API reports reach a forward-protocol receiver and StatsD/DogStatsD
listeners on 127.0.0.1, and `mixerd validate` accepts the config."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.attribute import IPAddress
from tests.support.fluent_forward import EventTime, ForwardReceiver
from tests.support.udp_listener import UdpListener

from .mixerd_proc import start_mixerd


def test_the_adapters_are_entry_points() -> None:
    installed = {ep.name for ep in entry_points(group="mixerd.adapters")}
    assert {"fluentd", "statsd", "dogstatsd"} <= installed, "reinstall mixerd (make install)"


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
      url: request.path | ""
      sourceIp: source.ip | ip("0.0.0.0")
      latency: response.duration | "0ms"
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requestcount, namespace: istio-system}}
spec:
  compiledTemplate: metric
  params: {{value: "1", dimensions: {{code: response.code | 200}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: fluent, namespace: istio-system}}
spec:
  compiledAdapter: fluentd
  params: {{address: "{fluentd}", pushIntervalDuration: 20ms}}
---
apiVersion: config.istio.io/v1alpha2
kind: statsd
metadata: {{name: statsd, namespace: istio-system}}
spec:
  address: "{statsd}"
  flushDuration: 20ms
  metrics:
    requestcount.instance.istio-system: {{type: COUNTER, nameTemplate: "requests.{{{{.code}}}}"}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: datadog, namespace: istio-system}}
spec:
  compiledAdapter: dogstatsd
  params:
    address: "{dogstatsd}"
    metrics:
      requestcount.instance.istio-system: {{name: requests, type: COUNTER}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: telemetry, namespace: istio-system}}
spec:
  actions:
  - {{handler: fluent, instances: [accesslog]}}
  - {{handler: statsd.statsd, instances: [requestcount]}}
  - {{handler: datadog, instances: [requestcount]}}
"""


async def test_serve_sends_reports_to_fluentd_statsd_and_dogstatsd(tmp_path: Path) -> None:
    async with ForwardReceiver() as fluent, UdpListener() as statsd, UdpListener() as dogstatsd:
        config = tmp_path / "config.yaml"
        config.write_text(
            CONFIG.format(fluentd=fluent.address, statsd=statsd.address, dogstatsd=dogstatsd.address)
        )
        validate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mixerd.cli.main", "validate", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
        mixerd = await asyncio.to_thread(start_mixerd, tmp_path, [config])
        try:
            status = await asyncio.to_thread(mixerd.http, "/readyz")
            assert status.startswith("ready"), status
            when = dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
            sets = [
                {
                    "request.time": when,
                    "request.path": f"/p/{i}",
                    "response.code": 200 + i,
                    "response.duration": dt.timedelta(milliseconds=3),
                    "source.ip": IPAddress(bytes([127, 0, 0, 9])),
                }
                for i in range(2)
            ]

            def report() -> None:
                with grpc.insecure_channel(mixerd.grpc_address) as channel:
                    mixer_pb2_grpc.MixerStub(channel).Report(build_report_request(sets), timeout=5)

            await asyncio.to_thread(report)
            events = await fluent.wait_events(2, timeout=10)
            assert [(e.tag, e.time, e.record) for e in events] == [
                (
                    "accesslog.instance.istio-system",
                    EventTime(1614834367, 0),
                    {"latency": "3ms", "severity": "Info", "sourceIp": "127.0.0.9", "url": f"/p/{i}"},
                )
                for i in range(2)
            ]
            assert sorted(await statsd.wait_lines(2, timeout=10)) == ["requests.200:1|c", "requests.201:1|c"]
            assert sorted(await dogstatsd.wait_lines(2, timeout=10)) == [
                "istio.requests:1|c|#code:200",
                "istio.requests:1|c|#code:201",
            ]
        finally:
            assert await asyncio.to_thread(mixerd.stop) == 0, mixerd.log()
