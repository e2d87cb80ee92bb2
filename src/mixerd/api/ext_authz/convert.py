"""Envoy external authorization (ext_authz) and forward-auth requests <-> mixerd values.

No I/O, no asyncio, no clock (the caller passes ``now``), so the gRPC servicer, the HTTP
endpoint, tests and benchmarks share it. Requests become lazy bags (:class:`CheckRequestBag`,
:class:`HttpRequestBag`): the cheap attributes are read up front (and malformed input rejected
there), maps, timestamps and parsed paths only when a rule reads them. Answers are frozen values
(:class:`Verdict`, :class:`HttpAnswer`) encoded for either wire.

gRPC ``envoy.service.auth.v3.CheckRequest`` -> attributes
==========================================================

=================================  ===============================================================
attribute                          from
=================================  ===============================================================
``source.ip``                      ``source.address.socket_address.address`` (there is no
                                   ``source.port`` in the vocabulary; the port is not mapped)
``destination.ip``                 ``destination.address.socket_address.address``
``destination.port``               ``destination.address.socket_address.port_value``
``source.principal``               ``source.principal`` (the peer certificate's URI SAN, e.g.
                                   ``spiffe://cluster.local/ns/default/sa/web``)
``source.user``                    the same value (the deprecated Istio name, still in the vocabulary)
``destination.principal``          ``destination.principal``
``source.labels`` /                peer ``labels``, when Envoy sends any
``destination.labels``
``request.headers``                every header except pseudo-headers (``:authority`` ...), keys
                                   lower-case; repeated headers arrive joined with ``,``; with
                                   ``encode_raw_headers`` the raw ``header_map`` is read instead
``request.host``                   ``http.host``, else ``:authority``
``request.method``                 ``http.method``, else ``:method``
``request.path``                   ``http.path``, else ``:path`` (with the query string)
``request.scheme``                 ``http.scheme``, else ``:scheme``
``request.url_path``               the path without query string and fragment
``request.query_params``           the query string, percent-decoded as
                                   ``application/x-www-form-urlencoded``; first value per key
``request.id``                     header ``x-request-id`` (not ``http.id``, Envoy's stream id)
``request.time``                   ``request.time``
``request.size``                   ``http.size`` when >= 0
``request.useragent``              header ``user-agent``
``request.referer``                header ``referer``
``context.protocol``               ``grpc`` when ``content-type`` starts with ``application/grpc``,
                                   else ``http``
``connection.mtls``                true when the source has a principal or a certificate
``connection.requested_server_name``  ``tls_session.sni``
``context.extensions``             ``context_extensions`` (a STRING_MAP from mixerd's manifest;
                                   always present, possibly empty)
``context.reporter.kind``          ``inbound``, or context extension ``mixerd.reporter.kind``
``destination.namespace``,         context extension ``namespace``: selects namespace-scoped config
``destination.service.namespace``  (Mixer picks the rules of the destination's namespace for
                                   inbound traffic)
``destination.service.name``       context extension ``service``
``destination.service.host``       context extension ``service.host``
``request.metadata``               ``metadata_context.filter_metadata`` flattened to
                                   ``<filter namespace>:<dotted field path>`` -> text (strings as
                                   they are, numbers and booleans in their JSON form; lists and
                                   nulls are left out). ``route_metadata_context`` is not mapped.
=================================  ===============================================================

Peer ``service`` (Envoy's ``--service-cluster``) and the request body are not mapped. A malformed
request (an address that is not an IP, a bad ``mixerd.quotas`` list) raises :class:`BadRequest`.

Quotas charged by a Check
=========================

Two sources, merged (the larger charge wins when both name the same quota):

* ``QuotaSpecBinding`` / ``QuotaSpec`` resources (:class:`QuotaPlan`): a binding applies when one
  of its services matches the request: ``service`` (an FQDN) must equal
  ``destination.service.host``; otherwise ``name`` and ``namespace`` (empty or ``*`` match
  anything) must equal ``destination.service.name`` and ``destination.service.namespace`` (else
  ``destination.namespace``, else the default namespace); ``labels`` must be a subset of
  ``destination.labels``; ``domain`` is not checked. Through ext_authz these service attributes
  come from the context extensions above. A spec rule applies when it has no ``match`` clause or
  one clause matches: every attribute of the clause is present and its text matches the
  ``StringMatch`` (``exact``/``prefix``/``regex``, a full match); ``name[key]`` reads one key of a
  STRING_MAP attribute (``request.headers[x-user]``).
* context extension ``mixerd.quotas`` = ``name[=amount],...`` (amount defaults to 1).

A quota is denied (``RESOURCE_EXHAUSTED``, HTTP 429, "quota exhausted: <name>") when its handler
grants less than the charge; a quota whose handler answers with a non-OK status is denied with that
status. Quotas carry no deduplication id (Envoy does not retry ext_authz calls by default, and
neither ``x-request-id`` nor Envoy's stream id is unique enough to deduplicate on safely).

Decision -> ``CheckResponse``
=============================

* allowed: ``status.code`` 0; ``ok_response.headers`` from the rules' request header operations
  (REPLACE -> ``OVERWRITE_IF_EXISTS_OR_ADD``, APPEND -> ``APPEND_IF_EXISTS_OR_ADD``),
  ``headers_to_remove`` from REMOVE, ``response_headers_to_add`` from the response header
  operations (REMOVE cannot be expressed there and is ignored).
* denied: ``status`` = the gRPC code and message; ``denied_response.status`` = the HTTP status of
  :data:`HTTP_STATUS` (others 403), body = the message (at most :data:`MAX_BODY` bytes; the code
  name when there is no message), header ``x-mixerd-status: <CODE NAME>``, plus for an exhausted
  quota ``x-ratelimit-limit``/``-remaining``/``-reset`` and ``retry-after`` when the handler
  says them.
* error (the check could not be evaluated): ``status`` = the error's code (INTERNAL, or
  DEADLINE_EXCEEDED/UNAVAILABLE), ``error_response`` with HTTP 500 (504, 503) and the body
  ``authorization service error (request id <id>)``: the details go to mixerd's log only. Envoy
  1.40 sends that status and body to the client (unless ``failure_mode_allow``); the id is
  ``x-request-id`` when the request has one.

FAILED_PRECONDITION maps to **403**, not the 400 of Google's canonical mapping: it is the
``denier`` adapter's default status, i.e. a policy denial, and nginx would turn a 400 into a 500.

HTTP forward-auth (Envoy ``http_service``, nginx ``auth_request``, Traefik ForwardAuth)
======================================================================================

:class:`HttpRequestBag`: the original method and URI come from ``X-Original-Method`` /
``X-Original-URI`` (nginx), else ``X-Forwarded-Method`` / ``X-Forwarded-Uri`` (Traefik), else the
request line minus a configured path prefix (Envoy's ``path_prefix``). ``request.host`` is
``X-Forwarded-Host``, else ``Host``; ``request.scheme`` is ``X-Forwarded-Proto`` when sent.
``source.ip`` is ``X-Real-IP``, else the first address of ``X-Forwarded-For``: both are only as
trustworthy as the proxy that sets them (nginx: ``proxy_set_header X-Real-IP $remote_addr``;
``$proxy_add_x_forwarded_for`` keeps what the client sent in front). ``request.headers`` holds
every other header minus hop-by-hop headers, ``host`` and the control headers above. With
``extension_headers`` enabled, ``X-Mixerd-Ext-<key>: value`` headers become context extension
``<key>`` (``X-Mixerd-Ext-Namespace``, ``X-Mixerd-Ext-mixerd.quotas``); enable it only when the
proxy sets or clears those headers, since clients could send them too.

:func:`encode_http`: allowed -> 200 with an empty body, request header operations as response
headers (REMOVE -> ``x-envoy-auth-headers-to-remove``; pseudo-headers such as ``:path`` cannot
be expressed and are left out), so the proxy can copy them upstream
(Envoy ``allowed_upstream_headers``, nginx ``auth_request_set``); response header operations are
sent the same way (Envoy ``allowed_client_headers_on_success``). Denied -> the mapped status, a
short text body and ``x-mixerd-status``. nginx honours only 401 and 403 from ``auth_request``;
any other status (429, 503 ...) becomes a 500 there.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from multidict import CIMultiDict, CIMultiDictProxy

from mixerd.adapter import Code, QuotaArgs
from mixerd.attribute import MISSING, Bag, IPAddress, parse_ip
from mixerd.config import IstioService, QuotaRule, QuotaSpecBindingSpec, QuotaSpecSpec, StringMatch
from mixerd.runtime import CheckOutcome, HeaderOperation

__all__ = [
    "EXTENSION_HEADER_PREFIX",
    "HTTP_STATUS",
    "MAX_BODY",
    "NAMESPACE_EXTENSION",
    "QUOTAS_EXTENSION",
    "REPORTER_KIND_EXTENSION",
    "SERVICE_EXTENSION",
    "SERVICE_HOST_EXTENSION",
    "BadRequest",
    "CheckRequestBag",
    "HttpAnswer",
    "HttpRequestBag",
    "QuotaPlan",
    "Verdict",
    "check_request_attributes",
    "decide",
    "encode_grpc",
    "encode_http",
    "error_verdict",
    "http_request_attributes",
    "http_status_for",
    "parse_quota_list",
    "quota_args",
]

REPORTER_KIND_EXTENSION: Final = "mixerd.reporter.kind"
QUOTAS_EXTENSION: Final = "mixerd.quotas"
NAMESPACE_EXTENSION: Final = "namespace"
SERVICE_EXTENSION: Final = "service"
SERVICE_HOST_EXTENSION: Final = "service.host"
EXTENSION_HEADER_PREFIX: Final = "x-mixerd-ext-"

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
_REPLACE, _REMOVE, _APPEND_OP = 0, 1, 2

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-envoy-expected-rq-timeout-ms",
        "x-envoy-auth-partial-body",
    }
)
"""Headers left out of ``request.headers`` in HTTP mode: hop-by-hop, ``host`` (mapped to
``request.host``) and the forward-auth control headers."""


class BadRequest(ValueError):
    """The request is malformed (the caller's fault); the message names the field."""


# --- requests -----------------------------------------------------------------------------------


def _ip(text: str, where: str) -> IPAddress:
    try:
        return parse_ip(text)
    except ValueError:
        raise BadRequest(f"{where}: not an IP address: {text[:64]!r}") from None


_NO_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType({})

_ABSENT: Final[Any] = object()
"""Cached marker of a derived attribute that turned out to be absent."""


def _url_path(bag: _RequestBag) -> Any:
    path = bag._values.get("request.path")
    if path is None:
        return MISSING
    cut = len(path)
    for sep in "?#":
        i = path.find(sep)
        if 0 <= i < cut:
            cut = i
    return path[:cut]


def _query_params(bag: _RequestBag) -> Any:
    path = bag._values.get("request.path")
    if path is None:
        return MISSING
    params: dict[str, str] = {}
    q = path.find("?")
    if q >= 0:
        query = path[q + 1 :]
        h = query.find("#")
        if h >= 0:
            query = query[:h]
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, value)
    return params


class _RequestBag(Bag):
    """A request's attributes: cheap ones computed up front into ``_values``, costly ones (maps,
    timestamps, parsed paths) derived from ``_src`` on first read and cached."""

    __slots__ = ("_ext", "_headers", "_src", "_values")

    _derived: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    def __init__(self, src: Any, values: dict[str, Any], headers: Any, ext: Mapping[str, str]) -> None:
        self._src = src
        self._values = values
        self._headers = headers  # lower-case (or case-insensitive) name -> value, pseudo-headers too
        self._ext = ext

    def extension(self, key: str) -> str | None:
        """One context extension, read without building ``context.extensions``."""
        return self._ext.get(key)

    def get(self, name: str, default: Any = None) -> Any:
        v = self._values.get(name, MISSING)
        if v is MISSING:
            derive = self._derived.get(name)
            if derive is None:
                return default
            v = derive(self)
            if v is MISSING:
                self._values[name] = _ABSENT
                return default
            self._values[name] = v
            return v
        return default if v is _ABSENT else v

    def __getitem__(self, name: str) -> Any:
        v = self.get(name, MISSING)
        if v is MISSING:
            raise KeyError(name)
        return v

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name, MISSING) is not MISSING

    def __iter__(self) -> Iterator[str]:
        for name in self._derived:
            self.get(name)
        return iter([n for n, v in self._values.items() if v is not _ABSENT])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def materialize(self) -> dict[str, Any]:
        """Every attribute as a plain dict."""
        return {name: self._values[name] for name in self}


def _set_extension_attributes(values: dict[str, Any], ext: Mapping[str, str]) -> None:
    values["context.reporter.kind"] = ext.get(REPORTER_KIND_EXTENSION) or "inbound"
    if ext:
        ns = ext.get(NAMESPACE_EXTENSION)
        if ns:
            values["destination.namespace"] = ns
            values["destination.service.namespace"] = ns
        svc = ext.get(SERVICE_EXTENSION)
        if svc:
            values["destination.service.name"] = svc
        host = ext.get(SERVICE_HOST_EXTENSION)
        if host:
            values["destination.service.host"] = host


def _header_attribute(header: str) -> Callable[[_RequestBag], Any]:
    def derive(bag: _RequestBag) -> Any:
        return bag._headers.get(header, MISSING)

    return derive


def _protocol(bag: _RequestBag) -> Any:
    ct = bag._headers.get("content-type")
    return "grpc" if ct is not None and ct.startswith("application/grpc") else "http"


_HEADER_DERIVED: Final[Mapping[str, Callable[[Any], Any]]] = {
    "request.id": _header_attribute("x-request-id"),
    "request.useragent": _header_attribute("user-agent"),
    "request.referer": _header_attribute("referer"),
    "context.protocol": _protocol,
    "request.url_path": _url_path,
    "request.query_params": _query_params,
}


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        out[prefix] = value.string_value
    elif kind == "bool_value":
        out[prefix] = "true" if value.bool_value else "false"
    elif kind == "number_value":
        n = value.number_value
        out[prefix] = str(int(n)) if n.is_integer() and abs(n) < 2**53 else repr(n)
    elif kind == "struct_value":
        for key, child in value.struct_value.fields.items():
            _flatten(f"{prefix}.{key}", child, out)


class _HeaderView(Mapping[str, str]):
    """The request headers of a CheckRequest without its pseudo-headers, read in place."""

    __slots__ = ("_map",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._map = headers

    def get(self, key: str, default: Any = None) -> Any:
        if key[:1] == ":":
            return default
        return self._map.get(key, default)

    def __getitem__(self, key: str) -> str:
        if key[:1] == ":":
            raise KeyError(key)
        return self._map[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key[:1] != ":" and key in self._map

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._map if k[:1] != ":")

    def __len__(self) -> int:
        return sum(1 for k in self._map if k[:1] != ":")

    def __repr__(self) -> str:
        return f"_HeaderView({dict(self)!r})"


def _grpc_headers(bag: _RequestBag) -> Any:
    return _HeaderView(bag._src.request.http.headers)


def _grpc_time(bag: _RequestBag) -> Any:
    req = bag._src.request
    return req.time.ToDatetime(tzinfo=_dt.UTC) if req.HasField("time") else MISSING


def _grpc_extensions(bag: _RequestBag) -> Any:
    return dict(bag._src.context_extensions)


def _grpc_metadata(bag: _RequestBag) -> Any:
    ctx = bag._src
    if not ctx.HasField("metadata_context") or not ctx.metadata_context.filter_metadata:
        return MISSING
    out: dict[str, str] = {}
    for ns, struct in ctx.metadata_context.filter_metadata.items():
        for key, value in struct.fields.items():
            _flatten(f"{ns}:{key}", value, out)
    return out


def _labels(side: str) -> Callable[[_RequestBag], Any]:
    def derive(bag: _RequestBag) -> Any:
        labels = getattr(bag._src, side).labels
        return dict(labels) if labels else MISSING

    return derive


def _peer(values: dict[str, Any], peer: Any, side: str) -> None:
    addr = peer.address
    if addr.HasField("socket_address"):
        sa = addr.socket_address
        if sa.address:
            values[side + ".ip"] = _ip(sa.address, f"attributes.{side}.address.socket_address.address")
        if side == "destination" and sa.port_value:
            values["destination.port"] = sa.port_value
    if peer.principal:
        values[side + ".principal"] = peer.principal
        if side == "source":
            values["source.user"] = peer.principal


class CheckRequestBag(_RequestBag):
    """The attributes of an ``envoy.service.auth.v3.CheckRequest`` (see the module docstring),
    read lazily: only what the rules look at is converted. A malformed request raises
    :class:`BadRequest` here, not later."""

    __slots__ = ()

    _derived: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        **_HEADER_DERIVED,
        "request.headers": _grpc_headers,
        "request.time": _grpc_time,
        "context.extensions": _grpc_extensions,
        "request.metadata": _grpc_metadata,
        "source.labels": _labels("source"),
        "destination.labels": _labels("destination"),
    }

    def __init__(self, request: Any) -> None:
        ctx = request.attributes
        values: dict[str, Any] = {}
        source = ctx.source
        _peer(values, source, "source")
        _peer(values, ctx.destination, "destination")
        values["connection.mtls"] = bool(source.principal or source.certificate)
        sni = ctx.tls_session.sni
        if sni:
            values["connection.requested_server_name"] = sni
        http = ctx.request.http
        headers = http.headers
        if not headers and http.HasField("header_map"):
            raw: dict[str, str] = {}
            for hv in http.header_map.headers:
                key = hv.key.lower()
                value = hv.raw_value.decode("utf-8", "replace") if hv.raw_value else hv.value
                prev = raw.get(key)
                raw[key] = value if prev is None else prev + "," + value
            headers = raw
            values["request.headers"] = {k: v for k, v in raw.items() if k[:1] != ":"}
        host = http.host or headers.get(":authority")
        if host:
            values["request.host"] = host
        method = http.method or headers.get(":method")
        if method:
            values["request.method"] = method
        scheme = http.scheme or headers.get(":scheme")
        if scheme:
            values["request.scheme"] = scheme
        path = http.path or headers.get(":path")
        if path:
            values["request.path"] = path
        if http.size >= 0:
            values["request.size"] = http.size
        ext = ctx.context_extensions
        if ext:
            _set_extension_attributes(values, ext)
        else:
            values["context.reporter.kind"] = "inbound"
            values["context.extensions"] = _NO_EXTENSIONS
        super().__init__(ctx, values, headers, ext)


def check_request_attributes(request: Any) -> dict[str, Any]:
    """Every attribute of an ``envoy.service.auth.v3.CheckRequest``, as a plain dict."""
    return CheckRequestBag(request).materialize()


def _http_headers(bag: _RequestBag) -> Any:
    out: dict[str, str] = {}
    for name, value in bag._src.items():
        key = name.lower()
        if key in _HOP_BY_HOP or key.startswith(EXTENSION_HEADER_PREFIX):
            continue
        prev = out.get(key)
        out[key] = value if prev is None else prev + "," + value
    return out


class HttpRequestBag(_RequestBag):
    """The attributes of a forward-auth HTTP request (see the module docstring), read lazily.

    ``target`` is the request target as received (path and query); ``headers`` the header
    fields: a case-insensitive multi-dict (aiohttp's ``request.headers``) or pairs in order.
    """

    __slots__ = ()

    _derived: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        **_HEADER_DERIVED,
        "request.headers": _http_headers,
    }

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str] | CIMultiDict[str] | Iterable[tuple[str, str]],
        *,
        now: _dt.datetime,
        prefix: str = "",
        extension_headers: bool = False,
    ) -> None:
        if not isinstance(headers, CIMultiDictProxy | CIMultiDict):
            headers = CIMultiDict(headers)
        get = headers.get
        uri = get("x-original-uri") or get("x-forwarded-uri")
        if not uri:
            uri = target
            if prefix and uri.startswith(prefix):
                uri = uri[len(prefix) :]
                if not uri.startswith("/"):
                    uri = "/" + uri
        values: dict[str, Any] = {
            "request.method": get("x-original-method") or get("x-forwarded-method") or method,
            "request.time": now,
            "request.path": uri,
        }
        host = get("x-forwarded-host") or get("host")
        if host:
            values["request.host"] = host
        proto = get("x-forwarded-proto")
        if proto:
            values["request.scheme"] = proto
        real_ip = get("x-real-ip")
        if real_ip:
            values["source.ip"] = _ip(real_ip.strip(), "header X-Real-IP")
        else:
            xff = get("x-forwarded-for")
            if xff:
                values["source.ip"] = _ip(xff.split(",", 1)[0].strip(), "header X-Forwarded-For")
        size = get("content-length")
        if size is not None and size.isascii() and size.isdigit() and len(size) <= 18:
            values["request.size"] = int(size)
        ext: dict[str, str] = {}
        if extension_headers:
            for name, value in headers.items():
                key = name.lower()
                if key.startswith(EXTENSION_HEADER_PREFIX):
                    ext[key[len(EXTENSION_HEADER_PREFIX) :]] = value
        values["context.extensions"] = ext
        _set_extension_attributes(values, ext)
        super().__init__(headers, values, headers, ext)


def http_request_attributes(
    method: str,
    target: str,
    headers: CIMultiDictProxy[str] | CIMultiDict[str] | Iterable[tuple[str, str]],
    *,
    now: _dt.datetime,
    prefix: str = "",
    extension_headers: bool = False,
) -> dict[str, Any]:
    """Every attribute of a forward-auth HTTP request, as a plain dict (see :class:`HttpRequestBag`)."""
    return HttpRequestBag(
        method, target, headers, now=now, prefix=prefix, extension_headers=extension_headers
    ).materialize()


# --- quotas -------------------------------------------------------------------------------------


def parse_quota_list(text: str, where: str = f"context extension {QUOTAS_EXTENSION}") -> dict[str, int]:
    """``name[=amount],...`` -> {name: amount}; raises :class:`BadRequest` naming ``where``."""
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, amount = item.partition("=")
        name = name.strip()
        if not name:
            raise BadRequest(f"{where}: {item!r} has no quota name")
        if sep:
            amount = amount.strip()
            if not (amount.isascii() and amount.isdigit()) or len(amount) > 18 or int(amount) < 1:
                raise BadRequest(f"{where}: amount of {name!r} must be a positive integer, got {amount!r}")
            n = int(amount)
        else:
            n = 1
        out[name] = max(out.get(name, 0), n)
    return out


def _attr_text(attrs: Mapping[str, Any], name: str) -> str | None:
    if name.endswith("]") and "[" in name:
        base, _, key = name[:-1].partition("[")
        m = attrs.get(base)
        if not isinstance(m, Mapping):
            return None
        v = m.get(key.strip("\"'"))
        return None if v is None else str(v)
    v = attrs.get(name, MISSING)
    if v is MISSING or v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _rule_matches(rule: QuotaRule, attrs: Mapping[str, Any]) -> bool:
    if not rule.match:
        return True
    return any(all(_clause_matches(n, m, attrs) for n, m in clause.items()) for clause in rule.match)


def _clause_matches(name: str, m: StringMatch, attrs: Mapping[str, Any]) -> bool:
    text = _attr_text(attrs, name)
    return text is not None and m.matches(text)


def _wild(pattern: str, value: str | None) -> bool:
    return not pattern or pattern == "*" or pattern == value


def _service_matches(svc: IstioService, attrs: Mapping[str, Any], default_namespace: str) -> bool:
    if svc.service:
        return svc.service == attrs.get("destination.service.host")
    if not _wild(svc.name, attrs.get("destination.service.name")):
        return False
    ns = attrs.get("destination.service.namespace") or attrs.get("destination.namespace") or default_namespace
    if not _wild(svc.namespace, ns):
        return False
    if svc.labels:
        labels = attrs.get("destination.labels")
        if not isinstance(labels, Mapping):
            return False
        return all(labels.get(k) == v for k, v in svc.labels.items())
    return True


@dataclass(frozen=True, slots=True)
class _Binding:
    services: tuple[IstioService, ...]
    rules: tuple[QuotaRule, ...]


@dataclass(frozen=True, slots=True)
class QuotaPlan:
    """The quotas a Check charges, from ``QuotaSpecBinding`` and ``QuotaSpec`` resources.

    Build it once per config snapshot with :meth:`build`; :meth:`select` is cheap when the config
    has no bindings.
    """

    bindings: tuple[_Binding, ...] = ()
    default_namespace: str = "istio-system"

    @classmethod
    def build(
        cls,
        specs: Mapping[tuple[str, str], QuotaSpecSpec],
        bindings: Iterable[QuotaSpecBindingSpec],
        *,
        default_namespace: str = "istio-system",
    ) -> QuotaPlan:
        """``specs`` maps (namespace, name) to a spec; a binding naming a missing spec skips it."""
        out: list[_Binding] = []
        for b in bindings:
            rules: list[QuotaRule] = []
            for ref in b.quota_specs:
                spec = specs.get((ref.namespace, ref.name))
                if spec is not None:
                    rules.extend(spec.rules)
            if rules and b.services:
                out.append(_Binding(tuple(b.services), tuple(rules)))
        return cls(tuple(out), default_namespace)

    def select(self, attrs: Mapping[str, Any]) -> dict[str, int]:
        """{quota name: charge} for a request (the largest charge when several rules name it)."""
        out: dict[str, int] = {}
        for b in self.bindings:
            if not any(_service_matches(s, attrs, self.default_namespace) for s in b.services):
                continue
            for rule in b.rules:
                if _rule_matches(rule, attrs):
                    for q in rule.quotas:
                        if q.charge > out.get(q.quota, 0):
                            out[q.quota] = q.charge
        return out


_NO_PLAN: Final = QuotaPlan()


@functools.lru_cache(maxsize=256)
def _extension_quotas(text: str) -> Mapping[str, QuotaArgs]:
    return MappingProxyType({name: QuotaArgs(amount=n) for name, n in parse_quota_list(text).items()})


def quota_args(attrs: Mapping[str, Any], plan: QuotaPlan = _NO_PLAN) -> Mapping[str, QuotaArgs] | None:
    """The quotas to request with a Check: the plan's and ``mixerd.quotas`` merged (None if none).

    Raises :class:`BadRequest` for a malformed ``mixerd.quotas``.
    """
    if isinstance(attrs, _RequestBag):
        text = attrs.extension(QUOTAS_EXTENSION)
    else:
        ext = attrs.get("context.extensions")
        text = ext.get(QUOTAS_EXTENSION) if ext else None
    if not plan.bindings:
        if not text:
            return None
        return _extension_quotas(text) or None
    amounts = plan.select(attrs)
    if text:
        for name, args in _extension_quotas(text).items():
            if args.amount > amounts.get(name, 0):
                amounts[name] = args.amount
    if not amounts:
        return None
    return {name: QuotaArgs(amount=n) for name, n in amounts.items()}


# --- decisions ----------------------------------------------------------------------------------


def http_status_for(code: int) -> int:
    """HTTP status of a denial with gRPC ``code`` (:data:`HTTP_STATUS`, else 403)."""
    return HTTP_STATUS.get(code, 403)


def _code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code)


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

    @property
    def allowed(self) -> bool:
        return self.code == Code.OK

    @property
    def body(self) -> str:
        """The client body of a denial or error (empty when allowed)."""
        if self.allowed:
            return ""
        return _short(self.message or _code_name(self.code))


_ALLOW: Final = Verdict(Code.OK, 200)


def _status_header(code: int) -> HeaderOperation:
    return HeaderOperation("x-mixerd-status", _code_name(code))


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
        return Verdict(status.code, http_status_for(status.code), message, (), (_status_header(status.code),))
    if quotas:
        for name, args in quotas.items():
            q = outcome.quotas.get(name)
            if q is None:
                continue
            r = q.result
            if r.status.code != Code.OK:
                message = f"quota {name}: {r.status.message}" if r.status.message else f"quota {name}"
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
    return Verdict(
        Code.OK, 200, "", _valid_ops(d.request_header_operations), _valid_ops(d.response_header_operations)
    )


def error_verdict(code: int, request_id: str) -> Verdict:
    """The verdict for a check that could not be evaluated: no internal detail, only an id."""
    if code == Code.OK:
        code = Code.INTERNAL
    return Verdict(
        code,
        _ERROR_STATUS.get(code, 500),
        f"authorization service error (request id {request_id})",
        (),
        (_status_header(code),),
        error=True,
    )


# --- encoders -----------------------------------------------------------------------------------


def _option(op: HeaderOperation) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=op.name, value=op.value),
        append_action=_APPEND if op.operation == _APPEND_OP else _OVERWRITE,
    )


@functools.lru_cache(maxsize=1024)
def encode_grpc(v: Verdict) -> Any:
    """A :class:`Verdict` as an ``envoy.service.auth.v3.CheckResponse``.

    Answers are cached by verdict (most checks give one of a few verdicts), so the returned
    message is shared: treat it as read-only.
    """
    resp = external_auth_pb2.CheckResponse()
    if v.allowed:
        ok = resp.ok_response
        ok.SetInParent()
        for op in v.request_headers:
            if op.operation == _REMOVE:
                ok.headers_to_remove.append(op.name)
            else:
                ok.headers.append(_option(op))
        for op in v.response_headers:
            if op.operation != _REMOVE:
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
                if op.operation == _REMOVE:
                    if upstream:
                        removed.append(op.name)
                    continue
                if op.operation == _REPLACE:
                    key = op.name.lower()
                    group = [f for f in group if f[0].lower() != key]
                group.append((op.name, op.value))
            fields.extend(group)
        if removed:
            fields.append(("x-envoy-auth-headers-to-remove", ", ".join(removed)))
        return HttpAnswer(200, tuple(fields), "")
    return HttpAnswer(v.http_status, tuple((op.name, op.value) for op in v.response_headers), v.body)
