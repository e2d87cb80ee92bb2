"""The HTTP forward-auth endpoint: Envoy ext_authz ``http_service``, nginx ``auth_request`` and
Traefik ForwardAuth, all on one endpoint that answers any method on any path.

The request is turned into attributes by :class:`~mixerd.api.ext_authz.request.HttpRequestBag`
and checked like a gRPC ext_authz call (by the shared
:class:`~mixerd.api.ext_authz.authorize.Authorizer`); the answer is 200 with an empty body (so the
proxy keeps its connection alive) and the injected headers when allowed, the mapped status with a short text
body and ``x-mixerd-status`` when denied, 500 (503/504) with only a request id when the check
could not be evaluated, and 400 for a malformed request (a bad ``X-Real-IP`` ...).

With ``caller_identity`` (the listener verifies client certificates) the SPIFFE ID of the
connection's client certificate is ``mixerd.caller.principal``, read once per connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from mixerd.api.caller import transport_caller
from mixerd.api.ext_authz.authorize import Authorizer
from mixerd.api.ext_authz.request import BadRequest, HttpRequestBag
from mixerd.api.ext_authz.verdict import HttpAnswer, encode_http
from mixerd.runtime import Runtime

__all__ = ["HttpAuthzOptions", "build_http_authz_app", "build_http_authz_server"]


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
    from the previous answer: slow or idle clients are closed after it (low-level server only)."""
    max_connections: int = 1024
    """Open connections above this are closed at once and counted (low-level server only)."""
    caller_identity: bool = False
    """Read the SPIFFE ID of the connection's client certificate into ``mixerd.caller.principal``
    (set when the listener verifies client certificates)."""


class _Endpoint:
    def __init__(self, runtime: Runtime, options: HttpAuthzOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.authorizer = Authorizer(runtime, "http_authz")
        self.guard: _GuardedServer | None = None

    async def handle(self, request: web.BaseRequest) -> web.Response:
        guard = self.guard
        if guard is not None:
            guard.request_started(request.protocol)
        try:
            return await self._handle(request)
        finally:
            if guard is not None:
                guard.request_done(request.protocol)

    def _caller(self, request: web.BaseRequest) -> str | None:
        guard = self.guard
        if guard is None:
            return transport_caller(request.transport)
        return guard.caller(request.protocol, request.transport)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        options = self.options
        clock = self.runtime.clock
        caller = self._caller(request) if options.caller_identity else None

        def decode() -> HttpRequestBag:
            return HttpRequestBag(
                request.method,
                request.raw_path,
                request.headers,
                now=clock.now(),
                prefix=options.prefix,
                extension_headers=options.extension_headers,
                caller=caller,
            )

        try:
            verdict = await self.authorizer.authorize(decode)
        except BadRequest as exc:
            return web.Response(status=400, text=f"bad request: {exc}"[:300])
        return _response(encode_http(verdict))


def _response(a: HttpAnswer) -> web.Response:
    headers = CIMultiDict(a.headers) if a.headers else None
    if a.body:
        return web.Response(status=a.status, headers=headers, text=a.body)
    return web.Response(status=a.status, headers=headers)


def build_http_authz_app(runtime: Runtime, options: HttpAuthzOptions | None = None) -> web.Application:
    """An aiohttp application answering forward-auth checks on every path and method (serve it
    with ``web.AppRunner``)."""
    endpoint = _Endpoint(runtime, options or HttpAuthzOptions())
    app = web.Application(handler_args={"max_field_size": 16384})
    app.router.add_route("*", "/{tail:.*}", endpoint.handle)
    return app


class _GuardedServer(web.Server):
    """aiohttp's low-level server with a read timeout and a connection cap.

    A connection must deliver a complete request within ``read_timeout`` of opening and of each
    answer; a slow, half-open or idle one is closed (aiohttp alone waits for a request's headers
    forever). Connections beyond ``max_connections`` are closed as they arrive. Both are counted
    in ``mixerd_http_authz_connections_closed_total{reason}``.
    """

    def __init__(self, endpoint: _Endpoint, options: HttpAuthzOptions, closed: Any) -> None:
        super().__init__(endpoint.handle, access_log=None, max_field_size=16384)
        self._read_timeout = options.read_timeout
        self._max_connections = options.max_connections
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._busy: set[Any] = set()
        self._callers: dict[Any, str | None] = {}
        """The caller's principal by connection (its handler), once read."""
        self._closed_slow = closed.labels("read_timeout")
        self._closed_full = closed.labels("connection_limit")

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self.connections) > self._max_connections:
            self._closed_full.inc()
            transport.close()
            return
        self._arm(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        entry = self._timers.pop(handler, None)
        if entry is not None:
            entry.cancel()
        self._busy.discard(handler)
        self._callers.pop(handler, None)
        super().connection_lost(handler, exc)

    def caller(self, handler: Any, transport: asyncio.BaseTransport | None) -> str | None:
        """The SPIFFE ID of a connection's client certificate (decoding a certificate costs more
        than a request's other attributes, so once per connection)."""
        try:
            return self._callers[handler]
        except KeyError:
            pass
        principal = transport_caller(transport)
        if transport is not None and not transport.is_closing():
            self._callers[handler] = principal
        return principal

    def request_started(self, handler: Any) -> None:
        self._busy.add(handler)
        timer = self._timers.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def request_done(self, handler: Any) -> None:
        self._busy.discard(handler)
        transport = getattr(handler, "transport", None)
        if transport is not None and not transport.is_closing():
            self._arm(handler, transport)

    def _arm(self, handler: Any, transport: asyncio.BaseTransport) -> None:
        old = self._timers.pop(handler, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[handler] = loop.call_later(self._read_timeout, self._expire, handler, transport)

    def _expire(self, handler: Any, transport: asyncio.BaseTransport) -> None:
        self._timers.pop(handler, None)
        if handler in self._busy or transport.is_closing():
            return
        self._closed_slow.inc()
        transport.close()


def build_http_authz_server(runtime: Runtime, options: HttpAuthzOptions | None = None) -> web.Server:
    """The same endpoint on aiohttp's low-level server (serve it with ``web.ServerRunner``): no
    router, no middleware machinery, noticeably cheaper per request than the application; with
    the read timeout and connection cap of :class:`HttpAuthzOptions` (what ``mixerd serve`` runs)."""
    options = options or HttpAuthzOptions()
    endpoint = _Endpoint(runtime, options)
    closed = runtime.metrics.counter(
        "mixerd_http_authz_connections_closed",
        "HTTP authorization connections closed by mixerd, by reason (read_timeout, connection_limit).",
        ["reason"],
    )
    server = _GuardedServer(endpoint, options, closed)
    endpoint.guard = server
    return server
