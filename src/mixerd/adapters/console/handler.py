"""The console builder and handler: logentry variables -> :class:`~mixerd.console.model.Hop`."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, Params
from mixerd.attribute import MISSING, map_entry, parse_duration, remember
from mixerd.console.correlate import (
    DEFAULT_ORDER,
    REQUEST_ID,
    correlation,
    headers_read,
    parse_order,
    usual_correlation,
)
from mixerd.console.model import Hop, Peer, Reporter, peer

__all__ = [
    "HOP_ATTRIBUTES",
    "ConsoleBuilder",
    "ConsoleHandler",
    "HopSink",
    "hop_attributes_read",
    "hop_from_attributes",
    "hop_from_variables",
]


@runtime_checkable
class HopSink(Protocol):
    """What the handler needs of the console writer."""

    def add_hop(self, hop: Hop) -> None: ...


_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_REPORTERS: Final = {
    "source": Reporter.SOURCE,
    "outbound": Reporter.SOURCE,
    "destination": Reporter.DESTINATION,
    "inbound": Reporter.DESTINATION,
}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _micros(d: _dt.timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _duration_us(value: Any) -> int:
    if isinstance(value, _dt.timedelta):
        return max(0, _micros(value))
    if isinstance(value, str) and value:
        try:
            return max(0, _micros(parse_duration(value)))
        except ValueError:
            return 0
    return 0


def _time_us(value: Any, fallback: _dt.datetime) -> int:
    t = value if isinstance(value, _dt.datetime) else fallback
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return _micros(t - _EPOCH)


_TEXT_NAMES: Final = (
    "reporter",
    "sourceNamespace", "sourceWorkload", "sourceApp", "sourceVersion", "sourcePrincipal",
    "destinationNamespace", "destinationWorkload", "destinationApp", "destinationVersion",
    "destinationServiceHost", "destinationPrincipal",
    "protocol", "method", "httpAuthority", "url", "responseFlags", "requestId", "transactionId",
    "traceId", "spanId",
)  # fmt: skip


def hop_from_variables(
    variables: Mapping[str, Any],
    timestamp: _dt.datetime | None,
    now: _dt.datetime,
    key_order: Sequence[str] = DEFAULT_ORDER,
) -> Hop:
    """The hop a console instance describes (see the package docstring for the names)."""
    v = variables
    (reporter, src_ns, src_workload, src_app, src_version, src_principal,
     dst_ns, dst_workload, dst_app, dst_version, dst_service, dst_principal,
     protocol, method, host, path, flags, request_id, transaction_id,
     trace_id, span_id) = [x if type(x) is str else _str(x) for x in map(v.get, _TEXT_NAMES)]  # fmt: skip
    headers = v.get("requestHeaders")
    if type(headers) is not dict and not isinstance(headers, Mapping):  # the ABC check is slow
        headers = {}
    if request_id and REQUEST_ID not in headers:
        # A proxy that did not log the header (Envoy's access log logs only the headers it is
        # told to) still knows the request id: it is the x-request-id header.
        headers = {**headers, REQUEST_ID: request_id}
    key, ids = correlation(headers, key_order)
    # every hop comes through here: the common types (a UTC datetime, a timedelta, int codes)
    # are handled inline, anything else by the helpers
    t = timestamp if type(timestamp) is _dt.datetime and timestamp.tzinfo is _dt.UTC else None
    if t is not None:
        d = t - _EPOCH
        start_us = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    else:
        start_us = _time_us(timestamp, now)
    latency = v.get("latency")
    if type(latency) is _dt.timedelta:
        duration_us = max(0, (latency.days * 86_400 + latency.seconds) * 1_000_000 + latency.microseconds)
    else:
        duration_us = _duration_us(latency)
    code = v.get("responseCode")
    if type(code) is not int:
        code = _int(code)
    request_bytes = v.get("requestSize")
    if type(request_bytes) is not int:
        request_bytes = _int(request_bytes)
    response_bytes = v.get("responseSize")
    if type(response_bytes) is not int:
        response_bytes = _int(response_bytes)
    source = peer((src_ns, src_workload, src_app, src_version, "", src_principal))
    destination = peer((dst_ns, dst_workload, dst_app, dst_version, dst_service, dst_principal))
    return Hop(
        start_us,
        duration_us,
        _REPORTERS.get(reporter) or _REPORTERS.get(reporter.lower(), Reporter.UNKNOWN),
        source,
        destination,
        transaction_id or key,
        protocol,
        method,
        host,
        path,
        code,
        "" if flags == "-" else flags,
        request_bytes,
        response_bytes,
        request_id,
        trace_id.lower() if trace_id else ids.trace_id,
        span_id.lower() if span_id else ids.span_id,
        ids.parent_span_id,
    )


def _text(value: Any) -> str:
    return value if type(value) is str else _str(value)


_RawPeer = tuple[Any, Any, Any, Any, Any, Any]
_RAW_PEERS: dict[_RawPeer, Peer] = {}
"""Peers by the attribute values they were read from (strings, as a typed bag gives them): one
lookup per peer, no conversion. A cache, cleared when it holds ``_MAX_RAW_PEERS``."""
_MAX_RAW_PEERS: Final = 10_000
_RAW_EDGES: dict[tuple[Any, ...], tuple[Peer, Peer]] = {}
"""Source and destination peers by the twelve values they were read from (the source's six, then
the destination's): one lookup per hop. A cache, cleared when it holds ``_MAX_RAW_PEERS``."""


def _peer_of(raw: _RawPeer) -> Peer:
    try:
        found = _RAW_PEERS.get(raw)
    except TypeError:  # an unhashable value where a string belongs
        return peer(tuple(map(_text, raw)))  # type: ignore[arg-type]
    if found is None:
        found = remember(_RAW_PEERS, raw, peer(tuple(map(_text, raw))), _MAX_RAW_PEERS)  # type: ignore[arg-type]
    return found


def _edge_of(raw: tuple[Any, ...]) -> tuple[Peer, Peer]:
    """The peers of ``raw`` (see ``_RAW_EDGES``), remembered when the values can be."""
    edge = (_peer_of(raw[:6]), _peer_of(raw[6:]))
    try:
        return remember(_RAW_EDGES, raw, edge, _MAX_RAW_PEERS)
    except TypeError:  # an unhashable value where a string belongs
        return edge


HOP_ATTRIBUTES: Final = frozenset(
    {
        "api.protocol",
        "context.protocol",
        "context.proxy_error_code",
        "context.reporter.kind",
        "destination.labels",
        "destination.namespace",
        "destination.principal",
        "destination.service.host",
        "destination.workload.name",
        "destination.workload.namespace",
        "request.host",
        "request.id",
        "request.method",
        "request.path",
        "request.size",
        "request.time",
        "response.code",
        "response.duration",
        "response.size",
        "source.labels",
        "source.namespace",
        "source.principal",
        "source.workload.name",
        "source.workload.namespace",
    }
)
"""Every attribute :func:`hop_from_attributes` reads whole; of ``request.headers`` it reads only
the entries :func:`hop_attributes_read` names."""

HEADERS: Final = "request.headers"


def hop_attributes_read(key_order: Sequence[str] = DEFAULT_ORDER) -> frozenset[str]:
    """What :func:`hop_from_attributes` reads with this key order (a Report decodes at least
    these for it): :data:`HOP_ATTRIBUTES`, and the entries of ``request.headers`` that hold the
    correlation key, the trace context and the request id (:func:`~mixerd.attribute.map_entry`
    names), not the whole map."""
    headers = headers_read(key_order) | {REQUEST_ID}
    return HOP_ATTRIBUTES | {map_entry(HEADERS, h) for h in headers}


def hop_from_attributes(
    bag: Mapping[str, Any],
    now: _dt.datetime,
    key_order: Sequence[str] = DEFAULT_ORDER,
) -> Hop:
    """The hop of one call's attribute set (an ``attributes`` instance): the same hop as
    :func:`hop_from_variables` gives for the documented ``consolehop`` logentry instance, read
    straight from the attributes (see the package docstring), without building an instance.

    Every recorded call comes through here: each attribute is read once, values of the usual
    types are used as they are, and peers are looked up by the values read."""
    get = bag.get
    m = MISSING
    src_ns = get("source.workload.namespace", m)
    if src_ns is m:
        src_ns = get("source.namespace", "")
    labels = get("source.labels")
    if labels is None:
        src_app = src_version = ""
    else:
        try:  # a dict or a read-only view of one (kubernetesenv's)
            src_app, src_version = labels.get("app", ""), labels.get("version", "")
        except AttributeError:  # not a map: the expression would not have compiled
            src_app = src_version = ""
    dst_ns = get("destination.workload.namespace", m)
    if dst_ns is m:
        dst_ns = get("destination.namespace", "")
    host = get("request.host", "")
    service = get("destination.service.host", m)
    if service is m:
        service = host
    labels = get("destination.labels")
    if labels is None:
        app = version = ""
    else:
        try:
            app, version = labels.get("app", ""), labels.get("version", "")
        except AttributeError:
            app = version = ""
    raw = (
        src_ns, get("source.workload.name", ""), src_app, src_version, "", get("source.principal", ""),
        dst_ns, get("destination.workload.name", ""), app, version, service, get("destination.principal", ""),
    )  # fmt: skip
    try:
        source, destination = _RAW_EDGES[raw]
    except (KeyError, TypeError):
        source, destination = _edge_of(raw)
    protocol = get("api.protocol", m)
    if protocol is m:
        protocol = get("context.protocol", "http")
    headers = get(HEADERS)
    if headers is None or (type(headers) is not dict and not isinstance(headers, Mapping)):
        headers = {}
    request_id = get("request.id", m)
    if request_id is m:
        request_id = headers.get(REQUEST_ID, "")
    elif request_id and REQUEST_ID not in headers:
        headers = {**headers, REQUEST_ID: request_id}
    usual = usual_correlation(headers) if key_order is DEFAULT_ORDER else None
    if usual is None:
        key, (trace_id, span_id, parent_span_id) = correlation(headers, key_order)
    else:
        key, trace_id, span_id, parent_span_id = usual
    t = get("request.time")
    if type(t) is _DATETIME and t.tzinfo is _UTC:
        d = t - _EPOCH
        start_us = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    else:
        start_us = _time_us(t, now)
    latency = get("response.duration")
    if type(latency) is _TIMEDELTA:
        duration_us = (latency.days * 86_400 + latency.seconds) * 1_000_000 + latency.microseconds
        if duration_us < 0:
            duration_us = 0
    else:
        duration_us = _duration_us(latency)
    code = get("response.code", 0)
    if type(code) is not int:
        code = _int(code)
    request_bytes = get("request.size", 0)
    if type(request_bytes) is not int:
        request_bytes = _int(request_bytes)
    response_bytes = get("response.size", 0)
    if type(response_bytes) is not int:
        response_bytes = _int(response_bytes)
    flags = get("context.proxy_error_code", "")
    if flags == "-":
        flags = ""
    elif type(flags) is not str:
        flags = _str(flags)
    method = get("request.method", "")
    path = get("request.path", "")
    return Hop(
        start_us,
        duration_us,
        _SOURCE if get("context.reporter.kind", "inbound") == "outbound" else _DESTINATION,
        source,
        destination,
        key,
        protocol if type(protocol) is str else _str(protocol),
        method if type(method) is str else _str(method),
        host if type(host) is str else _str(host),
        path if type(path) is str else _str(path),
        code,
        flags,
        request_bytes,
        response_bytes,
        request_id if type(request_id) is str else _str(request_id),
        trace_id,
        span_id,
        parent_span_id,
    )


_SOURCE: Final = Reporter.SOURCE
_DATETIME: Final = _dt.datetime
_TIMEDELTA: Final = _dt.timedelta
_UTC: Final = _dt.UTC
_DESTINATION: Final = Reporter.DESTINATION


class ConsoleHandler(Handler):
    def __init__(self, env: Env, key_order: Sequence[str]) -> None:
        self._env = env
        order = tuple(key_order)
        # the default order itself (not an equal tuple) takes correlation's fast path
        self._key_order = DEFAULT_ORDER if order == DEFAULT_ORDER else order
        self.attributes_read: Final = hop_attributes_read(self._key_order)
        """What this handler reads from an ``attributes`` instance (the attribute set itself)."""
        sink = env.shared("console")
        self._sink: HopSink | None = sink if isinstance(sink, HopSink) else None

    def handle_logentry(self, instances: Sequence[Any]) -> None:
        if self._sink is None:
            self._env.dropped(len(instances), "console_off")
            return
        now = self._env.clock.now()
        add = self._sink.add_hop
        order = self._key_order
        for inst in instances:
            add(hop_from_variables(inst.variables, inst.timestamp, now, order))

    def handle_attributes(self, bags: Sequence[Mapping[str, Any]]) -> None:
        if self._sink is None:
            self._env.dropped(len(bags), "console_off")
            return
        now = self._env.clock.now()
        add = self._sink.add_hop
        order = self._key_order
        for bag in bags:
            add(hop_from_attributes(bag, now, order))


class ConsoleBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        p = Params(config)
        self.key_order: tuple[str, ...] = DEFAULT_ORDER
        if p.has("transactionHeaders"):
            try:
                self.key_order = parse_order(",".join(p.str_list("transactionHeaders")))
            except ValueError as exc:
                p.error("transactionHeaders", str(exc))
        self.errors = p.errors + p.unknown_fields()

    def validate(self) -> list[ConfigError]:
        return self.errors

    def build(self, env: Env) -> ConsoleHandler:
        return ConsoleHandler(env, self.key_order)
