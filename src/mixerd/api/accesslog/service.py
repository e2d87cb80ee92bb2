"""The ``envoy.service.accesslog.v3.AccessLogService`` servicer (``StreamAccessLogs``).

Envoy opens one client stream per worker thread and never gets a response until the stream
ends. Each stream keeps the context of its first ``identifier``; every message's entries are
converted (:mod:`mixerd.api.accesslog.convert`) and handed to a
:class:`~mixerd.runtime.reporting.ReportPipeline` (api ``accesslog``), whose worker dispatches what
is queued, up to ``batch_entries`` entries at a time across messages and streams, through
``Dispatcher.report`` (one call per batch).

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
``mixerd_report_dropped_total{api="accesslog", reason="queue_full"}`` and a warning with the count
is logged at most every 10 s. :meth:`aclose` stops taking entries, flushes the queue for at most
``flush_timeout`` seconds and counts what is left as ``reason="shutdown"``.

Settings (the server passes them in): ``MIXERD_ACCESSLOG_REPORTER_KINDS`` (``log_name=kind,...``,
see :func:`~mixerd.api.accesslog.convert.parse_reporter_kinds`), ``MIXERD_ACCESSLOG_QUEUE_ENTRIES``
(10000), ``MIXERD_ACCESSLOG_BATCH_ENTRIES`` (100), ``MIXERD_ACCESSLOG_ENQUEUE_TIMEOUT`` (1 s),
``MIXERD_ACCESSLOG_DROP`` (``oldest``).

Metrics (the runtime's registry, from the dispatcher): ``mixerd_accesslog_entries_total{kind}`` (``http``,
``tcp``, ``http_intermediate`` = received but skipped), ``mixerd_accesslog_streams``,
``mixerd_requests_total{api="accesslog"}`` per finished stream, and the pipeline's
``mixerd_report_{queued,dropped_total,batches_total,errors_total}{api="accesslog"}`` (a
malformed entry is dropped as ``reason="invalid"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from mixerd.api.accesslog.convert import StreamState
from mixerd.api.caller import grpc_caller
from mixerd.attribute import logsafe
from mixerd.runtime import Dispatcher
from mixerd.runtime.reporting import DropPolicy, ReportPipeline

__all__ = ["AccessLogService", "DropPolicy"]

_log = logging.getLogger(__name__)

_EMPTY: Final = als_pb2.StreamAccessLogsResponse()


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Envoy's access-log service feeding the dispatcher's Report path through a report pipeline."""

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
        caller_identity: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self.caller_identity = caller_identity
        """Read the client certificate's SPIFFE ID of each stream into ``mixerd.caller.principal``."""
        self.reporter_kinds = dict(reporter_kinds or {})
        self.pipeline = ReportPipeline(
            dispatcher,
            api="accesslog",
            capacity=queue_entries,
            batch_size=batch_entries,
            enqueue_timeout=enqueue_timeout,
            drop=drop,
            flush_timeout=flush_timeout,
        )
        m = dispatcher.metrics
        entries = m.counter(
            "mixerd_accesslog_entries",
            "Access-log entries received over ALS, by kind (http_intermediate: skipped intermediate entries).",
            ["kind"],
        )
        self._entries = {k: entries.labels(k) for k in ("http", "tcp", "http_intermediate")}
        self._streams = m.gauge("mixerd_accesslog_streams", "Open ALS streams.")
        self._stream_ok = m.requests.labels("accesslog", "StreamAccessLogs", "OK")

    def register(self, server: grpc.aio.Server) -> None:
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self, server)

    @property
    def queued(self) -> int:
        """Entries waiting for dispatch."""
        return self.pipeline.queued

    # -- the stream --------------------------------------------------------------------------

    async def StreamAccessLogs(self, request_iterator: Any, context: Any) -> Any:
        state = StreamState(self.reporter_kinds, grpc_caller(context) if self.caller_identity else None)
        self._streams.inc()
        try:
            async for message in request_iterator:
                await self.accept(state, message)
        finally:
            self._streams.dec()
        self._stream_ok.inc()
        return _EMPTY

    async def accept(self, state: StreamState, message: Any) -> None:
        """Convert one message of a stream and queue its entries (waiting, bounded, for room)."""
        try:
            converted = state.convert(message)
        except Exception as exc:  # a malformed entry must not end the stream
            n = len(message.http_logs.log_entry) + len(message.tcp_logs.log_entry)
            _log.debug("access-log entries not converted: %s: %s", type(exc).__name__, logsafe(str(exc)))
            self.pipeline.dropped(n, "invalid")
            return
        if converted.skipped:
            self._entries["http_intermediate"].inc(converted.skipped)
        if not converted.bags:
            return
        self._entries[converted.kind].inc(len(converted.bags))
        await self.pipeline.submit(converted.bags)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was dispatched; False on timeout."""
        return await self.pipeline.flush(timeout)

    async def aclose(self) -> None:
        """Stop taking entries, flush the queue (bounded by ``flush_timeout``), stop the worker."""
        await self.pipeline.aclose()
