"""Mixer API throughput: mixerd vs a bare grpc.aio server, same client (h2load), same run.

Check: a CheckRequest like an inbound Envoy sidecar sends (about 20 attributes, headers included),
through two rules (a deny rule that does not match, a noop check that does). Goal: mixerd >= 0.8x
the bare server's throughput.

Report: batches of 100 compressed attribute sets through a rule into the noop adapter (a metric
instance with 8 dimensions). Figure: attribute sets per second per server CPU-second.

    python benchmarks/bench_check.py [--requests N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util
import grpc
from _util import MIXERD, H2Load, cpu_seconds, free_port, grpc_frame, h2load, start, stop, table

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.attribute import IPAddress

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: blocked}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: nothing, namespace: istio-system}
spec: {compiledAdapter: noop}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: checkrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      source: source.workload.name | "unknown"
      destination: destination.workload.name | "unknown"
      destination_service: destination.service.host | "unknown"
      method: request.method | "unknown"
      response_code: response.code | 200
      protocol: context.protocol | "unknown"
      user: request.headers["x-user"] | "anonymous"
      reporter: conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions: [{handler: deny, instances: [checkrequest]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: check-all, namespace: istio-system}
spec:
  match: request.method == "GET" && request.path.startsWith("/api")
  actions: [{handler: nothing, instances: [checkrequest]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: count, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions: [{handler: nothing, instances: [requestcount]}]
"""


def attributes(i: int = 0) -> dict[str, object]:
    return {
        "source.uid": f"kubernetes://productpage-v1-{i % 7}.default",
        "source.ip": IPAddress.parse("10.1.2.3"),
        "source.workload.name": "productpage-v1",
        "source.namespace": "default",
        "destination.uid": "kubernetes://reviews-v2-5b8c.default",
        "destination.ip": IPAddress.parse("10.1.2.4"),
        "destination.port": 9080,
        "destination.workload.name": "reviews-v2",
        "destination.namespace": "default",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "request.headers": {
            ":authority": "reviews:9080",
            ":method": "GET",
            ":path": "/api/reviews/0",
            "user-agent": "curl/8.0",
            "x-request-id": f"5f0c7d3e-{i:08d}",
            "x-user": "alice",
            "accept": "*/*",
            "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        },
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": "/api/reviews/0",
        "request.useragent": "curl/8.0",
        "request.time": dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC),
        "request.size": 0,
        "response.code": 200,
        "response.size": 1234,
        "response.duration": dt.timedelta(milliseconds=7),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "connection.mtls": True,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=30000, help="Check requests per server [default: %(default)s]"
    )
    ap.add_argument("--report-requests", type=int, default=600, help="Report requests (x100 sets) per server")
    ap.add_argument(
        "--rounds", type=int, default=3, help="alternating Check rounds per server [default: %(default)s]"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-"))
    (tmp / "config").mkdir()
    (tmp / "config" / "bench.yaml").write_text(CONFIG)
    check_body = tmp / "check.bin"
    check_body.write_bytes(grpc_frame(build_check_request(attributes()).SerializeToString()))
    report_body = tmp / "report.bin"
    report_body.write_bytes(
        grpc_frame(build_report_request([attributes(i) for i in range(100)]).SerializeToString())
    )

    servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
    try:
        for name in ("bare grpc.aio", "mixerd"):
            port, mon = free_port(), free_port()
            if name == "mixerd":
                cmd = [*MIXERD, "serve", "--config", str(tmp / "config"), "--grpc-address", f"127.0.0.1:{port}",
                       "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", "",
                       "--http-authz-address", "", "--log-level", "warning"]  # fmt: skip
            else:
                cmd = [sys.executable, str(Path(__file__).parent / "_bare_mixer.py"), str(port)]
            servers[name] = (start(cmd, port, log=tmp / f"{name.split()[0]}.log"), port, mon)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # one real call: grpc-status must be OK
                resp = mixer_pb2_grpc.MixerStub(ch).Check(build_check_request(attributes()), timeout=5)
                assert resp.precondition.status.code == 0, resp
            h2load(
                f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Check", check_body, requests=2000
            )  # warm-up

        # Check: rounds alternate between the servers, so both see the same machine. Each round
        # also gives the server's CPU time per Check (from /proc): steadier than throughput when
        # other work shares the machine.
        runs: dict[str, list[H2Load]] = {name: [] for name in servers}
        cpu_us: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(args.rounds):
            for name in list(servers)[:: 1 if i % 2 == 0 else -1]:
                proc, port, _ = servers[name]
                cpu0 = cpu_seconds(proc.pid)
                runs[name].append(
                    h2load(
                        f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Check",
                        check_body,
                        requests=args.requests,
                    )
                )
                cpu_us[name].append((cpu_seconds(proc.pid) - cpu0) / args.requests * 1e6)
        # Report: attribute sets per server CPU-second, once mixerd's queue has drained.
        report_rate: dict[str, float] = {}
        for name, (proc, port, mon) in servers.items():
            cpu0 = cpu_seconds(proc.pid)
            before = queued_sets(mon) if name == "mixerd" else 0.0
            r = h2load(f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Report", report_body,
                       requests=args.report_requests, clients=2, streams=4)  # fmt: skip
            if name == "mixerd":
                while queued_sets(mon) < before + r.succeeded * 100:
                    time.sleep(0.05)
                while metric(mon, 'mixerd_report_queued{api="mixer"}') > 0:
                    time.sleep(0.05)
            report_rate[name] = r.succeeded * 100 / (cpu_seconds(proc.pid) - cpu0)
    finally:
        for proc, _, _ in servers.values():
            stop(proc)

    rows = []
    for name, checks in runs.items():
        median = statistics.median(c.rps for c in checks)
        cpu = cpu_us[name]
        rows.append((name, " ".join(f"{c.rps:,.0f}" for c in checks), f"{median:,.0f}",
                     " ".join(f"{c:,.0f}" for c in cpu), f"{statistics.median(cpu):,.0f}",
                     "yes" if all(c.ok for c in checks) else "NO", f"{report_rate[name]:,.0f}"))  # fmt: skip
    print(table(rows, ("server", "Check req/s per round", "median", "CPU us/Check per round", "median",
                       "all OK", "Report sets/CPU-s")))  # fmt: skip
    ratio = statistics.median(c.rps for c in runs["mixerd"]) / statistics.median(
        c.rps for c in runs["bare grpc.aio"]
    )
    print(f"\nCheck throughput ratio mixerd / bare (medians of {args.rounds} alternating rounds) = {ratio:.2f} "
          "(goal >= 0.80)")  # fmt: skip
    cpu_ratio = statistics.median(cpu_us["bare grpc.aio"]) / statistics.median(cpu_us["mixerd"])
    print(
        f"Check CPU per call, bare / mixerd (medians) = {cpu_ratio:.2f} (the same ratio measured as CPU cost)"
    )
    print(f"Report: {report_rate['mixerd']:,.0f} attribute sets per mixerd CPU-second through rules into noop "
          f"(the bare server, decoding nothing: {report_rate['bare grpc.aio']:,.0f})")  # fmt: skip
    _util.summary_row("Mixer API Check, mixerd / bare grpc.aio", f"{ratio:.2f}", ">= 0.85", ratio >= 0.85)
    _util.summary_row(
        "Mixer API Report, noop rule, sets per CPU-s", f"{report_rate['mixerd']:,.0f}", "-", None
    )
    return 0


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?adapters=0", timeout=5) as resp:
        m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", resp.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0


def queued_sets(port: int) -> float:
    return metric(port, "mixerd_report_attribute_sets_total")


if __name__ == "__main__":
    sys.exit(main())
