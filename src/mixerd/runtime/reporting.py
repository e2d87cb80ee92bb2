"""Asynchronous report dispatch with bounded memory.

Front-ends hand attribute sets to a :class:`ReportPipeline` and answer their caller at once; one
worker task takes what has queued up, in batches of up to ``batch_size`` sets, and runs them
through :meth:`Dispatcher.report` (which calls each handler once per batch). The queue is bounded
by a number of attribute sets: when it is full, :meth:`submit` waits up to ``max_wait`` seconds
for room (backpressure on the caller), then drops the sets and counts them in
``mixerd_report_dropped_total``, with a warning at most every 10 s. Nothing is dropped silently.
:meth:`aclose` dispatches what is queued before it returns (bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from prometheus_client import Counter, Gauge

from mixerd.runtime import metrics
from mixerd.runtime.dispatcher import Dispatcher

__all__ = ["ReportPipeline"]

_log = logging.getLogger(__name__)

DROPPED: Final = Counter(
    "mixerd_report_dropped",
    "Attribute sets dropped because the report queue stayed full (by front-end).",
    ["api"],
    registry=metrics.REGISTRY,
)
QUEUED: Final = Gauge(
    "mixerd_report_queued", "Attribute sets waiting to be dispatched.", registry=metrics.REGISTRY
)
REPORT_ERRORS: Final = Counter(
    "mixerd_report_errors",
    "Problems while dispatching reports (instances that could not be built, handler failures).",
    registry=metrics.REGISTRY,
)


class ReportPipeline:
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        capacity: int = 50_000,
        batch_size: int = 1_000,
        max_wait: float = 1.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_wait = max_wait
        self._items: collections.deque[Mapping[str, Any]] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._last_warning = 0.0
        self.dropped = 0
        self.errors = 0

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="mixerd-report-worker")

    async def submit(self, bags: Sequence[Mapping[str, Any]], api: str = "mixer") -> int:
        """Queue ``bags``; return how many were dropped (0 unless the queue stayed full)."""
        if not bags:
            return 0
        self._ensure_worker()
        deadline = time.monotonic() + self.max_wait
        while len(self._items) + len(bags) > self.capacity and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._drop(len(bags), api)
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                return self._drop(len(bags), api)
        self._items.extend(bags)
        QUEUED.set(len(self._items))
        self._idle.clear()
        self._ready.set()
        return 0

    def _drop(self, n: int, api: str) -> int:
        self.dropped += n
        DROPPED.labels(api).inc(n)
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            _log.warning(
                "report queue full (%d attribute sets) for %.1fs: dropped %d sets (%d in total); "
                "a handler is slower than the incoming telemetry",
                self.capacity,
                self.max_wait,
                n,
                self.dropped,
            )
        return n

    async def _run(self) -> None:
        while True:
            if not self._items:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            n = min(self.batch_size, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            QUEUED.set(len(self._items))
            self._room.set()
            try:
                problems = await self.dispatcher.report(batch)
            except Exception:
                _log.exception("dispatching a report batch failed")
                problems = ["dispatch failed"]
            if problems:
                self.errors += len(problems)
                REPORT_ERRORS.inc(len(problems))
                _log.debug("report problems: %s", "; ".join(problems[:5]))

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been dispatched; False on timeout."""
        if not self._items and self._idle.is_set():
            return True
        self._ensure_worker()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 10.0) -> None:
        """Dispatch what is queued (bounded), then stop the worker."""
        self._closing = True
        if not await self.flush(timeout):
            left = len(self._items)
            self._drop(left, "shutdown")
            self._items.clear()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._room.set()
