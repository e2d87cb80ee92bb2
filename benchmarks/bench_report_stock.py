"""Report ingestion with the stock Istio telemetry config (prometheus + kubernetesenv).

Batches of 100 compressed attribute sets, shaped like an Envoy sidecar's (inbound and outbound
HTTP between known pods, TCP), are sent with h2load to ``mixerd serve`` running the rendered
stock config unchanged (kubernetesenv reads a static pods file). The figure is attribute sets per
second per CPU-second of the server process, measured once the report queue has drained.
Istio published 0.6 vCPU per 1,000 requests/s for Mixer's telemetry: about 1,700 per vCPU-second.
Goal (issue 13): 40,000.

Then the same batches run in-process under cProfile: the top functions show what the remaining
cost is.

    python benchmarks/bench_report_stock.py [--requests N] [--no-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import pstats
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util
from _util import CONFORMANCE, MIXERD, REPO, cpu_seconds, free_port, grpc_frame, h2load, start, stop

from mixerd.api.mixer_v1.client import build_report_request
from mixerd.attribute import IPAddress

PODS = REPO / "tests" / "data" / "pods.yaml"
STOCK = ("attributemanifests.yaml", "handlers.yaml", "instances.yaml", "rules.yaml")
SOURCES = ("kubernetes://productpage-v1-6b746f74dc-9stvs.default", "kubernetes://debug-shell.tools", "")
DESTINATIONS = ("kubernetes://reviews-v2-7d7b8c9f4c-x2x7p.default", "kubernetes://ratings-0.default")


def attribute_set(i: int) -> dict[str, Any]:
    t = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC) + dt.timedelta(milliseconds=i)
    common: dict[str, Any] = {
        "source.uid": SOURCES[i % 3],
        "destination.uid": DESTINATIONS[i % 2],
        "source.ip": IPAddress.parse("10.44.0.11"),
        "destination.ip": IPAddress.parse("10.44.1.7"),
        "destination.port": 9080,
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.service.namespace": "default",
        "context.reporter.kind": "inbound" if i % 4 else "outbound",
        "connection.mtls": bool(i % 2),
        "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "destination.principal": "cluster.local/ns/default/sa/bookinfo-reviews",
    }
    if i % 10 == 9:
        return {
            **common,
            "context.protocol": "tcp",
            "connection.event": ("open", "continue", "close")[i % 3],
            "connection.sent.bytes": 1000 + i,
            "connection.received.bytes": 200 + i,
        }
    return {
        **common,
        "context.protocol": "http",
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": f"/reviews/{i % 50}",
        "request.useragent": "python-requests/2.22.0",
        "request.headers": {
            ":authority": "reviews:9080",
            ":path": f"/reviews/{i % 50}",
            ":method": "GET",
            "x-request-id": f"8c7e2f8a-5f1f-4a8e-9a47-{i:012d}",
            "user-agent": "python-requests/2.22.0",
            "x-b3-traceid": f"{i:032x}",
        },
        "request.time": t,
        "response.time": t + dt.timedelta(milliseconds=7),
        "request.size": 100 + i % 7,
        "response.size": 1500 + i % 13,
        "response.code": (200, 200, 200, 404, 503)[i % 5],
        "response.duration": dt.timedelta(milliseconds=3 + i % 40),
        "context.proxy_error_code": "-",
    }


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def served(tmp: Path, config: Path, body: Path, requests: int) -> tuple[float, float, int]:
    port, mon = free_port(), free_port()
    cmd = [*MIXERD, "serve", "--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
           "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", f"127.0.0.1:{free_port()}",
           "--http-authz-address", "", "--log-level", "warning"]  # fmt: skip
    proc = start(cmd, port, log=tmp / "mixerd.log", env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)})
    try:
        url = f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Report"
        metrics_url = f"http://127.0.0.1:{mon}/metrics?adapters=0"
        h2load(url, body, requests=20, clients=1, streams=1)  # warm-up
        time.sleep(0.5)
        before = metric(metrics_url, "mixerd_report_attribute_sets_total")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        result = h2load(url, body, requests=requests, clients=2, streams=4)
        expected = before + result.succeeded * 100
        while metric(metrics_url, "mixerd_report_attribute_sets_total") < expected:
            time.sleep(0.05)
        while metric(metrics_url, 'mixerd_report_queued{api="mixer"}') > 0:
            time.sleep(0.05)
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        errors = metric(metrics_url, "mixerd_report_errors_total")
        return result.succeeded * 100 / cpu, result.succeeded * 100 / wall, int(errors)
    finally:
        stop(proc)


async def in_process(config: Path, batches: int) -> tuple[float, str]:
    import os

    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(PODS)
    from mixerd.api.mixer_v1.decode import decode_report
    from mixerd.config import FileStore
    from mixerd.runtime import Runtime

    runtime = Runtime(FileStore([config], resync_interval=None, watch_events=False))
    await runtime.start()
    request = build_report_request([attribute_set(i) for i in range(100)])
    wanted = runtime.dispatcher.report_attributes()  # as the server decodes: what the config reads
    for _ in range(20):
        await runtime.dispatcher.report(decode_report(request, wanted=wanted))
    profiler = cProfile.Profile()
    t0 = time.process_time()
    profiler.enable()
    for _ in range(batches):
        await runtime.dispatcher.report(decode_report(request, wanted=wanted))
    profiler.disable()
    cpu = time.process_time() - t0
    await runtime.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return batches * 100 / cpu, out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=400, help="Report requests of 100 sets [default: %(default)s]"
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the in-process profile")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-report-"))
    config = tmp / "config"
    config.mkdir()
    for name in STOCK:
        shutil.copyfile(CONFORMANCE / "stock-telemetry-config" / "rendered" / name, config / name)
    body = tmp / "report.bin"
    body.write_bytes(
        grpc_frame(build_report_request([attribute_set(i) for i in range(100)]).SerializeToString())
    )

    per_cpu, per_wall, errors = served(tmp, config, body, args.requests)
    print("stock telemetry config, batches of 100 compressed attribute sets over gRPC (h2load):")
    print(
        f"  {per_cpu:,.0f} attribute sets per server CPU-second ({per_wall:,.0f}/s wall); report errors: {errors}"
    )
    print(
        f"  Mixer (Istio's published 0.6 vCPU per 1,000 rps): about 1,700 per vCPU-second -> {per_cpu / 1700:.1f}x"
    )
    print(f"  goal >= 40,000: {'met' if per_cpu >= 40000 else 'NOT met'}")
    if not args.no_profile:
        rate, profile = asyncio.run(in_process(config, 200))
        print(f"\nin-process (decode + dispatch, no gRPC), under cProfile: {rate:,.0f} sets per CPU-second")
        print(profile)
    _util.summary_row(
        "Report, stock Istio telemetry config, sets per CPU-s",
        f"{per_cpu:,.0f}",
        ">= 40,000",
        per_cpu >= 40000,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
