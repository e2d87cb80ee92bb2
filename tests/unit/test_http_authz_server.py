"""The HTTP authorization endpoint's own HTTP/1.1 server: pipelining, keep-alive, HEAD, bodies,
limits, checks that wait, and drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from mixerd.api.ext_authz import HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.api.ext_authz.request import HttpHeaders
from mixerd.api.ext_authz.verdict import Verdict
from mixerd.runtime import Runtime
from tests.ext_authz_support import BOOM_POLICY, start_runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = await start_runtime(BOOM_POLICY)
    try:
        yield rt
    finally:
        await rt.close()


async def _serve(runtime: Runtime, options: HttpAuthzOptions | None = None) -> tuple[HttpAuthzServer, int]:
    server = build_http_authz_server(runtime, options)
    return server, await server.start("127.0.0.1", 0)


async def _answers(reader: asyncio.StreamReader, n: int) -> list[tuple[bytes, dict[str, str], bytes]]:
    """Read ``n`` answers: status line, header fields (lower-case names), body."""
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status, *lines = head[:-4].split(b"\r\n")
        fields = {}
        for line in lines:
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 5)
        out.append((status, fields, body))
    return out


async def test_pipelined_requests_are_answered_in_order(runtime: Runtime) -> None:
    server, port = await _serve(runtime)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-User: alice\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: h\r\nX-Deny: true\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: h\r\nX-User: bob\r\n\r\n"
        )
        (s1, f1, b1), (s2, f2, b2), (s3, f3, _) = await _answers(reader, 3)
        assert s1 == b"HTTP/1.1 200 OK" and f1["x-user-id"] == "alice" and b1 == b""
        assert s2 == b"HTTP/1.1 403 Forbidden" and f2["x-mixerd-status"] == "PERMISSION_DENIED"
        assert b"blocked by x-deny" in b2 and f2["content-type"].startswith("text/plain")
        assert s3 == b"HTTP/1.1 200 OK" and f3["x-user-id"] == "bob"
        assert "date" in f1 and "connection" not in f1
        writer.close()
    finally:
        await server.close(0.5)


async def test_a_check_that_waits_keeps_the_order_of_answers(runtime: Runtime) -> None:
    server, port = await _serve(runtime)
    real = server.check

    def check(
        method: str, target: str, headers: HttpHeaders, caller: str | None
    ) -> Coroutine[Any, Any, Verdict]:
        async def slow() -> Verdict:
            if headers.first.get("x-slow"):
                await asyncio.sleep(0.05)  # the check suspends: it finishes in a task
            return await real(method, target, headers, caller)

        return slow()

    server.check = check
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Slow: 1\r\nX-User: first\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: h\r\nX-User: second\r\n\r\n"
        )
        (_, f1, _), (_, f2, _) = await _answers(reader, 2)
        assert (f1["x-user-id"], f2["x-user-id"]) == ("first", "second")
        writer.close()
    finally:
        await server.close(0.5)


async def test_keep_alive_head_http10_and_bodies(runtime: Runtime) -> None:
    server, port = await _serve(runtime)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A body (Envoy's with_request_body) is read and discarded; the connection stays usable.
        writer.write(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Deny: true\r\n\r\nhello")
        [(status, fields, body)] = await _answers(reader, 1)
        assert status.startswith(b"HTTP/1.1 403") and int(fields["content-length"]) == len(body) > 0
        # HEAD: the fields of the answer, no body.
        writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\nX-Deny: true\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 403") and b"Content-Length: " in head
        writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)  # the HEAD had no body: this is the next answer
        assert rest.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in rest
        writer.close()
        # HTTP/1.0: closed after the answer unless it asks for keep-alive.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(status, fields, _)] = await _answers(reader, 1)
        assert fields["connection"] == "keep-alive"
        writer.write(b"GET /x HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
        writer.close()
    finally:
        await server.close(0.5)


@pytest.mark.parametrize(
    ("request_bytes", "status", "text"),
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", 431, "request target longer than 256 bytes"),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n",
            431,
            "a header field is longer than 256 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(9)) + b"\r\n",
            431,
            "more than 8",
        ),
        (b"GET / HTTP/1.1\r\n" + b"X-Same: v\r\n" * 9 + b"\r\n", 431, "more than 8"),
        (b"GET / HTTP/1.1\r\nBad Header: v\r\n\r\n", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "bad request"),
    ],
    ids=["target", "field", "fields", "repeated fields", "bad name", "two content lengths"],
)
async def test_oversized_and_malformed_requests_are_refused(
    runtime: Runtime, request_bytes: bytes, status: int, text: str
) -> None:
    options = HttpAuthzOptions(max_field_size=256, max_fields=8, max_head_size=1024)
    server, port = await _serve(runtime, options)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n" + request_bytes)
        answer = await asyncio.wait_for(reader.read(), 5)  # answers, then closed
        first, second = answer.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 ")
        assert second.startswith(b"%d " % status) and b"Connection: close" in second
        assert text.encode() in second
        writer.close()
    finally:
        await server.close(0.5)


async def test_a_head_sent_in_pieces_is_bounded(runtime: Runtime) -> None:
    server, port = await _serve(runtime, HttpAuthzOptions(max_head_size=1024))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Long: ")
        for _ in range(6):  # one header value growing across reads, never finished: the 6th
            await asyncio.sleep(0.02)  # piece takes the head over 1,024 bytes, however the reads fall
            writer.write(b"v" * 200)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 431") and b"request head longer than 1024 bytes" in answer
        writer.close()
    finally:
        await server.close(0.5)


async def test_drain_answers_the_check_in_flight_and_closes_idle_connections(runtime: Runtime) -> None:
    server, port = await _serve(runtime)
    real = server.check
    started = asyncio.Event()

    def check(
        method: str, target: str, headers: HttpHeaders, caller: str | None
    ) -> Coroutine[Any, Any, Verdict]:
        async def slow() -> Verdict:
            started.set()
            await asyncio.sleep(0.2)
            return await real(method, target, headers, caller)

        return slow()

    server.check = check
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        closing = asyncio.create_task(server.close(5))
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed at once
        answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
        await asyncio.wait_for(closing, 5)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)  # no longer listening
        idle_writer.close()
        writer.close()
    finally:
        await server.close(0.5)
