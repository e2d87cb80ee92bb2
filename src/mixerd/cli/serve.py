"""``mixerd serve``: run the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys

from mixerd.server import Server, Settings, add_arguments

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the mixerd server",
        description=(
            "Run mixerd: the Mixer gRPC API (istio.mixer.v1.Mixer Check/Report), Envoy's ext_authz "
            "(gRPC and HTTP), rate-limit and access-log services, the monitoring endpoints and the "
            "prometheus adapter's /metrics. Every flag also reads MIXERD_<FLAG> from the environment. "
            "SIGTERM or Ctrl-C drains in-flight calls, flushes pending reports and exits."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def _command() -> str:
    """How the user can run this ``mixerd`` again (``mixerd`` if that is what PATH finds)."""
    me = sys.argv[0]
    found = shutil.which("mixerd")
    if me.endswith("mixerd") and not (found and os.path.samefile(found, me)):
        return me
    return "mixerd" if found else f"{sys.executable} -m mixerd.cli.main"


def _banner(server: Server) -> str:
    s, ln = server.settings, server.listeners
    cmd = _command()
    mon = f"http://127.0.0.1:{ln.monitoring_port}"
    source = ", ".join(str(p) for p in s.config) if s.config else "the embedded default config"
    lines = [
        f"mixerd is serving {source}",
        f"  gRPC (Mixer API, ext_authz, rate limit, access log)  127.0.0.1:{ln.grpc_port}",
    ]
    if ln.http_authz_port:
        lines.append(
            f"  HTTP authorization (Envoy http_service, nginx)       http://127.0.0.1:{ln.http_authz_port}/"
        )
    if ln.prometheus_port:
        lines.append(
            f"  prometheus adapter metrics                           http://127.0.0.1:{ln.prometheus_port}/metrics"
        )
    lines += [
        f"  monitoring: {mon}/metrics {mon}/readyz {mon}/debug/routes {mon}/debug/config",
        "Try it:",
        f"  {cmd} check --server 127.0.0.1:{ln.grpc_port} -a 'request.headers[x-user]=blocked'   # denied",
        f"  {cmd} check --server 127.0.0.1:{ln.grpc_port} -a 'request.headers[x-user]=alice'     # allowed",
        f"  {cmd} report --server 127.0.0.1:{ln.grpc_port} -a 'request.headers[x-user]=alice' "
        "-a response.code=200",
    ]
    if ln.prometheus_port:
        lines.append(f"  curl -s http://127.0.0.1:{ln.prometheus_port}/metrics | grep mixerd_demo")
    return "\n".join(lines)


async def _serve(settings: Settings) -> int:
    server = Server(settings)
    try:
        await server.start()
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"mixerd: {exc}", file=sys.stderr)
        await server.stop(0)  # whatever did start (the runtime, a listener) is closed again
        return 1
    print(_banner(server), flush=True)
    stopping: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not stopping:
            stopping.append(asyncio.get_running_loop().create_task(server.stop(settings.drain_timeout)))

    server.install_signal_handlers(on_signal)
    await server.wait()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:
        print(f"mixerd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    missing = [str(p) for p in settings.config if not p.exists()]
    if missing:
        print(f"mixerd: config path not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))
