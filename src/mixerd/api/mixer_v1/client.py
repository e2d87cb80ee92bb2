"""The client side of Mixer's v1 API (what ``mixerd check`` / ``mixerd report`` and tests send).

Requests: :func:`encode_attributes` compresses a mapping of attribute values (converting the
ones a manifest types with :func:`mixerd.attribute.coerce`, the same conversion the command
line uses), :func:`build_check_request` and :func:`build_report_request` wrap it.
Responses: :func:`decode_check_response` turns a ``CheckResponse`` into plain printable values
(:func:`decode_referenced`, :func:`decode_route_directive`).
Pure functions: the caller owns the channel.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Final

from google.protobuf import duration_pb2, timestamp_pb2

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, report_pb2
from mixerd.adapter import code_name
from mixerd.api.mixer_v1.wire import (
    EPOCH,
    GLOBAL_WORD_COUNT,
    INDEPENDENT_ENCODING,
    Words,
    check_dictionary,
    duration_pb,
    index_problem,
    to_timedelta,
)
from mixerd.attribute import (
    GLOBAL_DICTIONARY,
    Condition,
    IPAddress,
    Manifest,
    ValueType,
    coerce,
    format_duration,
)
from mixerd.config import HeaderAction
from mixerd.runtime import HeaderOperation, RouteDirective

__all__ = [
    "build_check_request",
    "build_report_request",
    "decode_check_response",
    "decode_referenced",
    "decode_route_directive",
    "encode_attributes",
]

_CompressedAttributes = attributes_pb2.CompressedAttributes

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def _typed(name: str, value: Any, vtype: ValueType) -> Any:
    """``value`` as the runtime form of ``vtype`` (:func:`mixerd.attribute.coerce`), naming ``name``."""
    try:
        return coerce(value, vtype)
    except ValueError as exc:
        raise ValueError(f"attribute {name}: {exc}") from None


def _timestamp_pb(value: _dt.datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _encode(
    values: Mapping[str, Any], manifest: Manifest | None, words: Words
) -> attributes_pb2.CompressedAttributes:
    strings: dict[int, int] = {}
    int64s: dict[int, int] = {}
    doubles: dict[int, float] = {}
    bools: dict[int, bool] = {}
    timestamps: dict[int, timestamp_pb2.Timestamp] = {}
    durations: dict[int, duration_pb2.Duration] = {}
    raw: dict[int, bytes] = {}
    string_maps: dict[int, attributes_pb2.StringMap] = {}
    index = words.index
    for name, given in values.items():
        vtype = None if manifest is None else manifest.get(name)
        value = given if vtype is None else _typed(name, given, vtype)
        key = index(name)
        if isinstance(value, bool):
            bools[key] = value
        elif isinstance(value, str):
            strings[key] = index(value)
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"attribute {name}: {value} does not fit in 64 bits")
            int64s[key] = value
        elif isinstance(value, float):
            doubles[key] = value
        elif isinstance(value, _dt.datetime):
            timestamps[key] = _timestamp_pb(value)
        elif isinstance(value, _dt.timedelta):
            durations[key] = duration_pb(value)
        elif isinstance(value, IPAddress | ipaddress.IPv4Address | ipaddress.IPv6Address):
            raw[key] = value.packed
        elif isinstance(value, bytes | bytearray):
            if len(value) not in (0, 4, 16):
                raise ValueError(f"attribute {name}: an IP address has 4 or 16 bytes, not {len(value)}")
            raw[key] = bytes(value)
        elif isinstance(value, Mapping):
            entries: dict[int, int] = {}
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise ValueError(f"attribute {name}: a string map holds strings, not {k!r}: {v!r}")
                entries[index(k)] = index(v)
            string_maps[key] = attributes_pb2.StringMap(entries=entries)
        else:
            raise ValueError(f"attribute {name}: cannot send a {type(value).__name__} value")
    return _CompressedAttributes(
        strings=strings,
        int64s=int64s,
        doubles=doubles,
        bools=bools,
        timestamps=timestamps,
        durations=durations,
        bytes=raw,
        string_maps=string_maps,
    )


def encode_attributes(
    values: Mapping[str, Any],
    manifest: Manifest | None = None,
    *,
    words: list[str] | None = None,
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> attributes_pb2.CompressedAttributes:
    """Compress ``values`` into a ``CompressedAttributes`` message.

    Each value goes into the typed map of its Python type (``bool`` -> bools, ``int`` -> int64s,
    ``float`` -> doubles, ``str`` -> strings, ``datetime`` -> timestamps, ``timedelta`` ->
    durations, :class:`IPAddress` or raw bytes -> bytes, ``Mapping`` -> string_maps). With a
    ``manifest``, the attributes it lists are first converted to their declared type, so
    ``"10.0.0.1"`` becomes an IP address and ``"200"`` an INT64 (``ValueError`` otherwise).

    Names and strings use the first ``global_word_count`` global words where possible and a
    message dictionary otherwise. With ``words`` given, that list is the (shared) message
    dictionary: new words are appended to it and the message's own ``words`` stays empty, as
    Envoy does with a Report's ``default_words``.
    """
    check_dictionary(global_word_count)
    if words is None:
        state = Words(global_word_count)
        msg = _encode(values, manifest, state)
        msg.words.extend(state.words)
        return msg
    return _encode(values, manifest, Words(global_word_count, words))


def build_check_request(
    values: Mapping[str, Any],
    manifest: Manifest | None = None,
    *,
    quotas: Mapping[str, int | tuple[int, bool]] | None = None,
    dedup_id: str = "",
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> check_pb2.CheckRequest:
    """A ``CheckRequest`` for ``values``.

    ``quotas`` maps a quota name to an amount or to ``(amount, best_effort)``.
    """
    req = check_pb2.CheckRequest(
        attributes=encode_attributes(values, manifest, global_word_count=global_word_count),
        global_word_count=global_word_count,
        deduplication_id=dedup_id,
    )
    for name, params in (quotas or {}).items():
        amount, best_effort = (params, False) if isinstance(params, int) else params
        req.quotas[name].amount = amount
        req.quotas[name].best_effort = best_effort
    return req


def build_report_request(
    sets: Iterable[Mapping[str, Any]],
    manifest: Manifest | None = None,
    *,
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> report_pb2.ReportRequest:
    """A ``ReportRequest`` of independent attribute sets that share one ``default_words`` list.

    This is how Envoy batches reports.
    """
    check_dictionary(global_word_count)
    state = Words(global_word_count)
    messages = [_encode(values, manifest, state) for values in sets]
    return report_pb2.ReportRequest(
        attributes=messages,
        default_words=state.words,
        global_word_count=global_word_count,
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )


# --- decoding Check responses (client side) ----------------------------------------------------


def decode_referenced(referenced: check_pb2.ReferencedAttributes) -> list[str]:
    """``ReferencedAttributes`` as sorted ``name`` / ``-name`` / ``map[key]`` / ``-map[key]`` strings.

    REGEX matches read ``name~/regex/``. Raises ``ValueError`` for an index that names no word.
    """
    words = tuple(referenced.words)

    def word(index: int) -> str:
        problem = index_problem(index, GLOBAL_DICTIONARY, words)
        if problem is not None:
            raise ValueError(f"referenced_attributes: {problem}")
        return GLOBAL_DICTIONARY[index] if index >= 0 else words[~index]

    out = []
    for match in referenced.attribute_matches:
        text = word(match.name)
        if match.map_key:
            text += f"[{word(match.map_key)}]"
        if match.condition == Condition.ABSENCE:
            text = "-" + text
        elif match.condition == Condition.REGEX:
            text += f"~/{match.regex}/"
        out.append(text)
    return sorted(out)


def decode_route_directive(directive: check_pb2.RouteDirective) -> RouteDirective:
    """A wire ``RouteDirective`` as a :class:`RouteDirective`."""

    def ops(items: Iterable[check_pb2.HeaderOperation]) -> tuple[HeaderOperation, ...]:
        return tuple(HeaderOperation(op.name, op.value, HeaderAction(op.operation)) for op in items)

    return RouteDirective(
        request_header_operations=ops(directive.request_header_operations),
        response_header_operations=ops(directive.response_header_operations),
        direct_response_code=directive.direct_response_code,
        direct_response_body=directive.direct_response_body,
    )


def _readable_duration(d: Any) -> str:
    return format_duration(to_timedelta(d))


def _readable_directive(directive: RouteDirective) -> dict[str, Any]:
    def ops(items: tuple[HeaderOperation, ...]) -> list[dict[str, str]]:
        return [
            {
                "name": op.name,
                "value": op.value,
                "operation": op.operation.name,
            }
            for op in items
        ]

    out: dict[str, Any] = {}
    if directive.request_header_operations:
        out["request_header_operations"] = ops(directive.request_header_operations)
    if directive.response_header_operations:
        out["response_header_operations"] = ops(directive.response_header_operations)
    if directive.direct_response_code:
        out["direct_response_code"] = directive.direct_response_code
    if directive.direct_response_body:
        out["direct_response_body"] = directive.direct_response_body
    return out


def decode_check_response(resp: check_pb2.CheckResponse) -> dict[str, Any]:
    """A ``CheckResponse`` as plain, printable values.

    Keys: ``status`` (code name), ``message``, ``valid_duration`` (Go duration text),
    ``valid_use_count``, ``referenced`` (see :func:`decode_referenced`), ``route_directive``
    (only when the response has one) and ``quotas`` (name -> ``status``, ``message``,
    ``granted_amount``, ``valid_duration``, ``referenced``).
    """
    pre = resp.precondition
    out: dict[str, Any] = {
        "status": code_name(pre.status.code),
        "message": pre.status.message,
        "valid_duration": _readable_duration(pre.valid_duration),
        "valid_use_count": pre.valid_use_count,
        "referenced": decode_referenced(pre.referenced_attributes),
    }
    if pre.HasField("route_directive"):
        out["route_directive"] = _readable_directive(decode_route_directive(pre.route_directive))
    quotas: dict[str, Any] = {}
    for name in sorted(resp.quotas):
        q = resp.quotas[name]
        quotas[name] = {
            "status": code_name(q.status.code),
            "message": q.status.message,
            "granted_amount": q.granted_amount,
            "valid_duration": _readable_duration(q.valid_duration),
            "referenced": decode_referenced(q.referenced_attributes),
        }
    out["quotas"] = quotas
    return out
