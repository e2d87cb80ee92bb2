"""Living with an unreachable Redis (sans-IO: the caller passes the time).

:class:`OutageTracker` counts failed Redis calls, decides when to stop trying for a moment and
when a log line is due:

* after ``threshold`` consecutive failures, calls skip Redis for ``retry_interval`` seconds and
  get the failure policy's answer at once (so an unreachable Redis costs each request nothing,
  instead of a full timeout); after that one call tries again;
* one or two failures in a row (a slow command, a failover blip) never make calls skip Redis;
* a warning is due at the first failure and then at most once per ``log_interval``, carrying the
  number of failures since the last one; a recovery line is due once after a reported outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["LOG_INTERVAL", "RETRY_INTERVAL", "THRESHOLD", "OutageTracker"]

THRESHOLD: Final = 3
RETRY_INTERVAL: Final = 0.5
LOG_INTERVAL: Final = 10.0


@dataclass(slots=True)
class OutageTracker:
    threshold: int = THRESHOLD
    retry_interval: float = RETRY_INTERVAL
    log_interval: float = LOG_INTERVAL
    consecutive: int = 0
    """Failed calls since the last success."""
    failures: int = 0
    """Failed calls, ever."""
    last_error: str = ""
    _retry_at: float = 0.0
    _unreported: int = 0
    _last_report: float | None = None
    _reported_outage: bool = False

    def should_skip(self, now: float) -> bool:
        """Whether a call should not try Redis now."""
        return self.consecutive >= self.threshold and now < self._retry_at

    def failure(self, now: float, error: str) -> str | None:
        """Record a failed call; returns a log message when one is due."""
        self.failures += 1
        self.consecutive += 1
        self.last_error = error
        self._unreported += 1
        if self.consecutive >= self.threshold:
            self._retry_at = now + self.retry_interval
        if self._last_report is not None and now - self._last_report < self.log_interval:
            return None
        count, self._unreported = self._unreported, 0
        self._last_report = now
        self._reported_outage = True
        return f"{count} failed call{'s' if count != 1 else ''} since the last report; last error: {error}"

    def success(self) -> str | None:
        """Record a successful call; returns a log message when a reported outage ended."""
        if self.consecutive == 0:
            return None
        ended = self.consecutive
        self.consecutive = 0
        self._retry_at = 0.0
        if not self._reported_outage:
            return None
        self._reported_outage = False
        return f"after {ended} failed call{'s' if ended != 1 else ''} in a row"
