"""The console API end to end in one process: Mixer API calls in, JSON out.

A real server (gRPC + HTTP on loopback, SQLite in a temporary directory) runs the embedded default
config, which mints x-transaction-id and records every reported call. Three services report a
chain edge -> frontend -> cart (both proxies of each call), one request is denied, and the API
must show one transaction with its hops in order, the denial in the feed and in its transaction,
and the graph's edges.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from mixerd._proto.mixer.v1 import check_pb2, mixer_pb2_grpc, report_pb2
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.config import MemoryStore, parse_text
from mixerd.server.app import Server, default_config_text
from mixerd.server.settings import Settings

TXN = "txn-console-1"
T0 = _dt.datetime.now(_dt.UTC).replace(microsecond=0) - _dt.timedelta(seconds=5)


def _ms(n: float) -> _dt.timedelta:
    return _dt.timedelta(milliseconds=n)


def _report(
    kind: str, src: str, dst: str, start_ms: float, duration_ms: float, code: int = 200
) -> dict[str, Any]:
    return {
        "context.reporter.kind": kind,
        "context.protocol": "http",
        "request.time": T0 + _ms(start_ms),
        "response.duration": _ms(duration_ms),
        "source.namespace": "shop",
        "source.workload.name": src,
        "destination.namespace": "shop",
        "destination.workload.name": dst,
        "destination.service.host": f"{dst}.shop.svc.cluster.local",
        "request.method": "GET",
        "request.path": f"/{dst}",
        "response.code": code,
        "request.headers": {"x-transaction-id": TXN, "x-request-id": f"rid-{src}-{dst}"},
    }


# edge -> frontend (0..100 ms) -> cart (20..60 ms), each call reported by both proxies.
CHAIN = [
    _report("outbound", "edge", "frontend", 0, 100),
    _report("inbound", "edge", "frontend", 2, 96),
    _report("outbound", "frontend", "cart", 20, 40),
    _report("inbound", "frontend", "cart", 22, 36),
]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        grpc_address="127.0.0.1:0",
        monitoring_address="127.0.0.1:0",
        prometheus_address="",
        http_authz_address="",
        console_store=f"sqlite:///{tmp_path}/console.db".replace("////", "///"),
    )
    store = MemoryStore(parse_text(default_config_text()).resources)
    srv = Server(settings, store=store)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class _Api:
    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{server.listeners.monitoring_port}"
        self.session = session

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.session.get(self.base + path) as resp:
            body = await resp.json()
            assert resp.status == status, body
            return body

    async def until(self, path: str, ready: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Poll ``path`` until ``ready(body)`` (the writer flushes every 0.5 s)."""
        deadline = time.monotonic() + timeout
        while True:
            body = await self.get(path)
            if ready(body):
                return body
            assert time.monotonic() < deadline, f"{path} never became ready: {body}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def api(server: Server) -> AsyncIterator[_Api]:
    async with aiohttp.ClientSession() as session:
        yield _Api(server, session)


async def _mixer(server: Server, call: Callable[[Any], Awaitable[Any]]) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.listeners.grpc_port}") as channel:
        return await call(mixer_pb2_grpc.MixerStub(channel))


async def _report_chain(server: Server) -> None:
    req = build_report_request(CHAIN)
    resp = await _mixer(server, lambda stub: stub.Report(req))
    assert isinstance(resp, report_pb2.ReportResponse)


async def _check_blocked(server: Server) -> check_pb2.CheckResponse:
    attrs = {
        "request.headers": {"x-user": "blocked", "x-transaction-id": TXN},
        "source.namespace": "shop",
        "source.workload.name": "frontend",
        "destination.namespace": "shop",
        "destination.workload.name": "cart",
        "destination.service.host": "cart.shop.svc.cluster.local",
        "context.reporter.kind": "inbound",
    }
    return await _mixer(server, lambda stub: stub.Check(build_check_request(attrs)))  # type: ignore[no-any-return]


async def test_one_transaction_with_its_hops_in_order_and_its_denial(server: Server, api: _Api) -> None:
    await _report_chain(server)
    denied = await _check_blocked(server)
    assert denied.precondition.status.code == 7

    listed = await api.until("/api/v1/transactions?namespace=shop", lambda b: b["transactions"])
    (summary,) = listed["transactions"]
    assert summary["id"] == TXN and summary["hops"] == 2 and summary["denied"] is True

    detail = await api.until(f"/api/v1/transactions/{TXN}", lambda b: b["decisions"])
    hops = detail["hops"]
    assert [(h["source"]["workload"], h["destination"]["workload"]) for h in hops] == [
        ("edge", "frontend"),
        ("frontend", "cart"),
    ]
    assert [(h["depth"], h["parent"]) for h in hops] == [(0, None), (1, 0)]
    assert all(sorted(h["reporters"]) == ["destination", "source"] for h in hops)
    (decision,) = detail["decisions"]
    assert decision["verdict"] == "deny"
    assert decision["rule"] == "deny-blocked-users.rule.istio-system"

    feed = await api.get("/api/v1/decisions?verdict=deny")
    assert [d["rule"] for d in feed["decisions"]] == ["deny-blocked-users.rule.istio-system"]


async def test_the_graph_has_the_chains_edges(server: Server, api: _Api) -> None:
    await _report_chain(server)
    body = await api.until("/api/v1/graph?namespaces=shop&duration=5m", lambda b: b["elements"]["edges"])
    edges = {(e["data"]["source"], e["data"]["target"]): e["data"] for e in body["elements"]["edges"]}
    assert set(edges) == {("wl_shop_edge", "wl_shop_frontend"), ("wl_shop_frontend", "wl_shop_cart")}
    for edge in edges.values():
        # one call each, counted once although both proxies reported it
        assert edge["traffic"]["responses"] == {"200": 1}


async def test_a_decision_reaches_the_live_stream(server: Server, api: _Api) -> None:
    async with api.session.get(api.base + "/api/v1/decisions/stream?verdict=deny") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await resp.content.readline()  # the opening comment
        await resp.content.readline()
        await _check_blocked(server)

        async def first_event() -> dict[str, Any]:
            while True:
                line = (await resp.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line[6:])  # type: ignore[no-any-return]

        event = await asyncio.wait_for(first_event(), 2.0)
    assert event["verdict"] == "deny" and event["transaction_id"] == TXN


async def test_bad_parameters_and_unknown_ids_are_clear_errors(api: _Api) -> None:
    assert "limit" in (await api.get("/api/v1/transactions?limit=0", 400))["error"]
    assert "status" in (await api.get("/api/v1/transactions?status=weird", 400))["error"]
    assert "duration" in (await api.get("/api/v1/graph?duration=forever", 400))["error"]
    assert "graphType" in (await api.get("/api/v1/graph?graphType=nodes", 400))["error"]
    assert "no transaction" in (await api.get("/api/v1/transactions/nope", 404))["error"]


async def test_console_figures_are_on_metrics(server: Server, api: _Api) -> None:
    async with api.session.get(api.base + "/metrics") as resp:
        text = await resp.text()
    assert 'mixerd_console_dropped_total{kind="hop"} 0.0' in text
    assert "mixerd_console_store_available 1.0" in text
