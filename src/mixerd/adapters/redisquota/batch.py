"""Concurrent calls to one Redis node, sent together: one round trip for many callers.

A call handed to :meth:`Batcher.submit` waits in a queue. While fewer than ``max_running``
round trips are in flight, the queue (at most ``max_batch`` calls of it) leaves as one batch on
the next turn of the event loop; calls that arrive while the round trips are in flight join the
next batch. Each caller gets its own answer, or the exception that ended its batch; a caller
that stopped waiting (cancelled, timed out) is dropped from the batch it would have joined and
its answer, if one comes, is thrown away.

The round trips run in tasks the batcher owns, never in the callers' tasks: cancelling a caller
never interrupts a Redis client half way through a command, so no connection is left
mid-reply or released in the background. :meth:`Batcher.aclose` refuses new calls and waits
for the round trips in flight (each bounded by the sender's own timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher", "BatcherClosed"]

_I = TypeVar("_I")
_R = TypeVar("_R")


class BatcherClosed(RuntimeError):
    """The batcher was closed: the call was not sent."""


class Batcher(Generic[_I, _R]):
    def __init__(
        self,
        send: Callable[[Sequence[_I]], Awaitable[Sequence[_R | Exception]]],
        *,
        timeout: float,
        max_batch: int,
        max_running: int = 1,
    ) -> None:
        """``send`` sends one batch and returns one answer (or exception) per call, in order.
        A call gets :class:`TimeoutError` when no answer came ``timeout`` seconds after it was
        submitted; a round trip ends when its oldest call's time is up."""
        if max_batch < 1 or max_running < 1:
            raise ValueError("max_batch and max_running must be at least 1")
        self._send = send
        self._timeout = timeout
        self._max_batch = max_batch
        self._max_running = max_running
        self._queue: list[tuple[_I, asyncio.Future[_R], float]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.batches = 0
        """Round trips made (for tests and measurements)."""

    def submit(self, item: _I) -> asyncio.Future[_R]:
        """Queue one call; its answer (or exception) arrives in the returned future."""
        if self._closed:
            raise BatcherClosed("closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._queue.append((item, future, deadline))
        if not self._scheduled:
            if len(self._running) < self._max_running:
                self._scheduled = True
                loop.call_soon(self._launch)
            elif self._timer is None:
                self._timer = loop.call_at(deadline, self._expire)
        return future

    def _launch(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue and len(self._running) < self._max_running:
            batch: list[tuple[_I, asyncio.Future[_R], float]] = []
            taken = 0
            for entry in queue:
                if len(batch) == self._max_batch:
                    break
                taken += 1
                if not entry[1].done():  # a caller that stopped waiting is not sent
                    batch.append(entry)
            del queue[:taken]
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _expire(self) -> None:
        """Answer the queued calls whose time is up (the round trips in flight are slow)."""
        self._timer = None
        queue = self._queue
        now = asyncio.get_running_loop().time()
        expired = 0
        for _, future, deadline in queue:
            if deadline > now:
                break  # the queue is in deadline order
            expired += 1
            if not future.done():
                future.set_exception(TimeoutError())
        del queue[:expired]
        if queue:
            self._timer = asyncio.get_running_loop().call_at(queue[0][2], self._expire)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._queue and not self._scheduled and not self._closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._launch)

    async def _run(self, batch: list[tuple[_I, asyncio.Future[_R], float]]) -> None:
        self.batches += 1
        try:
            async with asyncio.timeout_at(batch[0][2]):
                answers = await self._send([item for item, _, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to {len(batch)} calls")
        except (Exception, asyncio.CancelledError) as exc:
            error = exc if isinstance(exc, Exception) else BatcherClosed("cancelled while in flight")
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future, _), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    @property
    def pending(self) -> int:
        """Calls waiting to be sent."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Round trips under way."""
        return len(self._running)

    async def aclose(self) -> None:
        """Refuse new calls, fail the queued ones and wait for the round trips in flight."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued, self._queue = self._queue, []
        for _, future, _ in queued:
            if not future.done():
                future.set_exception(BatcherClosed("closed before it was sent"))
        while self._running:
            await asyncio.wait(list(self._running))
