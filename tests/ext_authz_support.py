"""Shared pieces of the ext_authz tests: the policy, a runtime over it, and in-process servers
(mixerd's ext_authz gRPC service and HTTP endpoint, an upstream that echoes what it received).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from mixerd.adapter import Builder, CheckResult, ConfigError, Env, Info, load_adapters
from mixerd.api.ext_authz import ExtAuthzService, HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime
from tests.support.net import free_port

__all__ = [
    "BOOM_POLICY",
    "InProcessMixerd",
    "Upstream",
    "adapters_for_tests",
    "policy_text",
    "start_mixerd_in_process",
    "start_upstream",
]

DATA = Path(__file__).resolve().parent / "data"

BOOM_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: boom, namespace: istio-system}
spec: {compiledAdapter: boom}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: boomcheck, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: boom, namespace: istio-system}
spec:
  match: request.headers["x-boom"] == "true"
  actions: [{handler: boom, instances: [boomcheck]}]
"""
"""A rule whose handler raises (``x-boom: true``): exercises the error path."""


def policy_text(*extra: str) -> str:
    """Istio's and mixerd's attribute manifests, the ext_authz test policy, and ``extra`` documents."""
    parts = [
        resources.files("mixerd.attribute").joinpath("data/istio-attributes.yaml").read_text("utf-8"),
        resources.files("mixerd.attribute").joinpath("data/mixerd-attributes.yaml").read_text("utf-8"),
        (DATA / "ext_authz_config.yaml").read_text("utf-8"),
        *extra,
    ]
    return "\n---\n".join(parts)


class _BoomHandler:
    def handle_checknothing(self, instance: Any) -> CheckResult:
        raise RuntimeError("secret internal detail: the database password is hunter2")


class _BoomBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> _BoomHandler:
        return _BoomHandler()


BOOM = Info(
    name="boom",
    description="Raises on every check (tests only).",
    templates=("checknothing",),
    builder=_BoomBuilder,
    default_config={},
)


def adapters_for_tests() -> dict[str, Info]:
    """The installed adapters plus memquota (if its entry point is not registered yet) and ``boom``."""
    adapters = dict(load_adapters())
    if "memquota" not in adapters:
        from mixerd.adapters.memquota import INFO as MEMQUOTA

        adapters["memquota"] = MEMQUOTA
    adapters["boom"] = BOOM
    return adapters


async def start_runtime(*extra: str, services: Mapping[str, object] | None = None) -> Runtime:
    parsed = parse_text(policy_text(*extra))
    assert not parsed.errors, parsed.errors
    runtime = Runtime(MemoryStore(parsed.resources), adapters=adapters_for_tests(), services=services)
    await runtime.start()
    snap = runtime.snapshot
    assert snap is not None and not snap.errors, [str(e) for e in snap.errors] if snap else None
    assert not runtime.dispatcher.table.errors, runtime.dispatcher.table.errors
    return runtime


@dataclass
class InProcessMixerd:
    """mixerd's ext_authz front-ends over one runtime: gRPC on ``grpc_port``, HTTP on ``http_port``."""

    runtime: Runtime
    grpc_server: grpc.aio.Server
    http: HttpAuthzServer
    grpc_port: int
    http_port: int

    async def stop(self) -> None:
        await self.grpc_server.stop(0.5)
        await self.http.close(0.5)
        await self.runtime.close()


async def start_mixerd_in_process(
    *extra: str, http_options: HttpAuthzOptions | None = None, services: Mapping[str, object] | None = None
) -> InProcessMixerd:
    runtime = await start_runtime(*extra, services=services)
    server = grpc.aio.server()
    ExtAuthzService(runtime).register(server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = build_http_authz_server(runtime, http_options)
    http_port = await http.start("127.0.0.1", 0)
    return InProcessMixerd(runtime, server, http, grpc_port, http_port)


@dataclass
class Upstream:
    """An HTTP server that answers every request with the JSON of what it received."""

    runner: web.AppRunner
    port: int
    seen: list[Mapping[str, Any]] = field(default_factory=list)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_upstream() -> Upstream:
    holder: list[Upstream] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen = {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        holder[0].seen.append(seen)
        return web.json_response(seen)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    up = Upstream(runner, port)
    holder.append(up)
    return up
