"""How the console's API writes times and durations: instants as RFC 3339 UTC strings with
milliseconds (``2026-12-04T19:13:20.123Z``), durations as float milliseconds. Records keep integer
microseconds (see :mod:`mixerd.console.model`); the sub-millisecond part of an instant is dropped
(rounded down), a duration keeps it (``1.234`` for 1,234 µs)."""

from __future__ import annotations

import time

__all__ = ["ms", "rfc3339"]


def rfc3339(us: int) -> str:
    """``us`` microseconds since the Unix epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds, micros = divmod(us, 1_000_000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros // 1000:03d}Z"
    )


def ms(us: int) -> float:
    """A duration of ``us`` microseconds in milliseconds."""
    return us / 1000
