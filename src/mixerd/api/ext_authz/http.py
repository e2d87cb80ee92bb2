"""The HTTP forward-auth endpoint: Envoy ext_authz ``http_service``, nginx ``auth_request`` and
Traefik ForwardAuth, all on one endpoint that answers any method on any path.

The request is turned into attributes by :class:`~mixerd.api.ext_authz.request.HttpRequestBag`
and checked like a gRPC ext_authz call (by the shared
:class:`~mixerd.api.ext_authz.authorize.Authorizer`); the answer is 200 with an empty body (so the
proxy keeps its connection alive) and the injected headers when allowed, the mapped status with a
short text body and ``x-mixerd-status`` when denied, 500 (503/504) with only a request id when the
check could not be evaluated, 400 for a malformed request (bad HTTP, a bad ``X-Real-IP`` ...) and
431 for a request head over the limits of :class:`HttpAuthzOptions`.

The server is an ``asyncio.Protocol`` over httptools' HTTP/1.1 parser (llhttp, strict): a proxy
asks this endpoint for every request it serves, and a general web framework's per-request
machinery (request and response objects, header multi-dicts, a task per request, a writer
object) cost several times what the check itself costs. Here a request is the header fields the
parser hands over, collected into a dict; a check that completes without waiting (the usual
case: handlers and the decision cache answer synchronously) is run to completion at once without
a task, and one that waits continues in a task; answers go out in request order (pipelining),
pre-encoded by verdict.

* **Keep-alive** as HTTP/1.1 says (HTTP/1.0 with ``Connection: keep-alive``); ``Connection:
  close`` closes after the answer. A request body (Envoy's ``with_request_body``) is read and
  discarded.
* **Limits**: request target and each header field at most ``max_field_size`` bytes, at most
  ``max_fields`` header fields and ``max_head_size`` bytes of request head (431 and close);
  a connection must deliver a complete request within ``read_timeout`` of opening or of its
  previous answer, else it is closed; connections beyond ``max_connections`` are closed as they
  arrive (both counted in ``mixerd_http_authz_connections_closed_total{reason}``); at most
  :data:`_MAX_QUEUED` pipelined requests wait behind one being checked (reading pauses), and
  reading pauses while the client does not read its answers.
* **TLS** through the listener's SSL context (certificate rotation is the context's business).
  With ``caller_identity`` (the listener verifies client certificates) the SPIFFE ID of the
  connection's client certificate is ``mixerd.caller.principal``, read once per connection.
* **Drain** (:meth:`HttpAuthzServer.close`): stop accepting, close idle connections, answer the
  requests being checked (with ``Connection: close``), then close what is left after the grace.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, cast

import httptools

from mixerd.adapter import RateLimitedWarning
from mixerd.api.caller import transport_caller
from mixerd.api.ext_authz.authorize import Authorizer
from mixerd.api.ext_authz.request import BadRequest, HttpHeaders, HttpRequestBag
from mixerd.api.ext_authz.verdict import HttpAnswer, Verdict, encode_http
from mixerd.attribute import remember
from mixerd.runtime import Runtime

__all__ = ["HttpAuthzOptions", "HttpAuthzServer", "build_http_authz_server"]

_log = logging.getLogger("mixerd.api.http_authz")

_MAX_QUEUED: Final = 32
"""Pipelined requests that may wait behind one being checked before the connection stops reading."""


@dataclass(frozen=True, slots=True)
class HttpAuthzOptions:
    """Options of the HTTP endpoint.

    ``prefix``: a path prefix to strip from the request line when no ``X-Original-URI`` /
    ``X-Forwarded-Uri`` is sent (Envoy's ``http_service.path_prefix``). ``extension_headers``:
    read ``X-Mixerd-Ext-<key>`` headers as context extensions (only when the proxy sets or
    clears them; see :mod:`mixerd.api.ext_authz.request`).
    """

    prefix: str = ""
    extension_headers: bool = False
    read_timeout: float = 30.0
    """Seconds a connection may take to deliver a complete request, counted from when it opened or
    from the previous answer: slow or idle clients are closed after it (checked a few times per
    timeout, so within a quarter more, and at least every second)."""
    max_connections: int = 1024
    """Open connections above this are closed at once and counted."""
    caller_identity: bool = False
    """Read the SPIFFE ID of the connection's client certificate into ``mixerd.caller.principal``
    (set when the listener verifies client certificates)."""
    max_field_size: int = 16384
    """Longest request target, and longest header field (name and value), in bytes."""
    max_fields: int = 256
    """Most header fields in one request."""
    max_head_size: int = 65536
    """Longest request head (request line and header fields), in bytes."""


# --- answers ------------------------------------------------------------------------------------

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date"})
"""Answer header names mixerd sets itself: a handler's direct response cannot set them."""
_TEXT: Final = b"Content-Type: text/plain; charset=utf-8\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


def _encode(answer: HttpAnswer) -> tuple[bytes, bytes]:
    """An answer as (status line and header fields up to the ``Date``, body). Fields no HTTP/1.1
    peer would accept (a name that is not a token, a value with CR, LF or NUL) are left out."""
    parts = [_status_line(answer.status)]
    typed = False
    for name, value in answer.headers:
        if _TOKEN.fullmatch(name) is None or "\r" in value or "\n" in value or "\0" in value:
            continue
        key = name.lower()
        if key in _FRAMING:
            continue
        typed = typed or key == "content-type"
        parts.append(f"{name}: {value}\r\n".encode())
    body = answer.body.encode("utf-8")
    if body and not typed:
        parts.append(_TEXT)
    parts.append(b"Content-Length: %d\r\n" % len(body))
    return b"".join(parts), body


def _plain(status: int, text: str) -> tuple[bytes, bytes]:
    return _encode(HttpAnswer(status, (), text))


_ALLOW: Final = _encode(encode_http(Verdict(0, 200)))
_CLOSE: Final = b"Connection: close\r\n\r\n"
_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n\r\n"
_INTERNAL: Final = _plain(500, "internal error")


class _Answers:
    """Encoded answers by verdict (a bounded memo: most checks give one of a few verdicts) and the
    ``Date`` field of the current second."""

    __slots__ = ("_by_id", "_date", "_memo", "_second")

    def __init__(self) -> None:
        self._memo: dict[Verdict, tuple[bytes, bytes]] = {}
        self._by_id: dict[int, tuple[Verdict, tuple[bytes, bytes]]] = {}
        """The same answers by the verdict's identity: a verdict met again as the same object
        (an allow with a directive's headers, see ``verdict.decide``) is found without hashing
        its header operations."""
        self._second = -1
        self._date = b""

    def of(self, verdict: Verdict) -> tuple[bytes, bytes]:
        if not verdict.request_headers and not verdict.response_headers and verdict.code == 0:
            return _ALLOW
        hit = self._by_id.get(id(verdict))
        if hit is not None and hit[0] is verdict:
            return hit[1]
        memo = self._memo
        found = memo.get(verdict)
        if found is None:
            found = remember(memo, verdict, _encode(encode_http(verdict)), 1024)
        remember(self._by_id, id(verdict), (verdict, found), 1024)
        return found

    def date(self) -> bytes:
        """``Date: <now>\\r\\n`` (formatted once a second)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self._date


# --- running a check ----------------------------------------------------------------------------


class _Continue:
    """Awaits a coroutine that was started by hand and suspended, yielding ``first``: what ``await``
    of the coroutine would have done from there on (so a task can finish it)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Verdict], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Verdict]:
        coro = self._coro
        value = self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown into the task: pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    result: Verdict = stop.value
                    return result
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    result = stop.value
                    return result


async def _finish(coro: Coroutine[Any, Any, Verdict], first: Any) -> Verdict:
    return await _Continue(coro, first)


# --- connections --------------------------------------------------------------------------------


class _Refused(Exception):
    """A request the connection answers with ``status`` and closes (bad HTTP, over a limit)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


_Request = tuple[str, str, HttpHeaders, bool, bool]
"""method, target, header fields, keep the connection alive, HTTP/1.0 keep-alive."""


_HANG_UP: Final = _Refused(0, "")
"""Close without an answer (after answering the requests before it)."""


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, checks them in order, writes the answers."""

    def __init__(self, server: HttpAuthzServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._caller: str | None = None
        self._url = b""
        options = server.options
        self._max_field = options.max_field_size
        self._max_fields = options.max_fields
        self._max_head = options.max_head_size
        self._first: dict[str, str] = {}
        self._more: list[tuple[str, str]] | None = None
        self._head = 0
        """Bytes of the current request head, counted field by field."""
        self._partial = -1
        """Bytes the current head has received in the reads that ended before it did (-1: none yet)."""
        self._in_head = False
        self._ready: list[_Request] = []
        self._waiting: deque[_Request | _Refused] = deque()
        self._busy = False
        """A check is running in a task; later requests wait in ``_waiting``."""
        self._paused = 0
        """Why reading is paused: 1 too many waiting requests, 2 the client does not read."""
        self.idle_since = 0.0
        self.closing = False

    # -- transport ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it
        transport = cast(asyncio.Transport, transport)
        server = self._server
        if len(server.connections) >= server.options.max_connections:
            server.closed_full.inc()
            transport.close()
            self.closing = True
            return
        self._transport = transport
        server.connections.add(self)
        self.idle_since = time.monotonic()
        if server.options.caller_identity:
            self._caller = transport_caller(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._waiting.clear()
        self._server.forget(self)

    def pause_writing(self) -> None:
        self._pause(2)

    def resume_writing(self) -> None:
        self._resume(2)

    def _pause(self, why: int) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        self._paused &= ~why
        if not self._paused and self._transport is not None and not self.closing:
            self._transport.resume_reading()

    @property
    def idle(self) -> bool:
        """Nothing being checked or waiting to be answered."""
        return not self._busy and not self._waiting

    def close(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._first = {}
        self._more = None
        self._head = 0
        self._partial = -1

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)
        if len(self._url) > self._max_field:
            raise _Refused(431, f"request target longer than {self._max_field} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head += size
        first = self._first
        if size > self._max_field or self._head > self._max_head or len(first) >= self._max_fields:
            self._too_large(size)
        key = name.decode("latin-1").lower()  # the parser admits only token characters
        if key in first:
            if self._more is None:
                self._more = []
            self._more.append((key, value.decode("utf-8", "replace")))
            if len(first) + len(self._more) > self._max_fields:
                self._too_large(size)
        else:
            first[key] = value.decode("utf-8", "replace")

    def _too_large(self, size: int) -> None:
        if size > self._max_field:
            raise _Refused(431, f"a header field is longer than {self._max_field} bytes")
        if self._head > self._max_head:
            raise _Refused(431, f"request head longer than {self._max_head} bytes")
        raise _Refused(431, f"more than {self._max_fields} header fields")

    def on_headers_complete(self) -> None:
        self._in_head = False

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        self._ready.append(
            (
                parser.get_method().decode("latin-1"),
                self._url.decode("utf-8", "replace"),
                HttpHeaders(self._first, self._more),
                keep_alive,
                keep_alive and parser.get_http_version() == "1.0",
            )
        )

    # -- requests -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        refused: _Refused | None = None
        last = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            last = True  # CONNECT or Upgrade: answer the request, then close (no tunnels here)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                refused = cause
            else:  # a bug in a callback
                self._server.internal_error(cause or exc)
                refused = _Refused(500, "internal error")
        except httptools.HttpParserError as exc:
            refused = _Refused(400, f"bad request: {exc}")
        ready = self._ready
        if self._in_head and refused is None:
            # A head still incomplete: count what it has received across reads (the parser holds
            # a partial header field until it ends). In the read where it began, all of the read
            # is its own unless requests before it ended there too (pipelining).
            if self._partial < 0:
                self._partial = 0 if ready else len(data)
            else:
                self._partial += len(data)
            if self._partial > self._max_head:
                refused = _Refused(431, f"request head longer than {self._max_head} bytes")
        if ready:
            self._ready = []
            for request in ready:
                self._submit(request)
        if refused is not None:
            self._submit(refused)
        elif last:
            self._submit(_HANG_UP)

    def _submit(self, request: _Request | _Refused) -> None:
        if self.closing:
            return
        if self._busy:
            self._waiting.append(request)
            if len(self._waiting) >= _MAX_QUEUED:
                self._pause(1)
            return
        self._run(request)

    def _run(self, request: _Request | _Refused) -> None:
        if isinstance(request, _Refused):
            if request.status:
                self._write(_plain(request.status, request.text), False, False)
            self.close()
            return
        method, target, headers, keep_alive, http10 = request
        server = self._server
        coro = server.check(method, target, headers, self._caller)
        try:
            first = coro.send(None)
        except StopIteration as done:
            self._write(server.answers.of(done.value), keep_alive, http10, method == "HEAD")
            return
        except BadRequest as exc:
            self._write(_plain(400, f"bad request: {exc}"[:300]), keep_alive, http10)
            return
        except Exception as exc:  # a bug: one log line now and then, never a traceback per request
            server.internal_error(exc)
            self._write(_INTERNAL, False, False)
            return
        self._busy = True
        task = asyncio.get_running_loop().create_task(_finish(coro, first))
        task.add_done_callback(lambda t: self._finished(t, keep_alive, http10, method == "HEAD"))

    def _finished(self, task: asyncio.Task[Verdict], keep_alive: bool, http10: bool, head: bool) -> None:
        self._busy = False
        server = self._server
        if task.cancelled():
            self.close()
        else:
            exc = task.exception()
            if exc is None:
                self._write(server.answers.of(task.result()), keep_alive, http10, head)
            elif isinstance(exc, BadRequest):
                self._write(_plain(400, f"bad request: {exc}"[:300]), keep_alive, http10)
            else:
                server.internal_error(exc)
                self._write(_INTERNAL, False, False)
        waiting = self._waiting
        while waiting and not self._busy and not self.closing:
            self._run(waiting.popleft())
        if len(waiting) < _MAX_QUEUED:
            self._resume(1)
        if self._server.draining and self.idle:
            self.close()

    def _write(self, answer: tuple[bytes, bytes], keep_alive: bool, http10: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self.closing = True
            return
        server = self._server
        prefix, body = answer
        if keep_alive and not server.draining:
            end = _KEEP_ALIVE if http10 else b"\r\n"
            transport.write(prefix + server.answers.date() + end + (b"" if head else body))
            self.idle_since = time.monotonic()
            return
        transport.write(prefix + server.answers.date() + _CLOSE + (b"" if head else body))
        self.close()


# --- the server ---------------------------------------------------------------------------------


class HttpAuthzServer:
    """The forward-auth endpoint: a protocol factory for ``loop.create_server`` with its
    connections, read timeout, connection cap and drain. :meth:`start` listens; :meth:`close`
    drains and stops."""

    def __init__(self, runtime: Runtime, options: HttpAuthzOptions | None = None) -> None:
        self.options = options = options or HttpAuthzOptions()
        self.runtime = runtime
        self.authorizer = Authorizer(runtime, "http_authz")
        self.answers = _Answers()
        self.connections: set[_Connection] = set()
        self.draining = False
        closed = runtime.metrics.counter(
            "mixerd_http_authz_connections_closed",
            "HTTP authorization connections closed by mixerd, by reason (read_timeout, connection_limit).",
            ["reason"],
        )
        self.closed_slow = closed.labels("read_timeout")
        self.closed_full = closed.labels("connection_limit")
        self._errors = RateLimitedWarning(runtime.clock, logger=_log)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._gone: asyncio.Event | None = None
        clock = runtime.clock
        prefix = options.prefix
        extension_headers = options.extension_headers
        authorize = self.authorizer.authorize

        def check(
            method: str, target: str, headers: HttpHeaders, caller: str | None
        ) -> Coroutine[Any, Any, Verdict]:
            def decode() -> HttpRequestBag:
                return HttpRequestBag(
                    method,
                    target,
                    headers,
                    now=clock.now(),
                    prefix=prefix,
                    extension_headers=extension_headers,
                    caller=caller,
                )

            return authorize(decode)

        self.check: Callable[[str, str, HttpHeaders, str | None], Coroutine[Any, Any, Verdict]] = check

    def __call__(self) -> _Connection:
        return _Connection(self)

    async def start(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> int:
        """Listen on ``host:port`` (TLS with ``ssl_context``); returns the port bound."""
        self._server = await asyncio.get_running_loop().create_server(
            self,
            host or None,
            port,
            ssl=ssl_context,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self._arm()
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _arm(self) -> None:
        interval = min(1.0, max(0.05, self.options.read_timeout / 4))
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close the connections that have not delivered a complete request in time."""
        limit = time.monotonic() - self.options.read_timeout
        for conn in [c for c in self.connections if c.idle_since < limit and c.idle and not c.closing]:
            self.closed_slow.inc()
            conn.close()
        self._arm()

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if self._gone is not None and not self.connections:
            self._gone.set()

    def internal_error(self, exc: BaseException) -> None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
        self._errors.add(1, f"HTTP authorization: internal error ({type(exc).__name__}{where}), answered 500")

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, let the checks in flight be answered (at most
        ``grace`` seconds), then close every connection."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        if self.connections:
            self._gone = asyncio.Event()
            try:
                await asyncio.wait_for(self._gone.wait(), grace)
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()


def build_http_authz_server(runtime: Runtime, options: HttpAuthzOptions | None = None) -> HttpAuthzServer:
    """The HTTP forward-auth endpoint over ``runtime`` (what ``mixerd serve`` runs); call
    :meth:`HttpAuthzServer.start` to listen."""
    return HttpAuthzServer(runtime, options)
