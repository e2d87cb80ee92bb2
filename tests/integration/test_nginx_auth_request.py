"""A stock nginx (``auth_request``) in front of mixerd's HTTP endpoint.

Real nginx binary, mixerd's HTTP endpoint in this process over a MemoryStore config
(tests/data/ext_authz_config.yaml), and an upstream that echoes the headers it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.ext_authz_support import (
    InProcessMixerd,
    Upstream,
    start_mixerd_in_process,
    start_upstream,
)
from tests.support.net import free_port

from .nginx_proc import NginxProcess, auth_request_config, start_nginx


@dataclass
class Stack:
    mixerd: InProcessMixerd
    upstream: Upstream
    nginx: NginxProcess
    url: str
    session: aiohttp.ClientSession


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    mixerd = await start_mixerd_in_process()
    upstream = await start_upstream()
    port = free_port()
    conf = auth_request_config(listen_port=port, mixerd_port=mixerd.http_port, upstream_port=upstream.port)
    nginx = await asyncio.to_thread(start_nginx, tmp_path / "nginx", conf, port)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Stack(mixerd, upstream, nginx, f"http://127.0.0.1:{port}", session)
    finally:
        await session.close()
        await asyncio.to_thread(nginx.stop)
        await upstream.stop()
        await mixerd.stop()


async def test_allowed_request_reaches_upstream_with_injected_header(stack: Stack) -> None:
    async with stack.session.post(
        stack.url + "/orders/7?verbose=1", headers={"x-user": "alice"}, data=b"x"
    ) as resp:
        assert resp.status == 200, await resp.text()
    seen = stack.upstream.seen[-1]
    assert seen["headers"]["x-user-id"] == "alice"
    assert seen["path"] == "/orders/7?verbose=1"
    assert seen["method"] == "POST"


async def test_anonymous_request_is_allowed_without_identity(stack: Stack) -> None:
    async with stack.session.get(stack.url + "/") as resp:
        assert resp.status == 200
    assert "x-user-id" not in stack.upstream.seen[-1]["headers"]


async def test_denied_request_is_403_and_never_reaches_upstream(stack: Stack) -> None:
    before = len(stack.upstream.seen)
    async with stack.session.get(stack.url + "/orders", headers={"x-deny": "true", "x-user": "bob"}) as resp:
        assert resp.status == 403
    assert len(stack.upstream.seen) == before
    async with stack.session.get(stack.url + "/orders", headers={"x-user": "bob"}) as resp:
        assert resp.status == 200
    assert stack.upstream.seen[-1]["headers"]["x-user-id"] == "bob"


async def test_many_checks_over_kept_alive_connections(stack: Stack) -> None:
    results = await asyncio.gather(
        *(stack.session.get(stack.url + f"/n/{i}", headers={"x-user": f"u{i}"}) for i in range(50))
    )
    try:
        assert [r.status for r in results] == [200] * 50
    finally:
        for r in results:
            r.release()
    users = {s["headers"]["x-user-id"] for s in stack.upstream.seen[-50:]}
    assert users == {f"u{i}" for i in range(50)}
