"""Console data for tests, sent the Mixer way to a running in-process :class:`Server` on the
embedded default config (its ``record-hops`` rule records every reported call, its
``deny-blocked-users`` rule denies ``x-user: blocked``).

The shop: ``istio-ingressgateway`` (istio-system) calls ``frontend``, which calls ``cart``
(workloads ``cart-v1`` and ``cart-v2``, the canary) and ``payments``, all in namespace ``shop``.
:func:`seed_shop` sends one transaction of three calls whose last one is denied by policy (the
Check first, so the call's times can be placed around the decision's), then background traffic
to both cart versions over the last minutes. The apps' own spans and log lines of the checkout
arrive over OTLP (:func:`export_app_records`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd._proto.otlp.collector.logs.v1 import logs_service_pb2
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.common.v1 import common_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.server.app import Server

__all__ = [
    "DENY_RULE",
    "NS",
    "TXN",
    "Workload",
    "call_reports",
    "check_blocked",
    "export_app_records",
    "mixer",
    "seed_shop",
]

NS = "shop"
TXN = "txn-ui-checkout-1"
DENY_RULE = "deny-blocked-users.rule.istio-system"


@dataclass(frozen=True)
class Workload:
    name: str
    app: str
    version: str = ""
    namespace: str = NS

    @property
    def host(self) -> str:
        return f"{self.app}.{self.namespace}.svc.cluster.local"


INGRESS = Workload("istio-ingressgateway", "istio-ingressgateway", namespace="istio-system")
FRONTEND = Workload("frontend", "frontend", "v1")
CART_V1 = Workload("cart-v1", "cart", "v1")
CART_V2 = Workload("cart-v2", "cart", "v2")
PAYMENTS = Workload("payments", "payments", "v1")


def _peer(prefix: str, w: Workload) -> dict[str, Any]:
    labels = {"app": w.app}
    if w.version:
        labels["version"] = w.version
    return {
        f"{prefix}.namespace": w.namespace,
        f"{prefix}.workload.name": w.name,
        f"{prefix}.labels": labels,
    }


def call_reports(
    txn: str,
    src: Workload,
    dst: Workload,
    start: _dt.datetime,
    duration_ms: float,
    *,
    method: str = "GET",
    path: str = "/",
    code: int = 200,
    flags: str = "",
    request_id: str = "",
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The two reports of one call: the caller's proxy (outbound, the whole call) and the
    callee's (inbound, starting 1 ms later and ending 1 ms earlier when the call is long enough)."""
    inner_ms = max(duration_ms - 2.0, duration_ms / 2)
    lead_ms = (duration_ms - inner_ms) / 2
    out = []
    for kind, offset_ms, length_ms, reported_flags in (
        ("outbound", 0.0, duration_ms, ""),
        ("inbound", lead_ms, inner_ms, flags),
    ):
        attrs: dict[str, Any] = {
            "context.reporter.kind": kind,
            "context.protocol": "http",
            "request.time": start + _dt.timedelta(milliseconds=offset_ms),
            "response.duration": _dt.timedelta(milliseconds=length_ms),
            "destination.service.host": dst.host,
            "request.method": method,
            "request.path": path,
            "request.host": dst.app,
            "response.code": code,
            "request.headers": {"x-transaction-id": txn, "x-request-id": request_id or f"{txn}-{dst.name}"}
            | (headers or {}),
            **_peer("source", src),
            **_peer("destination", dst),
        }
        if reported_flags:
            attrs["context.proxy_error_code"] = reported_flags
        out.append(attrs)
    return out


async def mixer(server: Server, call: Callable[[Any], Awaitable[Any]]) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.listeners.grpc_port}") as channel:
        return await call(mixer_pb2_grpc.MixerStub(channel))


async def check_blocked(server: Server, txn: str = TXN, request_id: str = "") -> Any:
    """A Check from frontend to payments for a blocked user: denied by ``DENY_RULE``."""
    attrs = {
        "request.headers": {
            "x-user": "blocked",
            "x-transaction-id": txn,
            "x-request-id": request_id or f"{txn}-payments",
        },
        "request.method": "POST",
        "request.path": "/pay",
        "destination.service.host": PAYMENTS.host,
        "context.reporter.kind": "inbound",
        **_peer("source", FRONTEND),
        **_peer("destination", PAYMENTS),
    }
    return await mixer(server, lambda stub: stub.Check(build_check_request(attrs)))


async def report(server: Server, sets: list[dict[str, Any]]) -> None:
    await mixer(server, lambda stub: stub.Report(build_report_request(sets)))


def _ns(t: _dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000) * 1000


def _string(value: str) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(string_value=value)


async def _export(server: Server, service: str, request: Any, response_type: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.listeners.grpc_port}") as channel:
        call = channel.unary_unary(
            f"/opentelemetry.proto.collector.{service}/Export",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        await call(request, timeout=10)


async def export_app_records(server: Server, t0: _dt.datetime) -> None:
    """frontend's spans of the checkout (its handler, and its call to cart inside) and a log line
    each of cart and frontend, tagged with the transaction id, through the OTLP receiver."""
    ms = _dt.timedelta(milliseconds=1)
    trace = bytes(range(1, 17))
    traces = trace_service_pb2.ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=_string("frontend"))
    spans = rs.scope_spans.add().spans
    for span_id, parent, name, kind, start, end in (
        (b"\x01" * 8, b"", "POST /checkout", trace_pb2.Span.SPAN_KIND_SERVER, 3, 115),
        (b"\x02" * 8, b"\x01" * 8, "load cart", trace_pb2.Span.SPAN_KIND_CLIENT, 19, 62),
    ):
        span = spans.add(
            trace_id=trace,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind=kind,
            start_time_unix_nano=_ns(t0 + start * ms),
            end_time_unix_nano=_ns(t0 + end * ms),
        )
        span.attributes.add(key="transaction.id", value=_string(TXN))
    await _export(server, "trace.v1.TraceService", traces, trace_service_pb2.ExportTraceServiceResponse)

    logs = logs_service_pb2.ExportLogsServiceRequest()
    for service, at, severity, body in (
        ("cart", 30, "INFO", "cart loaded: 2 items"),
        ("frontend", 80, "WARN", "payment refused: PERMISSION_DENIED"),
    ):
        rl = logs.resource_logs.add()
        rl.resource.attributes.add(key="service.name", value=_string(service))
        record = rl.scope_logs.add().log_records.add(
            time_unix_nano=_ns(t0 + at * ms), severity_text=severity, body=_string(body)
        )
        record.attributes.add(key="transaction.id", value=_string(TXN))
    await _export(server, "logs.v1.LogsService", logs, logs_service_pb2.ExportLogsServiceResponse)


async def seed_shop(server: Server, decision_time: _dt.datetime, *, background: int = 24) -> None:
    """The checkout transaction :data:`TXN` (placed around ``decision_time``, the time the denied
    Check was recorded) and ``background`` transactions through both cart versions over the
    minutes before it (every fourth call to cart-v2 fails with a 503)."""
    t0 = decision_time - _dt.timedelta(milliseconds=76)
    ms = _dt.timedelta(milliseconds=1)
    sets = [
        *call_reports(TXN, INGRESS, FRONTEND, t0, 120, path="/checkout", method="POST"),
        *call_reports(TXN, FRONTEND, CART_V1, t0 + 20 * ms, 40, path="/cart"),
        *call_reports(
            TXN, FRONTEND, PAYMENTS, t0 + 74 * ms, 5, method="POST", path="/pay", code=403, flags="UAEX"
        ),
    ]
    for i in range(background):
        start = decision_time - _dt.timedelta(seconds=20 * (i + 1))
        txn = f"txn-ui-bg-{i:03d}"
        canary = i % 2 == 1
        cart = CART_V2 if canary else CART_V1
        failed = canary and i % 4 == 3
        sets += call_reports(txn, INGRESS, FRONTEND, start, 60 + i % 7)
        code = 503 if failed else 200
        length = (30 if canary else 18) + i % 5
        sets += call_reports(txn, FRONTEND, cart, start + 5 * ms, length, path="/cart", code=code)
    await report(server, sets)
    await export_app_records(server, t0)
