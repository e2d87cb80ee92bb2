"""Envoy gRPC access-log entries (``envoy.data.accesslog.v3``) -> Mixer attribute bags (pure).

Each HTTP or TCP entry of a ``StreamAccessLogsMessage`` becomes one attribute set that goes
through the Report path (rules, metric/logentry instances, handlers), so the stock Istio
telemetry config moves its Prometheus series from ALS alone.

Per stream
==========

The ``identifier`` of the first message of a stream is kept as a :class:`StreamContext`
(``node.id``, ``node.cluster``, ``log_name``); the large ``Node`` itself is not kept.

* ``context.reporter.kind`` is, in order: the kind configured for the stream's ``log_name``
  (setting ``MIXERD_ACCESSLOG_REPORTER_KINDS``, e.g. ``outbound_als=outbound,gw=outbound``),
  else ``inbound``/``outbound`` from an Istio upstream cluster name (``inbound|...``,
  ``outbound|...``), else ``inbound``.
* An Istio sidecar node id (``sidecar~10.0.0.1~reviews-v1-5f9b.default~default.svc.cluster.local``)
  gives ``context.reporter.uid`` = ``kubernetes://reviews-v1-5f9b.default``, which is also the
  ``destination.uid`` of inbound and the ``source.uid`` of outbound entries (what
  ``kubernetesenv`` looks pods up by); its namespace is the ``destination.namespace`` of inbound
  and the ``source.namespace`` of outbound entries (it selects the namespace's rules).
* ``mixerd.caller.principal``: the SPIFFE ID of the stream's client certificate, when the
  listener verifies client certificates (:mod:`mixerd.api.caller`).

The rules Envoy's front-ends share (principals, paths and query, dynamic metadata, cluster names,
response flags, timestamps) are decided once in :mod:`mixerd.api.envoy.attributes`.

Every entry
===========

================================  =======================================================================
attribute                         from
================================  =======================================================================
``source.ip``, ``source.port``    ``downstream_remote_address``
``destination.ip``,               inbound: ``downstream_local_address``; outbound:
``destination.port``              ``upstream_remote_address``
``destination.service.host``,     an Istio cluster name ``outbound|80||reviews.default.svc.cluster.local``
``.name``, ``.namespace``         gives host ``reviews.default.svc.cluster.local``, name ``reviews``,
                                  namespace ``default`` (a host not under ``.svc.`` gives name = host,
                                  no namespace); an Istio cluster without a host (``inbound|9080||``)
                                  gives nothing; any other cluster name gives only
                                  ``destination.service.name`` = the cluster name
``source.principal``,             first URI SAN of ``tls_properties.peer_certificate_properties``,
``source.user``                   without ``spiffe://`` (Istio's form: ``cluster.local/ns/x/sa/y``)
``destination.principal``         inbound only: first URI SAN of the local certificate, same form
``connection.mtls``               the downstream peer presented a certificate
``connection.requested_server_name``  ``tls_properties.tls_sni_hostname``
``context.proxy_error_code``      Envoy's ``%RESPONSE_FLAGS%`` string built from ``response_flags``
                                  (``UH``, ``UF,URX``, ``-`` when none): see :data:`RESPONSE_FLAGS`
``context.reporter.kind``/``.uid``  see above
``context.time``                  ``start_time`` + ``duration`` (when the entry was complete)
``request.metadata``              ``metadata.filter_metadata`` flattened as ext_authz does it
                                  (``<namespace>:<dotted.path>`` -> text)
``mixerd.authz.metadata``         the ext_authz filter's dynamic metadata
                                  (``filter_metadata["envoy.filters.http.ext_authz"]``), flattened
                                  the same way without the namespace prefix. Correlates a decision
                                  with its transaction (e.g. a ``user`` the authz service returned).
``accesslog.log_name``,           the stream's identifier
``accesslog.node.id``,
``accesslog.node.cluster``
``accesslog.type``                ``access_log_type`` name (``DownstreamEnd``, ``TcpConnectionEnd``,
                                  ``NotSet`` ...)
``accesslog.upstream_cluster``,   ``upstream_cluster``, ``route_name``, ``upstream_remote_address``
``accesslog.route_name``,         as ``ip:port``, ``custom_tags``
``accesslog.upstream_host``,
``accesslog.custom_tags``
================================  =======================================================================

HTTP entries (``context.protocol`` ``http``, or ``grpc`` when the request ``content-type``
starts with ``application/grpc`` or a ``grpc-status`` response header/trailer was logged, so
log ``content-type`` with ``additional_request_headers_to_log`` to tell gRPC apart):

``request.headers`` (only the headers Envoy was told to log), ``request.method``,
``request.path`` (with query), ``request.url_path`` (without), ``request.query_params``,
``request.host`` (authority), ``request.scheme``, ``request.useragent``, ``request.referer``,
``request.id``, ``request.size`` (body bytes), ``request.total_size`` (headers + body),
``request.time`` (``start_time``), ``response.code``, ``response.headers``, ``response.size``,
``response.total_size``, ``response.duration`` (``duration``, else
``time_to_last_downstream_tx_byte``), ``response.time`` (start + duration),
``response.grpc_status``/``response.grpc_message`` (from logged trailers or headers),
``accesslog.response_code_details``.

Intermediate HTTP entries (``DownstreamStart``, ``DownstreamPeriodic``, ``UpstreamPoolReady``,
``UpstreamPeriodic``, ``DownstreamTunnelSuccessfullyEstablished``, or
``intermediate_log_entry``) would count a request twice and are skipped (and counted).

TCP entries (``context.protocol`` ``tcp``): ``connection.event`` ``open``
(``TcpUpstreamConnected``, needs Envoy's ``flush_access_log_on_connected``), ``continue``
(``TcpPeriodic``, or ``NotSet`` with ``intermediate_log_entry``) or ``close``
(``TcpConnectionEnd``, ``NotSet``); ``connection.received.bytes_total``/``sent.bytes_total``
(Envoy's cumulative counts), ``connection.received.bytes``/``sent.bytes`` (since the previous
entry of the same connection on the stream, found by ``stream_id`` = ``connection.id``; the
totals when there is none), ``connection.duration``. UDP session entries map the same way.
"""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.data.accesslog.v3 import accesslog_pb2

from mixerd.api.caller import CALLER_PRINCIPAL
from mixerd.api.envoy.attributes import (
    AUTHZ_METADATA_NAMESPACE,
    duration,
    first_uri_san,
    flatten_metadata,
    flatten_struct,
    node_identity,
    parse_cluster,
    parse_ip,
    protocol,
    query_params,
    response_flags,
    set_principal,
    timestamp,
    url_path,
)
from mixerd.attribute import DictBag, IPAddress

__all__ = [
    "Converted",
    "StreamContext",
    "StreamState",
    "TcpBytes",
    "convert_http",
    "convert_message",
    "convert_tcp",
    "is_intermediate",
    "parse_reporter_kinds",
    "stream_context",
]

_T = accesslog_pb2.AccessLogType
_INTERMEDIATE_HTTP: Final = frozenset(
    {
        _T.DownstreamStart,
        _T.DownstreamPeriodic,
        _T.UpstreamPoolReady,
        _T.UpstreamPeriodic,
        _T.DownstreamTunnelSuccessfullyEstablished,
    }
)
_TCP_EVENTS: Final = {
    _T.TcpUpstreamConnected: "open",
    _T.TcpPeriodic: "continue",
    _T.TcpConnectionEnd: "close",
    _T.UdpTunnelUpstreamConnected: "open",
    _T.UdpPeriodic: "continue",
    _T.UdpSessionEnd: "close",
}
_TYPE_NAMES: Final = {v.number: v.name for v in _T.DESCRIPTOR.values}
_METHODS: Final = {
    v.number: v.name
    for v in accesslog_pb2.HTTPRequestProperties.DESCRIPTOR.fields_by_name["request_method"].enum_type.values
    if v.number != 0
}
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_KINDS: Final = ("inbound", "outbound")


# -- per stream ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What a stream's first ``identifier`` says, kept for every entry of the stream."""

    log_name: str = ""
    node_id: str = ""
    node_cluster: str = ""
    reporter_kind: str | None = None
    """The kind configured for ``log_name``; None: infer from the cluster name, else inbound."""
    reporter_uid: str = ""
    reporter_namespace: str = ""
    """The reporting workload's namespace, from an Istio sidecar node id."""
    caller: str | None = None
    """The SPIFFE ID of the stream's client certificate (``mixerd.caller.principal``)."""


def stream_context(
    identifier: Any, reporter_kinds: Mapping[str, str] | None = None, caller: str | None = None
) -> StreamContext:
    """The context of a stream from its first message's ``identifier`` (and ``caller``, the
    SPIFFE ID of the connection's client certificate)."""
    node = identifier.node
    log_name: str = identifier.log_name
    node_id: str = node.id
    identity = node_identity(node_id)
    kind = (reporter_kinds or {}).get(log_name)
    return StreamContext(log_name, node_id, node.cluster, kind, identity.uid, identity.namespace, caller)


def parse_reporter_kinds(text: str) -> dict[str, str]:
    """``"name=kind,name2=kind"`` (kind ``inbound`` or ``outbound``) -> a mapping.

    Raises ValueError naming the bad part.
    """
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, kind = part.partition("=")
        kind = kind.strip().lower()
        if not sep or not name.strip() or kind not in _KINDS:
            raise ValueError(f"expected LOG_NAME=inbound|outbound, got {part!r}")
        out[name.strip()] = kind
    return out


class TcpBytes:
    """Cumulative TCP byte counts seen per connection on one stream, to report deltas. Bounded."""

    __slots__ = ("_capacity", "_last")

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def delta(self, connection: str, received: int, sent: int, *, closing: bool) -> tuple[int, int]:
        if not connection:
            return received, sent
        last = self._last.pop(connection, None)
        if not closing:
            self._last[connection] = (received, sent)
            if len(self._last) > self._capacity:
                self._last.popitem(last=False)
        if last is None:
            return received, sent
        return max(0, received - last[0]), max(0, sent - last[1])

    def __len__(self) -> int:
        return len(self._last)


# -- helpers ---------------------------------------------------------------------------------


def _socket(address: Any) -> tuple[IPAddress | None, int, str]:
    sa = address.socket_address
    text: str = sa.address
    if not text:
        return None, 0, ""
    port = int(sa.port_value)
    return parse_ip(text), port, f"{text}:{port}" if ":" not in text else f"[{text}]:{port}"


def _common(c: Any, ctx: StreamContext, out: dict[str, Any]) -> tuple[str, _dt.timedelta | None]:
    """Fill the attributes every entry has; return the reporter kind and the entry's duration."""
    cluster: str = c.upstream_cluster
    kind, host, svc_name, svc_ns = parse_cluster(cluster)
    reporter = ctx.reporter_kind or kind or "inbound"
    out["context.reporter.kind"] = reporter
    out["accesslog.log_name"] = ctx.log_name
    out["accesslog.node.id"] = ctx.node_id
    out["accesslog.node.cluster"] = ctx.node_cluster
    out["accesslog.type"] = _TYPE_NAMES.get(c.access_log_type, str(c.access_log_type))
    if ctx.caller is not None:
        out[CALLER_PRINCIPAL] = ctx.caller
    if ctx.reporter_uid:
        out["context.reporter.uid"] = ctx.reporter_uid
        out["destination.uid" if reporter == "inbound" else "source.uid"] = ctx.reporter_uid
    if ctx.reporter_namespace:
        out["destination.namespace" if reporter == "inbound" else "source.namespace"] = ctx.reporter_namespace
    if cluster:
        out["accesslog.upstream_cluster"] = cluster
    if host is not None:
        out["destination.service.host"] = host
    if svc_name is not None:
        out["destination.service.name"] = svc_name
    if svc_ns is not None:
        out["destination.service.namespace"] = svc_ns
    if c.route_name:
        out["accesslog.route_name"] = c.route_name

    if c.HasField("downstream_remote_address"):
        ip, port, _ = _socket(c.downstream_remote_address)
        if ip is not None:
            out["source.ip"] = ip
            out["source.port"] = port
    upstream = ""
    uip: IPAddress | None = None
    uport = 0
    if c.HasField("upstream_remote_address"):
        uip, uport, upstream = _socket(c.upstream_remote_address)
        if upstream:
            out["accesslog.upstream_host"] = upstream
    if reporter == "inbound":
        if c.HasField("downstream_local_address"):
            ip, port, _ = _socket(c.downstream_local_address)
            if ip is not None:
                out["destination.ip"] = ip
                out["destination.port"] = port
    elif uip is not None:
        out["destination.ip"] = uip
        out["destination.port"] = uport

    mtls = False
    if c.HasField("tls_properties"):
        tls = c.tls_properties
        if tls.tls_sni_hostname:
            out["connection.requested_server_name"] = tls.tls_sni_hostname
        if tls.HasField("peer_certificate_properties"):
            peer = tls.peer_certificate_properties
            mtls = bool(peer.subject_alt_name) or bool(peer.subject)
            set_principal(out, "source", first_uri_san(peer))
        if reporter == "inbound" and tls.HasField("local_certificate_properties"):
            set_principal(out, "destination", first_uri_san(tls.local_certificate_properties))
    out["connection.mtls"] = mtls
    out["context.proxy_error_code"] = response_flags(c)

    if c.custom_tags:
        out["accesslog.custom_tags"] = dict(c.custom_tags)
    if c.HasField("metadata"):
        fm = c.metadata.filter_metadata
        metadata = flatten_metadata(fm)
        if metadata is not None:
            out["request.metadata"] = metadata
        if AUTHZ_METADATA_NAMESPACE in fm:
            out["mixerd.authz.metadata"] = flatten_struct(fm[AUTHZ_METADATA_NAMESPACE])

    elapsed = duration(c.duration) if c.HasField("duration") else None
    if elapsed is None and c.HasField("time_to_last_downstream_tx_byte"):
        elapsed = duration(c.time_to_last_downstream_tx_byte)
    if c.HasField("start_time"):
        start = timestamp(c.start_time)
        out["context.time"] = start + elapsed if elapsed is not None else start
    return reporter, elapsed


# -- entries ---------------------------------------------------------------------------------


def is_intermediate(common: Any) -> bool:
    """An HTTP entry logged before the request ended (it would count the request twice)."""
    return bool(common.intermediate_log_entry) or common.access_log_type in _INTERMEDIATE_HTTP


def convert_http(entry: Any, ctx: StreamContext) -> dict[str, Any]:
    """The attributes of one ``HTTPAccessLogEntry``."""
    c = entry.common_properties
    out: dict[str, Any] = {}
    _, elapsed = _common(c, ctx, out)
    req = entry.request
    resp = entry.response

    method = _METHODS.get(req.request_method)
    if method is not None:
        out["request.method"] = method
    if req.scheme:
        out["request.scheme"] = req.scheme
    if req.authority:
        out["request.host"] = req.authority
    path: str = req.path
    if path:
        out["request.path"] = path
        out["request.url_path"] = url_path(path)
        params = query_params(path)
        if params is not None:
            out["request.query_params"] = params
    if req.user_agent:
        out["request.useragent"] = req.user_agent
    if req.referer:
        out["request.referer"] = req.referer
    if req.request_id:
        out["request.id"] = req.request_id
    body = int(req.request_body_bytes)
    out["request.size"] = body
    out["request.total_size"] = int(req.request_headers_bytes) + body
    logged = req.request_headers
    request_headers: dict[str, str] = dict(logged) if logged else {}
    out["request.headers"] = request_headers

    if resp.HasField("response_code"):
        out["response.code"] = int(resp.response_code.value)
    rbody = int(resp.response_body_bytes)
    out["response.size"] = rbody
    out["response.total_size"] = int(resp.response_headers_bytes) + rbody
    logged = resp.response_headers
    response_headers: dict[str, str] = dict(logged) if logged else {}
    out["response.headers"] = response_headers
    if resp.response_code_details:
        out["accesslog.response_code_details"] = resp.response_code_details
    trailers = resp.response_trailers
    grpc_status = (trailers.get("grpc-status") if trailers else None) or response_headers.get("grpc-status")
    if grpc_status is not None:
        out["response.grpc_status"] = grpc_status
        message = (trailers.get("grpc-message") if trailers else None) or response_headers.get("grpc-message")
        if message is not None:
            out["response.grpc_message"] = message

    content_type = request_headers.get("content-type") or response_headers.get("content-type")
    out["context.protocol"] = protocol(content_type, grpc_status is not None)

    if c.HasField("start_time"):
        start = timestamp(c.start_time)
        out["request.time"] = start
        if elapsed is not None:
            out["response.time"] = start + elapsed
    if elapsed is not None:
        out["response.duration"] = elapsed
    return out


def convert_tcp(entry: Any, ctx: StreamContext, tracker: TcpBytes | None = None) -> dict[str, Any]:
    """The attributes of one ``TCPAccessLogEntry``."""
    c = entry.common_properties
    out: dict[str, Any] = {}
    _, elapsed = _common(c, ctx, out)
    out["context.protocol"] = "tcp"
    event = _TCP_EVENTS.get(c.access_log_type)
    if event is None:
        event = "continue" if c.intermediate_log_entry else "close"
    out["connection.event"] = event
    props = entry.connection_properties
    received = int(props.received_bytes)
    sent = int(props.sent_bytes)
    out["connection.received.bytes_total"] = received
    out["connection.sent.bytes_total"] = sent
    connection: str = c.stream_id
    if connection:
        out["connection.id"] = connection
    if tracker is not None:
        received, sent = tracker.delta(connection, received, sent, closing=event == "close")
    out["connection.received.bytes"] = received
    out["connection.sent.bytes"] = sent
    if elapsed is not None:
        out["connection.duration"] = elapsed
    return out


@dataclass(frozen=True, slots=True)
class Converted:
    """The attribute sets of one stream message."""

    bags: list[DictBag]
    kind: str
    """``http``, ``tcp`` or ``none`` (a message without entries)."""
    skipped: int = 0
    """Intermediate HTTP entries left out."""


def convert_message(message: Any, ctx: StreamContext, tracker: TcpBytes | None = None) -> Converted:
    """The attribute sets of every entry of a ``StreamAccessLogsMessage``."""
    which = message.WhichOneof("log_entries")
    if which == "http_logs":
        bags: list[DictBag] = []
        skipped = 0
        for entry in message.http_logs.log_entry:
            if is_intermediate(entry.common_properties):
                skipped += 1
                continue
            bags.append(DictBag(convert_http(entry, ctx)))
        return Converted(bags, "http", skipped)
    if which == "tcp_logs":
        return Converted([DictBag(convert_tcp(e, ctx, tracker)) for e in message.tcp_logs.log_entry], "tcp")
    return Converted([], "none")


class StreamState:
    """What one stream remembers: the context of its identifier and its TCP byte counts."""

    __slots__ = ("caller", "context", "reporter_kinds", "tcp")

    def __init__(self, reporter_kinds: Mapping[str, str] | None = None, caller: str | None = None) -> None:
        self.reporter_kinds = reporter_kinds
        self.caller = caller
        self.context: StreamContext | None = None
        self.tcp = TcpBytes()

    def convert(self, message: Any) -> Converted:
        """The attribute sets of the stream's next message (the first one sets the context)."""
        if self.context is None or message.HasField("identifier"):
            self.context = stream_context(message.identifier, self.reporter_kinds, self.caller)
        return convert_message(message, self.context, self.tcp)
