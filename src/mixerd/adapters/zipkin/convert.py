"""``tracespan`` instances -> spans -> Zipkin JSON v2 or OTLP/HTTP protobuf (pure).

What a span becomes is Mixer 1.4's (its zipkin adapter turned each instance into an OpenCensus
span and exported it with OpenCensus' Zipkin exporter):

* ids: ``traceId`` / ``spanId`` / ``parentSpanId`` are hex (B3); a trace id of up to 16 hex digits
  is a 64-bit id (Zipkin keeps it 16 digits long, OTLP pads it to 16 bytes), up to 32 digits a
  128-bit id; shorter ids are left-padded with zeros. An instance whose trace id or span id is not
  hex (or too long, or odd-length) is skipped (counted, ``bad_id``); a parent id that does not
  parse means "no parent".
* kind: ``clientSpan`` true -> CLIENT, else SERVER.
* ``rewriteClientSpanId``: a client span's id, and a server span's *parent* id, become the span
  id XOR ``3f6a2ec3c810c2ab``, so the server span hangs under the client span even when the proxy
  gave both the same id.
* times: ``timestamp`` = start in microseconds since the epoch, ``duration`` = end - start in
  microseconds (at least 1 when positive); OTLP takes nanoseconds.
* tags: ``spanTags`` (strings, integers and floats as they are, anything else as text), then
  ``http.status_code`` when ``httpStatusCode`` > 0 and the OpenCensus status of that HTTP code
  (``census.status_code`` when not OK, ``census.status_description``, e.g. ``NOT_FOUND``).
* the local endpoint (Zipkin ``localEndpoint``; OTLP resource ``service.name``): the source
  workload (``sourceName``, ``sourceIp``) of a client span, the destination of a server span;
  ``default`` when the name is empty.
* annotations (OTLP: events): the request and response sizes (``requestTotalSize``,
  ``responseTotalSize``) as ``Sent N bytes`` / ``Received N bytes`` at the start and end time.
* sampling: a span is exported when ``sampleProbability`` is 1, or when the upper 63 bits of the
  first 8 bytes of its trace id are below ``sampleProbability`` * 2^63 (OpenCensus' probability
  sampler: every span of a trace gets the same decision); 0 exports nothing (Mixer: tracing off).

Differences, on purpose: the Zipkin endpoint carries ``ipv4``/``ipv6`` only when the instance has
an address (Mixer wrote ``0.0.0.0``), and tags are one JSON object (no Go map order to mimic).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.common.v1 import common_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2
from mixerd.adapter import stringify
from mixerd.attribute import IPAddress
from mixerd.templates import TraceSpanInstance

__all__ = [
    "REWRITE_PAD",
    "Span",
    "http_trace_status",
    "otlp_request",
    "parse_span_id",
    "parse_trace_id",
    "sampled",
    "span_of",
    "tags_of",
    "zipkin_json",
]

REWRITE_PAD: Final = bytes.fromhex("3f6a2ec3c810c2ab")
"""What ``rewriteClientSpanId`` XORs a span id with (Mixer's pad)."""

_STATUS_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_HTTP_TRACE_CODES: Final = {
    499: 1,
    400: 3,
    422: 3,
    504: 4,
    404: 5,
    403: 7,
    401: 16,
    429: 8,
    501: 12,
    503: 14,
    200: 0,
}


def http_trace_status(http_status: int) -> tuple[int, str]:
    """OpenCensus' trace status of an HTTP status code: (code, name); 2xx/3xx are OK, other codes
    UNKNOWN unless they have a closer match (404 NOT_FOUND, 503 UNAVAILABLE ...)."""
    code = 2 if http_status < 200 or http_status >= 400 else 0
    code = _HTTP_TRACE_CODES.get(http_status, code)
    return code, _STATUS_NAMES[code]


def _hex(text: str, max_bytes: int) -> bytes | None:
    if not text or len(text) % 2 or len(text) > 2 * max_bytes:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def parse_trace_id(text: str) -> bytes | None:
    """A B3 trace id -> 16 bytes (a 64-bit id in the lower half), None when it does not parse."""
    raw = _hex(text, 16)
    if raw is None:
        return None
    return raw.rjust(16, b"\0")


def parse_span_id(text: str) -> bytes | None:
    """A B3 span id -> 8 bytes, None when it does not parse."""
    raw = _hex(text, 8)
    return None if raw is None else raw.rjust(8, b"\0")


def sampled(trace_id: bytes, probability: float) -> bool:
    """OpenCensus' probability sampler over the first 8 bytes of the trace id (see module doc)."""
    if probability >= 1.0:
        return True
    if probability <= 0.0:
        return False
    bound = int(probability * (1 << 63))
    return (int.from_bytes(trace_id[:8], "big") >> 1) < bound


def _rewrite(span_id: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(span_id, REWRITE_PAD, strict=True))


@dataclass(frozen=True, slots=True)
class Span:
    """One span, ready to encode for either wire."""

    trace_id: bytes
    """16 bytes."""
    span_id: bytes
    parent_id: bytes | None
    name: str
    client: bool
    start_ns: int
    end_ns: int
    tags: tuple[tuple[str, Any], ...]
    """(key, value) with str, int or float values; what Zipkin gets as text."""
    service: str
    ip: IPAddress | None
    sent: int
    received: int
    """Bytes sent / received by the span's side (``requestTotalSize``/``responseTotalSize``)."""
    status_code: int = 0
    """OpenCensus status code of the HTTP status (0: OK or no HTTP status)."""


def _ns(t: _dt.datetime | None) -> int:
    if t is None:
        return 0
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _tag_value(value: Any) -> str | int | float:
    if isinstance(value, str | float) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return stringify(value)


def span_of(inst: TraceSpanInstance) -> Span | None:
    """The span of an instance, or None when its trace or span id does not parse."""
    trace_id = parse_trace_id(inst.trace_id)
    if trace_id is None:
        return None
    span_id = parse_span_id(inst.span_id)
    if span_id is None:
        return None
    parent = parse_span_id(inst.parent_span_id) if inst.parent_span_id else None
    if inst.client_span:
        if inst.rewrite_client_span_id:
            span_id = _rewrite(span_id)
        service, ip = inst.source_name, inst.source_ip
        sent, received = inst.request_total_size, inst.response_total_size
    else:
        if inst.rewrite_client_span_id:
            parent = _rewrite(span_id)
        service, ip = inst.destination_name, inst.destination_ip
        sent, received = inst.response_total_size, inst.request_total_size
    if parent is not None and not any(parent):
        parent = None
    tags = [(str(k), _tag_value(v)) for k, v in inst.span_tags.items()]
    status_code = 0
    if inst.http_status_code > 0:
        status_code, status_name = http_trace_status(inst.http_status_code)
        tags = [t for t in tags if t[0] != "http.status_code"]
        tags.append(("http.status_code", inst.http_status_code))
        if status_code:
            tags.append(("census.status_code", status_name))
        tags.append(("census.status_description", status_name))
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        name=inst.span_name,
        client=inst.client_span,
        start_ns=_ns(inst.start_time),
        end_ns=_ns(inst.end_time),
        tags=tuple(tags),
        service=service or "default",
        ip=ip if ip is not None and ip.packed else None,
        sent=sent,
        received=received,
        status_code=status_code,
    )


# --- Zipkin JSON v2 -----------------------------------------------------------------------------


def _zipkin_trace_id(trace_id: bytes) -> str:
    return trace_id[8:].hex() if not any(trace_id[:8]) else trace_id.hex()


def _us(ns: int) -> int:
    return (ns + 500) // 1000


def _zipkin(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": _zipkin_trace_id(span.trace_id),
        "id": span.span_id.hex(),
    }
    if span.parent_id is not None:
        out["parentId"] = span.parent_id.hex()
    out["kind"] = "CLIENT" if span.client else "SERVER"
    out["name"] = span.name
    if span.start_ns:
        out["timestamp"] = _us(span.start_ns)
        if span.end_ns:
            d = span.end_ns - span.start_ns
            if d > 0:
                out["duration"] = max(1, _us(d))
    endpoint: dict[str, Any] = {"serviceName": span.service}
    if span.ip is not None:
        text = str(span.ip)
        endpoint["ipv6" if ":" in text else "ipv4"] = text
    out["localEndpoint"] = endpoint
    first, second = ("Sent", "Received") if span.client else ("Received", "Sent")
    first_n, second_n = (span.sent, span.received) if span.client else (span.received, span.sent)
    out["annotations"] = [
        {"timestamp": _us(span.start_ns), "value": f"{first} {first_n} bytes"},
        {"timestamp": _us(span.end_ns), "value": f"{second} {second_n} bytes"},
    ]
    if span.tags:
        out["tags"] = tags_of(span)
    return out


def zipkin_json(spans: Iterable[Span]) -> bytes:
    """The body of a Zipkin ``POST /api/v2/spans``: a JSON list of v2 spans."""
    return json.dumps([_zipkin(s) for s in spans], separators=(",", ":"), ensure_ascii=False).encode()


# --- OTLP/HTTP protobuf -------------------------------------------------------------------------

_SCOPE: Final = "mixerd.adapters.zipkin"


def _any_value(value: Any) -> common_pb2.AnyValue:
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    return common_pb2.AnyValue(double_value=float(value))


def _otlp_span(span: Span) -> trace_pb2.Span:
    out = trace_pb2.Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_id or b"",
        name=span.name,
        kind=trace_pb2.Span.SPAN_KIND_CLIENT if span.client else trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
        attributes=[
            common_pb2.KeyValue(key=k, value=_any_value(v))
            for k, v in span.tags
            if not k.startswith("census.")
        ],
    )
    first, second = ("Sent", "Received") if span.client else ("Received", "Sent")
    first_n, second_n = (span.sent, span.received) if span.client else (span.received, span.sent)
    for when, kind, n in ((span.start_ns, first, first_n), (span.end_ns, second, second_n)):
        out.events.append(
            trace_pb2.Span.Event(
                time_unix_nano=when,
                name=f"{kind} {n} bytes",
                attributes=[common_pb2.KeyValue(key="message.uncompressed_size", value=_any_value(n))],
            )
        )
    if span.status_code:
        out.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        out.status.message = _STATUS_NAMES[span.status_code]
    return out


def _resource_key(span: Span) -> tuple[str, str]:
    return span.service, "" if span.ip is None else str(span.ip)


def otlp_request(spans: Sequence[Span]) -> bytes:
    """The body of an OTLP/HTTP ``POST /v1/traces`` (``ExportTraceServiceRequest``, protobuf):
    one resource per local endpoint (``service.name``, and ``net.host.ip`` when known)."""
    groups: dict[tuple[str, str], list[Span]] = {}
    for s in spans:
        groups.setdefault(_resource_key(s), []).append(s)
    req = trace_service_pb2.ExportTraceServiceRequest()
    for (service, ip), members in groups.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.append(common_pb2.KeyValue(key="service.name", value=_any_value(service)))
        if ip:
            rs.resource.attributes.append(common_pb2.KeyValue(key="net.host.ip", value=_any_value(ip)))
        ss = rs.scope_spans.add()
        ss.scope.name = _SCOPE
        ss.spans.extend(_otlp_span(s) for s in members)
    return bytes(req.SerializeToString())


def tags_of(span: Span) -> Mapping[str, str]:
    """The span's tags as Zipkin gets them (text values)."""
    return {k: stringify(v) for k, v in span.tags}
