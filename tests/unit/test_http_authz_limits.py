"""The HTTP authorization endpoint's limits: read timeout, connection cap, clean 400s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mixerd.api.ext_authz import HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.runtime import Runtime
from tests.ext_authz_support import BOOM_POLICY, start_runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = await start_runtime(BOOM_POLICY)
    try:
        yield rt
    finally:
        await rt.close()


async def _serve(runtime: Runtime, options: HttpAuthzOptions) -> tuple[HttpAuthzServer, int]:
    server = build_http_authz_server(runtime, options)
    return server, await server.start("127.0.0.1", 0)


async def _accepted(server: HttpAuthzServer, n: int) -> None:
    """Wait (bounded) until the server has accepted ``n`` connections."""
    for _ in range(500):
        if len(server.connections) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server did not accept {n} connections")


def _closed(runtime: Runtime, reason: str) -> float:
    return runtime.metrics.value("mixerd_http_authz_connections_closed_total", {"reason": reason}) or 0.0


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection (EOF) within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except TimeoutError:
        return False


async def test_a_client_that_never_finishes_its_headers_is_closed(runtime: Runtime) -> None:
    runner, port = await _serve(runtime, HttpAuthzOptions(read_timeout=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")  # and nothing more
        await writer.drain()
        assert await _closed_by_server(reader, 5)
        writer.close()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"\r\n\r\n")  # blank lines before a request line that never comes
        assert await _closed_by_server(idle_reader, 5)
        idle_writer.close()
        assert _closed(runtime, "read_timeout") == 2
    finally:
        await runner.close(0.5)


async def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(runtime: Runtime) -> None:
    # pauses of 0.3 s between requests against a 1.5 s timeout: only an idle connection is closed
    runner, port = await _serve(runtime, HttpAuthzOptions(read_timeout=1.5))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # each answer re-arms the timeout: a busy connection is never cut
            writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.3)
        assert await _closed_by_server(reader, 5)
        writer.close()
    finally:
        await runner.close(0.5)


async def test_connections_beyond_the_cap_are_closed(runtime: Runtime) -> None:
    runner, port = await _serve(runtime, HttpAuthzOptions(max_connections=2))
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _accepted(runner, 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(reader, 5)
        writer.close()
        assert _closed(runtime, "connection_limit") == 1
        r, w = held[0]
        w.write(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
    finally:
        await runner.close(0.5)


async def test_a_garbage_request_line_is_a_clean_400(runtime: Runtime) -> None:
    runner, port = await _serve(runtime, HttpAuthzOptions())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
        writer.close()
    finally:
        await runner.close(0.5)
