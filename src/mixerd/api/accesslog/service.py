"""The ``envoy.service.accesslog.v3.AccessLogService`` servicer (``StreamAccessLogs``).

Envoy opens one client stream per worker thread and never gets a response until the stream
ends. Each stream keeps the context of its first ``identifier``; every message's entries are
converted (:mod:`mixerd.api.accesslog.convert`) and queued; one dispatch worker takes what is
queued, up to ``batch_entries`` entries at a time across messages and streams, and sends it
through ``Dispatcher.report`` (one call per batch).

Batching, measured with the stock Istio telemetry config (4 metrics + kubernetesenv per entry):
``report`` cost 166 us per entry in batches of 1, 109 in batches of 10 and 91 in batches of 100,
and converting an entry about 60 us. So the worker takes everything already queued (whole
messages, up to ``batch_entries`` = 100 entries) in one call, but never lingers for more: under
load the queue fills while a batch is dispatched and batches grow by themselves, and at low load
waiting (e.g. 200 ms) would add latency without saving CPU anyone needs. Envoy batches too (one
message per ``buffer_flush_interval`` per worker).

Backpressure, bounded. The queue holds at most ``queue_entries`` entries (plus the batch being
dispatched). A stream whose entries do not fit waits for room (it stops reading, so gRPC flow
control pushes back on Envoy, which buffers and eventually drops on its side, counted in Envoy's
own stats) for at most ``enqueue_timeout`` seconds. Then whole batches are dropped: the oldest
queued ones (``drop="oldest"``, default: fresh data is worth more) or the arriving one
(``drop="newest"``). Every dropped entry is counted in
``mixerd_accesslog_dropped_total{reason="queue_full"}`` and a warning with the count is logged at
most every 10 s. :meth:`aclose` stops taking entries, flushes the queue for at most
``flush_timeout`` seconds and counts what is left as ``reason="shutdown"``.

Settings (the server passes them in): ``MIXERD_ACCESSLOG_REPORTER_KINDS`` (``log_name=kind,...``,
see :func:`~mixerd.api.accesslog.convert.parse_reporter_kinds`), ``MIXERD_ACCESSLOG_QUEUE_ENTRIES``
(10000), ``MIXERD_ACCESSLOG_BATCH_ENTRIES`` (100), ``MIXERD_ACCESSLOG_ENQUEUE_TIMEOUT`` (1 s),
``MIXERD_ACCESSLOG_DROP`` (``oldest``).

Metrics (``mixerd.runtime.metrics.REGISTRY``): ``mixerd_accesslog_entries_total{kind}`` (``http``,
``tcp``, ``http_intermediate`` = received but skipped), ``mixerd_accesslog_dropped_total{reason}``,
``mixerd_accesslog_report_errors_total``, ``mixerd_accesslog_batches_total``,
``mixerd_accesslog_queue_entries``, ``mixerd_accesslog_streams``, and
``mixerd_requests_total{api="accesslog"}`` per finished stream.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client import Counter, Gauge

from mixerd.api.accesslog.convert import StreamState
from mixerd.runtime import Dispatcher, metrics

__all__ = [
    "BATCHES",
    "DROPPED",
    "ENTRIES",
    "QUEUE_ENTRIES",
    "REPORT_ERRORS",
    "STREAMS",
    "AccessLogService",
    "DropPolicy",
]

_log = logging.getLogger(__name__)

ENTRIES: Final = Counter(
    "mixerd_accesslog_entries",
    "Access-log entries received over ALS, by kind (http_intermediate: skipped intermediate entries).",
    ["kind"],
    registry=metrics.REGISTRY,
)
DROPPED: Final = Counter(
    "mixerd_accesslog_dropped",
    "Access-log entries dropped before dispatch, by reason (queue_full, shutdown, invalid).",
    ["reason"],
    registry=metrics.REGISTRY,
)
REPORT_ERRORS: Final = Counter(
    "mixerd_accesslog_report_errors",
    "Problems reported by the dispatcher for access-log batches (one per failed instance or handler).",
    registry=metrics.REGISTRY,
)
BATCHES: Final = Counter(
    "mixerd_accesslog_batches", "Report batches dispatched for access logs.", registry=metrics.REGISTRY
)
QUEUE_ENTRIES: Final = Gauge(
    "mixerd_accesslog_queue_entries", "Access-log entries waiting for dispatch.", registry=metrics.REGISTRY
)
STREAMS: Final = Gauge("mixerd_accesslog_streams", "Open ALS streams.", registry=metrics.REGISTRY)

_EMPTY: Final = als_pb2.StreamAccessLogsResponse()
_WARN_INTERVAL: Final = 10.0


class DropPolicy(enum.Enum):
    OLDEST = "oldest"
    NEWEST = "newest"


class _RateLimitedWarning:
    """Logs at most once per interval, with the count of what happened in between."""

    __slots__ = ("_interval", "_last", "_pending")

    def __init__(self, interval: float = _WARN_INTERVAL) -> None:
        self._interval = interval
        self._last: float | None = None
        self._pending = 0

    def add(self, count: int, message: str) -> None:
        self._pending += count
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            return
        self._emit(message, now)

    def _emit(self, message: str, now: float) -> None:
        since = f" in the last {now - self._last:.0f}s" if self._last is not None else ""
        _log.warning("%s: %d%s", message, self._pending, since)
        self._last = now
        self._pending = 0

    def flush(self, message: str) -> None:
        if self._pending:
            self._emit(message, time.monotonic())


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Envoy's access-log service feeding the dispatcher's Report path."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        reporter_kinds: Mapping[str, str] | None = None,
        queue_entries: int = 10_000,
        batch_entries: int = 100,
        enqueue_timeout: float = 1.0,
        drop: DropPolicy | str = DropPolicy.OLDEST,
        flush_timeout: float = 5.0,
    ) -> None:
        if queue_entries < 1 or batch_entries < 1:
            raise ValueError("queue_entries and batch_entries must be at least 1")
        self.dispatcher = dispatcher
        self.reporter_kinds = dict(reporter_kinds or {})
        self.queue_entries = queue_entries
        self.batch_entries = batch_entries
        self.enqueue_timeout = enqueue_timeout
        self.drop = DropPolicy(drop)
        self.flush_timeout = flush_timeout
        self._batches: deque[Sequence[Any]] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._drop_warning = _RateLimitedWarning()
        self._error_warning = _RateLimitedWarning()
        self._entries = {k: ENTRIES.labels(k) for k in ("http", "tcp", "http_intermediate")}
        self._stream_ok = metrics.REQUESTS.labels("accesslog", "StreamAccessLogs", "OK")

    def register(self, server: grpc.aio.Server) -> None:
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self, server)

    @property
    def queued(self) -> int:
        """Entries waiting for dispatch."""
        return self._queued

    # -- the stream --------------------------------------------------------------------------

    async def StreamAccessLogs(self, request_iterator: Any, context: Any) -> Any:
        state = StreamState(self.reporter_kinds)
        STREAMS.inc()
        try:
            async for message in request_iterator:
                await self.accept(state, message)
        finally:
            STREAMS.dec()
        self._stream_ok.inc()
        return _EMPTY

    async def accept(self, state: StreamState, message: Any) -> None:
        """Convert one message of a stream and queue its entries (waiting, bounded, for room)."""
        try:
            converted = state.convert(message)
        except Exception as exc:  # a malformed entry must not end the stream
            n = len(message.http_logs.log_entry) + len(message.tcp_logs.log_entry)
            DROPPED.labels("invalid").inc(n)
            self._drop_warning.add(
                n, f"access-log entries dropped (could not convert: {type(exc).__name__}: {exc})"
            )
            return
        if converted.skipped:
            self._entries["http_intermediate"].inc(converted.skipped)
        if not converted.bags:
            return
        self._entries[converted.kind].inc(len(converted.bags))
        await self._enqueue(converted.bags)

    # -- the queue ---------------------------------------------------------------------------

    def _full(self, n: int) -> bool:
        return self._queued > 0 and self._queued + n > self.queue_entries

    async def _enqueue(self, bags: Sequence[Any]) -> None:
        n = len(bags)
        if self._closing:
            self._dropped(n, "shutdown")
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
                    self._dropped(n, "queue_full")
                    return
                while self._full(n):
                    old = self._batches.popleft()
                    self._queued -= len(old)
                    self._dropped(len(old), "queue_full")
        self._ensure_worker()
        self._batches.append(bags)
        self._queued += n
        QUEUE_ENTRIES.set(self._queued)
        self._idle.clear()
        self._wake.set()

    def _dropped(self, n: int, reason: str) -> None:
        DROPPED.labels(reason).inc(n)
        self._drop_warning.add(n, f"access-log entries dropped ({reason})")

    def _take(self) -> list[Any]:
        out: list[Any] = []
        while self._batches and (not out or len(out) + len(self._batches[0]) <= self.batch_entries):
            batch = self._batches.popleft()
            self._queued -= len(batch)
            out.extend(batch)
        QUEUE_ENTRIES.set(self._queued)
        return out

    # -- the worker --------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name="mixerd-accesslog-dispatch"
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
                self._dropped(len(bags), "shutdown")
                raise
            except Exception as exc:  # the dispatcher contains handler errors; this is a bug guard
                problems = [f"{type(exc).__name__}: {exc}"]
            BATCHES.inc()
            if problems:
                REPORT_ERRORS.inc(len(problems))
                self._error_warning.add(len(problems), f"access-log report problems (latest: {problems[-1]})")

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was dispatched; False on timeout."""
        if self._worker is None:
            return not self._batches
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop taking entries, flush the queue (bounded by ``flush_timeout``), stop the worker."""
        self._closing = True
        if self._worker is not None and not await self.flush(self.flush_timeout):
            _log.warning(
                "access-log queue not flushed within %.1fs; dropping %d entries",
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
            self._dropped(self._queued, "shutdown")
            self._batches.clear()
            self._queued = 0
            QUEUE_ENTRIES.set(0)
        self._drop_warning.flush("access-log entries dropped")
        self._error_warning.flush("access-log report problems")
