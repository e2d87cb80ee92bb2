"""Check latency under load through Envoy: p50/p99 at 50 % and 90 % of the measured maximum.

Envoy (1 worker) with the ext_authz filter (gRPC) in front of an nginx upstream asks either
``mixerd serve`` (the policy of ``bench_ext_authz.py``: a listchecker whitelist, a header deny
rule, a header operation and a memquota quota on every request) or a bare grpc.aio server that
allows everything. For each: the maximum throughput (h2load ``--h1``, ``--connections``
connections, unpaced, ``--duration`` s), then the latency h2load sees at 50 % and at 90 % of
that maximum, paced with ``--rps`` over the same connections. Servers alternate, and each
paced rate is its own server's maximum, so both are loaded alike.

h2load's pacing is per connection and closed-loop (a connection sends its next request when
its slot has come *and* the previous answer is back): with 32 connections each request has a
slot of 32 / rate seconds (several milliseconds, far above the latencies measured), so only
a stall longer than that would be under-reported. Latencies are from h2load's ``--log-file``.

    python benchmarks/bench_check_load.py [--duration 6] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ext_authz as ea
from _util import summary_row, table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measurement [%(default)s]")
    p.add_argument("--connections", type=int, default=32, help="h2load connections [%(default)s]")
    args = p.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit(
            "h2load is not installed: apt-get install nghttp2-client (or run `make system-deps`)"
        )
    ea.nginx_binary()
    from mixerd.adapter import load_adapters

    have = set(load_adapters())
    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-check-load-"))
    procs: list[subprocess.Popen[bytes]] = []
    stoppers: list[Any] = []
    hdrs = {"x-user": "alice"}
    n, d = args.connections, args.duration
    try:
        config = tmp / "config"
        ea.write_config(config, "listchecker" in have, "memquota" in have)
        mixerd_grpc, mixerd_http, bare_grpc = ea.free_port(), ea.free_port(), ea.free_port()
        procs.append(ea.start_mixerd(tmp, config, mixerd_grpc, mixerd_http))
        bare = subprocess.Popen(
            [sys.executable, ea.__file__, "--serve-bare", str(bare_grpc)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(bare)
        ea.wait_port(bare_grpc, bare)
        upstream, upstream_port = ea.static_upstream(tmp)
        stoppers.append(upstream.stop)
        urls: dict[str, str] = {}
        for name, port in (("mixerd", mixerd_grpc), ("bare server", bare_grpc)):
            envoy, url = ea.run_envoy(tmp, name.split()[0], port, mixerd_http, upstream_port)
            stoppers.append(envoy.stop)
            assert ea.fetch(url, hdrs) == 200, f"{name}: an allowed request was not allowed through Envoy"
            urls[name] = url
        assert ea.fetch(urls["mixerd"], {"x-user": "mallory"}) == 403, "a denied request was not denied"
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; Envoy 1 worker; h2load --h1, "
            f"1 thread, {n} connections, {d:g} s per run (+1 s warm-up)",
            flush=True,
        )

        maximum: dict[str, float] = {}
        for name in ("mixerd", "bare server", "mixerd", "bare server"):  # two unpaced rounds each
            load = ea.h2load(urls[name], connections=n, duration=d, headers=hdrs)
            if load.failed:
                raise RuntimeError(f"{name}: {load.failed} requests failed or were not 2xx at full speed")
            maximum[name] = max(maximum.get(name, 0.0), load.rps)
        rows = []
        lat: dict[tuple[str, int], ea.Load] = {}
        for share in (50, 90):
            for name in ("mixerd", "bare server"):
                rate = maximum[name] * share / 100
                lat[name, share] = ea.h2load(
                    urls[name],
                    connections=n,
                    duration=d,
                    headers=hdrs,
                    rps=rate,
                    log=tmp / f"lat-{share}.tsv",
                )
        for name in ("mixerd", "bare server"):
            cells: list[object] = [name, f"{maximum[name]:,.0f}"]
            for share in (50, 90):
                r = lat[name, share]
                cells += [f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"]
                if r.failed:
                    cells[-1] = f"{cells[-1]} ({r.failed} failed)"
            rows.append(cells)
        print(table(rows, ("authz server", "max req/s", "50%: req/s", "p50 ms", "p99 ms",
                           "90%: req/s", "p50 ms", "p99 ms")))  # fmt: skip
        m50, m90, b50, b90 = (
            lat[k] for k in (("mixerd", 50), ("mixerd", 90), ("bare server", 50), ("bare server", 90))
        )
        assert None not in (m50.p99_ms, m90.p99_ms, b50.p99_ms, b90.p99_ms, m50.p50_ms, m90.p50_ms)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        summary_row(
            "Check latency through Envoy at 50% / 90% of max (mixerd; bare)",
            f"max {maximum['mixerd']:,.0f}/s: p50 {m50.p50_ms:.2f} / {m90.p50_ms:.2f} ms, "
            f"p99 {m50.p99_ms:.2f} / {m90.p99_ms:.2f} ms; bare max {maximum['bare server']:,.0f}/s: "
            f"p99 {b50.p99_ms:.2f} / {b90.p99_ms:.2f} ms",
            "reported (no goal)",
            None,
        )
    finally:
        for s in reversed(stoppers):
            try:
                s()
            except Exception as exc:  # keep stopping the rest
                print(f"stopping: {exc}", file=sys.stderr)
        for proc in procs:
            ea.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
