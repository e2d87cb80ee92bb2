"""Formatting log and metric lines (pure functions), as Mixer's stdio adapter printed them with zap.

JSON (``outputAsJson: true``), one object per line, keys in this order::

    {"level":"info","time":"2017-01-01T00:00:00.000000Z","instance":"accesslog.instance.istio-system",
     "apiClaims":"", ... variables sorted by name ...}

Text (``outputAsJson: false``), tab-separated, then ``name=value`` pairs separated by blanks::

    2017-01-01T00:00:00.000000Z<TAB>info<TAB>accesslog.instance.istio-system<TAB>apiClaims="" method=GET ...

Values: strings as JSON strings (in text: bare unless empty or containing blanks, quotes, ``=`` or
``\\``, then JSON-quoted); integers; floats without exponent (``NaN``/``+Inf`` as strings, as zap
does); booleans; timestamps as ``2006-01-02T15:04:05.000000Z`` (UTC); durations as Go prints them
(``1.5s``); IP addresses dotted; string maps as JSON objects (sorted keys); bytes as base64.
Levels are zap's: ``info``, ``warn``, ``error``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Final

from mixerd.adapters.stdio.config import Level
from mixerd.attribute import V4_MAPPED_PREFIX, IPAddress, format_duration

__all__ = ["LEVEL_NAMES", "format_line", "format_time", "json_line", "json_value", "text_line", "text_value"]

LEVEL_NAMES: Final = {Level.INFO: "info", Level.WARNING: "warn", Level.ERROR: "error"}

_quote: Callable[[str], str] = encode_basestring
_NEEDS_QUOTES: Final = re.compile(r'[\s"=\\]|[^\x20-\x7e\u00a0-\U0010ffff]')


def format_time(value: _dt.datetime) -> str:
    """``2006-01-02T15:04:05.000000Z``: UTC, six fractional digits (zap ``formatDate`` in Mixer)."""
    if value.tzinfo is not None and value.tzinfo is not _dt.UTC:
        value = value.astimezone(_dt.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


def _float(value: float) -> str:
    """zap: Go ``'f', -1`` (shortest digits, no exponent); NaN and infinities as strings."""
    if value != value:
        return '"NaN"'
    if value in (float("inf"), float("-inf")):
        return '"+Inf"' if value > 0 else '"-Inf"'
    text = repr(value)
    if "e" in text:
        return format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _map(value: Mapping[Any, Any]) -> str:
    return json.dumps(
        {str(k): str(value[k]) for k in sorted(value, key=str)}, ensure_ascii=False, separators=(",", ":")
    )


def _ip(value: IPAddress) -> str:
    """Dotted text of an address (the common IPv4 case without the ipaddress module)."""
    packed = value.packed
    if len(packed) == 4:
        return socket.inet_ntoa(packed)
    if len(packed) == 16 and packed[:12] == V4_MAPPED_PREFIX:
        return socket.inet_ntoa(packed[12:])
    return str(value)


_EXACT: Final[dict[type, Callable[[Any], str]]] = {
    str: _quote,
    bool: lambda v: "true" if v else "false",
    int: str,
    float: _float,
    _dt.datetime: lambda v: '"' + format_time(v) + '"',
    _dt.timedelta: lambda v: '"' + format_duration(v) + '"',
    IPAddress: lambda v: '"' + _ip(v) + '"',
    type(None): lambda v: "null",
}


def json_value(value: Any) -> str:
    """One value as JSON text (zap's encoding of Mixer's value types)."""
    enc = _EXACT.get(value.__class__)
    if enc is not None:
        return enc(value)
    if isinstance(value, str):
        return _quote(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, _dt.datetime):
        return '"' + format_time(value) + '"'
    if isinstance(value, _dt.timedelta):
        return '"' + format_duration(value) + '"'
    if isinstance(value, Mapping):
        return _map(value)
    if isinstance(value, bytes | bytearray):
        return '"' + base64.b64encode(bytes(value)).decode() + '"'
    return _quote(str(value))


def text_value(value: Any) -> str:
    """One value for the text format: like :func:`json_value`, but strings that need no quotes
    (and timestamps, durations, IPs) are written bare."""
    if isinstance(value, str):
        return _quote(str(value)) if not value or _NEEDS_QUOTES.search(value) else str(value)
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if isinstance(value, _dt.timedelta):
        return format_duration(value)
    if isinstance(value, IPAddress):
        return _ip(value)
    if isinstance(value, float):
        return _float(value).strip('"')
    return json_value(value)


def json_line(level: Level, when: _dt.datetime, instance: str, fields: Iterable[tuple[str, Any]]) -> str:
    parts = [
        '{"level":"',
        LEVEL_NAMES[level],
        '","time":"',
        format_time(when),
        '","instance":',
        _quote(instance),
    ]
    for key, value in fields:
        parts.append(",")
        parts.append(_quote(key))
        parts.append(":")
        parts.append(json_value(value))
    parts.append("}\n")
    return "".join(parts)


def text_line(level: Level, when: _dt.datetime, instance: str, fields: Iterable[tuple[str, Any]]) -> str:
    pairs = []
    needs_quotes = _NEEDS_QUOTES.search
    for key, value in fields:
        cls = value.__class__
        if cls is str:
            pairs.append(f"{key}={_quote(value) if not value or needs_quotes(value) else value}")
        elif cls is int:
            pairs.append(f"{key}={value}")
        else:
            pairs.append(f"{key}={text_value(value)}")
    head = f"{format_time(when)}\t{LEVEL_NAMES[level]}\t{instance}"
    return f"{head}\t{' '.join(pairs)}\n" if pairs else head + "\n"


def format_line(
    as_json: bool, level: Level, when: _dt.datetime, instance: str, fields: Iterable[tuple[str, Any]]
) -> str:
    """One output line (ending in a newline) in the configured format."""
    return (json_line if as_json else text_line)(level, when, instance, fields)
