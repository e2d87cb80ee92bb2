"""The HTTP forward-auth endpoint: Envoy ext_authz ``http_service``, nginx ``auth_request`` and
Traefik ForwardAuth, all on one endpoint that answers any method on any path.

The request is turned into attributes by :class:`~mixerd.api.ext_authz.request.HttpRequestBag`
and checked like a gRPC ext_authz call (by the shared
:class:`~mixerd.api.ext_authz.authorize.Authorizer`); the answer is 200 with an empty body (so the
proxy keeps its connection alive) and the injected headers when allowed, the mapped status with a short text
body and ``x-mixerd-status`` when denied, 500 (503/504) with only a request id when the check
could not be evaluated, and 400 for a malformed request (a bad ``X-Real-IP`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

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


class _Endpoint:
    def __init__(self, runtime: Runtime, options: HttpAuthzOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.authorizer = Authorizer(runtime, "http_authz")

    async def handle(self, request: web.BaseRequest) -> web.Response:
        options = self.options
        clock = self.runtime.clock

        def decode() -> HttpRequestBag:
            return HttpRequestBag(
                request.method,
                request.raw_path,
                request.headers,
                now=clock.now(),
                prefix=options.prefix,
                extension_headers=options.extension_headers,
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


def build_http_authz_server(runtime: Runtime, options: HttpAuthzOptions | None = None) -> web.Server:
    """The same endpoint on aiohttp's low-level server (serve it with ``web.ServerRunner``): no
    router, no middleware machinery, noticeably cheaper per request than the application."""
    endpoint = _Endpoint(runtime, options or HttpAuthzOptions())
    return web.Server(endpoint.handle, access_log=None, max_field_size=16384)
