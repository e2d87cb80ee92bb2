"""The live decision feed behind ``GET /api/v1/decisions/stream``: every decision is offered to each
subscriber's bounded queue as it is recorded. A subscriber that does not keep up loses the oldest
decisions (counted on the subscription, so the stream can say so), never slows the request path."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Final

from mixerd.console.model import Decision

__all__ = ["DecisionFeed", "Subscription"]

DEFAULT_BUFFER: Final = 1000


class Subscription:
    """One listener's view of the feed; iterate with ``async for`` until :meth:`close`."""

    def __init__(self, feed: DecisionFeed, buffer: int) -> None:
        self._feed = feed
        self._queue: collections.deque[Decision] = collections.deque(maxlen=buffer)
        self._ready = asyncio.Event()
        self._closed = False
        self.lost = 0
        """Decisions pushed out of the buffer before they were read."""

    def offer(self, decision: Decision) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.lost += 1
        self._queue.append(decision)
        self._ready.set()

    async def next_batch(self) -> list[Decision]:
        """The decisions received since the last call, waiting for one when there are none; an
        empty list once closed."""
        while not self._queue and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._queue)
        self._queue.clear()
        return batch

    async def __aiter__(self) -> AsyncIterator[Decision]:
        while True:
            batch = await self.next_batch()
            if not batch:
                return
            for d in batch:
                yield d

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._feed._subscribers.discard(self)


class DecisionFeed:
    """Fan-out of decisions to live subscribers. :meth:`publish` is O(subscribers) and never waits."""

    def __init__(self, max_subscribers: int = 100) -> None:
        self._subscribers: set[Subscription] = set()
        self.max_subscribers = max_subscribers

    def publish(self, decision: Decision) -> None:
        for s in self._subscribers:
            s.offer(decision)

    def subscribe(self, buffer: int = DEFAULT_BUFFER) -> Subscription:
        """A new subscription; ``RuntimeError`` when :attr:`max_subscribers` are already listening."""
        if len(self._subscribers) >= self.max_subscribers:
            raise RuntimeError(f"the decision feed already has {self.max_subscribers} listeners")
        s = Subscription(self, buffer)
        self._subscribers.add(s)
        return s

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        for s in list(self._subscribers):
            s.close()
