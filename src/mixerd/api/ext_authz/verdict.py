"""Authorization decisions -> ext_authz ``CheckResponse`` and HTTP forward-auth answers (pure).

A decision is a frozen :class:`Verdict`, encoded for either wire.

Decision -> ``CheckResponse``
=============================

* allowed: ``status.code`` 0; ``ok_response.headers`` from the rules' request header operations
  (REPLACE -> ``OVERWRITE_IF_EXISTS_OR_ADD``, APPEND -> ``APPEND_IF_EXISTS_OR_ADD``),
  ``headers_to_remove`` from REMOVE, ``response_headers_to_add`` from the response header
  operations (REMOVE cannot be expressed there and is ignored).
* denied: ``status`` = the gRPC code and message; ``denied_response.status`` = the HTTP status of
  :data:`HTTP_STATUS` (others 403), body = the message (at most :data:`MAX_BODY` bytes; the code
  name when there is no message), header ``x-mixerd-status: <CODE NAME>`` and the security gate's
  headers (``www-authenticate`` of a 401, ``x-mixerd-authz-policy`` of a 403), plus for an exhausted
  quota ``x-ratelimit-limit``/``-remaining``/``-reset`` and ``retry-after`` when the handler
  says them.
* denied with a direct HTTP response (the denying handler's
  :class:`~mixerd.adapter.DirectHttpResponse`, as Mixer's route directive carried it):
  ``denied_response.status`` = its code, body = its body as is, headers = its headers (REPLACE ->
  overwrite, ``Set-Cookie`` -> one appended header per cookie) and ``x-mixerd-status``.
* error (the check could not be evaluated): ``status`` = the error's code (INTERNAL, or
  DEADLINE_EXCEEDED/UNAVAILABLE), ``error_response`` with HTTP 500 (504, 503) and as body a fixed
  phrase and a request id (``handler failure (request id 7f3a09c2e1b4d5a6)``, made by
  :func:`mixerd.runtime.failure_answer`): the details go to mixerd's log only, under that id.
  Envoy 1.40 sends that status and body to the client (unless ``failure_mode_allow``).

FAILED_PRECONDITION maps to **403**, not the 400 of Google's canonical mapping: it is the
``denier`` adapter's default status, i.e. a policy denial, and nginx would turn a 400 into a 500.


HTTP forward-auth answers
=========================

:func:`encode_http`: allowed -> 200 with an empty body, request header operations as response
headers (REMOVE -> ``x-envoy-auth-headers-to-remove``; pseudo-headers such as ``:path`` cannot
be expressed and are left out), so the proxy can copy them upstream
(Envoy ``allowed_upstream_headers``, nginx ``auth_request_set``); response header operations are
sent the same way (Envoy ``allowed_client_headers_on_success``). Denied -> the mapped status, a
short text body and ``x-mixerd-status``; or a handler's direct HTTP response (status, body,
headers), except that a 2xx status, which would allow the request, is replaced by the mapped
one. nginx honours only 401 and 403 from ``auth_request``; any other status (429, 503 ...)
becomes a 500 there.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2

from mixerd.adapter import Code, QuotaArgs, code_name
from mixerd.attribute import remember
from mixerd.config import (
    HeaderAction,
)
from mixerd.runtime import CheckOutcome, HeaderOperation, RouteDirective

__all__ = [
    "HTTP_STATUS",
    "MAX_BODY",
    "HttpAnswer",
    "Verdict",
    "decide",
    "encode_grpc",
    "encode_http",
    "error_verdict",
    "http_status_for",
]

MAX_BODY: Final = 200
"""Longest denial body, in bytes (the message is cut on a character boundary)."""

HTTP_STATUS: Final[Mapping[int, int]] = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.FAILED_PRECONDITION: 403,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}
"""HTTP status of a denial by gRPC code; any other code gives 403."""

_ERROR_STATUS: Final[Mapping[int, int]] = {Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504}

_OVERWRITE: Final = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND: Final = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

# --- decisions ----------------------------------------------------------------------------------


def http_status_for(code: int) -> int:
    """HTTP status of a denial with gRPC ``code`` (:data:`HTTP_STATUS`, else 403)."""
    return HTTP_STATUS.get(code, 403)


def _short(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_BODY:
        return text
    return data[: MAX_BODY - 3].decode("utf-8", "ignore") + "..."


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision ready to encode for either wire: allow (``code`` 0), deny, or error.

    ``request_headers`` are header operations for the upstream request (allow only);
    ``response_headers`` go to the client (response operations when allowed; ``x-mixerd-status``
    and rate-limit headers when denied).
    """

    code: int
    http_status: int
    message: str = ""
    request_headers: tuple[HeaderOperation, ...] = ()
    response_headers: tuple[HeaderOperation, ...] = ()
    error: bool = False
    direct_body: str | None = None
    """The body of a handler's direct HTTP response (sent as is), None without one."""

    @property
    def allowed(self) -> bool:
        return self.code == Code.OK

    @property
    def body(self) -> str:
        """The client body of a denial or error (empty when allowed)."""
        if self.allowed:
            return ""
        if self.direct_body is not None:
            return self.direct_body
        return _short(self.message or code_name(self.code))


_ALLOW: Final = Verdict(Code.OK, 200)


def _status_header(code: int) -> HeaderOperation:
    return HeaderOperation("x-mixerd-status", code_name(code))


def _rate_limit_headers(
    limit: int | None, remaining: int | None, reset: _dt.timedelta | None
) -> list[HeaderOperation]:
    out: list[HeaderOperation] = []
    if limit is not None:
        out.append(HeaderOperation("x-ratelimit-limit", str(limit)))
    if remaining is not None:
        out.append(HeaderOperation("x-ratelimit-remaining", str(max(remaining, 0))))
    if reset is not None:
        seconds = str(max(math.ceil(reset.total_seconds()), 0))
        out.append(HeaderOperation("x-ratelimit-reset", seconds))
        out.append(HeaderOperation("retry-after", seconds))
    return out


_HEADER_NAME: Final = re.compile(r":?[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _valid_ops(ops: tuple[HeaderOperation, ...]) -> tuple[HeaderOperation, ...]:
    """``ops`` without operations no proxy would accept: a name that is not an HTTP token (a
    leading ``:`` allowed), a value with CR, LF or NUL."""
    for op in ops:
        v = op.value
        if _HEADER_NAME.fullmatch(op.name) is None or "\r" in v or "\n" in v or "\0" in v:
            break
    else:
        return ops
    return tuple(
        op
        for op in ops
        if _HEADER_NAME.fullmatch(op.name) is not None
        and "\r" not in op.value
        and "\n" not in op.value
        and "\0" not in op.value
    )


def decide(outcome: CheckOutcome, quotas: Mapping[str, QuotaArgs] | None = None) -> Verdict:
    """Turn a dispatcher outcome (and the quotas that were requested) into a :class:`Verdict`."""
    status = outcome.result.status
    if status.code != Code.OK:
        # The denying handler's own words; the Mixer-style "<handler>:<message>" list names
        # config internals and stays in mixerd's logs and Mixer API answers.
        message = outcome.reason or status.message
        d = outcome.directive
        if d is not None and d.direct_response_code:
            # The denying handler's direct HTTP response: its status, body and headers.
            return Verdict(
                status.code,
                d.direct_response_code,
                message,
                (),
                (
                    *_valid_ops(d.response_header_operations),
                    _status_header(status.code),
                    *outcome.deny_headers,
                ),
                direct_body=d.direct_response_body,
            )
        headers = (_status_header(status.code), *outcome.deny_headers)
        return Verdict(status.code, http_status_for(status.code), message, (), headers)
    if quotas:
        for name, args in quotas.items():
            q = outcome.quotas.get(name)
            if q is None:
                continue
            r = q.result
            if r.status.code != Code.OK:
                # The handler's own words, as for checks: "<handler>:" prefixes stay internal.
                message = f"quota {name}: {q.reason}" if q.reason else f"quota {name}"
                return Verdict(
                    r.status.code,
                    http_status_for(r.status.code),
                    message,
                    (),
                    (
                        _status_header(r.status.code),
                        *_rate_limit_headers(r.limit, r.remaining, r.reset_after),
                    ),
                )
            if r.amount < args.amount:
                code = Code.RESOURCE_EXHAUSTED
                return Verdict(
                    code,
                    429,
                    f"quota exhausted: {name}",
                    (),
                    (_status_header(code), *_rate_limit_headers(r.limit, r.remaining, r.reset_after)),
                )
    d = outcome.directive
    if d is None:
        return _ALLOW
    # A directive is often one shared object (a verified token's upstream headers, a cached
    # Check's): its verdict, and so the encoded answer, is made once.
    hit = _ALLOWED.get(id(d))
    if hit is not None and hit[0] is d:
        return hit[1]
    v = Verdict(
        Code.OK, 200, "", _valid_ops(d.request_header_operations), _valid_ops(d.response_header_operations)
    )
    remember(_ALLOWED, id(d), (d, v), 4096)
    return v


_ALLOWED: Final[dict[int, tuple[RouteDirective, Verdict]]] = {}
"""The allowing verdict of a directive, by the directive's identity (held, so never reused)."""


def error_verdict(code: int, message: str) -> Verdict:
    """The verdict for a check that could not be evaluated. ``message`` is what the caller may
    see: :func:`mixerd.runtime.failure_answer`'s phrase and request id, no internal detail."""
    if code == Code.OK:
        code = Code.INTERNAL
    return Verdict(
        code,
        _ERROR_STATUS.get(code, 500),
        message,
        (),
        (_status_header(code),),
        error=True,
    )


# --- encoders -----------------------------------------------------------------------------------


def _option(op: HeaderOperation) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=op.name, value=op.value),
        append_action=_APPEND if op.operation is HeaderAction.APPEND else _OVERWRITE,
    )


def encode_grpc(v: Verdict) -> Any:
    """A :class:`Verdict` as an ``envoy.service.auth.v3.CheckResponse``.

    Answers are cached by verdict (most checks give one of a few verdicts), so the returned
    message is shared: treat it as read-only. A verdict met again as the same object (see
    :func:`decide`) is found by identity, without hashing its header operations.
    """
    hit = _ENCODED.get(id(v))
    if hit is not None and hit[0] is v:
        return hit[1]
    resp = _encode_grpc(v)
    remember(_ENCODED, id(v), (v, resp), 1024)
    return resp


_ENCODED: Final[dict[int, tuple[Verdict, Any]]] = {}


@functools.lru_cache(maxsize=1024)
def _encode_grpc(v: Verdict) -> Any:
    resp = external_auth_pb2.CheckResponse()
    if v.allowed:
        ok = resp.ok_response
        ok.SetInParent()
        for op in v.request_headers:
            if op.operation is HeaderAction.REMOVE:
                ok.headers_to_remove.append(op.name)
            else:
                ok.headers.append(_option(op))
        for op in v.response_headers:
            if op.operation is not HeaderAction.REMOVE:
                ok.response_headers_to_add.append(_option(op))
        return resp
    resp.status.code = v.code
    resp.status.message = v.message
    denied = resp.error_response if v.error else resp.denied_response
    denied.status.code = v.http_status
    denied.body = v.body
    for op in v.response_headers:
        denied.headers.append(_option(op))
    return resp


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP forward-auth answer: status, header fields (in order, names may repeat), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: str


_HTTP_ALLOW: Final = HttpAnswer(200, (), "")


def encode_http(v: Verdict) -> HttpAnswer:
    """A :class:`Verdict` as an HTTP answer (see the module docstring)."""
    if v.allowed:
        if not v.request_headers and not v.response_headers:
            return _HTTP_ALLOW
        fields: list[tuple[str, str]] = []
        removed: list[str] = []
        for ops, upstream in ((v.request_headers, True), (v.response_headers, False)):
            group: list[tuple[str, str]] = []
            for op in ops:
                if op.name[:1] == ":":
                    continue  # pseudo-headers cannot travel as HTTP/1 header fields
                if op.operation is HeaderAction.REMOVE:
                    if upstream:
                        removed.append(op.name)
                    continue
                if op.operation is HeaderAction.REPLACE:
                    key = op.name.lower()
                    group = [f for f in group if f[0].lower() != key]
                group.append((op.name, op.value))
            fields.extend(group)
        if removed:
            fields.append(("x-envoy-auth-headers-to-remove", ", ".join(removed)))
        return HttpAnswer(200, tuple(fields), "")
    status = v.http_status
    if 200 <= status < 300:
        # A 2xx answer would tell the proxy to let the request through: a direct response
        # with a 2xx code is sent with the check's own HTTP status instead.
        status = http_status_for(v.code)
    return HttpAnswer(status, tuple((op.name, op.value) for op in v.response_headers), v.body)
