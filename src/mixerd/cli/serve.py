"""``mixerd serve``: run the server."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import sys
from collections.abc import Callable

from mixerd.server import Server, Settings, add_arguments
from mixerd.server.workers import EXIT_START_FAILED, WORKER_SETTINGS_ENV, Supervisor, WorkerRole

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the mixerd server",
        description=(
            "Run mixerd: the Mixer gRPC API (istio.mixer.v1.Mixer Check/Report), Envoy's ext_authz "
            "(gRPC and HTTP), rate-limit and access-log services, the monitoring endpoints and the "
            "prometheus adapter's /metrics. Every flag also reads MIXERD_<FLAG> from the environment. "
            "Listeners are plaintext unless given a certificate: --tls-cert/--tls-key serve TLS on every "
            "listener, --tls-client-ca requires client certificates (mTLS) whose spiffe:// identity "
            "rules read as mixerd.caller.principal; --<listener>-tls-cert/-key/-client-ca (listeners "
            "grpc, monitoring, prometheus, http-authz) replace them for one listener, '' turning that "
            "part off. Certificate files are re-read every --tls-reload-interval seconds and a "
            "replaced certificate is served without a restart. "
            "SIGTERM or Ctrl-C drains in-flight calls, flushes pending reports and exits; SIGHUP re-reads "
            "the config files now. --workers N runs N worker processes on the same ports under one "
            "supervisor (see the README's 'Several workers')."
        ),
    )
    add_arguments(p)
    # How the supervisor of --workers starts a worker (its settings come in the environment).
    p.add_argument("--internal-worker", metavar="INDEX/COUNT:DIR", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _command() -> str:
    """How the user can run this ``mixerd`` again (``mixerd`` if that is what PATH finds)."""
    me = sys.argv[0]
    found = shutil.which("mixerd")
    if me.endswith("mixerd") and not (found and os.path.samefile(found, me)):
        return me
    return "mixerd" if found else f"{sys.executable} -m mixerd.cli.main"


def _tls_note(server: Server, listener: str) -> str:
    source = server.tls.get(listener)
    if source is None:
        return ""
    return "  (TLS, client certificates required)" if source.files.client_auth else "  (TLS)"


def _banner(server: Server) -> str:
    s, ln = server.settings, server.listeners

    def scheme(listener: str) -> str:
        return "https" if listener in server.tls else "http"

    cmd = _command()
    mon = f"{scheme('monitoring')}://127.0.0.1:{ln.monitoring_port}"
    if s.config_url:
        source = f"config from Kubernetes ({s.config_url})"
    else:
        source = ", ".join(str(p) for p in s.config) if s.config else "the embedded default config"
    lines = [
        f"mixerd is serving {source}",
        f"  gRPC (Mixer API, ext_authz, rate limit, access log)  127.0.0.1:{ln.grpc_port}{_tls_note(server, 'grpc')}",
    ]
    if ln.http_authz_port:
        lines.append(
            f"  HTTP authorization (Envoy http_service, nginx)       "
            f"{scheme('http_authz')}://127.0.0.1:{ln.http_authz_port}/{_tls_note(server, 'http_authz')}"
        )
    if ln.prometheus_port:
        lines.append(
            f"  prometheus adapter metrics                           "
            f"{scheme('prometheus')}://127.0.0.1:{ln.prometheus_port}/metrics{_tls_note(server, 'prometheus')}"
        )
    client = ""
    if "grpc" in server.tls:
        client = " --tls-ca CA.pem"
        if server.client_auth("grpc"):
            client += " --tls-cert CERT.pem --tls-key KEY.pem"
    lines.append(
        f"  monitoring: {mon}/metrics {mon}/readyz {mon}/debug/routes {mon}/debug/config"
        + _tls_note(server, "monitoring")
    )
    console = ""
    if server.console is not None:
        port = ln.console_port or ln.monitoring_port
        base = f"{scheme('monitoring')}://127.0.0.1:{port}"
        console = f"{base}/api/v1"
        lines.append(
            f"  console (transactions, graph, decisions): {base}/ui/  API {console}/  (store: "
            f"{server.console.store.url_for_display})"
        )
    lines += [
        "Try it:",
        f"  {cmd} check --server 127.0.0.1:{ln.grpc_port}{client} -a 'request.headers[x-user]=blocked'   # denied",
        f"  {cmd} check --server 127.0.0.1:{ln.grpc_port}{client} -a 'request.headers[x-user]=alice'     # allowed",
        f"  {cmd} report --server 127.0.0.1:{ln.grpc_port}{client} -a 'request.headers[x-user]=alice' "
        "-a response.code=200 -a request.time=now",
    ]
    if ln.prometheus_port:
        curl = "curl -s"
        if "prometheus" in server.tls:
            curl += " --cacert CA.pem"
            if server.client_auth("prometheus"):
                curl += " --cert CERT.pem --key KEY.pem"
        lines.append(
            f"  {curl} {scheme('prometheus')}://127.0.0.1:{ln.prometheus_port}/metrics | grep mixerd_demo"
        )
    if console:
        lines.append(f"  curl -s '{console}/decisions?verdict=deny'   # the decisions just made")
    return "\n".join(lines)


async def _serve(settings: Settings, worker: WorkerRole | None = None) -> int:
    server = Server(settings, worker=worker)
    stopping: list[asyncio.Task[None]] = []
    started = False
    signalled = False

    starting: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        nonlocal signalled
        signalled = True
        if started and not stopping:
            stopping.append(asyncio.get_running_loop().create_task(server.stop(settings.drain_timeout)))
        elif not started and not server.runtime.ready and starting and not starting[0].done():
            starting[0].cancel()  # still loading the config (say, from an API server that does not answer)

    # Installed before the listeners open, so a SIGTERM at any moment drains instead of killing
    # the process; one that arrives while the config loads stops the start, one that arrives
    # later in start-up takes effect once start-up is done.
    server.install_signal_handlers(on_signal)
    starting.append(asyncio.get_running_loop().create_task(server.start()))
    try:
        await starting[0]
    except asyncio.CancelledError:
        if not signalled:
            raise
        print("mixerd: stopped before the config was loaded", file=sys.stderr)
        await server.stop(0)
        return 1
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"mixerd: {exc}", file=sys.stderr)
        await server.stop(0)  # whatever did start (the runtime, a listener) is closed again
        return 1 if worker is None else EXIT_START_FAILED
    started = True
    if worker is None:
        print(_banner(server), flush=True)
    else:
        orphan = asyncio.get_running_loop().create_task(_stop_when_orphaned(on_signal))
    if signalled:
        on_signal()
    await server.wait()
    if worker is not None:
        orphan.cancel()
    return 0


async def _stop_when_orphaned(stop: Callable[[], None]) -> None:
    """A worker drains and exits when its supervisor is gone (killed without relaying a signal)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop()


def _supervisor_banner(supervisor: Supervisor) -> str:
    s = supervisor.settings
    source = ", ".join(str(p) for p in s.config) if s.config else "the embedded default config"
    lines = [
        f"mixerd is serving {source} with {supervisor.count} worker processes",
        f"  gRPC (Mixer API, ext_authz, rate limit, access log)  port {supervisor.grpc_port}",
    ]
    if supervisor.http_authz_port:
        lines.append(
            f"  HTTP authorization                                   port {supervisor.http_authz_port}"
        )
    if supervisor.prometheus_port:
        lines.append(
            f"  prometheus adapter metrics (all workers)             port {supervisor.prometheus_port}"
        )
    mon = f"127.0.0.1:{supervisor.monitoring_port}"
    lines.append(f"  monitoring: {mon}/metrics (all workers) {mon}/readyz {mon}/debug/workers")
    return "\n".join(lines)


GC_THRESHOLDS = (10_000, 10, 10)
"""CPython's cyclic collector, for a server: a young collection every 10,000 net container
allocations instead of 700. Every reported attribute set allocates and frees many small
containers, and the console keeps hops queued until its writer flushes them (up to half a second),
so they live long enough to be promoted and to trigger full collections. With the default
thresholds, Report of the stock config with the console on spent about 6 us of CPU per attribute
set collecting (60 young and 0.1 full collections per 1,000 sets; without the console 0.5 us);
with these, under 1 us. Memory is not at stake: reference counting frees everything but cycles,
and those are still collected, a little later."""


def run(args: argparse.Namespace) -> int:
    worker: WorkerRole | None = None
    try:
        if args.internal_worker:
            worker = WorkerRole.parse(args.internal_worker)
            settings = Settings.from_json(os.environ[WORKER_SETTINGS_ENV])
        else:
            settings = Settings.from_args(args)
            count = settings.worker_count
    except (ValueError, KeyError) as exc:
        print(f"mixerd: {exc}", file=sys.stderr)
        return 2
    who = f" worker-{worker.index}" if worker is not None else ""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s",
    )
    missing = [str(p) for p in settings.config if not p.exists()]
    if missing:
        print(f"mixerd: config path not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    if worker is None and count > 1:
        return _supervise(settings, count)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(settings, worker))
    return uvloop.run(_serve(settings, worker))


def _supervise(settings: Settings, count: int) -> int:
    try:
        supervisor = Supervisor(settings, count, banner=_supervisor_banner)
        supervisor.check()
        try:
            import uvloop
        except ImportError:
            return asyncio.run(supervisor.run())
        return uvloop.run(supervisor.run())
    except (OSError, ValueError) as exc:
        print(f"mixerd: {exc}", file=sys.stderr)
        return 1
