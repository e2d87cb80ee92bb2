"""``mixerd adapter serve NAME --address HOST:PORT``: serve an installed adapter out of process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import grpc

from mixerd.adapter import AdapterNotFound, get_adapter
from mixerd.adapter.grpc_server import AdapterServer

__all__ = ["register"]

_log = logging.getLogger("mixerd.adapter.serve")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an installed adapter out of process over Mixer's gRPC adapter model",
        description=(
            "Serve the adapter NAME (an entry point of the group mixerd.adapters: a built-in adapter "
            "such as 'list', or a package built with the mixerd.adapter SDK) as an out-of-process "
            "adapter: InfrastructureBackend (Validate, CreateSession, CloseSession) and the "
            "Handle<Template>Service of each of its templates mixerd can send out of process "
            "(metric, listentry, quota). mixerd reaches it through a handler with 'adapter: NAME' and "
            "'connection: {address: HOST:PORT}'; the handler's params travel as a "
            "google.protobuf.Struct in a session. Plaintext gRPC: bind loopback or a private network. "
            "Stops on SIGTERM or Ctrl-C."
        ),
    )
    p.add_argument("name", metavar="NAME", help="the adapter's entry-point name (e.g. list)")
    p.add_argument(
        "--address", required=True, metavar="HOST:PORT", help="where to listen (e.g. 127.0.0.1:9070)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        info = get_adapter(args.name)
        adapter = AdapterServer(info)
    except (AdapterNotFound, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    try:
        return asyncio.run(_serve(adapter, args.address))
    except KeyboardInterrupt:
        return 130


async def _serve(adapter: AdapterServer, address: str) -> int:
    server = grpc.aio.server()
    adapter.add_to(server)
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        print(f"error: cannot listen on {address}: {exc}")
        return 1
    await server.start()
    skipped = f" (not served: {', '.join(adapter.skipped)})" if adapter.skipped else ""
    _log.info(
        "serving adapter %s on %s: templates %s%s",
        adapter.info.name,
        address,
        ", ".join(adapter.templates),
        skipped,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _log.info("stopping")
    await server.stop(grace=2)
    await adapter.close()
    return 0
