"""The memquota handler: counters and rolling windows in this process's memory.

``handle_quota`` is synchronous on purpose: the runtime calls it inline on the event loop, so
reading a counter and writing it back can never interleave with another request, and counting is
exact under any concurrency within one process.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from mixerd.adapter import Clock, Env, Handler, QuotaArgs, QuotaResult
from mixerd.adapters.memquota.config import TICKS_PER_SECOND, Limit, MemQuotaConfig
from mixerd.adapters.memquota.dedup import DedupCache
from mixerd.adapters.memquota.dims import CounterKey, counter_key, dimension_strings
from mixerd.adapters.memquota.rolling_window import RollingWindow

__all__ = ["SWEEP_INTERVAL", "MemQuotaHandler", "QuotaCounters", "QuotaInstanceLike"]

SWEEP_INTERVAL: Final = 10.0
"""Seconds between sweeps that drop windows whose allocations have all expired."""

_ZERO: Final = _dt.timedelta(0)
_EPSILON: Final = 1e-6  # absorbs float error when turning seconds into ticks


class QuotaInstanceLike(Protocol):
    """What the handler reads from a ``quota`` instance."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Remembered:
    """An answer kept for deduplication; ``expires_at`` (monotonic) is when the grant ends."""

    result: QuotaResult
    expires_at: float | None

    def replay(self, now: float) -> QuotaResult:
        if self.expires_at is None:
            return self.result
        left = max(0.0, self.expires_at - now)
        return replace(self.result, valid_duration=_dt.timedelta(seconds=left))


class QuotaCounters:
    """The counting core (sans-IO: every call passes the monotonic time): allocation counters and
    rolling windows keyed by :data:`CounterKey`, and the answers remembered for deduplication.
    :class:`MemQuotaHandler` holds one; with several worker processes the supervisor holds one per
    handler and the workers' handlers ask it (:mod:`mixerd.adapters.memquota.shared`)."""

    def __init__(self, dedup_period: float, now: float) -> None:
        self._counters: dict[CounterKey, int] = {}
        self._windows: dict[CounterKey, RollingWindow] = {}
        self._dedup: DedupCache[_Remembered] = DedupCache(dedup_period, now)

    def quota(
        self, key: CounterKey, limit: Limit, amount: int, best_effort: bool, dedup_id: str, now: float
    ) -> QuotaResult:
        """Allocate (``amount`` > 0), release (< 0) or look at (0) the counter ``key``."""
        if amount == 0:
            return self._peek(key, limit, now)

        dedup_key = (dedup_id, key) if dedup_id else None
        if dedup_key is not None:
            seen = self._dedup.get(dedup_key, now)
            if seen is not None:
                return seen.replay(now)

        if amount > 0:
            remembered = self._alloc(key, limit, amount, best_effort, now)
        else:
            remembered = _Remembered(self._release(key, limit, -amount, now), None)
        if dedup_key is not None:
            self._dedup.put(dedup_key, remembered, now)
        return remembered.result

    # -- allocation, release, inspection -------------------------------------------------------

    def _alloc(
        self, key: CounterKey, limit: Limit, amount: int, best_effort: bool, now: float
    ) -> _Remembered:
        if limit.ticks == 0:
            in_use = self._counters.get(key, 0)
            available = max(0, limit.max_amount - in_use)
            granted = amount if amount <= available else (available if best_effort else 0)
            if granted > 0:
                self._counters[key] = in_use + granted
            result = QuotaResult(
                amount=granted, limit=limit.max_amount, remaining=available - granted, reset_after=None
            )
            return _Remembered(result, None)

        window = self._windows.get(key)
        if window is None:
            window = RollingWindow(limit.max_amount, limit.ticks)
        granted = window.allocate(amount, _tick(now), best_effort)
        if window.used > 0:
            self._windows[key] = window
        result = QuotaResult(
            valid_duration=limit.valid_duration if granted > 0 else _ZERO,
            amount=granted,
            limit=limit.max_amount,
            remaining=window.available(),
            reset_after=_reset_after(window, now),
            window=limit.valid_duration,
        )
        expires = now + limit.valid_duration.total_seconds() if granted > 0 else None
        return _Remembered(result, expires)

    def _release(self, key: CounterKey, limit: Limit, amount: int, now: float) -> QuotaResult:
        if limit.ticks == 0:
            in_use = self._counters.get(key, 0)
            released = min(in_use, amount)
            if in_use - released > 0:
                self._counters[key] = in_use - released
            else:
                self._counters.pop(key, None)
            return QuotaResult(
                amount=released,
                limit=limit.max_amount,
                remaining=max(0, limit.max_amount - in_use + released),
            )
        window = self._windows.get(key)
        if window is None:
            return QuotaResult(
                amount=0,
                limit=limit.max_amount,
                remaining=limit.max_amount,
                reset_after=_ZERO,
                window=limit.valid_duration,
            )
        released = window.release(amount, _tick(now))
        if window.used == 0:
            del self._windows[key]
        return QuotaResult(
            amount=released,
            limit=limit.max_amount,
            remaining=window.available(),
            reset_after=_reset_after(window, now),
            window=limit.valid_duration,
        )

    def _peek(self, key: CounterKey, limit: Limit, now: float) -> QuotaResult:
        """A request for 0 units grants nothing and charges nothing (Mixer), but still tells the
        caller where the counter stands."""
        if limit.ticks == 0:
            in_use = self._counters.get(key, 0)
            return QuotaResult(limit=limit.max_amount, remaining=max(0, limit.max_amount - in_use))
        window = self._windows.get(key)
        if window is None:
            return QuotaResult(
                limit=limit.max_amount,
                remaining=limit.max_amount,
                reset_after=_ZERO,
                window=limit.valid_duration,
            )
        window.roll(_tick(now))
        return QuotaResult(
            limit=limit.max_amount,
            remaining=window.available(),
            reset_after=_reset_after(window, now),
            window=limit.valid_duration,
        )

    def sweep(self, now: float) -> int:
        """Drop windows whose allocations have all left the window; returns how many."""
        tick = _tick(now)
        empty = []
        for key, window in self._windows.items():
            window.roll(tick)
            if window.used == 0:
                empty.append(key)
        for key in empty:
            del self._windows[key]
        return len(empty)

    @property
    def counter_count(self) -> int:
        """How many counters and windows hold state."""
        return len(self._counters) + len(self._windows)


class MemQuotaHandler(Handler):
    """Allocation counters (``validDuration: 0``) and rolling windows, keyed by quota name and
    the string form of every dimension."""

    def __init__(self, config: MemQuotaConfig, clock: Clock, logger: logging.Logger) -> None:
        self._quotas = {q.name: q for q in config.quotas}
        self._clock = clock
        self._logger = logger
        self.counters = QuotaCounters(config.min_deduplication_duration.total_seconds(), clock.monotonic())
        self._warned: set[str] = set()

    @classmethod
    def build(cls, config: MemQuotaConfig, env: Env) -> MemQuotaHandler:
        handler = cls(config, env.clock, env.logger)

        async def sweep() -> None:
            handler.sweep()

        env.every(SWEEP_INTERVAL, sweep, "sweep expired windows", initial_delay=SWEEP_INTERVAL)
        return handler

    def resolve(self, instance: QuotaInstanceLike) -> tuple[CounterKey, Limit] | None:
        """The counter and limit of ``instance`` (None, logged once, for an unconfigured quota)."""
        quota = self._quotas.get(instance.name)
        if quota is None:
            # Validation rejects configs that route unknown instances here; answer like Mixer.
            if instance.name not in self._warned:
                self._warned.add(instance.name)
                self._logger.warning("memquota: no quota configured for instance %s", instance.name)
            return None
        dims = dimension_strings(instance.dimensions)
        return counter_key(quota.name, dims), quota.limit_for(dims)

    def handle_quota(self, instance: QuotaInstanceLike, args: QuotaArgs) -> QuotaResult:
        resolved = self.resolve(instance)
        if resolved is None:
            return QuotaResult()
        key, limit = resolved
        return self.counters.quota(
            key, limit, args.amount, args.best_effort, args.dedup_id, self._clock.monotonic()
        )

    def sweep(self) -> int:
        """Drop windows whose allocations have all left the window; returns how many."""
        return self.counters.sweep(self._clock.monotonic())

    @property
    def counter_count(self) -> int:
        """How many counters and windows hold state."""
        return self.counters.counter_count


def _tick(now: float) -> int:
    return math.floor(now * TICKS_PER_SECOND + _EPSILON)


def _reset_after(window: RollingWindow, now: float) -> _dt.timedelta:
    """Time until the oldest allocation in the window expires (0 when the window is empty)."""
    reset = window.reset_tick()
    if reset is None:
        return _ZERO
    return _dt.timedelta(seconds=max(0.0, reset / TICKS_PER_SECOND - now))
