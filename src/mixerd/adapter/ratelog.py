"""Rate-limited warnings: what callers can make happen as often as they like is logged with a count.

One :class:`RateLimitedWarning` per kind of event (rejected requests of one kind, dropped reports,
evaluation errors of one rule, unconfigured quotas ...): the first ``burst`` events of an
interval get a line each, later ones are only counted, and the next line after the interval
carries their count. Time comes from the given clock (a handler's ``env.clock``, the runtime's).
Part of the adapter SDK, so handlers and the runtime log the same way.
"""

from __future__ import annotations

import logging
from typing import Final

from mixerd.adapter.env import Clock

__all__ = ["WARN_INTERVAL", "RateLimitedWarning"]

_log = logging.getLogger(__name__)

WARN_INTERVAL: Final = 10.0
"""Seconds between two lines of one kind (after the burst)."""


class RateLimitedWarning:
    """Logs at most ``burst`` lines per ``interval`` seconds (on ``clock``), each ending with the
    count of what happened since the previous line: ``<message>: 3 in the last 10s``.

    ``message`` is formatted by the caller; anything in it that came from a request must have
    gone through :func:`mixerd.attribute.logsafe`.
    """

    __slots__ = ("_burst", "_clock", "_interval", "_last", "_lines", "_logger", "_pending", "_window")

    def __init__(
        self,
        clock: Clock,
        interval: float = WARN_INTERVAL,
        *,
        burst: int = 1,
        logger: logging.Logger | None = None,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._interval = interval
        self._burst = burst
        self._logger = logger or _log
        self._last: float | None = None
        """When the previous line was logged."""
        self._window: float | None = None
        """When the current interval (of at most ``burst`` lines) began."""
        self._lines = 0
        self._pending = 0

    def add(self, count: int, message: str) -> bool:
        """Count ``count`` events; log ``message`` with the count if the budget allows. Returns
        whether a line was logged."""
        self._pending += count
        now = self._clock.monotonic()
        if self._window is None or now - self._window >= self._interval:
            self._window = now
            self._lines = 0
        if self._lines >= self._burst:
            return False
        self._lines += 1
        self._emit(message, now)
        return True

    def _emit(self, message: str, now: float) -> None:
        since = f" in the last {now - self._last:.0f}s" if self._last is not None else ""
        self._logger.warning("%s: %d%s", message, self._pending, since)
        self._last = now
        self._pending = 0

    def flush(self, message: str) -> None:
        """Log what was counted since the last line, if anything (at shutdown)."""
        if self._pending:
            self._emit(message, self._clock.monotonic())
