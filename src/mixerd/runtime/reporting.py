"""Asynchronous report dispatch with bounded memory, shared by every front-end that reports.

A front-end hands the attribute sets of one request (a Mixer Report, an access-log message) to
:meth:`ReportPipeline.submit` and answers its caller; one worker task takes what is queued, whole
submissions at a time up to ``batch_size`` sets, and runs them through ``Dispatcher.report`` (one
call per batch: each handler is called once per batch). The worker never lingers for more: under
load the queue fills while a batch is dispatched and batches grow by themselves; at low load
waiting would only add latency.

Backpressure, bounded: at most ``capacity`` sets are queued (plus the batch being dispatched). A
submission that does not fit waits for room (a gRPC stream reader that waits stops reading, so
flow control pushes back on the sender) for at most ``enqueue_timeout`` seconds; then whole
submissions are dropped: the oldest queued ones (``drop="oldest"``, the default: fresh data is
worth more) or the arriving one (``drop="newest"``). Every dropped set is counted in
``mixerd_report_dropped_total{api, reason}`` and a warning with the count is logged at most every
10 s: nothing is dropped silently. :meth:`aclose` stops taking sets, dispatches what is queued
for at most ``flush_timeout`` seconds and counts the rest as ``reason="shutdown"``.

Metrics (the runtime's :class:`~mixerd.runtime.metrics.RuntimeMetrics`, from the dispatcher), each
labelled by front-end (``api``):
``mixerd_report_queued``, ``mixerd_report_dropped_total{reason}``, ``mixerd_report_batches_total``,
``mixerd_report_errors_total`` (problems the dispatcher reported: instances that could not be
built, failing handlers).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from mixerd.adapter import RateLimitedWarning
from mixerd.attribute import logsafe
from mixerd.runtime.dispatcher import Dispatcher

__all__ = ["DropPolicy", "ReportPipeline"]

_log = logging.getLogger(__name__)


class DropPolicy(enum.Enum):
    OLDEST = "oldest"
    NEWEST = "newest"


class ReportPipeline:
    """One bounded queue and one dispatch worker for a front-end's reports."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        api: str = "mixer",
        capacity: int = 50_000,
        batch_size: int = 1_000,
        enqueue_timeout: float = 1.0,
        drop: DropPolicy | str = DropPolicy.OLDEST,
        flush_timeout: float = 10.0,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("the report queue capacity and batch size must be at least 1")
        self.dispatcher = dispatcher
        self.api = api
        self.capacity = capacity
        self.batch_size = batch_size
        self.enqueue_timeout = enqueue_timeout
        self.drop = DropPolicy(drop)
        self.flush_timeout = flush_timeout
        self._batches: deque[Sequence[Mapping[str, Any]]] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._drop_warning = RateLimitedWarning(dispatcher.clock, logger=_log)
        self._error_warning = RateLimitedWarning(dispatcher.clock, logger=_log)
        m = dispatcher.metrics
        self._dropped = m.report_dropped
        self._queued_gauge = m.report_queued.labels(api)
        self._batches_counter = m.report_batches.labels(api)
        self._errors_counter = m.report_errors.labels(api)

    @property
    def queued(self) -> int:
        """Attribute sets waiting for dispatch."""
        return self._queued

    def _full(self, n: int) -> bool:
        return self._queued > 0 and self._queued + n > self.capacity

    async def submit(self, bags: Sequence[Mapping[str, Any]]) -> None:
        """Queue the attribute sets of one request, waiting (bounded) for room."""
        n = len(bags)
        if not n:
            return
        if self._closing:
            self.dropped(n, "shutdown")
            return
        if self._full(n):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.enqueue_timeout
            while self._full(n):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._space.clear()
                try:
                    await asyncio.wait_for(self._space.wait(), remaining)
                except TimeoutError:
                    break
            if self._full(n):
                if self.drop is DropPolicy.NEWEST:
                    self.dropped(n, "queue_full")
                    return
                while self._full(n):
                    old = self._batches.popleft()
                    self._queued -= len(old)
                    self.dropped(len(old), "queue_full")
        self._ensure_worker()
        self._batches.append(bags)
        self._queued += n
        self._queued_gauge.set(self._queued)
        self._idle.clear()
        self._wake.set()

    def dropped(self, n: int, reason: str) -> None:
        """Count ``n`` attribute sets as dropped (front-ends also use it for entries they reject)."""
        self._dropped.labels(self.api, reason).inc(n)
        self._drop_warning.add(n, f"{self.api} reports dropped ({reason})")

    def _take(self) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        while self._batches and (not out or len(out) + len(self._batches[0]) <= self.batch_size):
            batch = self._batches.popleft()
            self._queued -= len(batch)
            out.extend(batch)
        self._queued_gauge.set(self._queued)
        return out

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"mixerd-{self.api}-reports"
            )

    async def _run(self) -> None:
        while True:
            if not self._batches:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            bags = self._take()
            self._space.set()
            try:
                problems = await self.dispatcher.report(bags)
            except asyncio.CancelledError:
                self.dropped(len(bags), "shutdown")
                raise
            except Exception as exc:  # the dispatcher contains handler errors; this is a bug guard
                _log.exception("dispatching a report batch failed")
                problems = [f"{type(exc).__name__}: {exc}"]
            self._batches_counter.inc()
            if problems:
                self._errors_counter.inc(len(problems))
                self._error_warning.add(
                    len(problems), f"{self.api} report problems (latest: {logsafe(problems[-1])})"
                )

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far was dispatched; False on timeout."""
        if self._worker is None:
            return not self._batches
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop taking sets, dispatch what is queued (bounded by ``flush_timeout``), stop the worker."""
        self._closing = True
        if self._worker is not None and not await self.flush(self.flush_timeout):
            _log.warning(
                "%s report queue not flushed within %.1fs; dropping %d attribute sets",
                self.api,
                self.flush_timeout,
                self._queued,
            )
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._batches:
            self.dropped(self._queued, "shutdown")
            self._batches.clear()
            self._queued = 0
            self._queued_gauge.set(0)
        self._drop_warning.flush(f"{self.api} reports dropped")
        self._error_warning.flush(f"{self.api} report problems")
