"""Turning instance values into Prometheus sample values and label values (pure functions).

* :func:`prom_value` is Mixer's ``promValue``: a float as is, an int as a float, a duration in
  seconds, a numeric string parsed; anything else is an error.
* :func:`stringify` is Mixer's ``adapter.Stringify``, which makes label values out of dimensions:
  ``true``/``false``, integers in decimal, floats without exponent (Go ``'f', -1``), timestamps as
  ``2006-01-02T15:04:05.000000Z`` (UTC, microseconds), durations as Go prints them (``1m30s``), IP
  addresses dotted, string maps as ``a=b&c=d`` (keys sorted, so the value is stable), nothing as ``""``.
* :func:`format_sample_value` prints a float as Go's exposition library does (``'g', -1``:
  ``1``, ``0.005``, ``100000``, ``1e+06``); it is used for sample values and ``le`` bounds.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Final

from mixerd.adapter.values import format_float_f, format_timestamp, stringify

__all__ = ["format_float_f", "format_sample_value", "format_timestamp", "prom_value", "stringify"]

_INF: Final = math.inf


def prom_value(value: Any) -> float:
    """The sample value of an instance value; ``ValueError`` if it is not numeric."""
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return float(value)
    if cls is _dt.timedelta:
        return value.total_seconds()  # type: ignore[no-any-return]
    if isinstance(value, bool):
        raise ValueError(f"could not extract numeric value for {stringify(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return _parse_float(value)
    raise ValueError(f"could not extract numeric value for {stringify(value)!r}")


def _parse_float(text: str) -> float:
    # Go's strconv.ParseFloat: no surrounding blanks, no digit separators; Inf/NaN spelled out.
    if not text or text != text.strip() or "_" in text:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    try:
        return float(text)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def format_sample_value(value: float) -> str:
    """Go's exposition format of a float (``strconv.AppendFloat(v, 'g', -1, 64)``)."""
    if value != value:
        return "NaN"
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if value == 0:
        return "0"
    text = repr(float(value))
    if "e" in text:
        return text  # Python's repr and Go agree here: 1e-05, 1.5e+16
    sign = "-" if text[0] == "-" else ""
    whole, _, frac = text.lstrip("-").partition(".")
    if frac == "0":
        frac = ""
    if len(whole) >= 7:  # |value| >= 1e6: Go switches to an exponent sooner than Python
        digits = (whole + frac).rstrip("0")
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e+{len(whole) - 1:02d}"
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"
