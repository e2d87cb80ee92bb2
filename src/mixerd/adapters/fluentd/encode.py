"""Log entries -> Fluentd forward-protocol events (msgpack), as Mixer's fluentd adapter sent them.

Each log entry is one event: the tag is the instance's name (``accesslog.instance.istio-system``)
unless the entry has a variable ``tag``, which is then the tag and is replaced in the record by
``name`` = the instance's name; the time is the entry's ``timestamp`` as an EventTime (seconds and
nanoseconds; Mixer's client used sub-second precision too); the record is the variables plus
``severity``. Values: strings, integers, floats, booleans and byte strings as msgpack has them;
durations as Go prints them (``1.5s``) or, with ``integerDuration``, as integer milliseconds
(truncated, as Mixer); IP addresses as text (``10.1.2.3``); string maps as maps.

Differences from Mixer, on purpose: a timestamp value is written as text
(``2017-08-21T10:04:00.000000Z``, as every mixerd adapter writes one) where Mixer's client wrote a
msgpack extension Fluentd cannot read; an entry without a timestamp gets the current time (Mixer
sent Go's zero time).
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Mapping
from typing import Any, Final, cast

import msgpack

from mixerd.adapter.values import format_timestamp
from mixerd.attribute import IPAddress, format_duration

__all__ = ["encode_event", "event_time", "message", "record_of", "record_value"]

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MAX_SECONDS: Final = 2**32 - 1
_EVENT_TIME: Final = struct.Struct(">BbII")  # fixext 8 (0xd7), type 0, seconds, nanoseconds


def _millis(value: _dt.timedelta) -> int:
    micros = value // _dt.timedelta(microseconds=1)
    return micros // 1000 if micros >= 0 else -((-micros) // 1000)


def record_value(value: Any, integer_duration: bool) -> Any:
    """One variable as the record holds it."""
    cls = value.__class__
    if cls is str or cls is int or cls is float or cls is bool or value is None:
        return value
    if isinstance(value, _dt.timedelta):
        return _millis(value) if integer_duration else format_duration(value)
    if isinstance(value, IPAddress):
        return str(value)
    if isinstance(value, _dt.datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        return {str(k): record_value(v, integer_duration) for k, v in value.items()}
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str | int | float):
        return value
    return str(value)


def record_of(
    name: str, severity: str, variables: Mapping[str, Any], integer_duration: bool
) -> tuple[str, dict[str, Any]]:
    """(tag, record) of one log entry (see the module doc)."""
    record = {k: record_value(variables[k], integer_duration) for k in sorted(variables)}
    record["severity"] = severity
    tag = name
    if "tag" in record:
        tag = str(record.pop("tag"))
        record["name"] = name
    return tag, record


def event_time(when: _dt.datetime) -> bytes:
    """The msgpack EventTime (ext type 0) of ``when`` (UTC; clamped to what 32 bits hold)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    delta = when - _EPOCH
    seconds = min(max(delta.days * 86400 + delta.seconds, 0), _MAX_SECONDS)
    return _EVENT_TIME.pack(0xD7, 0, seconds, delta.microseconds * 1000)


_packer: Final = msgpack.Packer(use_bin_type=True, default=str)


def encode_event(when: _dt.datetime, record: Mapping[str, Any]) -> bytes:
    """The body of one event: its time and record, packed (without an array header)."""
    return event_time(when) + cast(bytes, _packer.pack(record))


def message(tag: str, body: bytes) -> bytes:
    """A Message-mode message ``[tag, time, record]`` from an event body."""
    return b"\x93" + cast(bytes, _packer.pack(tag)) + body
