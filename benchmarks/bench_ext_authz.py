"""Benchmark mixerd's ext_authz front-ends behind a real Envoy and a real nginx.

(1) Envoy + ext_authz (gRPC) -> mixerd, against Envoy + ext_authz -> a bare grpc.aio server that
    answers OK to everything (same Envoy config apart from the authz port, same load tool, same
    run, ``--rounds`` rounds alternating between the two): throughput of both with ``h2load --h1``
    for ``--duration`` seconds, their ratio (goal >= 0.95), and p50/p99 latency of both at a fixed
    moderate rate (``h2load --rps`` per client, latencies from ``--log-file``), with mixerd's added
    p99 (goal < 1 ms); every round and the medians.
(2) nginx + ``auth_request`` -> mixerd's HTTP endpoint, against the same nginx front -> a bare
    aiohttp endpoint answering 200 (aiohttp's low-level server on uvloop, in its own process), and
    against nginx + ``auth_request`` -> a ``return 204`` location: throughput of each, the CPU
    each authorization process spends per check, and the ratios (goals: mixerd / bare aiohttp
    >= 0.8, mixerd CPU <= 40 us per check). Then both endpoints directly (``h2load --h1`` with
    the headers nginx's subrequest carries), so nginx's own share is visible. ``--rounds`` rounds,
    the order alternating; every round and the medians are printed.

Throughput runs also report the CPU time the authorization process spent per check (from
/proc), which stays meaningful when other work shares the machine and moves throughput around.

mixerd's policy: a list check (``listchecker`` whitelist of ``x-user`` values, from overrides)
when the ``list`` adapter is installed (else a denier on ``x-user: mallory``, and the output says
so), a header-match deny rule, a header operation, and a memquota quota charged on every request
(limit far above the load) when memquota is installed.

mixerd runs in its own process (``mixerd serve``); the bare server too. The upstream is a static
nginx server.
Prints the results and exits 0; the whole run takes about (4 x ``--rounds`` + 4) x ``--duration``
plus ~10 s (``--no-nginx``: the Envoy part only).

Usage: .venv/bin/python benchmarks/bench_ext_authz.py [--duration 6] [--connections 16] [--rate 400]
       [--rounds 3] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.integration helpers (Envoy / nginx launchers)

from tests.integration.envoy_proc import EnvoyProcess, authz_config, start_envoy  # noqa: E402
from tests.integration.nginx_proc import NginxProcess, auth_request_config, nginx_binary, start_nginx  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import summary_row  # noqa: E402

LIST_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: allowed-users, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: [alice, bob, carol, dave]
    blacklist: false
    entryType: STRINGS
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params: {value: 'request.headers["x-user"] | ""'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: allowed-users, namespace: istio-system}
spec:
  actions: [{handler: allowed-users, instances: [user]}]
"""

DENIER_INSTEAD_OF_LIST = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: mallory, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: mallory is not welcome}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: mallorycheck, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: mallory, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "mallory"
  actions: [{handler: mallory, instances: [mallorycheck]}]
"""

COMMON_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny-header, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: blocked by x-deny}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denycheck, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-header, namespace: istio-system}
spec:
  match: request.headers["x-deny"] == "true"
  actions: [{handler: deny-header, instances: [denycheck]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: tag-user, namespace: istio-system}
spec:
  match: (request.headers["x-user"] | "") != ""
  requestHeaderOperations: [{name: x-user-id, values: ['request.headers["x-user"]']}]
"""

QUOTA_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quota, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas: [{name: requestcount.instance.istio-system, maxAmount: 1000000000, validDuration: 1s}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {user: 'request.headers["x-user"] | "anonymous"'}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions: [{handler: quota, instances: [requestcount]}]
"""


# --- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- child processes ---------------------------------------------------------------------------


async def serve_bare(grpc_port: int) -> None:
    """The baseline: a grpc.aio Authorization server that allows everything."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    ok = external_auth_pb2.CheckResponse(ok_response=external_auth_pb2.OkHttpResponse())

    class Bare(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        async def Check(self, request: Any, context: Any) -> Any:  # gRPC method name
            return ok

    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1024)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await server.wait_for_termination()


async def serve_bare_http(port: int) -> None:
    """The HTTP baseline: aiohttp's low-level server answering 200 with an empty body to everything."""
    from aiohttp import web

    async def allow(request: web.BaseRequest) -> web.Response:
        return web.Response()

    runner = web.ServerRunner(web.Server(allow, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- load --------------------------------------------------------------------------------------


@dataclass
class Load:
    rps: float
    ok: int
    failed: int
    p50_ms: float | None = None
    p99_ms: float | None = None


def h2load(
    url: str,
    *,
    connections: int,
    duration: float,
    headers: dict[str, str],
    rps: float | None = None,
    log: Path | None = None,
) -> Load:
    cmd = ["h2load", "--h1", "-t", "1", "-c", str(connections), "-D", f"{duration:g}", "--warm-up-time", "1"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if rps is not None:
        cmd += ["--rps", f"{max(rps / connections, 1):.0f}"]
    if log is not None:
        cmd += ["--log-file", str(log)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    req = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not m or not codes or not req:
        raise RuntimeError("could not read h2load's output:\n" + out)
    non_2xx = int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4))
    result = Load(float(m.group(1)), int(codes.group(1)), int(req.group(2)) + non_2xx)
    if log is not None and log.exists():
        lat = sorted(
            int(line.split("\t")[2]) / 1000.0
            for line in log.read_text().splitlines()
            if line.count("\t") >= 2
        )
        if lat:
            result.p50_ms = statistics.median(lat)
            result.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return result


_NAN = float("nan")


def fmt(load: Load) -> str:
    text = f"{load.rps:9.0f} req/s"
    if load.p50_ms is not None and load.p99_ms is not None:
        text = f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms"
    if load.failed:
        text += f"  ({load.failed} failed/non-2xx of {load.ok + load.failed})"
    return text


# --- the benchmark -----------------------------------------------------------------------------


def write_config(directory: Path, with_list: bool, with_quota: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = resources.files("mixerd.attribute")
    (directory / "00-istio-attributes.yaml").write_text(
        data.joinpath("data/istio-attributes.yaml").read_text("utf-8")
    )
    (directory / "01-mixerd-attributes.yaml").write_text(
        data.joinpath("data/mixerd-attributes.yaml").read_text("utf-8")
    )
    policy = COMMON_POLICY + "---\n" + (LIST_POLICY if with_list else DENIER_INSTEAD_OF_LIST)
    if with_quota:
        policy += "---\n" + QUOTA_POLICY
    (directory / "10-policy.yaml").write_text(policy)


def start_mixerd(tmp: Path, config: Path, grpc_port: int, http_port: int) -> subprocess.Popen[bytes]:
    """Start ``mixerd serve`` on ``config``."""
    log = open(tmp / "mixerd.log", "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    mixerd_cli = shutil.which("mixerd", path=str(Path(sys.executable).parent)) or "mixerd"
    cmd = [
        mixerd_cli, "serve", "--config", str(config),
        "--grpc-address", f"127.0.0.1:{grpc_port}", "--http-authz-address", f"127.0.0.1:{http_port}",
        "--monitoring-address", f"127.0.0.1:{free_port()}", "--prometheus-address", "",
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(grpc_port, proc)
        wait_port(http_port, proc)
    except RuntimeError:
        stop(proc)
        raise RuntimeError("mixerd did not start:\n" + (tmp / "mixerd.log").read_text()) from None
    return proc


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def measured(pid: int, run: Any) -> tuple[Load, float]:
    """Run ``run()`` and return its load result and the CPU microseconds ``pid`` spent per request."""
    before = cpu_seconds(pid)
    load: Load = run()
    spent = cpu_seconds(pid) - before
    done = load.ok + load.failed
    return load, (spent / done * 1e6 if done else float("nan"))


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


def run_envoy(
    tmp: Path, name: str, authz_grpc: int, authz_http: int, upstream: int
) -> tuple[EnvoyProcess, str]:
    ports = {k: free_port() for k in ("admin", "grpc", "http")}
    config = authz_config(
        admin_port=ports["admin"],
        grpc_listener_port=ports["grpc"],
        http_listener_port=ports["http"],
        authz_grpc_port=authz_grpc,
        authz_http_port=authz_http,
        upstream_port=upstream,
        default_extensions={"mixerd.quotas": "requestcount"},
    )
    envoy = start_envoy(tmp / f"envoy-{name}", config, ports["admin"], concurrency=1)
    return envoy, f"http://127.0.0.1:{ports['grpc']}/bench"


SUBREQUEST = {
    "X-Original-URI": "/bench",
    "X-Original-Method": "GET",
    "X-Real-IP": "127.0.0.1",
    "X-Forwarded-Host": "127.0.0.1",
    "x-user": "alice",
}
"""What nginx's auth subrequest carries (besides Host, User-Agent and Accept, which h2load sends)."""


def nginx_part(
    args: argparse.Namespace,
    tmp: Path,
    procs: list[subprocess.Popen[bytes]],
    stoppers: list[Any],
    mixerd: subprocess.Popen[bytes],
    mixerd_http: int,
    upstream_port: int,
) -> None:
    """(2): nginx + auth_request -> mixerd / a bare aiohttp endpoint / ``return 204``, and both
    endpoints directly; alternating rounds."""
    hdrs = {"x-user": "alice"}
    n, d = args.connections, args.duration
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare-http", str(bare_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    procs.append(bare)
    wait_port(bare_port, bare)
    servers = {"mixerd": (mixerd.pid, mixerd_http), "bare aiohttp": (bare.pid, bare_port)}
    urls: dict[str, str] = {}
    for label, target in (("mixerd", mixerd_http), ("bare aiohttp", bare_port), ("return 204", None)):
        front = free_port()
        if target is None:
            conf = auth_request_config(
                listen_port=front, mixerd_port=mixerd_http, upstream_port=upstream_port, auth_target="static"
            )
        else:
            conf = auth_request_config(listen_port=front, mixerd_port=target, upstream_port=upstream_port)
        ngx: NginxProcess = start_nginx(tmp / f"nginx-{front}", conf, front)
        stoppers.append(ngx.stop)
        urls[label] = f"http://127.0.0.1:{front}/bench"
    assert fetch(urls["mixerd"], hdrs) == 200, "an allowed request was not allowed through nginx"
    assert fetch(urls["mixerd"], {"x-user": "alice", "x-deny": "true"}) == 403
    assert fetch(urls["mixerd"], {"x-user": "mallory"}) == 403
    assert fetch(urls["bare aiohttp"], hdrs) == 200

    through: dict[str, list[tuple[Load, float]]] = {k: [] for k in servers}
    direct: dict[str, list[tuple[Load, float]]] = {k: [] for k in servers}
    static: list[Load] = []
    print(f"\n(2) nginx (1 worker) + auth_request; {args.rounds} rounds, the order alternating")
    for r in range(args.rounds):
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for label in order:
            pid, _ = servers[label]
            url = urls[label]
            through[label].append(
                measured(pid, lambda url=url: h2load(url, connections=n, duration=d, headers=hdrs))
            )
        static.append(h2load(urls["return 204"], connections=n, duration=d, headers=hdrs))
        for label in order:
            pid, port = servers[label]
            url = f"http://127.0.0.1:{port}/_mixerd"
            direct[label].append(
                measured(pid, lambda url=url: h2load(url, connections=n, duration=d, headers=SUBREQUEST))
            )
        m, b = through["mixerd"][-1], through["bare aiohttp"][-1]
        dm, db = direct["mixerd"][-1], direct["bare aiohttp"][-1]
        print(
            f"  round {r + 1}: through nginx mixerd {fmt(m[0])} ({m[1]:.0f} us/check), "
            f"bare aiohttp {fmt(b[0])} ({b[1]:.0f} us), return 204 {fmt(static[-1])}; "
            f"direct mixerd {fmt(dm[0])} ({dm[1]:.0f} us), bare aiohttp {fmt(db[0])} ({db[1]:.0f} us)"
        )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print("  medians over the rounds:")
    for label in servers:
        print(
            f"    through nginx  {label:13s} {med([x.rps for x, _ in through[label]]):9.0f} req/s   "
            f"authz process CPU {med([c for _, c in through[label]]):6.1f} us/check"
        )
    print(f"    through nginx  {'return 204':13s} {med([x.rps for x in static]):9.0f} req/s")
    for label in servers:
        print(
            f"    direct         {label:13s} {med([x.rps for x, _ in direct[label]]):9.0f} req/s   "
            f"authz process CPU {med([c for _, c in direct[label]]):6.1f} us/check"
        )
    ratios = [
        m.rps / b.rps for (m, _), (b, _) in zip(through["mixerd"], through["bare aiohttp"], strict=True)
    ]
    cpu = med([c for _, c in through["mixerd"]])
    print(
        f"  mixerd / bare aiohttp through nginx: {med(ratios):.2f} "
        f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}; goal >= 0.8)"
    )
    static_ratios = [m.rps / s.rps for (m, _), s in zip(through["mixerd"], static, strict=True)]
    print(f"  mixerd / return 204: {med(static_ratios):.2f}")
    print(f"  mixerd CPU per check through nginx: {cpu:.1f} us (goal <= 40 us)")
    summary_row("HTTP forward-auth endpoint, mixerd CPU per check; / bare aiohttp", f"{cpu:.0f} us; "
                f"{med(ratios):.2f}", "<= 40 us; >= 0.8", cpu <= 40 and med(ratios) >= 0.8)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measurement [%(default)s]")
    p.add_argument("--connections", type=int, default=16, help="h2load connections [%(default)s]")
    p.add_argument("--rate", type=float, default=400.0, help="req/s of the latency runs [%(default)s]")
    p.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per server, both parts [%(default)s]"
    )
    p.add_argument(
        "--nginx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure nginx + auth_request [%(default)s]",
    )
    p.add_argument("--serve-bare", type=int, metavar="GRPC_PORT", help=argparse.SUPPRESS)
    p.add_argument("--serve-bare-http", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return 0
    if args.serve_bare_http:
        import uvloop

        uvloop.run(serve_bare_http(args.serve_bare_http))
        return 0

    for tool in ("h2load",):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install nghttp2-client); nothing measured")
            return 0
    nginx_binary()
    from mixerd.adapter import load_adapters

    have = set(load_adapters())
    with_list = "listchecker" in have
    with_quota = "memquota" in have

    tmp = Path(tempfile.mkdtemp(prefix="bench-ext-authz-"))
    procs: list[subprocess.Popen[bytes]] = []
    stoppers: list[Any] = []
    try:
        config = tmp / "config"
        write_config(config, with_list, with_quota)
        mixerd_grpc, mixerd_http, bare_grpc = free_port(), free_port(), free_port()
        mixerd = start_mixerd(tmp, config, mixerd_grpc, mixerd_http)
        procs.append(mixerd)
        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(bare_grpc)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(bare)
        wait_port(bare_grpc, bare)
        upstream, upstream_port = static_upstream(tmp)
        stoppers.append(upstream.stop)

        print("mixerd process: mixerd serve")
        print(
            "policy: "
            + (
                "listchecker whitelist on x-user"
                if with_list
                else "denier on x-user: mallory (list adapter not installed)"
            )
            + ", deny rule on x-deny, header operation x-user-id"
            + (
                ", memquota quota 'requestcount' on every request"
                if with_quota
                else ", no quota (memquota not installed)"
            )
        )
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
            f"load: h2load --h1, 1 thread, {args.connections} connections, "
            f"{args.duration:g} s per run (+1 s warm-up); upstream: nginx return 200"
        )
        hdrs = {"x-user": "alice"}
        n = args.connections
        d = args.duration

        # (1) Envoy + ext_authz gRPC
        envoy_m, url_m = run_envoy(tmp, "mixerd", mixerd_grpc, mixerd_http, upstream_port)
        stoppers.append(envoy_m.stop)
        assert fetch(url_m, hdrs) == 200, "an allowed request was not allowed through Envoy"
        assert fetch(url_m, {"x-user": "mallory"}) == 403, "a denied request was not denied through Envoy"
        assert fetch(url_m, {"x-user": "alice", "x-deny": "true"}) == 403
        envoy_b, url_b = run_envoy(tmp, "bare", bare_grpc, mixerd_http, upstream_port)
        stoppers.append(envoy_b.stop)
        assert fetch(url_b, hdrs) == 200

        # Rounds alternate between the two authorization servers (both see the same machine);
        # medians of every figure, each round printed.
        lc = 4
        rounds: dict[str, list[tuple[Load, float, Load]]] = {"mixerd": [], "bare": []}
        targets = {"mixerd": (mixerd.pid, url_m), "bare": (bare.pid, url_b)}
        for i in range(args.rounds):
            for name in ("mixerd", "bare") if i % 2 == 0 else ("bare", "mixerd"):
                pid, url = targets[name]
                load, cpu = measured(
                    pid, lambda url=url: h2load(url, connections=n, duration=d, headers=hdrs)
                )
                lat = h2load(
                    url,
                    connections=lc,
                    duration=d,
                    headers=hdrs,
                    rps=args.rate,
                    log=tmp / f"lat-{name}-{i}.tsv",
                )
                rounds[name].append((load, cpu, lat))
        envoy_m.stop()
        envoy_b.stop()
        print(f"\n(1) Envoy (1 worker) + ext_authz gRPC, {args.rounds} alternating rounds")
        med: dict[str, tuple[float, float, float, float]] = {}
        for name, label in (("mixerd", "mixerd        "), ("bare", "bare OK server")):
            rs = rounds[name]
            for load, cpu, lat in rs:
                print(f"  {label}  throughput {fmt(load)}   authz process CPU {cpu:6.0f} us/check   "
                      f"latency at {args.rate:g} req/s ({lc} connections) {fmt(lat)}")  # fmt: skip
            med[name] = (
                statistics.median(load.rps for load, _, _ in rs),
                statistics.median(cpu for _, cpu, _ in rs),
                statistics.median([lat.p50_ms for _, _, lat in rs if lat.p50_ms is not None] or [_NAN]),
                statistics.median([lat.p99_ms for _, _, lat in rs if lat.p99_ms is not None] or [_NAN]),
            )
            print(f"  {label}  medians: {med[name][0]:9.0f} req/s, {med[name][1]:6.0f} us CPU/check, "
                  f"p50 {med[name][2]:6.2f} ms, p99 {med[name][3]:6.2f} ms")  # fmt: skip
        print(f"  ratio mixerd / bare (medians): {med['mixerd'][0] / med['bare'][0]:.2f} (goal >= 0.95)")
        print(
            f"  mixerd's added latency (medians): p50 {med['mixerd'][2] - med['bare'][2]:+.2f} ms, "
            f"p99 {med['mixerd'][3] - med['bare'][3]:+.2f} ms (goal: p99 < 1 ms)"
        )
        ratio = med["mixerd"][0] / med["bare"][0]
        added = med["mixerd"][3] - med["bare"][3]
        summary_row("Envoy ext_authz e2e, mixerd / bare server", f"{ratio:.2f}; added p99 {added:+.2f} ms",
                    ">= 0.95; added p99 < 1 ms", ratio >= 0.95 and added < 1.0)  # fmt: skip
        if not args.nginx:
            return 0

        # (2) nginx + auth_request
        nginx_part(args, tmp, procs, stoppers, mixerd, mixerd_http, upstream_port)
    finally:
        for s in reversed(stoppers):
            try:
                s()
            except Exception as exc:  # keep stopping the rest
                print(f"stopping: {exc}", file=sys.stderr)
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
