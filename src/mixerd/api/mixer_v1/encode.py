"""Encoding Mixer v1 Check responses on the server, from plain values.

:func:`encode_referenced` (a reference set -> ``ReferencedAttributes``),
:func:`encode_route_directive`, :func:`encode_precondition` and :func:`encode_quota_result`
build the parts of a ``CheckResponse``. Pure functions.

The servicer answers most Checks with bytes made by :func:`precondition_parts` (once per distinct
answer) and :func:`check_response_bytes` (once per call, with the validity left of a cached
answer): byte for byte what serializing the same ``CheckResponse`` gives.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Iterable
from typing import Final

from mixerd._proto.mixer.v1 import check_pb2
from mixerd.api.mixer_v1.wire import Words, duration_pb
from mixerd.attribute import Condition, Reference
from mixerd.runtime import HeaderOperation, RouteDirective

__all__ = [
    "check_response_bytes",
    "encode_precondition",
    "encode_quota_result",
    "encode_referenced",
    "encode_route_directive",
    "precondition_parts",
]

_ReferencedAttributes = check_pb2.ReferencedAttributes
_PreconditionResult = check_pb2.CheckResponse.PreconditionResult
_QuotaResult = check_pb2.CheckResponse.QuotaResult

# Wire enum values, indexed by their number.
_WIRE_CONDITIONS: Final = (
    _ReferencedAttributes.CONDITION_UNSPECIFIED,
    _ReferencedAttributes.ABSENCE,
    _ReferencedAttributes.EXACT,
    _ReferencedAttributes.REGEX,
)


def encode_referenced(
    references: Iterable[Reference],
    whole_maps: Collection[str] = (),
    global_word_count: int = 0,
) -> check_pb2.ReferencedAttributes:
    """``ReferencedAttributes`` for ``references`` (a tracker's ``references()``).

    Words go through the global dictionary when their index is below the caller's
    ``global_word_count`` (0 = none) and into the message dictionary otherwise. An EXACT
    reference to a whole string map listed in ``whole_maps`` is left out (only its keys matter
    to the proxy, as in Mixer). A map key never uses index 0, which means "no key" on the wire.
    """
    words = Words(global_word_count)
    out = _ReferencedAttributes()
    add = out.attribute_matches.add  # filling added entries is the cheapest way to build them
    for ref in references:
        if ref.map_key is None:
            if ref.condition is Condition.EXACT and ref.name in whole_maps:
                continue
            match = add()
            match.name = words.index(ref.name)
        else:
            match = add()
            match.name = words.index(ref.name)
            key = words.index(ref.map_key)
            match.map_key = key if key != 0 else words.local(ref.map_key)
        match.condition = _WIRE_CONDITIONS[ref.condition]
    out.words.extend(words.words)
    return out


def encode_route_directive(directive: RouteDirective) -> check_pb2.RouteDirective:
    """The wire form of a :class:`RouteDirective` (:class:`~mixerd.config.HeaderAction` names are the
    wire's ``HeaderOperation.Operation`` names)."""

    def ops(items: Iterable[HeaderOperation]) -> list[check_pb2.HeaderOperation]:
        return [
            check_pb2.HeaderOperation(name=op.name, value=op.value, operation=op.operation.name)
            for op in items
        ]

    return check_pb2.RouteDirective(
        request_header_operations=ops(directive.request_header_operations),
        response_header_operations=ops(directive.response_header_operations),
        direct_response_code=directive.direct_response_code,
        direct_response_body=directive.direct_response_body,
    )


def encode_precondition(
    *,
    status_code: int = 0,
    message: str = "",
    valid_duration: _dt.timedelta = _dt.timedelta(0),
    valid_use_count: int = 0,
    referenced: check_pb2.ReferencedAttributes | None = None,
    route_directive: RouteDirective | None = None,
) -> check_pb2.CheckResponse.PreconditionResult:
    """A ``CheckResponse.PreconditionResult``; ``referenced`` is an :func:`encode_referenced` result."""
    result = _PreconditionResult(valid_duration=duration_pb(valid_duration), valid_use_count=valid_use_count)
    result.status.code = status_code
    result.status.message = message
    if referenced is not None:
        result.referenced_attributes.CopyFrom(referenced)
    if route_directive is not None:
        result.route_directive.CopyFrom(encode_route_directive(route_directive))
    return result


def encode_quota_result(
    *,
    status_code: int = 0,
    message: str = "",
    valid_duration: _dt.timedelta = _dt.timedelta(0),
    granted_amount: int = 0,
    referenced: check_pb2.ReferencedAttributes | None = None,
) -> check_pb2.CheckResponse.QuotaResult:
    """A ``CheckResponse.QuotaResult``; ``referenced`` is an :func:`encode_referenced` result."""
    result = _QuotaResult(valid_duration=duration_pb(valid_duration), granted_amount=granted_amount)
    result.status.code = status_code
    result.status.message = message
    if referenced is not None:
        result.referenced_attributes.CopyFrom(referenced)
    return result


def precondition_parts(
    *,
    status_code: int = 0,
    message: str = "",
    referenced: check_pb2.ReferencedAttributes | None = None,
    route_directive: RouteDirective | None = None,
) -> tuple[bytes, bytes]:
    """The serialized fields of a ``PreconditionResult`` before its validity (the status) and
    after it (referenced attributes and route directive), for :func:`check_response_bytes`."""
    head = _PreconditionResult()
    head.status.code = status_code
    head.status.message = message
    tail = _PreconditionResult()
    if referenced is not None:
        tail.referenced_attributes.CopyFrom(referenced)
    if route_directive is not None:
        tail.route_directive.CopyFrom(encode_route_directive(route_directive))
    return head.SerializeToString(), tail.SerializeToString()


def check_response_bytes(
    parts: tuple[bytes, bytes], valid_duration: _dt.timedelta, valid_use_count: int
) -> bytes:
    """A serialized ``CheckResponse`` with only a precondition: ``parts`` (from
    :func:`precondition_parts`) around the validity, in field order (as protobuf serializes)."""
    micros = (valid_duration.days * 86400 + valid_duration.seconds) * 1_000_000 + valid_duration.microseconds
    if micros >= 0:
        seconds, rest = divmod(micros, 1_000_000)
        nanos = rest * 1000
    else:
        seconds, rest = divmod(-micros, 1_000_000)
        seconds, nanos = -seconds, -rest * 1000
    duration = (b"\x08" + _varint(seconds) if seconds else b"") + (b"\x10" + _varint(nanos) if nanos else b"")
    head, tail = parts
    precondition = b"".join(
        (
            head,
            b"\x12",  # valid_duration = 2, length-delimited
            _varint(len(duration)),
            duration,
            b"\x18" + _varint(valid_use_count) if valid_use_count else b"",  # valid_use_count = 3
            tail,
        )
    )
    return b"\x12" + _varint(len(precondition)) + precondition  # CheckResponse.precondition = 2


_SMALL_VARINTS: Final = tuple(bytes((n,)) for n in range(128))


def _varint(n: int) -> bytes:
    """A protobuf varint (a negative int32/int64 as its 64-bit two's complement, 10 bytes)."""
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
