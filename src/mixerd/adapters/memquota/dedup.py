"""Remembering recent answers by deduplication id (sans-IO: the caller passes the time).

A retried quota request carries the same deduplication id and must get the same answer without
being charged again. Like Mixer, two maps ping-pong: new answers go into the recent map, and every
``period`` the recent map becomes the old one and the old one is dropped, so an id is remembered
for at least one period and at most two. Rotation happens lazily on the next call, so no timer is
needed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["DedupCache"]

V = TypeVar("V")


class DedupCache(Generic[V]):
    """Answers by id, for ``period`` to ``2 * period`` seconds of the caller's clock."""

    __slots__ = ("_old", "_recent", "_rotated_at", "period")

    def __init__(self, period: float, now: float) -> None:
        if period <= 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period = period
        self._recent: dict[Hashable, V] = {}
        self._old: dict[Hashable, V] = {}
        self._rotated_at = now

    def _rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed < self.period:
            return
        periods = int(elapsed // self.period)
        if periods == 1:
            self._old = self._recent
        else:
            self._old = {}
        self._recent = {}
        self._rotated_at += periods * self.period

    def get(self, key: Hashable, now: float) -> V | None:
        self._rotate(now)
        found = self._recent.get(key)
        if found is None:
            found = self._old.get(key)
        return found

    def put(self, key: Hashable, value: V, now: float) -> None:
        self._rotate(now)
        self._recent[key] = value

    def __len__(self) -> int:
        return len(self._recent) + len(self._old)
