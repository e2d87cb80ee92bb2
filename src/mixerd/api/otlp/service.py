"""The OTLP receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` and
``opentelemetry.proto.collector.logs.v1.LogsService/Export`` over gRPC, into the console.

Applications instrumented with OpenTelemetry (and the OpenTelemetry Collector, e.g. its
file-log receiver tailing application logs) export to mixerd's gRPC port as to any OTLP
endpoint. Each span and log record is converted (:mod:`mixerd.api.otlp.convert`) and handed to
the console's sink (:class:`SpanSink`: synchronous, constant time, never raises; the sink
queues, batches and drops), so an export never waits for the store.

Answers, as OTLP specifies them:

* bytes that are not an export request: INVALID_ARGUMENT (the servicer parses the request
  itself; grpc's own deserializer would log a traceback and answer UNKNOWN). Strings that are
  not UTF-8 make the whole request unparsable, as protobuf requires.
* more than ``max_spans`` spans (``max_logs`` log records) in one request, 10,000 by default:
  RESOURCE_EXHAUSTED naming the limit (and the Collector's setting that bounds a batch),
  nothing accepted. An OTLP client does not retry it (no
  ``RetryInfo``): sending the same batch again would not help. The Collector's batch processor
  sends 8,192 at most by default; the message size is bounded by the server's receive limit.
* records that cannot be accepted (an id of the wrong length ...: see the conversion) are
  dropped and the others kept: the answer's ``partial_success`` has ``rejected_spans``
  (``rejected_log_records``) and an ``error_message`` with the count of each reason.

A large request is converted in slices of :data:`SLICE` records, letting other tasks (Check,
Report) run between them. gzip-compressed requests (the Collector's default) are decompressed by
grpc.

Metrics (the runtime's registry): ``mixerd_requests_total{api="otlp", method="ExportTrace" |
"ExportLogs", code}``, ``mixerd_request_duration_seconds{api="otlp", method}`` and
``mixerd_otlp_records_total{signal="spans"|"logs", outcome="accepted"|"rejected"}``. Rejections
are logged as one warning per kind at most every 10 s, with the count.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from mixerd._proto.otlp.collector.logs.v1 import logs_service_pb2
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd.adapter import Clock, RateLimitedWarning, SystemClock
from mixerd.api.otlp.convert import (
    BadRecord,
    Origin,
    convert_log,
    convert_span,
    count_logs,
    count_spans,
    log_records,
    trace_records,
)
from mixerd.console.model import LogRecord, Span
from mixerd.runtime import RuntimeMetrics

__all__ = [
    "LOGS_SERVICE",
    "MAX_LOGS_PER_REQUEST",
    "MAX_SPANS_PER_REQUEST",
    "SLICE",
    "TRACE_SERVICE",
    "OtlpService",
    "SpanSink",
]

_log = logging.getLogger(__name__)

TRACE_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE: Final = "opentelemetry.proto.collector.logs.v1.LogsService"
MAX_SPANS_PER_REQUEST: Final = 10_000
MAX_LOGS_PER_REQUEST: Final = 10_000
SLICE: Final = 500
"""Records converted between two yields to the event loop."""
_MAX_REASONS: Final = 5
"""Reasons listed in a partial success's error message."""
_LOGGED_DETAIL: Final = 200
_BATCH_HINT: Final = " (OpenTelemetry Collector: the batch processor's send_batch_max_size)"
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)

_T = TypeVar("_T")


class SpanSink(Protocol):
    """Where received spans and log records go (the console's writer)."""

    def add_span(self, span: Span) -> None: ...

    def add_log(self, record: LogRecord) -> None: ...


def _summary(rejected: int, total: int, noun: str, reasons: Counter[str]) -> str:
    shown = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common(_MAX_REASONS))
    more = len(reasons) - _MAX_REASONS
    if more > 0:
        shown += f", and {more} other reasons"
    return f"rejected {rejected} of {total} {noun}: {shown}"


class OtlpService:
    """OTLP's trace and logs services feeding a :class:`SpanSink`."""

    def __init__(
        self,
        sink: SpanSink,
        *,
        max_spans: int = MAX_SPANS_PER_REQUEST,
        max_logs: int = MAX_LOGS_PER_REQUEST,
        metrics: RuntimeMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_spans < 1 or max_logs < 1:
            raise ValueError("the OTLP request limits must be at least 1")
        self.sink = sink
        self.max_spans = max_spans
        self.max_logs = max_logs
        self.clock: Clock = clock or SystemClock()
        m = self.metrics = metrics or RuntimeMetrics()
        self._requests = m.requests
        self._seconds = {k: m.request_seconds.labels("otlp", k) for k in ("ExportTrace", "ExportLogs")}
        records = m.counter(
            "mixerd_otlp_records",
            "Spans and log records received over OTLP, by signal and outcome (accepted, rejected).",
            ["signal", "outcome"],
        )
        self._records = {
            (s, o): records.labels(s, o) for s in ("spans", "logs") for o in ("accepted", "rejected")
        }
        self._warnings: dict[tuple[str, str], RateLimitedWarning] = {}

    def register(self, server: grpc.aio.Server) -> None:
        """Register both services' ``Export`` taking the raw request bytes (parsed here, so bytes
        that do not parse are INVALID_ARGUMENT, not grpc's UNKNOWN and traceback)."""
        services = (
            (TRACE_SERVICE, self.ExportTrace, trace_service_pb2.ExportTraceServiceResponse),
            (LOGS_SERVICE, self.ExportLogs, logs_service_pb2.ExportLogsServiceResponse),
        )
        for name, method, response in services:
            handlers = {
                "Export": grpc.unary_unary_rpc_method_handler(
                    method, response_serializer=response.SerializeToString
                )
            }
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
            server.add_registered_method_handlers(name, handlers)

    # -- the calls ---------------------------------------------------------------------------

    async def ExportTrace(self, request: bytes | Any, context: Any) -> Any:
        """TraceService/Export; ``request`` is an ``ExportTraceServiceRequest`` or its bytes."""
        method = "ExportTrace"
        start = self.clock.monotonic()
        message = await self._parse(request, trace_service_pb2.ExportTraceServiceRequest, method, context)
        total = count_spans(message)
        if total > self.max_spans:
            await self._reject(
                context,
                method,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{total} spans in one request; the limit is {self.max_spans} spans per request: "
                f"send smaller batches{_BATCH_HINT}",
            )
        reasons = await self._ingest(trace_records(message), convert_span, self.sink.add_span, "spans", total)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if reasons:
            rejected = sum(reasons.values())
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = _summary(rejected, total, "spans", reasons)
        self._done(method, start)
        return response

    async def ExportLogs(self, request: bytes | Any, context: Any) -> Any:
        """LogsService/Export; ``request`` is an ``ExportLogsServiceRequest`` or its bytes."""
        method = "ExportLogs"
        start = self.clock.monotonic()
        message = await self._parse(request, logs_service_pb2.ExportLogsServiceRequest, method, context)
        total = count_logs(message)
        if total > self.max_logs:
            await self._reject(
                context,
                method,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{total} log records in one request; the limit is {self.max_logs} log records per "
                f"request: send smaller batches{_BATCH_HINT}",
            )
        received_us = (self.clock.now() - _EPOCH) // _MICROSECOND

        def convert(record: Any, where: Origin) -> LogRecord:
            return convert_log(record, where, received_us)

        reasons = await self._ingest(log_records(message), convert, self.sink.add_log, "logs", total)
        response = logs_service_pb2.ExportLogsServiceResponse()
        if reasons:
            rejected = sum(reasons.values())
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = _summary(rejected, total, "log records", reasons)
        self._done(method, start)
        return response

    # -- helpers -----------------------------------------------------------------------------

    async def _parse(self, request: bytes | Any, kind: Any, method: str, context: Any) -> Any:
        if type(request) is not bytes:
            return request
        try:
            return kind.FromString(request)
        except DecodeError as exc:
            await self._reject(
                context, method, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {kind.DESCRIPTOR.name}: {exc}"
            )

    async def _ingest(
        self,
        records: Iterator[tuple[Origin, Any]],
        convert: Callable[[Any, Origin], _T],
        add: Callable[[_T], None],
        signal: str,
        total: int,
    ) -> Counter[str]:
        """Convert and hand over every record; return the count of each reason for a rejection."""
        reasons: Counter[str] = Counter()
        for i, (where, record) in enumerate(records, 1):
            try:
                item = convert(record, where)
            except BadRecord as exc:
                reasons[str(exc)] += 1
            except Exception as exc:  # a bug must cost one record, not the request
                _log.debug("OTLP %s record not converted", signal, exc_info=True)
                reasons[f"not converted ({type(exc).__name__})"] += 1
            else:
                add(item)
            if i % SLICE == 0:
                await asyncio.sleep(0)
        rejected = sum(reasons.values())
        self._records[(signal, "accepted")].inc(total - rejected)
        if rejected:
            self._records[(signal, "rejected")].inc(rejected)
            self._warn(
                signal,
                "rejected",
                rejected,
                f"rejected OTLP {signal} (the last: {reasons.most_common(1)[0][0]})",
            )
        return reasons

    def _done(self, method: str, start: float) -> None:
        self._requests.labels("otlp", method, "OK").inc()
        self._seconds[method].observe(self.clock.monotonic() - start)

    def _warn(self, kind: str, code: str, count: int, message: str) -> None:
        warning = self._warnings.get((kind, code))
        if warning is None:
            warning = self._warnings[(kind, code)] = RateLimitedWarning(self.clock)
        warning.add(count, message)

    async def _reject(self, context: Any, method: str, code: grpc.StatusCode, message: str) -> NoReturn:
        """Answer a request the caller got wrong; log it, at most once per 10 s per kind."""
        self._requests.labels("otlp", method, code.name).inc()
        shown = message if len(message) <= _LOGGED_DETAIL else message[:_LOGGED_DETAIL] + "..."
        self._warn(
            method, code.name, 1, f"rejected OTLP {method} requests ({code.name}; the last: {shown!r})"
        )
        await context.abort(code, message)
        raise AssertionError("unreachable")

    def flush_warnings(self) -> None:
        """Log the rejections counted since each kind's last log line."""
        for (kind, code), warning in self._warnings.items():
            warning.flush(f"rejected OTLP {kind} ({code})")

    async def aclose(self) -> None:
        """Log what was rejected since the last log line (nothing is queued here)."""
        self.flush_warnings()
