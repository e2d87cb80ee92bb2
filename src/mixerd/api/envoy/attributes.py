"""Envoy -> Istio attributes: the one mapping that every Envoy front-end uses (pure).

ext_authz (gRPC and HTTP forward-auth), the access-log service and the rate-limit service see
the same request through different Envoy messages. Each rule below is decided here once, so a
rule written against an attribute matches the same request in policy and in telemetry.
``tests/data/envoy_mapping.yaml`` holds the cases, run against every front-end that can carry
each field.

Decisions, and the fact behind each
===================================

Principals
    ``source.principal`` / ``destination.principal`` are the peer's identity **without** the
    ``spiffe://`` scheme: ``cluster.local/ns/NS/sa/SA``. Istio 1.4 proxies sent this form to
    Mixer (the authn filter's peer identity is the URI SAN minus its scheme), and the stock
    config and every Mixer-era ``source.principal == "..."`` rule compare against it.
    ``source.user``, Mixer's older name for the same thing (still used by Istio 1.4 samples such
    as bookinfo's deny-by-service-account rule), carries the same value. Envoy names the peer by
    its first URI SAN (ext_authz ``Peer.principal``; access logs list the SANs, the first URI one
    is taken); a principal that is not a SPIFFE URI is kept as it is.

Addresses
    ``*.ip`` is parsed by :func:`mixerd.attribute.parse_ip` (the one parse, Go's rules), ``*.port``
    is the port number when Envoy sends one. An address that is not an IP is the caller's fault:
    ext_authz answers INVALID_ARGUMENT, the access-log service leaves the attribute out (one bad
    entry must not lose a stream).

Path, query and fragment
    ``request.path`` is the path as Envoy sent it, query included. ``request.url_path`` is the
    part before the first ``?`` or ``#``. ``request.query_params`` is the query (between ``?``
    and ``#``; the fragment is never part of it) split on ``&`` and the first ``=``, keys and
    values percent-decoded as ``application/x-www-form-urlencoded`` (what the upstream
    application will read, so a rule compares the value the application acts on), keeping the
    **first** value of a repeated key (Istio 1.4's proxy filled it from Envoy's query parser,
    which keeps the first). No query, or an empty one, leaves the attribute absent (Istio 1.4
    sent no attribute for an empty map).

Header-derived attributes
    ``request.id`` = ``x-request-id``, ``request.useragent`` = ``user-agent``,
    ``request.referer`` = ``referer``; ``context.protocol`` is ``grpc`` when the request's
    ``content-type`` starts with ``application/grpc``, else ``http`` (the access log also
    counts a logged ``grpc-status``, since it may not have logged the request header).
    ``request.headers`` has lower-case keys and no pseudo-headers; a repeated header is joined
    with ``,`` (RFC 9110 §5.3, and what Envoy's ext_authz ``headers`` map does).

Bytes that are not UTF-8
    Header values reach mixerd as bytes (``raw_value``), as decoded text, or as text an HTTP
    server decoded with ``surrogateescape``. Every front-end turns them into text with
    :func:`wire_text`: invalid UTF-8 sequences become U+FFFD. So the same bytes give the same
    attribute everywhere, and no value makes an expression fail to evaluate (which would make a
    deny rule not apply).

Dynamic metadata
    ``request.metadata`` (ext_authz ``metadata_context``, access-log ``metadata``): every
    ``filter_metadata`` namespace flattened to ``<namespace>:<dotted.field.path>`` -> text
    (:func:`flatten_struct`): strings as they are, numbers in JSON form (``3``, ``0.5``),
    booleans ``true``/``false``, lists as compact JSON, nulls left out.
    ``mixerd.authz.metadata`` (access log) is the ext_authz filter's namespace alone, flattened
    the same way without the namespace prefix.

Peer labels and namespaces
    ``source.labels`` / ``destination.labels`` are ext_authz's ``Peer.labels``. The namespace
    whose rules apply is ``destination.namespace`` for inbound traffic: ext_authz reads it from
    the context extension ``namespace``; the rate-limit service from a descriptor entry
    ``namespace``; the access-log service from the Istio sidecar's node id
    (``sidecar~IP~POD.NS~NS.svc.cluster.local``: ``destination.namespace`` of inbound entries,
    ``source.namespace`` of outbound ones).

Istio cluster names
    ``outbound|80||reviews.default.svc.cluster.local`` -> :func:`parse_cluster`.

Timestamps and durations
    ``google.protobuf.Timestamp``/``Duration`` -> aware UTC datetimes / timedeltas, truncated to
    microseconds (:func:`timestamp`, :func:`duration`).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus

from envoy.data.accesslog.v3 import accesslog_pb2

from mixerd.attribute import IPAddress
from mixerd.attribute import parse_ip as _parse_ip

__all__ = [
    "AUTHZ_METADATA_NAMESPACE",
    "HEADER_ATTRIBUTES",
    "RESPONSE_FLAGS",
    "SPIFFE_PREFIX",
    "NodeIdentity",
    "duration",
    "first_uri_san",
    "flatten_metadata",
    "flatten_struct",
    "join_headers",
    "node_identity",
    "parse_cluster",
    "parse_ip",
    "principal",
    "protocol",
    "query_params",
    "response_flags",
    "set_principal",
    "timestamp",
    "url_path",
    "wire_text",
]

SPIFFE_PREFIX: Final = "spiffe://"
AUTHZ_METADATA_NAMESPACE: Final = "envoy.filters.http.ext_authz"

HEADER_ATTRIBUTES: Final[Mapping[str, str]] = {
    "request.id": "x-request-id",
    "request.useragent": "user-agent",
    "request.referer": "referer",
}
"""Attributes that are one request header's value."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


# --- text ---------------------------------------------------------------------------------------


def wire_text(value: str | bytes) -> str:
    """Header text as every front-end sees it: valid UTF-8 as is, invalid sequences as U+FFFD.

    ``value`` is raw bytes, or text that may carry lone surrogates from a ``surrogateescape``
    decode (aiohttp's) or a ``replace`` decode already done.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def join_headers(pairs: Iterable[tuple[str, str]], skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Header fields -> ``request.headers``: lower-case keys, repeated fields joined with ``,``,
    pseudo-headers and the names in ``skip`` left out, values through :func:`wire_text`."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key[:1] == ":" or key in skip:
            continue
        value = wire_text(value)
        prev = out.get(key)
        out[key] = value if prev is None else prev + "," + value
    return out


# --- peers --------------------------------------------------------------------------------------


def principal(identity: str) -> str:
    """A peer identity in Istio's form: ``spiffe://cluster.local/ns/a/sa/b`` -> ``cluster.local/ns/a/sa/b``."""
    return identity[len(SPIFFE_PREFIX) :] if identity.startswith(SPIFFE_PREFIX) else identity


def set_principal(out: dict[str, Any], side: str, identity: str) -> None:
    """Set ``<side>.principal`` (and ``source.user`` for the source) from a peer identity."""
    if not identity:
        return
    value = principal(identity)
    out[side + ".principal"] = value
    if side == "source":
        out["source.user"] = value


def first_uri_san(cert: Any) -> str:
    """The first URI subject alternative name of access-log ``CertificateProperties`` ('' if none)."""
    for san in cert.subject_alt_name:
        uri: str = san.uri
        if uri:
            return uri
    return ""


def parse_ip(text: str) -> IPAddress | None:
    """An address as Envoy writes it (:func:`mixerd.attribute.parse_ip`, the one parse, cached),
    or None when it is not an IP address."""
    try:
        return _parse_ip(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What an Istio sidecar's node id says about the workload that reports."""

    uid: str = ""
    """``kubernetes://POD.NS`` (what ``kubernetesenv`` looks pods up by)."""
    namespace: str = ""


_NO_NODE: Final = NodeIdentity()


def node_identity(node_id: str) -> NodeIdentity:
    """``sidecar~10.0.0.1~reviews-v1-5f9b.default~default.svc.cluster.local`` -> uid and namespace."""
    parts = node_id.split("~")
    if len(parts) != 4 or not parts[2]:
        return _NO_NODE
    pod = parts[2]
    _, dot, ns = pod.rpartition(".")
    return NodeIdentity("kubernetes://" + pod, ns if dot else "")


def parse_cluster(cluster: str) -> tuple[str | None, str | None, str | None, str | None]:
    """``(reporter kind, service host, service name, service namespace)`` of an upstream cluster.

    ``outbound|80||reviews.default.svc.cluster.local`` gives ``outbound``, the host, ``reviews``,
    ``default``; a host not under ``.svc.`` gives name = host and no namespace; an Istio cluster
    without a host (``inbound|9080||``) gives only the kind; any other cluster name gives only the
    service name = the cluster name.
    """
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] in ("inbound", "outbound"):
        kind, host = parts[0], parts[3]
        if not host:
            return kind, None, None, None
        labels = host.split(".")
        if len(labels) >= 3 and labels[2] == "svc":
            return kind, host, labels[0], labels[1]
        return kind, host, host, None
    return None, None, cluster or None, None


# --- requests -----------------------------------------------------------------------------------


def url_path(path: str) -> str:
    """The path without query and fragment."""
    cut = len(path)
    for sep in "?#":
        i = path.find(sep)
        if 0 <= i < cut:
            cut = i
    return path[:cut]


def query_params(path: str) -> dict[str, str] | None:
    """``request.query_params`` of a path: decoded, first value per key, None when there is none."""
    q = path.find("?")
    if q < 0:
        return None
    query = path[q + 1 :]
    h = query.find("#")
    if h >= 0:
        query = query[:h]
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote_plus(key, errors="replace")
        if key not in params:
            params[key] = unquote_plus(value, errors="replace")
    return params or None


def protocol(content_type: str | None, grpc_status: bool = False) -> str:
    """``context.protocol`` of an HTTP request: ``grpc`` or ``http``."""
    if grpc_status or (content_type is not None and content_type.startswith("application/grpc")):
        return "grpc"
    return "http"


# --- metadata -----------------------------------------------------------------------------------


def _number(n: float) -> str:
    return str(int(n)) if n.is_integer() and abs(n) < 2**53 else repr(n)


def _plain(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def _flatten_value(key: str, value: Any, out: dict[str, str]) -> None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        out[key] = value.string_value
    elif kind == "bool_value":
        out[key] = "true" if value.bool_value else "false"
    elif kind == "number_value":
        out[key] = _number(value.number_value)
    elif kind == "struct_value":
        flatten_struct(value.struct_value, key + ".", out)
    elif kind == "list_value":
        out[key] = json.dumps(_plain(value), separators=(",", ":"), sort_keys=True)


def flatten_struct(struct: Any, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """A ``google.protobuf.Struct`` as ``prefix + dotted.path`` -> text (see the module docstring)."""
    if out is None:
        out = {}
    for key, value in struct.fields.items():
        _flatten_value(prefix + key, value, out)
    return out


def flatten_metadata(filter_metadata: Mapping[str, Any]) -> dict[str, str] | None:
    """``request.metadata`` of an Envoy ``Metadata.filter_metadata`` (None when empty)."""
    out: dict[str, str] = {}
    for ns, struct in filter_metadata.items():
        flatten_struct(struct, ns + ":", out)
    return out or None


# --- time ---------------------------------------------------------------------------------------


def timestamp(ts: Any) -> _dt.datetime:
    """A ``google.protobuf.Timestamp`` as an aware UTC datetime (microseconds)."""
    return _EPOCH + _dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def duration(d: Any) -> _dt.timedelta:
    """A ``google.protobuf.Duration`` as a timedelta (microseconds)."""
    return _dt.timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


# --- response flags -----------------------------------------------------------------------------

RESPONSE_FLAGS: Final[tuple[tuple[str, str, str], ...]] = (
    # (ResponseFlags field, %RESPONSE_FLAGS% short name, long name), in Envoy's output order
    # (Envoy's CORE_RESPONSE_FLAGS, which is the field order of the proto).
    ("failed_local_healthcheck", "LH", "FailedLocalHealthCheck"),
    ("no_healthy_upstream", "UH", "NoHealthyUpstream"),
    ("upstream_request_timeout", "UT", "UpstreamRequestTimeout"),
    ("local_reset", "LR", "LocalReset"),
    ("upstream_remote_reset", "UR", "UpstreamRemoteReset"),
    ("upstream_connection_failure", "UF", "UpstreamConnectionFailure"),
    ("upstream_connection_termination", "UC", "UpstreamConnectionTermination"),
    ("upstream_overflow", "UO", "UpstreamOverflow"),
    ("no_route_found", "NR", "NoRouteFound"),
    ("delay_injected", "DI", "DelayInjected"),
    ("fault_injected", "FI", "FaultInjected"),
    ("rate_limited", "RL", "RateLimited"),
    ("unauthorized_details", "UAEX", "UnauthorizedExternalService"),
    ("rate_limit_service_error", "RLSE", "RateLimitServiceError"),
    ("downstream_connection_termination", "DC", "DownstreamConnectionTermination"),
    ("upstream_retry_limit_exceeded", "URX", "UpstreamRetryLimitExceeded"),
    ("stream_idle_timeout", "SI", "StreamIdleTimeout"),
    ("invalid_envoy_request_headers", "IH", "InvalidEnvoyRequestHeaders"),
    ("downstream_protocol_error", "DPE", "DownstreamProtocolError"),
    ("upstream_max_stream_duration_reached", "UMSDR", "UpstreamMaxStreamDurationReached"),
    ("response_from_cache_filter", "RFCF", "ResponseFromCacheFilter"),
    ("no_filter_config_found", "NFCF", "NoFilterConfigFound"),
    ("duration_timeout", "DT", "DurationTimeout"),
    ("upstream_protocol_error", "UPE", "UpstreamProtocolError"),
    ("no_cluster_found", "NC", "NoClusterFound"),
    ("overload_manager", "OM", "OverloadManagerTerminated"),
    ("dns_resolution_failure", "DF", "DnsResolutionFailed"),
    ("downstream_remote_reset", "DR", "DownstreamRemoteReset"),
)
"""Envoy's response flags (``%RESPONSE_FLAGS%``, access log docs). Envoy's ``DO`` (DropOverload)
has no field in ``ResponseFlags`` and so never reaches ALS. A field added to the proto later
shows up under its field name until it is added here."""

_FLAG_BY_NUMBER: Final[dict[int, str]] = {
    accesslog_pb2.ResponseFlags.DESCRIPTOR.fields_by_name[field].number: short
    for field, short, _ in RESPONSE_FLAGS
}


def response_flags(common: Any) -> str:
    """Envoy's ``%RESPONSE_FLAGS%`` string (``context.proxy_error_code``) of an access-log entry's
    ``common_properties``: ``UH``, ``UF,URX``, ``-`` when none."""
    if not common.HasField("response_flags"):
        return "-"
    names = [_FLAG_BY_NUMBER.get(f.number, f.name) for f, _ in common.response_flags.ListFields()]
    return ",".join(names) if names else "-"
