"""The console adapter: logentry variables (the stock accesslog names plus the console's) -> hops."""

import datetime as _dt

import pytest

from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.console import INFO
from mixerd.console.model import Hop, Peer, Reporter

_T0 = _dt.datetime(2026, 12, 4, 10, 0, 0, 250_000, tzinfo=_dt.UTC)
_T0_US = int(_T0.timestamp()) * 1_000_000 + 250_000

# The default config's consolehop instance, trimmed to what these tests send.
_INSTANCE = (
    "logentry",
    {
        "severity": '"Info"',
        "timestamp": "request.time",
        "variables": {
            "reporter": 'conditional((context.reporter.kind | "inbound") == "outbound", "source", '
            '"destination")',
            "sourceNamespace": 'source.namespace | ""',
            "sourceWorkload": 'source.workload.name | ""',
            "sourceVersion": 'source.labels["version"] | ""',
            "destinationNamespace": 'destination.namespace | ""',
            "destinationWorkload": 'destination.workload.name | ""',
            "destinationServiceHost": 'destination.service.host | request.host | ""',
            "method": 'request.method | ""',
            "url": 'request.path | ""',
            "responseCode": "response.code | 0",
            "responseFlags": 'context.proxy_error_code | ""',
            "latency": 'response.duration | "0ms"',
            "requestId": 'request.headers["x-request-id"] | ""',
            "requestHeaders": "request.headers | emptyStringMap()",
        },
    },
)

_BAG = {
    "request.time": _T0,
    "context.reporter.kind": "outbound",
    "source.namespace": "shop",
    "source.workload.name": "frontend",
    "source.labels": {"version": "v2"},
    "destination.namespace": "shop",
    "destination.workload.name": "cart",
    "destination.service.host": "cart.shop.svc.cluster.local",
    "request.method": "GET",
    "request.path": "/cart?id=1",
    "response.code": 503,
    "context.proxy_error_code": "UF",
    "response.duration": _dt.timedelta(milliseconds=12, microseconds=5),
    "request.headers": {
        "x-request-id": "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    },
}


class _Sink:
    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def add_hop(self, hop: Hop) -> None:
        self.hops.append(hop)


async def test_a_reported_call_becomes_one_hop() -> None:
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [_BAG])
    await h.close()
    assert sink.hops == [
        Hop(
            start_us=_T0_US,
            duration_us=12_005,
            reporter=Reporter.SOURCE,
            source=Peer(namespace="shop", workload="frontend", version="v2"),
            destination=Peer(namespace="shop", workload="cart", service="cart.shop.svc.cluster.local"),
            transaction_id="4bf92f3577b34da6a3ce929d0e0e4736",
            method="GET",
            path="/cart?id=1",
            response_code=503,
            response_flags="UF",
            request_id="7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
        )
    ]
    assert sink.hops[0].error


async def test_the_transaction_header_wins_and_the_order_is_configurable() -> None:
    bag = {**_BAG, "request.headers": {**_BAG["request.headers"], "x-transaction-id": "txn-1"}}  # type: ignore[dict-item]
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [bag])
    await h.close()
    assert sink.hops[0].transaction_id == "txn-1"

    sink = _Sink()
    h = AdapterHarness(
        INFO, {"transactionHeaders": ["x-request-id"]}, {"hop": _INSTANCE}, services={"console": sink}
    )
    await h.report("hop", [bag])
    await h.close()
    assert sink.hops[0].transaction_id == "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50"


async def test_inbound_reports_are_destination_hops_and_missing_values_are_empty() -> None:
    sink = _Sink()
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE}, services={"console": sink})
    await h.report("hop", [{"request.time": _T0, "context.reporter.kind": "inbound"}])
    await h.close()
    (hop,) = sink.hops
    assert hop.reporter is Reporter.DESTINATION
    assert hop.transaction_id == "" and hop.duration_us == 0 and hop.source == Peer()


async def test_without_a_console_hops_are_dropped_and_counted() -> None:
    h = AdapterHarness(INFO, {}, {"hop": _INSTANCE})
    await h.report("hop", [_BAG, _BAG])
    await h.close()
    assert h.env.drops == 2


def test_a_malformed_transaction_header_name_is_a_config_error() -> None:
    with pytest.raises(HarnessConfigError, match="transactionHeaders"):
        AdapterHarness(INFO, {"transactionHeaders": ["x correlation"]}, {"hop": _INSTANCE})
