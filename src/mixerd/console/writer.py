"""The console's writer: records go from the request path into a bounded in-memory queue, and one
task writes them to the store in batches, off the request path.

``add_hop`` / ``add_decision`` / ``add_span`` / ``add_log`` are synchronous and O(1): they never
await, never raise, and never wait for the store. Every hop is also added to an in-memory RED
rollup of its edge and 10-s bucket (even a hop the queue has no room for, so the graph and the
service charts stay right under overload). The writer task flushes a batch every
``flush_interval`` seconds or as soon as ``batch_size`` records are waiting, together with the
rollups gathered so far (their counts add up in the store, so partial buckets are fine). The
defaults (1 s, 10,000 records) trade a second of freshness for cost: the more of a transaction's
hops one batch brings, the fewer rows and summary updates they make (SQLite stores them per
transaction and batch; the report benchmark's writer went from ~13 to ~10.5 us a hop when its
batches grew from 2,000 hops to 6,000).

When the store is unavailable the batches stay queued and are retried with exponential backoff;
records that arrive while the queue holds ``max_queue`` records are dropped and counted per kind
(``on_drop(kind, count)``, reported from the writer task, and :meth:`Writer.stats`). ``aclose``
writes what it can within its timeout and counts the rest as dropped. A retention task prunes the
store every ``prune_interval`` seconds by age (``retention``) and size (``max_rows``).

All methods are meant to be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from mixerd.console import stats
from mixerd.console.model import Batch, Decision, Hop, LogRecord, Peer, Span
from mixerd.console.store.base import ConsoleStore, EdgeRollup, StoreUnavailable

__all__ = ["KINDS", "ROLLUP_INTERVAL_US", "Writer", "WriterStats"]

log = logging.getLogger("mixerd.console")

ROLLUP_INTERVAL_US: Final = 10_000_000
"""Rollup bucket width: 10 s. A hop counts in the bucket of its end (when its proxy reported it,
as Prometheus counts ``istio_requests_total``)."""

KINDS: Final = ("hop", "decision", "span", "log", "rollup")
"""The ``kind`` of a dropped record (``rollup``: an edge bucket the writer had no room to keep)."""

_HISTOGRAM: Final = len(stats.BOUNDS_MS) + 1
_BOUNDS_US: Final = tuple(round(b * 1000) for b in stats.BOUNDS_MS)
"""``stats.bucket_of`` for integer microseconds is ``bisect_left(_BOUNDS_US, duration_us)``: the
same bucket (inclusive bounds), found in C instead of a Python loop, once per hop."""
_RollupKey = tuple[int, str, str, str, str, str, str, str, str, str, str, str, int]
"""bucket, reporter, source ns/workload/app/version, destination ns/workload/app/version/service,
protocol, response code."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    queued: int
    """Records waiting to be written (including batches kept for a retry)."""
    written: Mapping[str, int]
    """Records written, by kind (``rollup``: rollup rows sent)."""
    dropped: Mapping[str, int]
    """Records dropped, by kind."""
    dropped_by_reason: Mapping[tuple[str, str], int]
    """Records dropped by (kind, reason): ``queue_full``, ``shutdown``, ``error`` (the store
    refused a batch for a reason a retry cannot fix; logged)."""
    rollups_pending: int
    """Edge buckets gathered and not yet written."""
    store_available: bool
    """Whether the latest write succeeded."""
    last_error: str
    pruned: int
    """Records the retention task removed."""


class Writer:
    def __init__(
        self,
        store: ConsoleStore,
        *,
        on_drop: Callable[[str, int], None] | None = None,
        max_queue: int = 100_000,
        batch_size: int = 10_000,
        flush_interval: float = 1.0,
        retry_min: float = 0.5,
        retry_max: float = 10.0,
        retention: float = 86_400.0,
        max_rows: int = 0,
        prune_interval: float = 60.0,
        max_rollups: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``retention`` seconds (0: no age limit) and ``max_rows`` (0: no size limit) are what the
        retention task asks the store to keep; ``max_rollups`` bounds the edge buckets held in
        memory while the store is unavailable."""
        self._store = store
        self._on_drop = on_drop
        self._max_queue = max(1, max_queue)
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._retry_min = retry_min
        self._retry_max = max(retry_min, retry_max)
        self._retention = retention
        self._max_rows = max_rows
        self._prune_interval = prune_interval
        self._max_rollups = max_rollups
        self._clock = clock

        self._pending = Batch()
        self._pending_n = 0
        self._outbox: deque[Batch] = deque()
        self._queued = 0
        self._rollups: dict[_RollupKey, list[int]] = {}

        self._written = dict.fromkeys(KINDS, 0)
        self._dropped: dict[tuple[str, str], int] = {}
        self._unreported: dict[str, int] = {}
        self._available = True
        self._last_error = ""
        self._backoff = retry_min
        self._pruned = 0

        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None

    # -- the request path: synchronous, O(1), never raises ---------------------------------

    def add_hop(self, hop: Hop) -> None:
        try:
            # the rollup of the hop's edge and bucket (_roll, inlined: every hop comes through here)
            duration = hop.duration_us
            end = hop.start_us + duration
            s, d = hop.source, hop.destination
            code = hop.response_code
            key: _RollupKey = (
                end - end % ROLLUP_INTERVAL_US, str(hop.reporter),
                s.namespace, s.workload, s.app, s.version,
                d.namespace, d.workload, d.app, d.version, d.service,
                hop.protocol, code,
            )  # fmt: skip
            acc = self._rollups.get(key)
            if acc is None:
                acc = self._new_rollup(key)
            if acc is not None:
                acc[0] += 1
                flags = hop.response_flags
                if flags:
                    if code >= 500 or code == 0:  # Hop.error
                        acc[1] += 1
                    if hop.denied:
                        acc[2] += 1
                elif code >= 500:
                    acc[1] += 1
                acc[3] += duration
                acc[4 + bisect_left(_BOUNDS_US, duration)] += 1
            if not self._closed and self._queued < self._max_queue:  # _admit and _added, inlined
                self._pending.hops.append(hop)
                self._queued += 1
                self._pending_n += 1
                if self._pending_n >= self._batch_size:
                    self._seal()
                    self._wake.set()
            else:
                self._admit("hop")
        except Exception:  # never fail a request because of the console
            self._drop("hop", "error")

    def add_decision(self, decision: Decision) -> None:
        try:
            if not self._closed and self._queued < self._max_queue:  # _admit and _added, inlined
                self._pending.decisions.append(decision)
                self._queued += 1
                self._pending_n += 1
                if self._pending_n >= self._batch_size:
                    self._seal()
                    self._wake.set()
            else:
                self._admit("decision")
        except Exception:  # never fail a request because of the console
            self._drop("decision", "error")

    def add_span(self, span: Span) -> None:
        try:
            if self._admit("span"):
                self._pending.spans.append(span)
                self._added()
        except Exception:
            self._drop("span", "error")

    def add_log(self, record: LogRecord) -> None:
        try:
            if self._admit("log"):
                self._pending.logs.append(record)
                self._added()
        except Exception:
            self._drop("log", "error")

    def _admit(self, kind: str) -> bool:
        if self._closed:
            self._drop(kind, "shutdown")
            return False
        if self._queued >= self._max_queue:
            self._drop(kind, "queue_full")
            return False
        return True

    def _added(self) -> None:
        self._queued += 1
        self._pending_n += 1
        if self._pending_n >= self._batch_size:
            self._seal()
            self._wake.set()

    def _new_rollup(self, key: _RollupKey) -> list[int] | None:
        """A new, empty rollup for ``key``; None (counted as dropped) when ``max_rollups`` are held."""
        if len(self._rollups) >= self._max_rollups:
            self._drop("rollup", "queue_full")
            return None
        acc = self._rollups[key] = [0] * (4 + _HISTOGRAM)
        return acc

    def _drop(self, kind: str, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        self._dropped[kind, reason] = self._dropped.get((kind, reason), 0) + count
        self._unreported[kind] = self._unreported.get(kind, 0) + count
        if self._closed and self._task is None:
            self._report_drops()  # no writer task left to report them

    def _seal(self) -> None:
        if self._pending_n:
            self._outbox.append(self._pending)
            self._pending = Batch()
            self._pending_n = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and retention tasks (in the running event loop)."""
        if self._task is not None or self._closed:
            return
        self._task = asyncio.create_task(self._run(), name="console-writer")
        if self._retention > 0 or self._max_rows > 0:
            self._retention_task = asyncio.create_task(self._prune_forever(), name="console-retention")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop taking records, write what is queued within ``timeout`` seconds, count the rest as
        dropped (reason ``shutdown``). Does not close the store."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()  # the loop sees _closed and returns after its current write
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._seal()
        while self._outbox or self._rollups:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                ok = await asyncio.wait_for(self._write_one(), remaining)
            except TimeoutError:
                break
            if not ok:
                await asyncio.sleep(min(self._backoff, max(0.0, deadline - loop.time())))
        for batch in self._outbox:
            for kind, records in (("hop", batch.hops), ("decision", batch.decisions),
                                  ("span", batch.spans), ("log", batch.logs)):  # fmt: skip
                self._drop(kind, "shutdown", len(records))
        self._queued = 0
        self._outbox.clear()
        self._drop("rollup", "shutdown", len(self._rollups))
        self._rollups.clear()
        self._report_drops()

    # -- the writer task ------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._flush_interval
        last_seal = loop.time()
        while not self._closed:
            if self._available:
                # wake early when a batch fills up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            else:
                await self._sleep_unless_closed(delay)  # backing off: a full batch does not hurry it
            self._wake.clear()
            if self._closed:
                return
            self._report_drops()
            # a partial batch waits for the interval; full ones go as soon as they are full
            seal = loop.time() - last_seal >= self._flush_interval * 0.9
            if seal:
                last_seal = loop.time()
            try:
                ok = await self._flush(seal)
            except Exception:  # a bug: keep the writer alive
                log.exception("console writer: unexpected error")
                ok = False
            if ok:
                self._backoff = self._retry_min
                delay = self._flush_interval
            else:
                delay = self._backoff
                self._backoff = min(self._retry_max, self._backoff * 2)

    async def _sleep_unless_closed(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _flush(self, seal: bool) -> bool:
        """Write every full batch (and, when ``seal``, the partial one and the gathered rollups);
        False when the store is unavailable."""
        if seal:
            self._seal()
        while self._outbox or (seal and self._rollups):
            if not await self._write_one():
                return False
            if self._closed:
                return True
        return True

    async def _write_one(self) -> bool:
        batch = self._outbox[0] if self._outbox else Batch()
        taken, rollups = self._take_rollups()
        try:
            await self._store.write(batch, rollups)
        except asyncio.CancelledError:  # aclose ran out of time: the rollups are counted as dropped
            self._restore_rollups(taken)
            raise
        except StoreUnavailable as exc:
            self._restore_rollups(taken)
            if self._available:
                log.warning(
                    "console store unavailable, keeping up to %d records queued and retrying: %s",
                    self._max_queue,
                    exc,
                )
            self._available = False
            self._last_error = str(exc)
            return False
        except Exception as exc:
            # not an outage: a retry would fail the same way; drop this batch, keep going
            log.exception("console store refused a batch of %d records; dropped", len(batch) + len(rollups))
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._done(batch)
            for kind, n in self._counts(batch).items():
                self._drop(kind, "error", n)
            self._drop("rollup", "error", len(rollups))
            return True
        self._done(batch)
        for kind, n in self._counts(batch).items():
            self._written[kind] += n
        self._written["rollup"] += len(rollups)
        if not self._available:
            log.warning("console store available again (%d records queued)", self._queued)
        self._available = True
        self._last_error = ""
        return True

    def _done(self, batch: Batch) -> None:
        if self._outbox and self._outbox[0] is batch:
            self._outbox.popleft()
            self._queued -= len(batch)

    @staticmethod
    def _counts(batch: Batch) -> dict[str, int]:
        return {
            "hop": len(batch.hops),
            "decision": len(batch.decisions),
            "span": len(batch.spans),
            "log": len(batch.logs),
        }

    def _take_rollups(self) -> tuple[dict[_RollupKey, list[int]], list[EdgeRollup]]:
        if len(self._rollups) <= self._batch_size:
            taken, self._rollups = self._rollups, {}
        else:
            keys = list(itertools.islice(self._rollups, self._batch_size))
            taken = {k: self._rollups.pop(k) for k in keys}
        rollups = [
            EdgeRollup(
                bucket_us=k[0],
                reporter=k[1],
                source=Peer(k[2], k[3], k[4], k[5]),
                destination=Peer(k[6], k[7], k[8], k[9], k[10]),
                protocol=k[11],
                response_code=k[12],
                count=a[0],
                errors=a[1],
                denied=a[2],
                duration_sum_us=a[3],
                histogram=tuple(a[4:]),
            )
            for k, a in taken.items()
        ]
        return taken, rollups

    def _restore_rollups(self, taken: dict[_RollupKey, list[int]]) -> None:
        for key, acc in taken.items():
            mine = self._rollups.get(key)
            if mine is None:
                if len(self._rollups) >= self._max_rollups:
                    self._drop("rollup", "queue_full")
                    continue
                self._rollups[key] = acc
            else:
                for i, n in enumerate(acc):
                    mine[i] += n

    def _report_drops(self) -> None:
        if not self._unreported:
            return
        unreported, self._unreported = self._unreported, {}
        if self._on_drop is None:
            return
        for kind, count in unreported.items():
            try:
                self._on_drop(kind, count)
            except Exception:
                log.exception("console writer: on_drop callback failed")

    # -- retention ----------------------------------------------------------------------------

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            await self.prune_now()

    async def prune_now(self) -> int:
        """Ask the store to drop what retention and ``max_rows`` allow; the records removed
        (0 when the store is unavailable: the next round tries again)."""
        older_than_us = int((self._clock() - self._retention) * 1_000_000) if self._retention > 0 else 0
        try:
            removed = await self._store.prune(older_than_us=older_than_us, max_rows=self._max_rows)
        except StoreUnavailable as exc:
            log.debug("console retention skipped: %s", exc)
            return 0
        except Exception:
            log.exception("console retention failed")
            return 0
        self._pruned += removed
        return removed

    # -- figures ------------------------------------------------------------------------------

    def stats(self) -> WriterStats:
        dropped: dict[str, int] = dict.fromkeys(KINDS, 0)
        for (kind, _reason), n in self._dropped.items():
            dropped[kind] = dropped.get(kind, 0) + n
        return WriterStats(
            queued=self._queued,
            written=dict(self._written),
            dropped=dropped,
            dropped_by_reason=dict(self._dropped),
            rollups_pending=len(self._rollups),
            store_available=self._available,
            last_error=self._last_error,
            pruned=self._pruned,
        )
