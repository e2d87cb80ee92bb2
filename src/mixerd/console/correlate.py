"""Correlation keys: which transaction a hop belongs to, read from its request headers.

A hop's key is the first valid one of, in the configured order (the default is
:data:`DEFAULT_ORDER`):

``x-transaction-id``
    Set by the operator's edge rule (or by the app). Any visible ASCII, at most
    :data:`MAX_KEY_LENGTH` characters.
``traceparent``
    The W3C trace id (32 lower-case hex digits). The header must be well formed:
    ``00-<32 hex>-<16 hex>-<2 hex>`` (a later version may append ``-`` fields; version ``ff`` is
    invalid), and neither the trace id nor the parent id may be all zeros.
``x-b3-traceid``
    The B3 trace id, 16 or 32 hex digits in either case, lower-cased (16 digits is a valid 64-bit
    id and is kept as it is, not padded). B3 is one format with two encodings: when the
    ``x-b3-traceid`` header is absent, the trace id of the single ``b3`` header counts.
``x-request-id``
    Envoy's request id, same rules as ``x-transaction-id``.
any other header name
    A plain id header of the operator's (``x-correlation-id``): same rules as ``x-transaction-id``.

A key shaped like a UUID (``8-4-4-4-12`` hex digits) is normalized by :func:`request_id_key`:
Envoy writes its trace decision into the version digit of the request id, so the same request's id
can differ there from one proxy to the next. This applies to ``x-transaction-id`` too, so a
transaction id minted from the request id joins the hops keyed by that request id. Ids a user types
in (the API's ``/transactions/{id}``) should go through :func:`request_id_key` as well.

Header names are looked up in lower case, as Envoy gives them (a case-insensitive mapping works
too)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "B3",
    "DEFAULT_ORDER",
    "KEY_HEADERS",
    "MAX_KEY_LENGTH",
    "REQUEST_ID",
    "TRACEPARENT",
    "TRACE_HEADERS",
    "TRANSACTION_ID",
    "TraceIds",
    "correlation",
    "headers_read",
    "parse_order",
    "request_id_key",
    "trace_ids",
    "transaction_key",
    "usual_correlation",
]

TRANSACTION_ID = "x-transaction-id"
TRACEPARENT = "traceparent"
B3 = "x-b3-traceid"
REQUEST_ID = "x-request-id"

KEY_HEADERS: frozenset[str] = frozenset({TRANSACTION_ID, TRACEPARENT, B3, REQUEST_ID})
"""The header names with a format of their own; any other header name is read as a plain id."""

_B3_SPAN = "x-b3-spanid"
_B3_PARENT = "x-b3-parentspanid"
_B3_SINGLE = "b3"
TRACE_HEADERS: frozenset[str] = frozenset({TRACEPARENT, B3, _B3_SPAN, _B3_PARENT, _B3_SINGLE})
"""The headers the trace context is read from (whatever the key order)."""

_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
"""The characters of an HTTP header name (RFC 9110's ``tchar``), lower case."""

DEFAULT_ORDER: tuple[str, ...] = (TRANSACTION_ID, TRACEPARENT, B3, REQUEST_ID)

MAX_KEY_LENGTH = 128
"""Longer ``x-transaction-id`` / ``x-request-id`` values are not keys (they would bloat every
index entry)."""

# Character checks with ``str`` methods (C speed, and cheaper than a regular expression on such
# short strings: every reported hop goes through them). "Hex in either case" is only ASCII.
_LOWER_HEX = "0123456789abcdef"
_ANY_HEX = "0123456789abcdefABCDEF"


def _lower_hex(text: str) -> bool:
    """Lower-case hex digits only (``text`` is not empty)."""
    return not text.strip(_LOWER_HEX)


def _hex_id(text: str) -> bool:
    """Hex digits in either case, not all zeros (``text`` is not empty)."""
    return not text.strip(_ANY_HEX) and bool(text.strip("0"))


def _visible(text: str) -> bool:
    """Visible ASCII only (``!`` to ``~``): what a plain id may hold (``text`` is not empty)."""
    return text.isascii() and text.isprintable() and " " not in text


_TRACE_REASON_AT = 14
"""Envoy's UUID request-id extension (``pack_trace_reason``) overwrites the character at this
index, the UUID version digit: ``4`` no trace, ``9`` sampled, ``a`` forced, ``b`` client."""


class TraceIds(NamedTuple):
    """Trace context read from a request's headers; empty strings where absent. Ids are lower-case
    hex: the trace id 32 digits (16 for a 64-bit B3 id), span ids 16."""

    trace_id: str = ""
    span_id: str = ""
    """The span that sent the request (W3C's parent-id field, B3's span id)."""
    parent_span_id: str = ""
    """The parent of that span: B3 carries it, W3C does not (then empty, unless B3 headers with
    the same trace and span id come along)."""


_NO_IDS = TraceIds()
_ids = functools.partial(tuple.__new__, TraceIds)
"""``TraceIds`` from a 3-tuple, without the Python-level ``__new__`` of a named tuple (every hop
with trace headers makes one)."""


def parse_order(setting: str) -> tuple[str, ...]:
    """A key order from a comma-separated setting such as
    ``x-transaction-id,traceparent,x-b3-traceid,x-request-id`` (names are case-insensitive,
    spaces around them are ignored). :class:`ValueError` names a malformed or repeated header
    name, or an empty list."""
    if not setting.strip():
        raise ValueError("the correlation key order names no header")
    names: list[str] = []
    for raw in setting.split(","):
        name = raw.strip().lower()
        if not name:
            raise ValueError(f"empty header name in correlation key order {setting!r}")
        if not set(name) <= _TOKEN:
            raise ValueError(f"correlation key header {name!r} is not a header name")
        if name in names:
            raise ValueError(f"correlation key header {name!r} listed twice")
        names.append(name)
    return tuple(names)


def headers_read(order: Sequence[str] = DEFAULT_ORDER) -> frozenset[str]:
    """Every header :func:`correlation` (and :func:`transaction_key`, :func:`trace_ids`) may look
    up with this key order: the order's and the trace context's; no other is read."""
    return frozenset(order) | TRACE_HEADERS


def transaction_key(headers: Mapping[str, str], order: Sequence[str] = DEFAULT_ORDER) -> str:
    """The correlation key of a request with these headers, or ``""`` when none of the headers in
    ``order`` holds a valid one."""
    for name in order:
        key = _key_from(name, headers)
        if key:
            return key
    return ""


def correlation(headers: Mapping[str, str], order: Sequence[str] = DEFAULT_ORDER) -> tuple[str, TraceIds]:
    """``(transaction_key(headers, order), trace_ids(headers))``, reading each header once.

    Every reported hop comes through here. With the default order (pass :data:`DEFAULT_ORDER`
    itself), the usual shapes (B3 ids in their own headers, or no trace headers at all, and no
    ``x-transaction-id`` or ``traceparent``) are read in one function without parsing each header
    generically; anything else takes the general path, which parses the trace headers only when
    present and looks each key header up once."""
    if order is DEFAULT_ORDER:
        usual = usual_correlation(headers)
        if usual is not None:
            return usual[0], _NO_IDS if not usual[1] else _ids(usual[1:])
    return _correlation(headers, order)


def usual_correlation(headers: Mapping[str, str]) -> tuple[str, str, str, str] | None:
    """:func:`correlation` with the default order for headers of a usual shape, flat (the key,
    then the trace ids: no :class:`TraceIds` made), else ``None``:
    then the general path decides (whitespace around ids, an invalid or odd-typed value, the
    single ``b3`` header, ``traceparent`` or ``x-transaction-id`` present). For a caller that
    makes one Python call less per hop by calling it directly."""
    get = headers.get
    if get(TRACEPARENT) is not None or get(TRANSACTION_ID) is not None:
        return None
    trace_id = get(B3)
    if trace_id is None:
        if get("b3") is not None:
            return None
        request_id = get(REQUEST_ID)
        if request_id is None:
            return _NOTHING
        if type(request_id) is not str:
            return None
        return _plain_key(request_id), "", "", ""
    # x-b3-traceid wins over a later x-request-id: 16 or 32 hex digits, not all zeros. bytes.fromhex
    # checks the digits in C (a string of n characters gives n / 2 bytes only when every one is a
    # hex digit: whitespace, which it skips, gives fewer; anything else raises).
    try:
        n = len(trace_id)
        if (n != 32 and n != 16) or len(_fromhex(trace_id)) * 2 != n or trace_id == _ZEROS[n]:
            return None
        span_id = get("x-b3-spanid")
        if span_id is None:
            span_id = ""
        elif len(span_id) == 16 and len(_fromhex(span_id)) == 8 and span_id != _ZEROS[16]:
            span_id = span_id.lower()
        else:
            return None
        parent_id = get("x-b3-parentspanid")
        if parent_id is None:
            parent_id = ""
        elif len(parent_id) == 16 and len(_fromhex(parent_id)) == 8 and parent_id != _ZEROS[16]:
            parent_id = parent_id.lower()
        else:
            return None
    except (TypeError, ValueError):  # not a string, or not hex digits
        return None
    trace_id = trace_id.lower()
    return trace_id, trace_id, span_id, parent_id


_NOTHING = ("", "", "", "")
_fromhex = bytes.fromhex
_ZEROS = {16: "0" * 16, 32: "0" * 32}


def _correlation(headers: Mapping[str, str], order: Sequence[str]) -> tuple[str, TraceIds]:
    """:func:`correlation` for any order and any headers."""
    get = headers.get
    value = get(TRACEPARENT)
    w3c = None if value is None else _traceparent(value)
    b3 = _b3(headers) if (B3 in headers or _B3_SINGLE in headers) else None
    key = ""
    for name in order:
        if name == TRACEPARENT:
            if w3c is not None:
                key = w3c.trace_id
                break
        elif name == B3:
            if b3 is not None:
                key = b3.trace_id
                break
        else:
            value = get(name)
            if value is not None:
                key = _plain_key(value)
                if key:
                    break
    if w3c is None:
        return key, _NO_IDS if b3 is None else b3
    return key, _trace_ids(w3c, b3)


def trace_ids(headers: Mapping[str, str]) -> TraceIds:
    """Trace and span ids from ``traceparent``, else from B3 (``x-b3-traceid``/``x-b3-spanid``/
    ``x-b3-parentspanid``, else the single ``b3`` header
    ``<trace>-<span>[-<sampled>[-<parent>]]``). Invalid headers count as absent; an invalid B3
    span or parent id leaves that field empty."""
    return _trace_ids(_traceparent(headers.get(TRACEPARENT)), _b3(headers))


def _trace_ids(w3c: TraceIds | None, b3: TraceIds | None) -> TraceIds:
    if w3c is None:
        return b3 if b3 is not None else TraceIds()
    if b3 is not None and b3.span_id == w3c.span_id and _same_trace(b3.trace_id, w3c.trace_id):
        return w3c._replace(parent_span_id=b3.parent_span_id)
    return w3c


def request_id_key(request_id: str) -> str:
    """``request_id`` as a join key: a UUID-shaped id lower-cased, with the character Envoy uses for
    its trace decision (index 14, the version digit) set to ``4``; any other id unchanged."""
    if not _is_uuid(request_id):
        return request_id
    lowered = request_id.lower()
    return lowered[:_TRACE_REASON_AT] + "4" + lowered[_TRACE_REASON_AT + 1 :]


def _key_from(name: str, headers: Mapping[str, str]) -> str:
    if name == TRACEPARENT:
        w3c = _traceparent(headers.get(TRACEPARENT))
        return w3c.trace_id if w3c is not None else ""
    if name == B3:
        b3 = _b3(headers)
        return b3.trace_id if b3 is not None else ""
    return _plain_key(headers.get(name))


def _plain_key(value: str | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not _visible(value):
        return ""
    return request_id_key(value)


def _traceparent(value: str | None) -> TraceIds | None:
    if value is None:
        return None
    value = value.strip()
    # version "00": exactly 55 characters; later versions may append "-"-separated fields.
    if len(value) < 55 or (len(value) > 55 and (value[:2] == "00" or value[55] != "-")):
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _lower_hex(version) or version == "ff" or not _lower_hex(flags):
        return None
    if not (_lower_hex(trace_id) and _hex_id(trace_id) and _lower_hex(span_id) and _hex_id(span_id)):
        return None
    return _ids((trace_id, span_id, ""))


def _b3(headers: Mapping[str, str]) -> TraceIds | None:
    trace_id = headers.get(B3)
    if trace_id is not None:
        trace_id = trace_id.strip()
        if not _b3_trace_id(trace_id):
            return None
        return _ids(
            (
                trace_id.lower(),
                _span(headers.get(_B3_SPAN)),
                _span(headers.get(_B3_PARENT)),
            )
        )
    single = headers.get(_B3_SINGLE)
    if single is None:
        return None
    # <trace>-<span>[-<sampling state>[-<parent>]]; a lone sampling state ("0", "1", "d") has no ids.
    parts = single.strip().split("-")
    if len(parts) < 2 or len(parts) > 4 or not _b3_trace_id(parts[0]):
        return None
    if len(parts) >= 3 and parts[2] not in ("0", "1", "d"):
        return None
    span_id = _span(parts[1])
    if not span_id:
        return None
    return _ids((parts[0].lower(), span_id, _span(parts[3]) if len(parts) == 4 else ""))


def _b3_trace_id(text: str) -> bool:
    """16 or 32 hex digits in either case, not all zeros."""
    return (len(text) == 16 or len(text) == 32) and _hex_id(text)


def _span(value: str | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    return value.lower() if len(value) == 16 and _hex_id(value) else ""


def _same_trace(a: str, b: str) -> bool:
    """The same trace id, a 64-bit B3 id matching the low half of a 128-bit one."""
    return a == b or (len(a) == 16 and b.endswith(a)) or (len(b) == 16 and a.endswith(b))


def _is_uuid(text: str) -> bool:
    """``8-4-4-4-12`` hex digits in either case."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return False
    digits = text.replace("-", "")
    return len(digits) == 32 and not digits.strip(_ANY_HEX)
