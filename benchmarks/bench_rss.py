"""Memory of ``mixerd serve`` with the stock Istio telemetry config, idle and after 1,000,000 reports.

The server runs the rendered stock telemetry config unchanged (prometheus and kubernetesenv, the
pods of ``tests/data/pods.yaml``), as ``bench_report_stock.py`` does. Its resident set size
(VmRSS) is read idle (ready, nothing received), then at checkpoints while ``--sets`` attribute
sets arrive at a steady rate: Mixer Report requests of 100 attribute sets each (Envoy/Istio
sidecars batched their reports the same way), sent by h2load paced with ``--rps``; each
checkpoint's requests are one body whose sets differ from the other checkpoints' (request ids,
paths, times), the services and pods are the same few (a steady mesh: the prometheus series are
bounded by the label values, not by the traffic). At each checkpoint the queue has drained
before RSS is read. Goal: no growth after the first checkpoint beyond ``--allowed-growth`` MiB.

    python benchmarks/bench_rss.py [--sets 1000000] [--checkpoints 5] [--rate 8000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (
    CONFORMANCE,
    MIXERD,
    cpu_seconds,
    free_port,
    grpc_frame,
    h2load,
    rss_kib,
    scrape,
    start,
    stop,
    summary_row,
    table,
)
from bench_report_stock import PODS, STOCK, attribute_set

from mixerd.api.mixer_v1.client import build_report_request

SETS = 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=1_000_000, help="attribute sets in all [%(default)s]")
    ap.add_argument("--checkpoints", type=int, default=5, help="RSS readings along the way [%(default)s]")
    ap.add_argument("--rate", type=float, default=8000, help="attribute sets per second [%(default)s]")
    ap.add_argument(
        "--allowed-growth",
        type=float,
        default=8.0,
        help="MiB of growth after the first checkpoint [%(default)s]",
    )
    args = ap.parse_args()
    per_checkpoint = args.sets // SETS // args.checkpoints
    clients = 4
    rps = max(1, round(args.rate / SETS / clients))

    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-rss-"))
    config = tmp / "config"
    config.mkdir()
    for name in STOCK:
        shutil.copyfile(CONFORMANCE / "stock-telemetry-config" / "rendered" / name, config / name)
    port, mon = free_port(), free_port()
    cmd = [*MIXERD, "serve", "--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
           "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", f"127.0.0.1:{free_port()}",
           "--http-authz-address", "", "--log-level", "warning"]  # fmt: skip
    proc = start(cmd, port, log=tmp / "mixerd.log", env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)})
    metrics_url = f"http://127.0.0.1:{mon}/metrics?adapters=0"
    url = f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Report"
    rows: list[tuple[object, ...]] = []
    readings: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mon}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mixerd not ready after 60 s")
            time.sleep(0.1)
        time.sleep(1.0)
        idle = rss_kib(proc.pid)
        rows.append(("idle", "0", f"{idle / 1024:.1f}", "", "", "", f"{os.getloadavg()[0]:.1f}"))
        print(
            f"stock telemetry config; Report requests of {SETS} sets, h2load {clients} connections "
            f"paced at {rps} requests/s each ({rps * clients * SETS:,} sets/s); RSS idle {idle / 1024:.1f} MiB",
            flush=True,
        )
        sent = 0
        for c in range(args.checkpoints):
            body = tmp / f"report-{c}.bin"
            offset = c * 1_000
            bags = [attribute_set(offset + i) for i in range(SETS)]
            body.write_bytes(grpc_frame(build_report_request(bags).SerializeToString()))
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            result = h2load(url, body, requests=per_checkpoint, clients=clients, streams=1,
                            extra=["--rps", str(rps)])  # fmt: skip
            if not result.ok:
                raise RuntimeError(f"checkpoint {c + 1}: {result.requests - result.succeeded} Reports failed")
            while scrape(metrics_url).get('mixerd_report_queued{api="mixer"}', 0.0) > 0:
                time.sleep(0.1)
            wall, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
            sent += result.succeeded * SETS
            rss = rss_kib(proc.pid)
            readings.append(rss)
            m = scrape(metrics_url)
            dropped = sum(v for k, v in m.items() if k.startswith("mixerd_report_dropped_total{"))
            rows.append((f"{c + 1}", f"{sent:,}", f"{rss / 1024:.1f}",
                         f"{(rss - (readings[-2] if len(readings) > 1 else idle)) / 1024:+.1f}",
                         f"{result.succeeded * SETS / wall:,.0f} ({cpu / wall:.0%} CPU)", f"{dropped:.0f}",
                         f"{os.getloadavg()[0]:.1f}"))  # fmt: skip
            print(f"  checkpoint {c + 1}: {sent:,} sets, RSS {rss / 1024:.1f} MiB", flush=True)
        errors = scrape(metrics_url).get("mixerd_report_errors_total", 0.0)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, ("checkpoint", "sets", "RSS MiB", "change", "sets/s (server CPU)", "dropped", "load")))
    growth = (readings[-1] - readings[0]) / 1024
    met = growth <= args.allowed_growth
    print(
        f"RSS idle {idle / 1024:.1f} MiB, after {sent:,} sets {readings[-1] / 1024:.1f} MiB; growth after the "
        f"first checkpoint {growth:+.1f} MiB (goal <= {args.allowed_growth:g} MiB): {'met' if met else 'NOT met'}; "
        f"report errors {errors:.0f}"
    )
    summary_row(
        f"RSS, stock config: idle / after {sent / 1e6:g}M reports",
        f"{idle / 1024:.0f} / {readings[-1] / 1024:.0f} MiB (growth after {per_checkpoint * SETS:,}: "
        f"{growth:+.1f} MiB)",
        f"no growth beyond bounded caches (<= {args.allowed_growth:g} MiB)",
        met,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
