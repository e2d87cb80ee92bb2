"""The OTLP receiver over a real grpc.aio server on 127.0.0.1 with a fake sink: accepted records,
partial success, request limits, bad bytes, compression, a responsive loop, the server wiring."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from mixerd._proto.otlp.collector.logs.v1 import logs_service_pb2
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.common.v1 import common_pb2
from mixerd._proto.otlp.logs.v1 import logs_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2
from mixerd.adapter import ManualClock
from mixerd.api.otlp import service as otlp_service
from mixerd.api.otlp.service import LOGS_SERVICE, SLICE, TRACE_SERVICE, OtlpService
from mixerd.console.model import LogRecord, Span
from mixerd.runtime import RuntimeMetrics

TraceRequest = trace_service_pb2.ExportTraceServiceRequest
TraceResponse = trace_service_pb2.ExportTraceServiceResponse
LogsRequest = logs_service_pb2.ExportLogsServiceRequest
LogsResponse = logs_service_pb2.ExportLogsServiceResponse

TRACE = bytes(range(1, 17))
NOW = _dt.datetime(2024, 5, 1, 12, 0, tzinfo=_dt.UTC)
NOW_US = 1_714_564_800_000_000
LIMIT = 50


@dataclass
class FakeSink:
    spans: list[Span] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)

    def add_span(self, span: Span) -> None:
        self.spans.append(span)

    def add_log(self, record: LogRecord) -> None:
        self.logs.append(record)


@dataclass
class Served:
    service: OtlpService
    sink: FakeSink
    metrics: RuntimeMetrics
    target: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    sink, metrics = FakeSink(), RuntimeMetrics()
    service = OtlpService(sink, max_spans=LIMIT, max_logs=LIMIT, metrics=metrics, clock=ManualClock(NOW))
    server = grpc.aio.server()
    service.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Served(service, sink, metrics, f"127.0.0.1:{port}")
    await server.stop(None)
    await service.aclose()


def trace_request(*span_ids: bytes, service: str = "reviews") -> Any:
    request = TraceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value=service))
    spans = rs.scope_spans.add().spans
    for i, span_id in enumerate(span_ids):
        spans.add(trace_id=TRACE, span_id=span_id, name=f"op{i}", kind=trace_pb2.Span.SPAN_KIND_SERVER)
    return request


def logs_request(*bodies: str, trace_id: bytes = b"") -> Any:
    request = LogsRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for body in bodies:
        records.add(body=common_pb2.AnyValue(string_value=body), trace_id=trace_id)
    return request


async def export(target: str, service: str, request: Any, **kwargs: Any) -> Any:
    response_type = TraceResponse if service == TRACE_SERVICE else LogsResponse
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{service}/Export",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return await call(request, timeout=10, **kwargs)


async def export_error(target: str, service: str, request: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await export(target, service, request)
    return err.value


def sample(metrics: RuntimeMetrics, name: str, **labels: str) -> float:
    return metrics.value(name, labels)


# -- accepted and partially accepted ---------------------------------------------------------


async def test_spans_reach_the_sink_and_the_answer_is_a_full_success(served: Served) -> None:
    response = await export(served.target, TRACE_SERVICE, trace_request(b"\x01" * 8, b"\x02" * 8))
    assert not response.HasField("partial_success")
    assert [(s.name, s.span_id, s.service, s.kind) for s in served.sink.spans] == [
        ("op0", "01" * 8, "reviews", "server"),
        ("op1", "02" * 8, "reviews", "server"),
    ]
    m = served.metrics
    assert sample(m, "mixerd_otlp_records_total", signal="spans", outcome="accepted") == 2
    assert sample(m, "mixerd_otlp_records_total", signal="spans", outcome="rejected") == 0
    assert sample(m, "mixerd_requests_total", api="otlp", method="ExportTrace", code="OK") == 1


async def test_bad_spans_are_dropped_counted_and_reported_as_partial_success(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    request = trace_request(b"\x01" * 8, b"\x02" * 7, b"", b"\x03" * 8, b"\x04" * 9)
    response = await export(served.target, TRACE_SERVICE, request)
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == (
        "rejected 3 of 5 spans: span_id is not 8 bytes long (2), span_id is missing (1)"
    )
    assert [s.name for s in served.sink.spans] == ["op0", "op3"]
    m = served.metrics
    assert sample(m, "mixerd_otlp_records_total", signal="spans", outcome="accepted") == 2
    assert sample(m, "mixerd_otlp_records_total", signal="spans", outcome="rejected") == 3
    warnings = [r.getMessage() for r in caplog.records if "rejected OTLP spans" in r.getMessage()]
    assert len(warnings) == 1 and not [r for r in caplog.records if r.exc_info]


async def test_logs_reach_the_sink_with_partial_success(served: Served) -> None:
    request = logs_request("GET /a transaction_id=tx-1", "plain", trace_id=TRACE)
    request.resource_logs[0].scope_logs[0].log_records.add(
        body=common_pb2.AnyValue(string_value="x"), span_id=b"\x01"
    )
    response = await export(served.target, LOGS_SERVICE, request)
    assert response.partial_success.rejected_log_records == 1
    assert (
        response.partial_success.error_message
        == "rejected 1 of 3 log records: span_id is not 8 bytes long (1)"
    )
    assert [(r.body, r.transaction_id, r.trace_id, r.time_us) for r in served.sink.logs] == [
        ("GET /a transaction_id=tx-1", "tx-1", TRACE.hex(), NOW_US),  # no time sent: when received
        ("plain", "", TRACE.hex(), NOW_US),
    ]
    m = served.metrics
    assert sample(m, "mixerd_otlp_records_total", signal="logs", outcome="accepted") == 2
    assert sample(m, "mixerd_otlp_records_total", signal="logs", outcome="rejected") == 1
    assert sample(m, "mixerd_requests_total", api="otlp", method="ExportLogs", code="OK") == 1


async def test_empty_requests_are_a_full_success(served: Served) -> None:
    assert not (await export(served.target, TRACE_SERVICE, TraceRequest())).HasField("partial_success")
    assert not (await export(served.target, LOGS_SERVICE, LogsRequest())).HasField("partial_success")
    assert served.sink == FakeSink()


async def test_gzip_compressed_requests_are_accepted(served: Served) -> None:
    # The Collector's OTLP exporter compresses with gzip by default.
    await export(served.target, TRACE_SERVICE, trace_request(b"\x01" * 8), compression=grpc.Compression.Gzip)
    await export(served.target, LOGS_SERVICE, logs_request("hello"), compression=grpc.Compression.Gzip)
    assert len(served.sink.spans) == 1 and len(served.sink.logs) == 1


async def test_a_failing_conversion_costs_one_record_not_the_request(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = otlp_service.convert_span

    def flaky(span: Any, where: Any) -> Span:
        if span.name == "op1":
            raise RuntimeError("bug")
        return real(span, where)

    monkeypatch.setattr(otlp_service, "convert_span", flaky)
    response = await export(served.target, TRACE_SERVICE, trace_request(b"\x01" * 8, b"\x02" * 8))
    assert response.partial_success.rejected_spans == 1
    assert "not converted (RuntimeError) (1)" in response.partial_success.error_message
    assert [s.name for s in served.sink.spans] == ["op0"]


# -- refused requests ------------------------------------------------------------------------


async def test_more_spans_than_the_limit_is_resource_exhausted(served: Served) -> None:
    ids = [i.to_bytes(8, "big") for i in range(1, LIMIT + 2)]
    err = await export_error(served.target, TRACE_SERVICE, trace_request(*ids))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == (
        f"{LIMIT + 1} spans in one request; the limit is {LIMIT} spans per request: send smaller batches "
        "(OpenTelemetry Collector: the batch processor's send_batch_max_size)"
    )
    assert served.sink.spans == []
    assert (
        sample(
            served.metrics,
            "mixerd_requests_total",
            api="otlp",
            method="ExportTrace",
            code="RESOURCE_EXHAUSTED",
        )
        == 1
    )
    await export(served.target, TRACE_SERVICE, trace_request(*ids[:LIMIT]))  # exactly the limit: fine
    assert len(served.sink.spans) == LIMIT


async def test_more_log_records_than_the_limit_is_resource_exhausted(served: Served) -> None:
    err = await export_error(served.target, LOGS_SERVICE, logs_request(*["x"] * (LIMIT + 1)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{LIMIT + 1} log records in one request; the limit is {LIMIT}" in err.details()
    assert "send smaller batches" in err.details()
    assert served.sink.logs == []


@pytest.mark.parametrize("service", [TRACE_SERVICE, LOGS_SERVICE])
async def test_garbage_bytes_answer_invalid_argument_with_one_log_line(
    served: Served, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        err = await export_error(served.target, service, b"\xff\xff\xff\xff garbage \x1b[31m")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        kind = "ExportTraceServiceRequest" if service == TRACE_SERVICE else "ExportLogsServiceRequest"
        assert err.details().startswith(f"malformed {kind}")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    ours = [r for r in caplog.records if "rejected OTLP Export" in r.getMessage()]
    assert len(ours) == 1  # rate-limited: one line per kind every 10 s
    assert "INVALID_ARGUMENT" in ours[0].getMessage() and "\x1b" not in ours[0].getMessage()


async def test_a_string_that_is_not_utf8_is_invalid_argument(served: Served) -> None:
    span = b"\x0a\x10" + TRACE + b"\x12\x08" + b"\x01" * 8 + b"\x2a\x02\xff\xfe"  # name: not UTF-8
    scope = b"\x12" + bytes([len(span)]) + span
    resource = b"\x12" + bytes([len(scope)]) + scope
    err = await export_error(served.target, TRACE_SERVICE, b"\x0a" + bytes([len(resource)]) + resource)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert served.sink.spans == []


async def test_the_server_keeps_serving_after_refusals(served: Served) -> None:
    await export_error(served.target, TRACE_SERVICE, b"\xff")
    await export_error(served.target, LOGS_SERVICE, logs_request(*["x"] * (LIMIT + 1)))
    await export(served.target, TRACE_SERVICE, trace_request(b"\x01" * 8))
    assert len(served.sink.spans) == 1


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OtlpService(FakeSink(), max_spans=0)


# -- the event loop --------------------------------------------------------------------------


async def test_a_request_at_the_default_limit_leaves_the_event_loop_responsive() -> None:
    sink = FakeSink()
    service = OtlpService(sink)  # default limit: 10,000 spans
    n = otlp_service.MAX_SPANS_PER_REQUEST
    data = trace_request(*[i.to_bytes(8, "big") for i in range(1, n + 1)]).SerializeToString()
    # Counted, not timed (see the Mixer service's test): a coroutine that only yields gets a turn
    # each time the conversion gives the loop back, once per SLICE records.
    turns = 0
    done = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not done.is_set():
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    response = await service.ExportTrace(data, context=None)
    during = turns - before
    done.set()
    await other
    assert not response.HasField("partial_success") and len(sink.spans) == n
    assert during >= n // SLICE - 1, during


# -- the server's wiring ---------------------------------------------------------------------


def test_build_services_adds_the_receiver_only_with_a_console_sink() -> None:
    from mixerd.adapter import load_adapters
    from mixerd.config import MemoryStore
    from mixerd.runtime import Runtime
    from mixerd.server.services import build_services
    from mixerd.server.settings import Settings

    runtime = Runtime(MemoryStore([]), adapters=load_adapters())
    assert not [s for s in build_services(runtime, Settings()) if isinstance(s, OtlpService)]
    sink = FakeSink()
    receivers = [
        s for s in build_services(runtime, Settings(), console_sink=sink) if isinstance(s, OtlpService)
    ]
    assert len(receivers) == 1
    assert receivers[0].sink is sink and receivers[0].metrics is runtime.dispatcher.metrics


async def test_log_record_time_prefers_the_record(served: Served) -> None:
    request = logs_request("x")
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.observed_time_unix_nano = 1_000_000_000_000_000_123
    record.severity_number = logs_pb2.SEVERITY_NUMBER_ERROR
    await export(served.target, LOGS_SERVICE, request)
    assert (served.sink.logs[0].time_us, served.sink.logs[0].severity) == (1_000_000_000_000_000, "ERROR")
