"""How adapters turn instance values into text (Mixer's ``adapter.Stringify``).

:func:`stringify` is what label values (prometheus), quota dimensions (memquota, redisquota) and
override matching use: ``true``/``false``, integers in decimal, floats without exponent (Go
``'f', -1``), timestamps as ``2006-01-02T15:04:05.000000Z`` (UTC, microseconds), durations as Go
prints them (``1m30s``), IP addresses dotted, string maps as ``a=b&c=d`` (keys sorted, so the
value is stable), nothing as ``""``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from mixerd.attribute import IPAddress, format_duration

__all__ = ["format_float_f", "format_timestamp", "stringify"]

_INF: Final = math.inf


def format_float_f(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest digits, never an exponent."""
    if value != value:
        return "NaN"
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    text = repr(value)
    if "e" in text:
        return format(Decimal(text), "f")
    if text.endswith(".0"):
        return text[:-2]
    return text


def format_timestamp(value: _dt.datetime) -> str:
    """Mixer's timestamp text: UTC, exactly six fractional digits, ``Z``."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


def stringify(value: Any) -> str:
    """Mixer's ``adapter.Stringify``: the label value of a dimension value."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value) if value.__class__ is not str else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return format_float_f(value)
    if isinstance(value, _dt.datetime):
        return format_timestamp(value)
    if isinstance(value, _dt.timedelta):
        return format_duration(value)
    if isinstance(value, IPAddress):
        return str(value)
    if isinstance(value, Mapping):
        return "&".join(f"{k}={stringify(value[k])}" for k in sorted(value))
    if isinstance(value, bytes | bytearray):
        return (
            str(IPAddress(bytes(value))) if len(value) in (4, 16) else "[" + " ".join(map(str, value)) + "]"
        )
    return str(value)
