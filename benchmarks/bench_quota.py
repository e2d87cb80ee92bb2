"""Quota allocations per second: memquota in-process, redisquota against real Redis servers.

memquota: ``handle_quota`` called directly (it is synchronous), over 100 dimension sets, for a
rolling window and an allocation counter. redisquota: one handler (one connection pool of 10;
concurrent calls share round trips, see the handler) on a redis-server started for the run,
with 1 and with 64 requests in flight, for both algorithms; the single-flight run also gives
the latency of one call, and every run the CPU this process spent per allocation (the
handler's Python: the figure that bounds allocations per core). Then the fixed window on a
Redis Cluster of three primaries and through Sentinel (a primary, a replica, three Sentinels),
started with the tests' helpers (tests/support/redis_server.py).

    python benchmarks/bench_quota.py [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support.redis_server

import _util
from _util import free_port, need, start, stop, table

from mixerd.adapter import Env, QuotaArgs, SystemClock
from mixerd.adapters.memquota import INFO as MEMQUOTA
from mixerd.adapters.redisquota import INFO as REDISQUOTA

BIG = 10**12  # a limit never reached: every call does the full work of a grant


@dataclass(frozen=True)
class Instance:
    name: str
    dimensions: dict[str, Any] = field(default_factory=dict)


INSTANCES = [Instance("q", {"source": f"svc-{i}", "destination": "reviews", "code": 200}) for i in range(100)]


def bench_memquota(seconds: float) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, duration in (("rolling window 1s", "1s"), ("allocation counter", "0s")):
        config = {"quotas": [{"name": "q", "maxAmount": BIG, "validDuration": duration}]}
        handler = MEMQUOTA.builder(config, {}).build(Env("bench", clock=SystemClock()))
        args = QuotaArgs(1)
        calls = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for inst in INSTANCES:
                handler.handle_quota(inst, args)
            calls += len(INSTANCES)
        rows.append(("memquota", label, f"{calls / elapsed:,.0f}", "-"))
    return rows


async def _redis_run(
    address: str, algorithm: str, in_flight: int, seconds: float
) -> tuple[float, list[float], float]:
    """Allocations per second, each call's latency, and this process's CPU seconds per allocation."""
    quota = {"name": "q", "maxAmount": BIG, "validDuration": "60s", "bucketDuration": "1s"}
    config = {
        "quotas": [dict(quota, rateLimitAlgorithm=algorithm)],
        "redisServerUrl": address,
        "timeout": "1s",
    }
    env = Env("bench", clock=SystemClock())
    handler = REDISQUOTA.builder(config, {}).build(env)
    await handler.load_scripts()
    args = QuotaArgs(1)
    latencies: list[float] = []
    calls = 0

    async def one(inst: Instance) -> None:
        t = time.perf_counter()
        r = await handler.handle_quota(inst, args)
        latencies.append(time.perf_counter() - t)
        if r.amount != 1:
            raise RuntimeError(f"unexpected answer {r}")

    t0, cpu0 = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        batch = [INSTANCES[(calls + i) % len(INSTANCES)] for i in range(in_flight)]
        await asyncio.gather(*(one(inst) for inst in batch))
        calls += in_flight
    cpu = time.process_time() - cpu0
    await handler.close()
    await env.aclose()
    if handler.stats.failures:
        raise RuntimeError(f"{handler.stats.failures} redis calls failed")
    return calls / elapsed, latencies, cpu / calls


def _row(case: str, in_flight: int, rate: float, lat: list[float], cpu: float) -> tuple[str, str, str, str]:
    if in_flight == 1:
        q = statistics.quantiles(lat, n=100)
        case += f" (p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms)"
    return ("redisquota", case, f"{rate:,.0f}", f"{cpu * 1e6:.1f}")


def bench_redisquota(seconds: float) -> list[tuple[str, str, str, str]]:
    binary = need("redis-server", "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            port,
        )
        try:
            rows = []
            for algorithm in ("FIXED_WINDOW", "ROLLING_WINDOW"):
                for in_flight in (1, 64):
                    rate, lat, cpu = asyncio.run(
                        _redis_run(f"127.0.0.1:{port}", algorithm, in_flight, seconds)
                    )
                    rows.append(_row(f"{algorithm}, {in_flight} in flight", in_flight, rate, lat, cpu))
            return rows
        finally:
            stop(proc)


def bench_topologies(seconds: float) -> list[tuple[str, str, str, str]]:
    from tests.support.redis_server import RedisClusterServers, SentinelServers

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, servers in (
            ("cluster of 3 primaries", RedisClusterServers(Path(tmp) / "cluster")),
            ("through Sentinel", SentinelServers(Path(tmp) / "sentinel")),
        ):
            servers.start()
            try:
                for in_flight in (1, 64):
                    rate, lat, cpu = asyncio.run(_redis_run(servers.url, "FIXED_WINDOW", in_flight, seconds))
                    rows.append(
                        _row(f"{label}, FIXED_WINDOW, {in_flight} in flight", in_flight, rate, lat, cpu)
                    )
            finally:
                servers.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    opts = parser.parse_args()
    rows = bench_memquota(opts.seconds) + bench_redisquota(opts.seconds) + bench_topologies(opts.seconds)
    print(table(rows, ("adapter", "case", "allocations/s", "client CPU us/allocation")))
    r64 = {
        c.split(",")[0]: float(r.replace(",", ""))
        for a, c, r, *_ in rows
        if a == "redisquota" and c.startswith(("FIXED_WINDOW, 64", "ROLLING_WINDOW, 64"))
    }
    figure = " / ".join(f"{k} {v:,.0f}" for k, v in r64.items())
    _util.summary_row(
        "redisquota allocations/s, 64 in flight",
        figure,
        ">= 30,000",
        bool(r64) and min(r64.values()) >= 30000,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
