"""Envoy external authorization requests -> attribute bags (pure).

Requests become lazy bags (:class:`CheckRequestBag` for gRPC ext_authz, :class:`HttpRequestBag`
for HTTP forward-auth): the cheap attributes are read up front (and malformed input rejected
there), maps, timestamps and parsed paths only when a rule reads them. No I/O, no clock (the
caller passes ``now``). Every rule that Envoy's other front-ends share (principals, paths and
query, header-derived attributes, text that is not UTF-8, dynamic metadata) is decided once in
:mod:`mixerd.api.envoy.attributes`; the tables below say where each attribute comes from.

gRPC ``envoy.service.auth.v3.CheckRequest`` -> attributes
==========================================================

=================================  ===============================================================
attribute                          from
=================================  ===============================================================
``source.ip``, ``source.port``     ``source.address.socket_address``
``destination.ip``,                ``destination.address.socket_address``
``destination.port``
``source.principal``               ``source.principal`` without ``spiffe://`` (Istio's form:
                                   ``cluster.local/ns/default/sa/web``)
``source.user``                    the same value (Mixer's older name, used by Istio 1.4 samples)
``destination.principal``          ``destination.principal``, same form
``source.labels`` /                peer ``labels``, when Envoy sends any
``destination.labels``
``request.headers``                every header except pseudo-headers (``:authority`` ...), keys
                                   lower-case; repeated headers arrive joined with ``,``; with
                                   ``encode_raw_headers`` the raw ``header_map`` is read instead
                                   (invalid UTF-8 becomes U+FFFD)
``request.host``                   ``http.host``, else ``:authority``
``request.method``                 ``http.method``, else ``:method``
``request.path``                   ``http.path``, else ``:path`` (with the query string)
``request.scheme``                 ``http.scheme``, else ``:scheme``
``request.url_path``               the path without query string and fragment
``request.query_params``           the query (without fragment), percent-decoded as
                                   ``application/x-www-form-urlencoded``; first value per key;
                                   absent when there is no query
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
``mixerd.caller.principal``        not from the request: the SPIFFE ID of the client certificate
                                   of the connection to mixerd (:mod:`mixerd.api.caller`)
``request.metadata``               ``metadata_context.filter_metadata`` flattened to
                                   ``<filter namespace>:<dotted field path>`` -> text (strings as
                                   they are, numbers and booleans in JSON form, lists as compact
                                   JSON, nulls left out). ``route_metadata_context`` is not mapped.
=================================  ===============================================================

Peer ``service`` (Envoy's ``--service-cluster``) and the request body are not mapped. A malformed
request (an address that is not an IP, a bad ``mixerd.quotas`` list) raises :class:`BadRequest`.

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
proxy sets or clears those headers, since clients could send them too. Header text that an HTTP
server could not decode as UTF-8 becomes U+FFFD, as the same bytes do over gRPC. The connection's
client certificate gives ``mixerd.caller.principal`` as over gRPC.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

from multidict import CIMultiDict, CIMultiDictProxy

from mixerd.api.caller import CALLER_PRINCIPAL
from mixerd.api.envoy.attributes import (
    HEADER_ATTRIBUTES,
    flatten_metadata,
    join_headers,
    parse_ip,
    protocol,
    query_params,
    set_principal,
    url_path,
    wire_text,
)
from mixerd.attribute import MISSING, Bag, IPAddress

__all__ = [
    "EXTENSION_HEADER_PREFIX",
    "NAMESPACE_EXTENSION",
    "QUOTAS_EXTENSION",
    "REPORTER_KIND_EXTENSION",
    "SERVICE_EXTENSION",
    "SERVICE_HOST_EXTENSION",
    "BadRequest",
    "CheckRequestBag",
    "HttpHeaders",
    "HttpRequestBag",
    "check_request_attributes",
    "http_request_attributes",
]

REPORTER_KIND_EXTENSION: Final = "mixerd.reporter.kind"
QUOTAS_EXTENSION: Final = "mixerd.quotas"
NAMESPACE_EXTENSION: Final = "namespace"
SERVICE_EXTENSION: Final = "service"
SERVICE_HOST_EXTENSION: Final = "service.host"
EXTENSION_HEADER_PREFIX: Final = "x-mixerd-ext-"

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
    ip = parse_ip(text)
    if ip is None:
        raise BadRequest(f"{where}: not an IP address: {text[:64]!r}")
    return ip


_NO_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType({})

_ABSENT: Final[Any] = object()
"""Cached marker of a derived attribute that turned out to be absent."""


def _url_path(bag: _RequestBag) -> Any:
    path = bag._values.get("request.path")
    return MISSING if path is None else url_path(path)


def _query_params(bag: _RequestBag) -> Any:
    path = bag._values.get("request.path")
    params = None if path is None else query_params(path)
    return MISSING if params is None else params


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
        value = bag._headers.get(header)
        return MISSING if value is None else wire_text(value)

    return derive


def _protocol(bag: _RequestBag) -> Any:
    return protocol(bag._headers.get("content-type"))


_HEADER_DERIVED: Final[Mapping[str, Callable[[Any], Any]]] = {
    **{name: _header_attribute(header) for name, header in HEADER_ATTRIBUTES.items()},
    "context.protocol": _protocol,
    "request.url_path": _url_path,
    "request.query_params": _query_params,
}


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
    if not ctx.HasField("metadata_context"):
        return MISSING
    out = flatten_metadata(ctx.metadata_context.filter_metadata)
    return MISSING if out is None else out


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
        if sa.port_value:
            values[side + ".port"] = sa.port_value
    set_principal(values, side, peer.principal)


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

    def __init__(self, request: Any, *, caller: str | None = None) -> None:
        ctx = request.attributes
        values: dict[str, Any] = {}
        if caller is not None:
            values[CALLER_PRINCIPAL] = caller
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
            pairs = [(hv.key, hv.raw_value or hv.value) for hv in http.header_map.headers]
            joined = join_headers(pairs)
            values["request.headers"] = joined
            headers = {**{k: wire_text(v) for k, v in pairs if k[:1] == ":"}, **joined}
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


class HttpHeaders:
    """A forward-auth request's header fields: ``first`` maps each lower-case name to its first
    value; ``more`` holds the later fields of names that repeat, in order (None when no name
    repeats). Values are wire text (:func:`~mixerd.api.envoy.attributes.wire_text`)."""

    __slots__ = ("first", "more")

    def __init__(self, first: dict[str, str], more: list[tuple[str, str]] | None = None) -> None:
        self.first = first
        self.more = more

    @classmethod
    def of(cls, fields: Iterable[tuple[str, str | bytes]]) -> HttpHeaders:
        """From header fields in order (any case; text or raw bytes)."""
        first: dict[str, str] = {}
        more: list[tuple[str, str]] = []
        for name, value in fields:
            key = name.lower()
            text = wire_text(value)
            if key in first:
                more.append((key, text))
            else:
                first[key] = text
        return cls(first, more or None)

    def items(self) -> Iterator[tuple[str, str]]:
        """Every field: first occurrences, then the later ones of repeated names."""
        yield from self.first.items()
        if self.more:
            yield from self.more


def _http_headers(bag: _RequestBag) -> Any:
    fields: HttpHeaders = bag._src
    out = {
        k: v
        for k, v in fields.first.items()
        if k not in _HOP_BY_HOP and k[:1] != ":" and not k.startswith(EXTENSION_HEADER_PREFIX)
    }
    if fields.more:
        for k, v in fields.more:
            if k in out:
                out[k] += "," + v
    return out


class HttpRequestBag(_RequestBag):
    """The attributes of a forward-auth HTTP request (see the module docstring), read lazily.

    ``target`` is the request target as received (path and query); ``headers`` the header
    fields: :class:`HttpHeaders` (what mixerd's HTTP server reads), a case-insensitive
    multi-dict, or pairs in order; ``caller`` the SPIFFE ID of the connection's client
    certificate. Where a control header (``X-Original-URI`` ...) repeats, its first value counts.
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
        headers: HttpHeaders | CIMultiDictProxy[str] | CIMultiDict[str] | Iterable[tuple[str, str]],
        *,
        now: _dt.datetime,
        prefix: str = "",
        extension_headers: bool = False,
        caller: str | None = None,
    ) -> None:
        if not isinstance(headers, HttpHeaders):
            headers = HttpHeaders.of(
                headers.items() if isinstance(headers, CIMultiDictProxy | CIMultiDict) else headers
            )
        first = headers.first
        get = first.get
        uri = get("x-original-uri") or get("x-forwarded-uri")
        if not uri:
            uri = wire_text(target)
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
        if extension_headers:
            ext: Mapping[str, str] = {
                key[len(EXTENSION_HEADER_PREFIX) :]: value
                for key, value in headers.items()
                if key.startswith(EXTENSION_HEADER_PREFIX)
            }
            values["context.extensions"] = ext
            _set_extension_attributes(values, ext)
        else:
            ext = values["context.extensions"] = _NO_EXTENSIONS
            values["context.reporter.kind"] = "inbound"
        if caller is not None:
            values[CALLER_PRINCIPAL] = caller
        super().__init__(headers, values, first, ext)


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
