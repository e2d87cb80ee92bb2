"""Envoy rate-limit service (``ShouldRateLimit``) decisions per second: memquota vs redisquota.

mixerd runs in its own process (``mixerd serve --config DIR``), as does the bare server. The
load comes from ``h2load`` (HTTP/2 cleartext)
posting one pre-framed gRPC message (5-byte prefix + a serialized ``RateLimitRequest``: domain
``api``, one descriptor ``user=bench``) over ``--clients`` connections with ``--streams`` streams
each. redisquota talks to a ``redis-server`` this script starts on a free loopback port.

h2load counts HTTP/2 200s only (a gRPC error is also a 200 with a non-zero ``grpc-status``
trailer), so the run is checked against mixerd's own counters (``mixerd_requests_total`` with
``code="OK"`` and ``mixerd_ratelimit_decisions_total`` by code) scraped before and after, and one
Python gRPC call per backend checks real decisions: a user limited to 1 request per minute gets
OK, then OVER_LIMIT with ``x-mixerd-quota``.

Usage: .venv/bin/python benchmarks/bench_ratelimit.py [--requests 12000] [--clients 4] [--streams 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util
from _util import cpu_seconds, free_port, grpc_frame, h2load, need, start, stop, table, wait_port

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
BIG = 10**12  # never reached: every call does the full work of a grant

INSTANCE_AND_RULE = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: api, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: ratelimit.descriptor["user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: api-quota, namespace: istio-system}
spec:
  match: ratelimit.domain == "api"
  actions:
  - {handler: quotahandler, instances: [api]}
"""


def handler(adapter: str, extra: str = "") -> str:
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: quotahandler, namespace: istio-system}}
spec:
  compiledAdapter: {adapter}
  params:
    {extra}
    quotas:
    - name: api.instance.istio-system
      maxAmount: {BIG}
      validDuration: 60s
      overrides:
      - {{dimensions: {{user: tiny}}, maxAmount: 1}}
---
"""


def start_mixerd(
    tmp: Path, config: Path, grpc_port: int, monitoring_port: int
) -> tuple[subprocess.Popen[bytes], str]:
    log = tmp / f"mixerd-{grpc_port}.log"
    mixerd_cli = shutil.which("mixerd", path=str(Path(sys.executable).parent)) or "mixerd"
    cmd = [
        mixerd_cli, "serve", "--config", str(config),
        "--grpc-address", f"127.0.0.1:{grpc_port}",
        "--monitoring-address", f"127.0.0.1:{monitoring_port}",
        "--prometheus-address", "", "--http-authz-address", "", "--log-level", "warning",
    ]  # fmt: skip
    how = "mixerd serve"
    try:
        proc = start(cmd, grpc_port, log=log)
        wait_port(monitoring_port, proc=proc)
    except (RuntimeError, TimeoutError):
        raise RuntimeError(f"mixerd did not start ({how}):\n" + log.read_text()) from None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitoring_port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return proc, how
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"mixerd did not become ready ({how}):\n" + log.read_text())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$")


def scrape(monitoring_port: int) -> dict[str, float]:
    """mixerd's rate-limit counters, keyed ``requests:<code>`` and ``decisions:<code>``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring_port}/metrics?adapters=0", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        code = re.search(r'code="([^"]*)"', labels)
        if name == "mixerd_requests_total" and 'api="ratelimit"' in labels and code:
            out[f"requests:{code.group(1)}"] = out.get(f"requests:{code.group(1)}", 0.0) + value
        elif name == "mixerd_ratelimit_decisions_total" and code:
            out[f"decisions:{code.group(1)}"] = out.get(f"decisions:{code.group(1)}", 0.0) + value
    return out


def check_decisions(grpc_port: int) -> str:
    """One user limited to 1 per minute: OK, then OVER_LIMIT naming the quota."""
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    request = rls_pb2.RateLimitRequest(domain="api")
    request.descriptors.add().entries.add(key="user", value="tiny")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        first = stub.ShouldRateLimit(request, timeout=5)
        second = stub.ShouldRateLimit(request, timeout=5)
    ok = rls_pb2.RateLimitResponse.OK
    over = rls_pb2.RateLimitResponse.OVER_LIMIT
    headers = {(h.key, h.value) for h in second.response_headers_to_add}
    if first.overall_code != ok or second.overall_code != over or ("x-mixerd-quota", "api") not in headers:
        raise SystemExit(f"wrong decisions: first {first}, second {second}")
    s = second.statuses[0]
    return (
        f"OK then OVER_LIMIT (remaining {s.limit_remaining}, limit {s.current_limit.requests_per_unit}/min)"
    )


def body_file(tmp: Path) -> Path:
    from envoy.service.ratelimit.v3 import rls_pb2

    request = rls_pb2.RateLimitRequest(domain="api")
    request.descriptors.add().entries.add(key="user", value="bench")
    path = tmp / "request.bin"
    path.write_bytes(grpc_frame(request.SerializeToString()))
    return path


async def serve_bare(grpc_port: int) -> None:
    """The floor: a grpc.aio rate limit service that answers a constant OK (no dispatch)."""
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    answer = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
    answer.statuses.add(code=rls_pb2.RateLimitResponse.OK)

    class Bare(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
        async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
            return answer

    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1024)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await asyncio.Event().wait()


def _run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def load(
    proc: subprocess.Popen[bytes], grpc_port: int, body: Path, args: argparse.Namespace
) -> tuple[Any, float]:
    """Warm up, then the measured h2load run; returns its summary and the server's CPU seconds."""
    url = f"http://127.0.0.1:{grpc_port}{METHOD}"
    h2load(url, body, requests=min(1000, args.requests), clients=args.clients, streams=args.streams)
    cpu0 = cpu_seconds(proc.pid)
    run = h2load(url, body, requests=args.requests, clients=args.clients, streams=args.streams)
    return run, cpu_seconds(proc.pid) - cpu0


def row(name: str, run: Any, cpu: float, grpc_ok: str, decided: str) -> list[object]:
    return [
        name,
        run.requests,
        f"{run.seconds:.2f}",
        f"{run.requests / run.seconds:,.0f}",
        run.status_2xx,
        grpc_ok,
        decided,
        f"{cpu:.2f}",
        f"{cpu / run.requests * 1e6:.0f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--serve-bare", type=int, metavar="GRPC_PORT")
    args = parser.parse_args()
    if args.serve_bare:
        _run_loop(serve_bare(args.serve_bare))
        return 0

    need("h2load", "nghttp2-client")
    redis_bin = need("redis-server", "redis-server")
    rows: list[list[object]] = []
    notes = []
    vs_bare: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as d:
        tmp = Path(d)
        body = body_file(tmp)

        bare_port = free_port()
        bare = start(
            [sys.executable, __file__, "--serve-bare", str(bare_port)], bare_port, log=tmp / "bare.log"
        )
        try:
            run, cpu = load(bare, bare_port, body, args)
        finally:
            stop(bare)
        rows.append(row("bare grpc.aio (constant OK)", run, cpu, "-", "-"))
        floor = run.requests / run.seconds

        redis_port = free_port()
        redis = start(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)],
            redis_port,
            log=tmp / "redis.log",
        )  # fmt: skip
        try:
            backends = {
                "memquota": handler("memquota"),
                "redisquota": handler(
                    "redisquota", f"redisServerUrl: 127.0.0.1:{redis_port}\n    connectionPoolSize: 16"
                ),
            }
            for name, handler_yaml in backends.items():
                config = tmp / name
                config.mkdir()
                (config / "quota.yaml").write_text(handler_yaml + INSTANCE_AND_RULE)
                grpc_port, monitoring_port = free_port(), free_port()
                proc, how = start_mixerd(tmp, config, grpc_port, monitoring_port)
                try:
                    verdict = check_decisions(grpc_port)
                    before = scrape(monitoring_port)
                    run, cpu = load(proc, grpc_port, body, args)
                    after = scrape(monitoring_port)
                finally:
                    stop(proc)
                calls = run.requests + min(1000, args.requests)  # the warm-up is scraped too

                def delta(
                    key: str, before: dict[str, float] = before, after: dict[str, float] = after
                ) -> float:
                    return after.get(key, 0.0) - before.get(key, 0.0)

                grpc_ok, decided_ok = delta("requests:OK"), delta("decisions:OK")
                over, errors = delta("decisions:OVER_LIMIT"), delta("decisions:ERROR")
                if not run.ok or grpc_ok != calls or decided_ok != calls:
                    notes.append(
                        f"{name}: MISMATCH h2load 2xx={run.status_2xx}/{run.requests}, "
                        f"grpc OK={grpc_ok:.0f}, decisions OK={decided_ok:.0f} OVER_LIMIT={over:.0f} "
                        f"ERROR={errors:.0f} (expected {calls})"
                    )
                rows.append(
                    row(name, run, cpu, f"{grpc_ok:.0f}", f"{decided_ok:.0f}/{over:.0f}/{errors:.0f}")
                )
                rate = run.requests / run.seconds
                vs_bare[name] = rate / floor
                notes.append(
                    f"{name}: {rate / floor:.0%} of the bare server; served by {how}; check: {verdict}"
                )
        finally:
            stop(redis)
    warm = min(1000, args.requests)
    print(
        f"Envoy RLS ShouldRateLimit, 1 descriptor per call, h2load h2c -c {args.clients} -m {args.streams}, "
        f"{args.requests} measured calls after {warm} warm-up calls (mixerd counters include the warm-up)"
    )
    print(
        table(
            rows,
            [
                "server",
                "calls",
                "seconds",
                "decisions/s",
                "HTTP 200",
                "grpc OK",
                "OK/OVER/ERROR",
                "server CPU s",
                "CPU us/call",
            ],
        )
    )
    for n in notes:
        print(n)
    m, r = vs_bare.get("memquota", 0.0), vs_bare.get("redisquota", 0.0)
    _util.summary_row(
        "RLS decisions, memquota / redisquota vs bare",
        f"{m:.2f} / {r:.2f}",
        ">= 0.9 / >= 0.8",
        m >= 0.9 and r >= 0.8,
    )
    return 1 if any("MISMATCH" in n for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
