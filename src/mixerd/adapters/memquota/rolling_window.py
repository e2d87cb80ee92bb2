"""A rolling window of quota allocations, in ticks (sans-IO: the caller passes the current tick).

The window allows ``limit`` units within any ``ticks_in_window`` consecutive ticks. Units
allocated at tick ``t`` belong to the window until the current tick reaches ``t + ticks_in_window``,
then they are reclaimed. Only ticks that hold allocations are stored, so a long window with sparse
traffic costs little memory.

This is Mixer's ``memquota`` rolling window (``rollingWindow.go``) with the same observable
behaviour: allocations are all-or-nothing, releases give back units newest first and never more
than the window holds.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RollingWindow"]


class RollingWindow:
    """``limit`` units per ``ticks_in_window`` ticks. Ticks must not go backwards; a tick earlier
    than the newest one seen is treated as that newest tick."""

    __slots__ = ("_slots", "_used", "limit", "ticks_in_window")

    def __init__(self, limit: int, ticks_in_window: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if ticks_in_window < 1:
            raise ValueError(f"ticks_in_window must be >= 1, got {ticks_in_window}")
        self.limit = limit
        self.ticks_in_window = ticks_in_window
        # [tick, amount] pairs, oldest first; amounts are > 0
        self._slots: deque[list[int]] = deque()
        self._used = 0

    def roll(self, tick: int) -> None:
        """Reclaim the units of every tick that has left the window at ``tick``."""
        horizon = tick - self.ticks_in_window
        slots = self._slots
        while slots and slots[0][0] <= horizon:
            self._used -= slots.popleft()[1]

    def alloc(self, amount: int, tick: int) -> bool:
        """Allocate ``amount`` units at ``tick`` if all of them fit; report whether they did."""
        self.roll(tick)
        if amount > self.limit - self._used:
            return False
        self._record(amount, tick)
        return True

    def allocate(self, amount: int, tick: int, best_effort: bool) -> int:
        """Allocate ``amount`` units at ``tick``; with ``best_effort`` as many as fit. Returns the
        number granted (0 when nothing was)."""
        self.roll(tick)
        available = self.limit - self._used
        if amount > available:
            if not best_effort:
                return 0
            amount = available
        if amount <= 0:
            return 0
        self._record(amount, tick)
        return amount

    def release(self, amount: int, tick: int) -> int:
        """Give back up to ``amount`` units, newest allocations first; returns how many were given
        back (never more than the window holds)."""
        self.roll(tick)
        released = 0
        slots = self._slots
        while slots and released < amount:
            newest = slots[-1]
            take = min(newest[1], amount - released)
            newest[1] -= take
            released += take
            if newest[1] == 0:
                slots.pop()
        self._used -= released
        return released

    def available(self) -> int:
        """Units that can still be allocated (as of the last tick seen)."""
        return self.limit - self._used

    @property
    def used(self) -> int:
        return self._used

    def reset_tick(self) -> int | None:
        """The tick at which the oldest allocation leaves the window (``None`` when empty)."""
        if not self._slots:
            return None
        return self._slots[0][0] + self.ticks_in_window

    def _record(self, amount: int, tick: int) -> None:
        if amount <= 0:
            return
        slots = self._slots
        if slots and slots[-1][0] >= tick:
            slots[-1][1] += amount
        else:
            slots.append([tick, amount])
        self._used += amount
