"""A slow report adapter must not slow the proxy (issue 13 §4).

Two ``mixerd serve`` processes run the same config: every report (Mixer API Report and Envoy
access-log entries) goes through one rule to a metric instance handled by an *out-of-process*
adapter (Mixer's gRPC adapter model, ``HandleMetricService``) served by this script in its own
process. One adapter answers at once ("fast"), the other sleeps ``--delay`` (100 ms) per call
("slow"): one call per dispatched batch, as Mixer made them. Nothing else differs.

(1) Mixer Report, below the queue's bound: h2load (h2c, rate-limited with ``--rps``) sends
    Reports of 10 attribute sets at ``--rate`` requests/s to each server, rounds alternating
    between fast and slow; p50/p99 of the Report latency h2load sees (medians over the rounds)
    and the ratio slow / fast (goal: within 10 %).
(2) Envoy access logs, below the bound: a real Envoy (1 worker) proxies HTTP/1.1 requests to an
    nginx upstream and streams its access log (``envoy.access_loggers.http_grpc``) to mixerd;
    h2load (``--h1 --rps``) measures the request latency through Envoy, fast vs slow.
(3) Past the bound, for ``--overload-seconds``: Reports of 100 sets paced at 1.5x what the slow
    server's dispatch drains (one batch of at most 1,000 sets per ``--delay``), the same offered
    load to both servers (h2load keeps sending while answers wait, up to 256 in flight). The slow
    server's queue (50,000 sets) fills, Reports wait for room for at most the enqueue timeout (1 s,
    the default), then the oldest queued sets are dropped and counted
    (``mixerd_report_dropped_total``). Printed: the queue's peak, the longest Report against the
    fast server's under the same load (the difference is what the slow adapter added: goal at most
    the enqueue timeout), the sets received, dispatched and dropped (they must add up). Then HTTP
    through Envoy as fast as h2load can: the access-log queue fills, mixerd stops reading the
    stream, and Envoy drops on its side (its ``logs_dropped`` counter) without slowing requests.

    python benchmarks/bench_slow_adapter.py [--delay 0.1] [--rate 200] [--rounds 5] [--seconds 4]
                                            [--overload-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(1, str(ROOT))  # tests.integration's Envoy and nginx launchers

import yaml  # noqa: E402
from _util import (  # noqa: E402
    MIXERD,
    cpu_seconds,
    free_port,
    grpc_frame,
    h2load_latencies,
    need,
    percentile,
    scrape,
    start,
    stop,
    summary_row,
    table,
)

from mixerd.api.mixer_v1.client import build_report_request  # noqa: E402
from tests.integration.envoy_proc import EnvoyProcess, start_envoy  # noqa: E402
from tests.integration.nginx_proc import NginxProcess, start_nginx  # noqa: E402

ENQUEUE_TIMEOUT = 1.0
"""mixerd's default: seconds a Report (or an access-log stream) waits for room in the queue."""

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {{name: backend, namespace: istio-system}}
spec:
  description: a metrics backend reached over Mixer's gRPC adapter model
  session_based: false
  templates: [metric]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: backend, namespace: istio-system}}
spec:
  adapter: backend
  connection: {{address: "127.0.0.1:{port}", timeout: 5s}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requests, namespace: istio-system}}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      source: source.workload.name | "unknown"
      destination: destination.service.host | request.host | "unknown"
      method: request.method | "unknown"
      code: response.code | 0
      protocol: context.protocol | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: all-reports, namespace: istio-system}}
spec:
  actions: [{{handler: backend, instances: [requests]}}]
"""


def attribute_set(i: int) -> dict[str, Any]:
    return {
        "source.workload.name": f"productpage-v{i % 3}",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "request.method": "GET",
        "request.path": f"/reviews/{i % 50}",
        "request.headers": {":path": f"/reviews/{i % 50}", "x-request-id": f"r-{i:012d}"},
        "response.code": (200, 200, 404, 503)[i % 4],
        "context.protocol": "http",
    }


# --- the adapter ----------------------------------------------------------------------------------


async def serve_adapter(port: int, delay: float) -> None:
    """An out-of-process metric adapter that takes ``delay`` seconds per call; on SIGTERM it
    prints how many calls and instances it received."""
    import signal

    import grpc

    from mixerd._proto.mixer.adapter.model.v1beta1 import report_pb2
    from mixerd._proto.mixer.template.metric import template_handler_service_pb2_grpc as metric_grpc

    counts = {"calls": 0, "instances": 0}
    done = report_pb2.ReportResult()

    class Backend(metric_grpc.HandleMetricServiceServicer):  # type: ignore[misc]
        async def HandleMetric(self, request: Any, context: Any) -> Any:  # gRPC method name
            counts["calls"] += 1
            counts["instances"] += len(request.instances)
            if delay:
                await asyncio.sleep(delay)
            return done

    server = grpc.aio.server()
    metric_grpc.add_HandleMetricServiceServicer_to_server(Backend(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(0.5)
    print(f"adapter calls {counts['calls']} instances {counts['instances']}", flush=True)


@dataclass
class Server:
    name: str
    mixerd: subprocess.Popen[bytes]
    adapter: subprocess.Popen[bytes]
    adapter_log: Path
    grpc_port: int
    metrics_url: str
    envoy: EnvoyProcess | None = None
    envoy_url: str = ""

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_url)

    def wait_drained(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.metrics()
            if not any(v for k, v in m.items() if k.startswith("mixerd_report_queued{")):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the report queues did not drain in {timeout}s")

    def adapter_counts(self) -> tuple[int, int]:
        stop(self.adapter)
        words = self.adapter_log.read_text().split()
        i = words.index("calls")
        return int(words[i + 1]), int(words[i + 3])


def start_server(tmp: Path, name: str, delay: float, upstream_port: int) -> Server:
    adapter_port = free_port()
    adapter_log = tmp / f"adapter-{name}.log"
    adapter = start(
        [sys.executable, __file__, "--serve-adapter", str(adapter_port), "--delay", str(delay)],
        adapter_port,
        log=adapter_log,
    )
    config = tmp / f"config-{name}"
    config.mkdir()
    data = resources.files("mixerd.attribute")
    for i, manifest in enumerate(("istio-attributes.yaml", "mixerd-attributes.yaml")):
        (config / f"0{i}-{manifest}").write_text(data.joinpath("data", manifest).read_text("utf-8"))
    (config / "10-reports.yaml").write_text(CONFIG.format(port=adapter_port))
    port, mon = free_port(), free_port()
    cmd = [*MIXERD, "serve", "--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
           "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", "",
           "--http-authz-address", "", "--console-store", "off", "--log-level", "warning"]  # fmt: skip
    mixerd = start(cmd, port, log=tmp / f"mixerd-{name}.log")
    server = Server(name, mixerd, adapter, adapter_log, port, f"http://127.0.0.1:{mon}/metrics?adapters=0")
    admin, listener = free_port(), free_port()
    server.envoy = start_envoy(
        tmp / f"envoy-{name}", envoy_config(admin, listener, port, upstream_port), admin, concurrency=1
    )
    server.envoy_url = f"http://127.0.0.1:{listener}/bench"
    return server


def envoy_config(admin: int, listener: int, mixerd: int, upstream: int) -> str:
    t = "type.googleapis.com/envoy.extensions."

    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    def cluster(name: str, port: int, http2: bool) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": address(port)}}]}]},
        }  # fmt: skip
        if http2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": t + "upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        return c

    hcm = {
        "@type": t + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "access_log": [{
            "name": "envoy.access_loggers.http_grpc",
            "typed_config": {
                "@type": t + "access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": "ingress", "transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd"}},
                    "buffer_flush_interval": "0.1s",
                },
            },
        }],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": t + "filters.http.router.v3.Router"}}],
    }  # fmt: skip
    config = {
        "admin": {"address": address(admin)},
        "node": {"id": "bench", "cluster": "bench"},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": address(listener), "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [cluster("mixerd", mixerd, True), cluster("upstream", upstream, False)],
        },
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=False)


def static_upstream(tmp: Path) -> tuple[NginxProcess, int]:
    port = free_port()
    conf = f"""
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; location / {{ return 200 "ok\\n"; }} }}
}}
"""
    return start_nginx(tmp / "upstream", conf, port), port


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Run:
    sent: int
    ok: int
    seconds: float
    latencies: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 0.50) * 1e3

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1e3

    @property
    def max_ms(self) -> float:
        return (self.latencies[-1] if self.latencies else float("nan")) * 1e3


def h2load(url: str, log: Path, *, clients: int, args: list[str], body: Path | None = None) -> Run:
    import re

    cmd = [need("h2load", "nghttp2-client"), "-t", "1", "-c", str(clients), "--log-file", str(log), *args]
    if body is not None:
        cmd += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    log.unlink(missing_ok=True)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=600).stdout
    fin = re.search(r"finished in ([\d.]+)(m?s)", out)
    req = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if not (fin and req and codes):
        raise RuntimeError("could not read h2load's output:\n" + out)
    seconds = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    return Run(int(req.group(1)), min(int(req.group(2)), int(codes.group(1))), seconds, h2load_latencies(log))


def report_url(s: Server) -> str:
    return f"http://127.0.0.1:{s.grpc_port}/istio.mixer.v1.Mixer/Report"


def steady(
    servers: list[Server], tmp: Path, body: Path, args: argparse.Namespace, als: bool
) -> dict[str, list[Run]]:
    """Rate-limited rounds alternating between the servers."""
    clients = 4
    per_client = max(1, round(args.rate / clients))
    n = per_client * clients * int(args.seconds)
    runs: dict[str, list[Run]] = {s.name: [] for s in servers}
    for r in range(args.rounds):
        for s in servers[:: 1 if r % 2 == 0 else -1]:
            log = tmp / f"lat-{s.name}.tsv"
            if als:
                run = h2load(
                    s.envoy_url, log, clients=clients, args=["--h1", "-n", str(n), "--rps", str(per_client)]
                )
            else:
                run = h2load(report_url(s), log, clients=clients, body=body,
                             args=["-n", str(n), "-m", "1", "--rps", str(per_client)])  # fmt: skip
            runs[s.name].append(run)
    return runs


def counted(m: dict[str, float], prefix: str, labels: tuple[str, ...]) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix) and all(x in k for x in labels))


def envoy_dropped(url: str) -> float:
    """Access-log entries Envoy dropped on its side (its gRPC access logger's buffer was full)."""
    if not url:
        return 0.0
    return sum(v for k, v in scrape(url).items() if "grpc_access_log_logs_dropped" in k)


def dropped(m: dict[str, float], api: str) -> float:
    return sum(
        v for k, v in m.items() if k.startswith("mixerd_report_dropped_total{") and f'api="{api}"' in k
    )


def overload(
    s: Server, tmp: Path, body: Path, sets_per_request: int, seconds: float, als: bool, rate: float
) -> dict[str, Any]:
    """Reports at ``rate`` sets/s, access logs as fast as h2load can, for ``seconds``; then wait
    for the queues to drain and account."""
    api = "accesslog" if als else "mixer"
    before = s.metrics()
    envoy_url = f"http://127.0.0.1:{s.envoy.admin_port}/stats/prometheus" if s.envoy else ""
    envoy0 = envoy_dropped(envoy_url)
    cpu0 = cpu_seconds(s.mixerd.pid)
    log = tmp / f"over-{s.name}-{api}.tsv"
    peak = [0.0]
    running = threading.Event()
    running.set()

    def watch() -> None:  # the queue's peak, read every 100 ms while the load runs
        gauge = f'mixerd_report_queued{{api="{api}"}}'
        while running.is_set():
            peak[0] = max(peak[0], s.metrics().get(gauge, 0.0))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        if als:
            run = h2load(s.envoy_url, log, clients=16, args=["--h1", "-D", f"{seconds:g}"])
        else:  # paced, up to 256 in flight: the same offered load to both servers
            per_client = f"{math.ceil(rate / sets_per_request / 8)}"
            run = h2load(report_url(s), log, clients=8, body=body,
                         args=["-m", "32", "--rps", per_client, "-D", f"{seconds:g}"])  # fmt: skip
    finally:
        running.clear()
        watcher.join()
    s.wait_drained()
    time.sleep(0.5)  # Envoy's last access-log flush
    s.wait_drained()
    after = s.metrics()
    if als:
        key, labels = "mixerd_accesslog_entries_total{", ()
    else:  # what mixerd answered OK (h2load -D does not count the requests in flight at the end)
        key, labels = "mixerd_requests_total{", ('api="mixer"', 'method="Report"', 'code="OK"')
    received = (counted(after, key, labels) - counted(before, key, labels)) * sets_per_request
    return {
        "run": run,
        "sent": run.ok * sets_per_request,
        "received": received,
        "dispatched": after.get("mixerd_report_attribute_sets_total", 0.0)
        - before.get("mixerd_report_attribute_sets_total", 0.0),
        "dropped": dropped(after, api) - dropped(before, api),
        "envoy_dropped": envoy_dropped(envoy_url) - envoy0,
        "peak": peak[0],
        "cpu": cpu_seconds(s.mixerd.pid) - cpu0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--delay", type=float, default=0.1, help="seconds the slow adapter takes per call [%(default)s]"
    )
    ap.add_argument("--rate", type=float, default=200, help="requests/s of the steady runs [%(default)s]")
    ap.add_argument(
        "--rounds", type=int, default=5, help="alternating steady rounds per server [%(default)s]"
    )
    ap.add_argument("--seconds", type=float, default=4, help="seconds per steady round [%(default)s]")
    ap.add_argument("--overload-seconds", type=float, default=15, help="seconds of overload [%(default)s]")
    ap.add_argument("--serve-adapter", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_adapter:
        asyncio.run(serve_adapter(args.serve_adapter, args.delay))
        return 0
    need("h2load", "nghttp2-client")

    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-slow-"))
    small, big = tmp / "report-10.bin", tmp / "report-100.bin"
    small.write_bytes(
        grpc_frame(build_report_request([attribute_set(i) for i in range(10)]).SerializeToString())
    )
    big.write_bytes(
        grpc_frame(build_report_request([attribute_set(i) for i in range(100)]).SerializeToString())
    )
    stoppers: list[Any] = []
    servers: list[Server] = []
    try:
        upstream, upstream_port = static_upstream(tmp)
        stoppers.append(upstream.stop)
        for name, delay in (("fast", 0.0), ("slow", args.delay)):
            s = start_server(tmp, name, delay, upstream_port)
            servers.append(s)
            # warm-up: every path once, and make sure reports reach the adapter
            h2load(report_url(s), tmp / "warm.tsv", clients=1, body=small, args=["-n", "50"])
            h2load(s.envoy_url, tmp / "warm.tsv", clients=1, args=["--h1", "-n", "50"])
            s.wait_drained()
        load0 = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} CPUs, load average {load0:.1f}; adapter delay {args.delay * 1e3:.0f} ms "
              f"per call (slow) and 0 (fast); mixerd defaults: Mixer queue 50,000 sets in batches of 1,000, "
              f"access-log queue 10,000 entries in batches of 100, enqueue timeout {ENQUEUE_TIMEOUT:g} s")  # fmt: skip

        for label, als in (("Mixer API Report (10 sets per request, h2c)", False),
                           ("HTTP through Envoy, access log streamed to mixerd", True)):  # fmt: skip
            runs = steady(servers, tmp, small, args, als)
            rows, med = [], {}
            for s in servers:
                p50 = statistics.median(r.p50_ms for r in runs[s.name])
                p99 = statistics.median(r.p99_ms for r in runs[s.name])
                med[s.name] = (p50, p99)
                rounds = "  ".join(f"{r.p50_ms:.2f}/{r.p99_ms:.2f}" for r in runs[s.name])
                ok = sum(r.ok for r in runs[s.name])
                sent = sum(r.sent for r in runs[s.name])
                rows.append((s.name, f"{p50:.2f}", f"{p99:.2f}", rounds, f"{ok}/{sent}"))
            print(f"\n{label}, {args.rate:g} req/s, {args.rounds} alternating rounds of {args.seconds:g} s "
                  f"(load average {os.getloadavg()[0]:.1f}):")  # fmt: skip
            print(table(rows, ("adapter", "p50 ms", "p99 ms", "rounds p50/p99", "2xx")))
            r50, r99 = med["slow"][0] / med["fast"][0], med["slow"][1] / med["fast"][1]
            met = r50 <= 1.1 and r99 <= 1.1 and all(r.ok == r.sent for rs in runs.values() for r in rs)
            print(
                f"  slow / fast: p50 {r50:.2f}, p99 {r99:.2f} (goal: both <= 1.10): {'met' if met else 'NOT met'}"
            )
            summary_row(
                f"slow adapter (100 ms/batch): {'access-log' if als else 'Report'} latency slow / fast",
                f"p50 {r50:.2f}, p99 {r99:.2f}",
                "<= 1.10",
                met,
            )

        drain = 1_000 / args.delay  # the slow server's dispatch: one batch of at most 1,000 sets per call
        print(f"\npast the queue's bound, {args.overload_seconds:g} s: Reports of 100 sets at "
              f"{drain * 1.5:,.0f} sets/s "
              f"(1.5x what the slow adapter drains; h2load 8 connections paced, up to 32 streams each); "
              f"HTTP through Envoy as fast as h2load can (16 connections)")  # fmt: skip
        rows = []
        over: dict[tuple[str, bool], dict[str, Any]] = {}
        for label, als, body, sets in (
            ("Report, 100 sets", False, big, 100),
            ("access log via Envoy", True, big, 1),
        ):
            for s in servers:
                o = over[s.name, als] = overload(s, tmp, body, sets, args.overload_seconds, als, drain * 1.5)
                run: Run = o["run"]
                o["adds_up"] = o["dispatched"] + o["dropped"] == o["received"]
                rows.append((label, s.name, f"{run.ok / run.seconds:,.0f}", f"{run.p50_ms:.1f}", f"{run.p99_ms:.1f}",
                             f"{run.max_ms:.0f}", f"{o['peak']:,.0f}", f"{o['received']:,.0f}",
                             f"{o['dispatched']:,.0f}", f"{o['dropped']:,.0f}",
                             f"{o['envoy_dropped']:,.0f}" if als else "-",
                             "yes" if o["adds_up"] else "NO"))  # fmt: skip
        print(table(rows, ("load", "adapter", "req/s", "p50 ms", "p99 ms", "max ms", "queue peak", "received",
                           "dispatched", "dropped (mixerd)", "dropped (Envoy)", "adds up")))  # fmt: skip
        slow = over["slow", False]
        run = slow["run"]
        bound = slow["peak"] >= 50_000 - 1_000 - 100 * 256  # full, less what one take and the waiting hold
        fast_max = over["fast", False]["run"].max_ms
        added = run.max_ms - fast_max  # beyond what the same load costs with a fast adapter
        met = added <= ENQUEUE_TIMEOUT * 1e3 * 1.1 and bound and all(o["adds_up"] for o in over.values())
        print(f"  slow adapter, Reports: queue peak {slow['peak']:,.0f} of 50,000 sets; longest Report "
              f"{run.max_ms:.0f} ms against {fast_max:.0f} ms with the fast adapter: {added:+.0f} ms (enqueue timeout "
              f"{ENQUEUE_TIMEOUT * 1e3:.0f} ms); {slow['dropped']:,.0f} sets "
              f"dropped and counted; received = dispatched + dropped on every server and path: "
              f"{'yes' if all(o['adds_up'] for o in over.values()) else 'NO'}")  # fmt: skip
        summary_row(
            "slow adapter past the queue's bound: longest Report vs fast adapter, sets dropped (counted)",
            f"{run.max_ms:.0f} vs {fast_max:.0f} ms ({added:+.0f}); "
            f"{slow['dropped']:,.0f} of {slow['received']:,.0f} dropped",
            f"added wait <= enqueue timeout ({ENQUEUE_TIMEOUT:g} s); drops counted",
            met,
        )
        for s in servers:
            calls, instances = s.adapter_counts()
            print(f"  {s.name} adapter: {calls:,} calls, {instances:,} instances "
                  f"({instances / max(calls, 1):,.0f} per call)")  # fmt: skip
    finally:
        for s in servers:
            if s.envoy:
                s.envoy.stop()
            stop(s.mixerd)
            stop(s.adapter)
        for fn in reversed(stoppers):
            fn()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
