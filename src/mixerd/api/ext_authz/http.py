"""The HTTP forward-auth endpoint: Envoy ext_authz ``http_service``, nginx ``auth_request`` and
Traefik ForwardAuth, all on one endpoint that answers any method on any path.

The request is turned into attributes by :class:`~mixerd.api.ext_authz.request.HttpRequestBag`
and checked like a gRPC ext_authz call; the answer is 200 with an empty body (so the proxy keeps
its connection alive) and the injected headers when allowed, the mapped status with a short text
body and ``x-mixerd-status`` when denied, 500 (503/504) with only a request id when the check
could not be evaluated, and 400 for a malformed request (a bad ``X-Real-IP`` ...).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from mixerd.adapter import Code, code_name
from mixerd.api.ext_authz.quotas import quota_args
from mixerd.api.ext_authz.request import BadRequest, HttpRequestBag
from mixerd.api.ext_authz.service import QuotaPlanCache, error_request_id
from mixerd.api.ext_authz.verdict import HttpAnswer, decide, encode_http, error_verdict
from mixerd.runtime import DispatchError, Runtime, metrics

__all__ = ["HttpAuthzOptions", "build_http_authz_app", "build_http_authz_server"]

_log = logging.getLogger(__name__)


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
        self.plans = QuotaPlanCache(runtime)
        self._seconds = metrics.REQUEST_SECONDS.labels("http_authz", "Check")
        self._counters: dict[int, Any] = {}

    def _count(self, code: int) -> None:
        c = self._counters.get(code)
        if c is None:
            c = self._counters[code] = metrics.REQUESTS.labels("http_authz", "Check", code_name(code))
        c.inc()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        start = time.perf_counter()
        try:
            bag = HttpRequestBag(
                request.method,
                request.raw_path,
                request.headers,
                now=_dt.datetime.now(_dt.UTC),
                prefix=self.options.prefix,
                extension_headers=self.options.extension_headers,
            )
            quotas = quota_args(bag, self.plans.get())
        except BadRequest as exc:
            self._count(Code.INVALID_ARGUMENT)
            return web.Response(status=400, text=f"bad request: {exc}"[:300])
        try:
            outcome = await self.runtime.dispatcher.check(bag, quotas=quotas)
        except DispatchError as exc:
            rid = error_request_id(bag)
            _log.error("http authz check failed (request id %s): %s", rid, exc)
            verdict = error_verdict(exc.code, rid)
        else:
            verdict = decide(outcome, quotas)
        self._count(verdict.code)
        answer = encode_http(verdict)
        self._seconds.observe(time.perf_counter() - start)
        return _response(answer)


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
