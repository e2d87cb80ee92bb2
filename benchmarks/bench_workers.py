"""``mixerd serve --workers 2`` against ``--workers 1``, and the cost of shared memquota counters.

Report: the stock Istio telemetry config (bench_report_stock's attribute sets, batches of 100)
sent with h2load (C, 16 connections so the kernel spreads them over the workers, a few percent
of one core) to the same server started with ``--workers 1`` and then ``--workers 2``. The figure
is attribute sets per wall-clock second from the first request until every set is counted on
the supervisor's merged ``/metrics`` and the report queues are empty. Goal: 2 workers >= 1.6x
one on a 2-core machine.

memquota: one allocation in process (``MemQuotaHandler.handle_quota``) against the same through
the supervisor's counters (``SharedMemQuotaHandler`` -> Unix socket -> ``QuotaOwner`` in another
process), one at a time (latency) and 64 in flight (throughput).

    python benchmarks/bench_workers.py [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import CONFORMANCE, MIXERD, free_port, grpc_frame, h2load, start, stop, table
from bench_report_stock import PODS, STOCK, attribute_set, metric

from mixerd.adapter import Env, InstanceInfo, QuotaArgs, SystemClock
from mixerd.adapters.memquota import INFO as MEMQUOTA
from mixerd.adapters.memquota.shared import SHARED_SERVICE, QuotaClient
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.templates import QuotaInstance

SETS = 100


def served(tmp: Path, config: Path, body: Path, requests: int, workers: int) -> float:
    port, mon = free_port(), free_port()
    cmd = [*MIXERD, "serve", "--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
           "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", "",
           "--http-authz-address", "", "--console-store", "off", "--log-level", "warning",
           "--workers", str(workers)]  # fmt: skip
    proc = start(
        cmd, mon, log=tmp / f"mixerd-{workers}.log", env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)}
    )
    try:
        ready = f"http://127.0.0.1:{mon}/readyz"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"--workers {workers}: not ready after 60s")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Report"
        metrics_url = f"http://127.0.0.1:{mon}/metrics?adapters=0"
        h2load(url, body, requests=40, clients=16, streams=1)  # warm-up: every worker, every path
        time.sleep(0.5)
        before = metric(metrics_url, "mixerd_report_attribute_sets_total")
        t0 = time.monotonic()
        result = h2load(url, body, requests=requests, clients=16, streams=4)
        expected = before + result.succeeded * SETS
        while metric(metrics_url, "mixerd_report_attribute_sets_total") < expected:
            time.sleep(0.05)
        while metric(metrics_url, 'mixerd_report_queued{api="mixer"}') > 0:
            time.sleep(0.05)
        wall = time.monotonic() - t0
        if not result.ok:
            raise RuntimeError(f"--workers {workers}: {result.requests - result.succeeded} requests failed")
        return result.succeeded * SETS / wall
    finally:
        stop(proc)


OWNER = """
import asyncio, sys
from mixerd.adapters.memquota.shared import QuotaOwner
async def main():
    server = await QuotaOwner().serve(sys.argv[1])
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def memquota(tmp: Path, seconds: float) -> list[tuple[str, str, str]]:
    config = {"quotas": [{"name": "q", "maxAmount": 10**12, "validDuration": "1h"}]}
    infos = {"q": InstanceInfo("q", "quota")}
    local = MEMQUOTA.builder(config, infos).build(Env("local", clock=SystemClock()))
    items = [QuotaInstance("q", {"d": f"v{i}"}) for i in range(100)]
    args = QuotaArgs(amount=1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for item in items:
            local.handle_quota(item, args)  # type: ignore[attr-defined]
        n += len(items)
    local_us = (time.perf_counter() - t0) / n * 1e6

    path = str(tmp / "quota.sock")
    owner = subprocess.Popen([sys.executable, "-c", OWNER, path], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == b"ready"
        client = QuotaClient(path)
        shared = MEMQUOTA.builder(config, infos).build(
            Env("shared", clock=SystemClock(), services={SHARED_SERVICE: client})
        )
        for item in items:  # connect, warm up
            await shared.handle_quota(item, args)  # type: ignore[attr-defined]
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for item in items:
                await shared.handle_quota(item, args)  # type: ignore[attr-defined]
            n += len(items)
        one_us = (time.perf_counter() - t0) / n * 1e6
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await asyncio.gather(*(shared.handle_quota(items[i % 100], args) for i in range(64)))  # type: ignore[attr-defined]
            n += 64
        many_us = (time.perf_counter() - t0) / n * 1e6
        await client.aclose()
    finally:
        owner.terminate()
        owner.wait()
    return [
        ("in process (one worker)", f"{local_us:.1f}", f"{1e6 / local_us:,.0f}"),
        ("shared, 1 in flight", f"{one_us:.1f}", f"{1e6 / one_us:,.0f}"),
        ("shared, 64 in flight", f"{many_us:.1f}", f"{1e6 / many_us:,.0f}"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=600, help="Report requests of 100 sets [default: %(default)s]"
    )
    ap.add_argument(
        "--seconds", type=float, default=2.0, help="seconds per memquota case [default: %(default)s]"
    )
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-workers-"))
    config = tmp / "config"
    config.mkdir()
    for name in STOCK:
        shutil.copyfile(CONFORMANCE / "stock-telemetry-config" / "rendered" / name, config / name)
    body = tmp / "report.bin"
    body.write_bytes(
        grpc_frame(build_report_request([attribute_set(i) for i in range(SETS)]).SerializeToString())
    )

    one = served(tmp, config, body, args.requests, 1)
    two = served(tmp, config, body, args.requests, 2)
    print("Report, stock telemetry config, batches of 100 attribute sets (h2load, 16 connections):")
    print(
        table(
            [("1", f"{one:,.0f}", "1.00x"), ("2", f"{two:,.0f}", f"{two / one:.2f}x")],
            ["workers", "sets/s", "vs 1"],
        )
    )
    print(f"  goal --workers 2 >= 1.6x --workers 1: {'met' if two / one >= 1.6 else 'NOT met'}")

    rows = asyncio.run(memquota(tmp, args.seconds))
    print("\nmemquota allocation (rolling window, 100 dimension sets):")
    print(table(rows, ["counters", "us per allocation", "allocations/s"]))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
