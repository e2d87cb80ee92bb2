"""OTLP spans and log records -> the console's :class:`~mixerd.console.model.Span` and
:class:`~mixerd.console.model.LogRecord` (pure).

Both arrive grouped by resource (the process that produced them) and instrumentation scope;
:func:`trace_records` and :func:`log_records` flatten a request into ``(Origin, record)`` pairs,
where the :class:`Origin` holds what a record takes from its resource and scope.

Ids
===

Lower-case hex. OTLP's rules (trace.proto): a span's ``trace_id`` (16 bytes) and ``span_id``
(8 bytes) are required, and one that is empty, all zeros or of another length is invalid: the
span is rejected. A ``parent_span_id`` that is empty or all zeros means a root span (``""``); of
a length other than 8 the span is rejected. A log record's ``trace_id`` and ``span_id`` are
optional: empty or all zeros give ``""``, another length rejects the record. A rejected record
raises :class:`BadRecord`, whose message is the reason (one of a few fixed texts, for counting).

Span fields
===========

``service``: the resource attribute ``service.name`` (empty when absent). ``start_us`` /
``duration_us``: the Unix nanoseconds in microseconds (rounded down; an end before the start
gives 0). ``kind``: ``internal``, ``server``, ``client``, ``producer``, ``consumer``, empty for
unspecified (a kind newer than these: its number). ``status``: ``ok``, ``error``, empty for unset.
The name is bounded like an attribute value.

Log record fields
=================

``time_us``: ``time_unix_nano``, else ``observed_time_unix_nano`` (the Collector's file-log
receiver sets only this one unless a parser takes the time from the line), else the time it was
received. ``severity``: ``severity_text``, else the name of ``severity_number`` (``INFO``,
``WARN2`` ...; empty when unspecified). ``body``: the body rendered as text like an attribute
value (a string as it is, a structured body as JSON), bounded to :data:`MAX_BODY_CHARS`.

Attributes
==========

The record's own attributes (not the resource's), flattened to text, the first
:data:`MAX_ATTRIBUTES` of them (in the order sent; a repeated key keeps its first value; an empty
key, which only OTLP profiles use, is skipped). Keys are cut to :data:`MAX_KEY_CHARS` and values
to :data:`MAX_VALUE_CHARS` characters, a cut one ending in :data:`TRUNCATED`. Values, as the
OpenTelemetry Collector renders them as text: strings as they are, booleans ``true``/``false``,
integers in decimal, doubles in Python's shortest form (``0.5``, ``3.0``, ``1e+100``, ``NaN``,
``Infinity``), bytes in base64, arrays and key-value lists as compact JSON (bytes in them base64,
non-finite doubles as strings), an empty value as ``""``. Added by mixerd, outside that bound:
``mixerd.dropped_attributes`` (how many were left out), ``otel.scope.name`` (the instrumentation
scope) and, for spans, ``otel.status_description`` (the status message), each only when not empty.

Transaction ids
===============

The first found, in this order:

1. the record's attribute ``transaction.id``, ``transaction_id``, ``x-transaction-id`` or
   ``http.request.header.x-transaction-id`` (in this order of preference; OpenTelemetry's HTTP
   semantic conventions record a captured request header as that last name with a list of
   strings: its first element is taken);
2. the same attributes of the resource;
3. log records only: the body, when it holds ``transaction_id=ID``, ``transaction.id=ID`` or
   ``x-transaction-id=ID`` (any case; or ``KEY: ID``, with spaces around the colon; the key and
   ID optionally double-quoted: a logfmt line, a JSON line, a structured body). The key must not
   be part of a longer one (``my_transaction_id=`` does not count), and ID ends at a space, a
   quote or one of ``,;&|{}[]()<>``. The file-log receiver tailing an application's
   log hands over the raw line as the body unless the Collector is configured to parse it, so
   this joins the lines an application logs with its transaction id without any Collector
   configuration.

A value is taken when, trimmed, it is 1 to :data:`MAX_TRANSACTION_ID_CHARS` printable characters
and not a placeholder (``-``, ``null``, ``none``, ``nil``: what log formats write for a missing
header). Otherwise the record joins its transaction by trace id only.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mixerd._proto.otlp.logs.v1 import logs_pb2
from mixerd.console.model import LogRecord, Span

__all__ = [
    "DROPPED_ATTRIBUTES",
    "MAX_ATTRIBUTES",
    "MAX_BODY_CHARS",
    "MAX_KEY_CHARS",
    "MAX_TRANSACTION_ID_CHARS",
    "MAX_VALUE_CHARS",
    "TRANSACTION_ATTRIBUTES",
    "TRUNCATED",
    "BadRecord",
    "Origin",
    "attributes",
    "convert_log",
    "convert_span",
    "count_logs",
    "count_spans",
    "log_records",
    "origin",
    "render",
    "trace_records",
    "transaction_id",
]

MAX_ATTRIBUTES: Final = 64
"""A record's attributes kept (the first ones sent)."""
MAX_KEY_CHARS: Final = 256
MAX_VALUE_CHARS: Final = 1024
"""Characters of an attribute value (and of a span name, a service name) kept."""
MAX_BODY_CHARS: Final = 8192
"""Characters of a log record's body kept."""
MAX_TRANSACTION_ID_CHARS: Final = 256
TRUNCATED: Final = "...[truncated]"
"""Appended to a key, value or body that was cut."""
DROPPED_ATTRIBUTES: Final = "mixerd.dropped_attributes"
SCOPE_NAME: Final = "otel.scope.name"
STATUS_DESCRIPTION: Final = "otel.status_description"
TRANSACTION_ATTRIBUTES: Final = (
    "transaction.id",
    "transaction_id",
    "x-transaction-id",
    "http.request.header.x-transaction-id",
)
"""The attributes that carry a transaction id, most preferred first."""

_TRANSACTION_RANK: Final = {name: rank for rank, name in enumerate(TRANSACTION_ATTRIBUTES)}
_PLACEHOLDERS: Final = frozenset({"-", "null", "none", "nil"})
_STOP: Final = r"\s\"',;&|{}\[\]()<>"
_BODY_TRANSACTION: Final = re.compile(
    rf"(?<![\w.-])\"?(?:x-transaction-id|transaction[_.]id)\"?(?:\s*:\s*|=)\"?"
    rf"([^{_STOP}]{{1,{MAX_TRANSACTION_ID_CHARS}}})(?![^{_STOP}])",
    re.IGNORECASE,
)
_SPAN_KINDS: Final = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS: Final = {1: "ok", 2: "error"}
_SEVERITIES: Final = {
    v.number: v.name.removeprefix("SEVERITY_NUMBER_")
    for v in logs_pb2.SeverityNumber.DESCRIPTOR.values
    if v.number != 0
}
_ZERO_IDS: Final = {16: bytes(16), 8: bytes(8)}


class BadRecord(ValueError):
    """A span or log record that cannot be accepted; the message says why (a fixed text per
    reason, so messages can be counted)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """What a record takes from its resource and instrumentation scope."""

    service: str = ""
    transaction_id: str = ""
    """The resource's transaction-id attribute, if any."""
    scope: str = ""


# -- values ----------------------------------------------------------------------------------


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def _double(d: float) -> str:
    if math.isfinite(d):
        return repr(d)
    return "NaN" if math.isnan(d) else ("Infinity" if d > 0 else "-Infinity")


def _plain(value: Any) -> Any:
    """An AnyValue as a JSON-able value (for arrays and key-value lists)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else _double(d)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        out: dict[str, Any] = {}
        for kv in value.kvlist_value.values:
            if kv.key not in out:
                out[kv.key] = _plain(kv.value)
        return out
    return None  # unset, or a profiles-only string index


def render(value: Any) -> str:
    """An OTLP ``AnyValue`` as text (see the module documentation); not bounded."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value  # type: ignore[no-any-return]
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return _double(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which in ("array_value", "kvlist_value"):
        return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return ""


def attributes(kvs: Sequence[Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Repeated ``KeyValue`` -> at most :data:`MAX_ATTRIBUTES` bounded entries, then mixerd's own
    non-empty ``extra`` entries (outside the bound)."""
    out: dict[str, str] = {}
    dropped = 0
    for kv in kvs:
        key = _bounded(kv.key, MAX_KEY_CHARS)
        if not key or key in out:
            continue
        if len(out) >= MAX_ATTRIBUTES:
            dropped += 1
            continue
        out[key] = _bounded(render(kv.value), MAX_VALUE_CHARS)
    if dropped:
        out[DROPPED_ATTRIBUTES] = str(dropped)
    if extra:
        out.update((k, v) for k, v in extra.items() if v)
    return out


# -- transaction ids -------------------------------------------------------------------------


def _usable(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_TRANSACTION_ID_CHARS or not text.isprintable():
        return ""
    return "" if text.lower() in _PLACEHOLDERS else text


def _transaction_value(value: Any) -> str:
    which = value.WhichOneof("value")
    if which == "array_value":
        values = value.array_value.values
        return _transaction_value(values[0]) if values else ""
    if which in ("string_value", "int_value"):
        return _usable(render(value))
    return ""


def transaction_id(kvs: Sequence[Any]) -> str:
    """The transaction id among attributes (:data:`TRANSACTION_ATTRIBUTES`, most preferred first);
    ``""`` when none has a usable value."""
    best, best_rank = "", len(TRANSACTION_ATTRIBUTES)
    for kv in kvs:
        rank = _TRANSACTION_RANK.get(kv.key)
        if rank is None or rank >= best_rank:
            continue
        found = _transaction_value(kv.value)
        if found:
            best, best_rank = found, rank
            if rank == 0:
                break
    return best


def _body_transaction_id(body: str) -> str:
    for match in _BODY_TRANSACTION.finditer(body):
        found = _usable(match.group(1))
        if found:
            return found
    return ""


# -- ids -------------------------------------------------------------------------------------


def _required_id(raw: bytes, size: int, name: str) -> str:
    if len(raw) != size:
        raise BadRecord(f"{name} is missing" if not raw else f"{name} is not {size} bytes long")
    if raw == _ZERO_IDS[size]:
        raise BadRecord(f"{name} is all zeros")
    return raw.hex()


def _optional_id(raw: bytes, size: int, name: str) -> str:
    if not raw or raw == _ZERO_IDS[size]:
        return ""
    if len(raw) != size:
        raise BadRecord(f"{name} is not {size} bytes long")
    return raw.hex()


# -- records ---------------------------------------------------------------------------------


def origin(resource: Any, scope: Any) -> Origin:
    """The :class:`Origin` of the records under one resource and scope."""
    service = ""
    kvs = resource.attributes
    for kv in kvs:
        if kv.key == "service.name":
            service = _bounded(render(kv.value), MAX_VALUE_CHARS)
            break
    return Origin(service, transaction_id(kvs), _bounded(scope.name, MAX_VALUE_CHARS))


def convert_span(span: Any, where: Origin) -> Span:
    """One OTLP ``Span`` -> a console span. Raises :class:`BadRecord`."""
    trace_id = _required_id(span.trace_id, 16, "trace_id")
    span_id = _required_id(span.span_id, 8, "span_id")
    parent = _optional_id(span.parent_span_id, 8, "parent_span_id")
    start_ns: int = span.start_time_unix_nano
    end_ns: int = span.end_time_unix_nano
    kind: int = span.kind
    extra = {SCOPE_NAME: where.scope, STATUS_DESCRIPTION: _bounded(span.status.message, MAX_VALUE_CHARS)}
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=_bounded(span.name, MAX_VALUE_CHARS),
        service=where.service,
        start_us=start_ns // 1000,
        duration_us=(end_ns - start_ns) // 1000 if end_ns > start_ns else 0,
        transaction_id=transaction_id(span.attributes) or where.transaction_id,
        kind=_SPAN_KINDS.get(kind, str(kind) if kind else ""),
        status=_STATUS.get(span.status.code, ""),
        attributes=attributes(span.attributes, extra),
    )


def convert_log(record: Any, where: Origin, received_us: int) -> LogRecord:
    """One OTLP ``LogRecord`` -> a console log record; ``received_us`` is its time when it has
    none. Raises :class:`BadRecord`."""
    trace_id = _optional_id(record.trace_id, 16, "trace_id")
    span_id = _optional_id(record.span_id, 8, "span_id")
    time_ns: int = record.time_unix_nano or record.observed_time_unix_nano
    number: int = record.severity_number
    severity = _bounded(record.severity_text, MAX_KEY_CHARS) or _SEVERITIES.get(
        number, str(number) if number else ""
    )
    body = _bounded(render(record.body), MAX_BODY_CHARS)
    tx = transaction_id(record.attributes) or where.transaction_id or _body_transaction_id(body)
    return LogRecord(
        time_us=time_ns // 1000 if time_ns else received_us,
        service=where.service,
        severity=severity,
        body=body,
        trace_id=trace_id,
        span_id=span_id,
        transaction_id=tx,
        attributes=attributes(record.attributes, {SCOPE_NAME: where.scope}),
    )


# -- requests --------------------------------------------------------------------------------


def count_spans(request: Any) -> int:
    """The spans of an ``ExportTraceServiceRequest`` (cheap: no conversion)."""
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def count_logs(request: Any) -> int:
    """The log records of an ``ExportLogsServiceRequest``."""
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def trace_records(request: Any) -> Iterator[tuple[Origin, Any]]:
    """Every span of an ``ExportTraceServiceRequest`` with its origin."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            where = origin(rs.resource, ss.scope)
            for span in ss.spans:
                yield where, span


def log_records(request: Any) -> Iterator[tuple[Origin, Any]]:
    """Every log record of an ``ExportLogsServiceRequest`` with its origin."""
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            where = origin(rl.resource, sl.scope)
            for record in sl.log_records:
                yield where, record
