"""``mixerd serve --workers 2`` against ``--workers 1``, and the cost of shared memquota counters.

Report: the stock Istio telemetry config (bench_report_stock's attribute sets, batches of 100)
sent with h2load (C, 64 connections so the kernel spreads them evenly over the workers: with 16,
one worker sometimes got 62% of the requests, which caps the ratio at 1.6x; a few percent of
one core) to the same server started with ``--workers 1`` and then ``--workers 2``. The figure
is attribute sets per wall-clock second from the first request until every set is counted on
the supervisor's merged ``/metrics`` and the report queues are empty, in rounds alternating
between the two. Goal: 2 workers >= 1.6x one on a 2-core machine.

On a 2-core machine the load generator, the supervisor and whatever else runs share the cores
with the workers, so each run also measures where the CPU went (from /proc: each worker, the
supervisor, h2load, and the machine's busy time, the rest of which is other processes): the CPU
per attribute set in a worker against the one process of ``--workers 1``, how the kernel spread
the connections' requests over the workers (the run lasts as long as the busiest worker), and
the ceiling this machine can show: two workers on every core h2load and the supervisor leave, at
the CPU per set they measured, against one worker on one core. h2load is not pinned to a core:
it uses a few percent of one, which the ceiling accounts for, and pinning it would only choose
which worker it competes with.

memquota: one allocation in process (``MemQuotaHandler.handle_quota``) against the same through
the supervisor's counters (``SharedMemQuotaHandler`` -> Unix socket -> ``QuotaOwner`` in another
process), one at a time (latency) and 64 in flight (throughput).

    python benchmarks/bench_workers.py [--requests N] [--rounds N] [--connections N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (
    CONFORMANCE,
    MIXERD,
    cpu_seconds,
    free_port,
    grpc_frame,
    h2load,
    start,
    stop,
    summary_row,
    table,
)
from bench_report_stock import PODS, STOCK, attribute_set, metric

from mixerd.adapter import Env, InstanceInfo, QuotaArgs, SystemClock
from mixerd.adapters.memquota import INFO as MEMQUOTA
from mixerd.adapters.memquota.shared import SHARED_SERVICE, QuotaClient
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.templates import QuotaInstance

SETS = 100


@dataclass
class Served:
    """One run: attribute sets per wall second, and where the CPU went."""

    workers: int
    sets: int
    wall: float
    worker_cpu: list[float]
    worker_requests: list[float]
    supervisor_cpu: float
    h2load_cpu: float
    machine_busy: float

    @property
    def rate(self) -> float:
        return self.sets / self.wall

    @property
    def us_per_set(self) -> float:
        return sum(self.worker_cpu) / self.sets * 1e6

    @property
    def others(self) -> float:
        """Cores used by processes not in this benchmark (other work on the machine)."""
        ours = sum(self.worker_cpu) + self.supervisor_cpu + self.h2load_cpu
        return max(0.0, self.machine_busy - ours) / self.wall


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (h2load, once it has exited)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def debug_workers(mon: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{mon}/debug/workers", timeout=10) as r:
        return list(json.loads(r.read())["workers"])


def served(tmp: Path, config: Path, body: Path, requests: int, workers: int, clients: int) -> Served:
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
        # --workers 1 serves in the one process; with more, the supervisor's children are the workers.
        pids = [int(w["pid"]) for w in debug_workers(mon)] if workers > 1 else [proc.pid]
        served0 = [float(w["requests"]) for w in debug_workers(mon)] if workers > 1 else [0.0]
        before = metric(metrics_url, "mixerd_report_attribute_sets_total")
        cpu0 = [cpu_seconds(pid) for pid in pids]
        sup0, h2l0, busy0 = cpu_seconds(proc.pid), children_cpu(), machine_busy()
        t0 = time.monotonic()
        result = h2load(url, body, requests=requests, clients=clients, streams=4)
        h2l = children_cpu() - h2l0
        expected = before + result.succeeded * SETS
        while metric(metrics_url, "mixerd_report_attribute_sets_total") < expected:
            time.sleep(0.05)
        while metric(metrics_url, 'mixerd_report_queued{api="mixer"}') > 0:
            time.sleep(0.05)
        wall = time.monotonic() - t0
        cpu = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        sup = cpu_seconds(proc.pid) - sup0 if workers > 1 else 0.0
        busy = machine_busy() - busy0
        if workers > 1:
            requests_by = [float(w["requests"]) - r for w, r in zip(debug_workers(mon), served0, strict=True)]
        else:
            requests_by = [float(result.succeeded)]
        if not result.ok:
            raise RuntimeError(f"--workers {workers}: {result.requests - result.succeeded} requests failed")
        return Served(workers, result.succeeded * SETS, wall, cpu, requests_by, sup, h2l, busy)
    finally:
        stop(proc)


def explain(one: Served, two: Served) -> tuple[float, float, list[str]]:
    """The ratio this machine can show at most when quiet, the ratio the CPU this run left the
    workers allows, and the lines that say where they come from."""
    cores = os.cpu_count() or 1
    c1, c2 = one.us_per_set, two.us_per_set
    h2_1, h2_2 = one.h2load_cpu / one.wall, two.h2load_cpu / two.wall
    sup2 = two.supervisor_cpu / two.wall
    # Quiet machine: one worker can use one core (less what h2load leaves it); two workers share
    # every core with h2load and the supervisor.
    t1 = min(1.0, cores - h2_1) / c1
    t2 = min(float(two.workers), cores - h2_2 - sup2) / c2
    share = max(two.worker_requests) / max(1.0, sum(two.worker_requests))
    ceiling = t2 / t1
    used1 = sum(one.worker_cpu) / one.wall
    used2 = sum(two.worker_cpu) / two.wall
    allowed = used2 / used1 * c1 / c2
    lines = [
        f"CPU per attribute set in the workers: --workers 1 {c1:.1f} us, --workers 2 {c2:.1f} us "
        f"({c2 / c1 - 1:+.0%})",
        f"cores used: --workers 1: worker {used1:.2f}, h2load {h2_1:.2f}, other processes {one.others:.2f}; "
        f"--workers 2: workers {' + '.join(f'{c / two.wall:.2f}' for c in two.worker_cpu)}, supervisor "
        f"{sup2:.3f}, h2load {h2_2:.2f}, other processes {two.others:.2f}",
        f"connections' requests per worker: {' / '.join(f'{r:,.0f}' for r in two.worker_requests)} "
        f"(the busiest has {share:.0%}: if both had the same CPU, at most {1 / share:.2f}x)",
        f"ceiling on a quiet {cores}-core machine: ({cores} cores - h2load {h2_2:.2f} - supervisor {sup2:.3f}) "
        f"at {c2:.1f} us per set, against one worker on min(1, {cores} - {h2_1:.2f}) core at {c1:.1f} us: "
        f"{ceiling:.2f}x",
        f"what this run left the workers: {used2:.2f} cores with 2 workers, {used1:.2f} with 1 "
        f"(load average {os.getloadavg()[0]:.1f}): {allowed:.2f}x expected from CPU alone",
    ]
    return ceiling, allowed, lines


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
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds [default: %(default)s]")
    ap.add_argument("--connections", type=int, default=64, help="h2load connections [default: %(default)s]")
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

    runs: dict[int, list[Served]] = {1: [], 2: []}
    for r in range(args.rounds):  # alternating, so both see the same machine
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            runs[workers].append(served(tmp, config, body, args.requests, workers, args.connections))
    print(
        f"Report, stock telemetry config, batches of {SETS} attribute sets (h2load, {args.connections} "
        f"connections x 4 streams), {args.rounds} alternating rounds:"
    )
    ratios = [t.rate / o.rate for o, t in zip(runs[1], runs[2], strict=True)]
    print(
        table(
            [(w, " ".join(f"{x.rate:,.0f}" for x in rs), f"{statistics.median(x.rate for x in rs):,.0f}",
              " ".join(f"{x.us_per_set:.1f}" for x in rs)) for w, rs in runs.items()],
            ["workers", "sets/s per round", "median", "worker CPU us/set per round"],
        )
    )  # fmt: skip
    ratio = statistics.median(ratios)
    i = ratios.index(sorted(ratios)[len(ratios) // 2])  # the median round, explained
    ceiling, allowed, lines = explain(runs[1][i], runs[2][i])
    print(f"  --workers 2 / --workers 1: {ratio:.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"  where the CPU went (round {i + 1}):")
    for line in lines:
        print(f"    {line}")
    print(
        f"  goal --workers 2 >= 1.6x --workers 1: {'met' if ratio >= 1.6 else 'NOT met'} (ceiling here {ceiling:.2f}x)"
    )

    rows = asyncio.run(memquota(tmp, args.seconds))
    print("\nmemquota allocation (rolling window, 100 dimension sets):")
    print(table(rows, ["counters", "us per allocation", "allocations/s"]))
    shutil.rmtree(tmp, ignore_errors=True)
    summary_row(
        "Throughput per machine: --workers 2 / --workers 1",
        f"{ratio:.2f}x (CPU left by other processes allowed {allowed:.2f}x; quiet-machine ceiling {ceiling:.2f}x)",
        ">= 1.6x",
        ratio >= 1.6,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
