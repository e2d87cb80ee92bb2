"""A stock Envoy (ext_authz filter, gRPC and HTTP modes) in front of mixerd's policy.

Real Envoy binary, mixerd's ext_authz gRPC service and HTTP endpoint in this process over a
MemoryStore config (tests/data/ext_authz_config.yaml), and an upstream that echoes the headers it
received. Requests go through Envoy with aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ext_authz_support import (
    BOOM_POLICY,
    InProcessMixerd,
    Upstream,
    start_mixerd_in_process,
    start_upstream,
)
from tests.support.net import free_port

from .envoy_proc import EnvoyProcess, authz_config, start_envoy


@dataclass
class Stack:
    mixerd: InProcessMixerd
    upstream: Upstream
    envoy: EnvoyProcess
    grpc_url: str
    http_url: str
    session: aiohttp.ClientSession

    async def get(
        self, url: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, Any, str]:
        async with self.session.request(
            method, url, headers=headers or {}, data=b"hello world" if method == "POST" else None
        ) as resp:
            return resp.status, resp.headers, await resp.text()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    mixerd = await start_mixerd_in_process(BOOM_POLICY)
    upstream = await start_upstream()
    ports = {k: free_port() for k in ("admin", "grpc", "http")}
    config = authz_config(
        admin_port=ports["admin"],
        grpc_listener_port=ports["grpc"],
        http_listener_port=ports["http"],
        authz_grpc_port=mixerd.grpc_port,
        authz_http_port=mixerd.http_port,
        upstream_port=upstream.port,
    )
    envoy = await asyncio.to_thread(start_envoy, tmp_path / "envoy", config, ports["admin"])
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Stack(
            mixerd,
            upstream,
            envoy,
            f"http://127.0.0.1:{ports['grpc']}",
            f"http://127.0.0.1:{ports['http']}",
            session,
        )
    finally:
        await session.close()
        await asyncio.to_thread(envoy.stop)
        await upstream.stop()
        await mixerd.stop()


async def test_grpc_mode_allows_and_injects_headers(stack: Stack) -> None:
    status, headers, body = await stack.get(
        stack.grpc_url + "/orders?id=7", {"x-user": "alice"}, method="POST"
    )
    assert status == 200, body
    seen = stack.upstream.seen[-1]
    assert seen["headers"]["x-user-id"] == "alice"
    assert seen["path"] == "/orders?id=7"
    assert seen["body"] == "hello world"
    assert headers["x-authz"] == "ok"  # response header operation reached the client


async def test_grpc_mode_denies_with_mixerd_message(stack: Stack) -> None:
    before = len(stack.upstream.seen)
    status, headers, body = await stack.get(
        stack.grpc_url + "/orders", {"x-deny": "true", "x-user": "mallory"}
    )
    assert status == 403
    assert "blocked by x-deny" in body
    assert headers["x-mixerd-status"] == "PERMISSION_DENIED"
    assert len(stack.upstream.seen) == before  # the upstream never saw it


async def test_grpc_mode_context_extensions_select_namespace_config(stack: Stack) -> None:
    # The route taken with x-tenant: shop sets the context extension namespace: shop, so the
    # rules of namespace shop apply (shop-admin denies /admin...); other requests use the
    # default namespace only.
    status, _, body = await stack.get(stack.grpc_url + "/admin/users", {"x-tenant": "shop"})
    assert status == 403
    assert "admin is closed" in body
    status, _, body = await stack.get(stack.grpc_url + "/admin/users")
    assert status == 200, body
    status, _, body = await stack.get(stack.grpc_url + "/catalog", {"x-tenant": "shop"})
    assert status == 200, body


async def test_grpc_mode_handler_failure_is_an_error_without_details(stack: Stack) -> None:
    status, _, body = await stack.get(stack.grpc_url + "/x", {"x-boom": "true", "x-request-id": "req-42"})
    assert status == 500
    assert "hunter2" not in body
    assert body.startswith("handler failure (request id ") and "req-42" not in body
    status, _, _ = await stack.get(stack.grpc_url + "/x")
    assert status == 200  # mixerd and Envoy keep serving


async def test_http_mode_allows_and_injects_headers(stack: Stack) -> None:
    status, headers, body = await stack.get(stack.http_url + "/p/q?z=1", {"x-user": "bob"}, method="POST")
    assert status == 200, body
    seen = stack.upstream.seen[-1]
    assert seen["headers"]["x-user-id"] == "bob"
    assert seen["path"] == "/p/q?z=1"
    assert seen["method"] == "POST"
    assert headers["x-authz"] == "ok"


async def test_http_mode_denies_with_mixerd_message(stack: Stack) -> None:
    before = len(stack.upstream.seen)
    status, headers, body = await stack.get(stack.http_url + "/p", {"x-deny": "true"})
    assert status == 403
    assert "blocked by x-deny" in body
    assert headers["x-mixerd-status"] == "PERMISSION_DENIED"
    assert len(stack.upstream.seen) == before


async def test_replace_overwrites_a_header_the_client_sent(stack: Stack) -> None:
    # A REPLACE header operation becomes OVERWRITE_IF_EXISTS_OR_ADD: the client's value is gone.
    status, _, _ = await stack.get(stack.grpc_url + "/x", {"x-user": "alice", "x-user-id": "root"})
    assert status == 200
    assert stack.upstream.seen[-1]["headers"]["x-user-id"] == "alice"
