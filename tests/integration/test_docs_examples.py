"""The README's example configs, run for real: `mixerd serve` with docs/examples/mixerd-config.yaml
behind a real Envoy (docs/examples/envoy.yaml) and a real nginx (docs/examples/nginx.conf).

The example files are used as they are, except that their fixed ports are replaced by free ones
(and Envoy gets an admin listener so the test knows when it is ready).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.config import MemoryStore, parse_text
from mixerd.server.app import Server
from mixerd.server.settings import Settings
from tests.conformance_data import conformance_dir
from tests.ext_authz_support import Upstream, start_upstream
from tests.support.net import free_port

from .envoy_proc import start_envoy
from .mixerd_proc import MixerdProcess, start_mixerd
from .nginx_proc import start_nginx

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def ported(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(\d{4,5})\b", lambda m: str(ports.get(int(m.group(1)), m.group(1))), text)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await start_upstream()
    yield up
    await up.stop()


@pytest.fixture
def mixerd(tmp_path: Path) -> Any:
    proc = start_mixerd(
        tmp_path, [EXAMPLES / "mixerd-config.yaml"], env={"MIXERD_HTTP_AUTHZ_PREFIX": "/authz"}
    )
    yield proc
    assert proc.stop() == 0, proc.log()


async def get(session: aiohttp.ClientSession, url: str, user: str | None) -> tuple[int, str, Any]:
    headers = {"x-user": user} if user is not None else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_envoy_example(tmp_path: Path, upstream: Upstream, mixerd: MixerdProcess) -> None:
    grpc_listener, http_listener, admin = free_port(), free_port(), free_port()
    text = ported(
        (EXAMPLES / "envoy.yaml").read_text(),
        {
            10000: grpc_listener,
            10001: http_listener,
            9091: mixerd.grpc_port,
            9192: mixerd.http_authz_port,
            8080: upstream.port,
        },
    ).replace("0.0.0.0", "127.0.0.1")
    text = f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n" + text
    envoy = start_envoy(tmp_path / "envoy", text, admin)
    try:
        async with aiohttp.ClientSession() as s:
            for listener in (grpc_listener, http_listener):
                url = f"http://127.0.0.1:{listener}/orders"
                status, _, _ = await get(s, url, "alice")
                assert status == 200, envoy.log()[-2000:]
                assert upstream.seen[-1]["headers"]["x-user-id"] == "alice"
                status, body, headers = await get(s, url, "mallory")
                assert (status, body) == (403, "mallory is not welcome here")
                assert headers["x-mixerd-status"] == "PERMISSION_DENIED"
                status, body, _ = await get(s, url, None)
                assert (status, body) == (401, "say who you are (x-user)")
            # The Check charges "requestcount": 10 per 10 seconds per user.
            url = f"http://127.0.0.1:{grpc_listener}/orders"
            statuses = [(await get(s, url, "bob"))[0] for _ in range(12)]
            assert statuses == [200] * 10 + [429] * 2, statuses
            # The access logs of the gRPC-mode listener reached mixerd and moved its example
            # counter, Envoy's response flags included (UAEX: denied by the external authorizer).
            want = [
                'mixerd_example_requests_total{response_code="200",response_flags="-",user="alice"} 1',
                'mixerd_example_requests_total{response_code="403",response_flags="UAEX",user="mallory"} 1',
                'mixerd_example_requests_total{response_code="401",response_flags="UAEX",user="anonymous"} 1',
                'mixerd_example_requests_total{response_code="200",response_flags="-",user="bob"} 10',
                'mixerd_example_requests_total{response_code="429",response_flags="UAEX",user="bob"} 2',
            ]
            for _ in range(100):
                text = mixerd.http("/metrics", mixerd.prometheus_port)
                if all(line in text for line in want):
                    break
                await asyncio.sleep(0.1)
            assert [line for line in want if line not in text] == [], text
    finally:
        envoy.stop()


async def test_nginx_example(tmp_path: Path, upstream: Upstream, mixerd: MixerdProcess) -> None:
    port = free_port()
    text = ported(
        (EXAMPLES / "nginx.conf").read_text(), {8000: port, 9192: mixerd.http_authz_port, 8080: upstream.port}
    )
    nginx = start_nginx(tmp_path / "nginx", text, port)
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/orders?id=7"
            status, _, _ = await get(s, url, "alice")
            assert status == 200, nginx.log()[-2000:]
            assert upstream.seen[-1]["headers"]["x-user-id"] == "alice"
            assert upstream.seen[-1]["path"] == "/orders?id=7"
            status, _, _ = await get(s, url, "mallory")
            assert status == 403
            status, _, _ = await get(s, url, None)
            assert status == 401
    finally:
        nginx.stop()


# --- console-istio.yaml: the console fed by Istio 1.4's stock Mixer config ------------------------

STOCK_CONFIG = conformance_dir() / "stock-telemetry-config" / "rendered" / "config.yaml"


def _validate(*paths: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _in_effect(report: str) -> str:
    (line,) = [line for line in report.splitlines() if line.startswith("in effect:")]
    return line


def test_console_istio_example_validates_with_the_stock_config() -> None:
    rc, stock = _validate(STOCK_CONFIG)
    assert rc == 0, stock
    rc, both = _validate(STOCK_CONFIG, EXAMPLES / "console-istio.yaml")
    assert rc == 0, both
    assert "error:" not in both and "warning:" not in both, both
    # The addition is in effect besides the stock config: one more handler and instance, two rules.
    assert "9 instances, 2 handlers, 6 rules" in _in_effect(stock)
    assert "10 instances, 3 handlers, 8 rules" in _in_effect(both), _in_effect(both)
    assert _in_effect(both).endswith("0 errors, 0 warnings, 2 ignored")


ISTIO_PODS = """
apiVersion: v1
kind: List
items:
- metadata:
    name: istio-ingressgateway-6b9d8c7f5-h2k4p
    namespace: istio-system
    labels: {app: istio-ingressgateway, pod-template-hash: 6b9d8c7f5}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: istio-ingressgateway-6b9d8c7f5, controller: true}]
  status: {podIP: 10.1.0.5}
- metadata:
    name: productpage-v1-7d6cfb7dfd-x2k4p
    namespace: default
    labels: {app: productpage, version: v1, pod-template-hash: 7d6cfb7dfd}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: productpage-v1-7d6cfb7dfd, controller: true}]
  status: {podIP: 10.1.0.6}
- metadata:
    name: reviews-v2-5d9f8c7b6-q8r9s
    namespace: default
    labels: {app: reviews, version: v2, pod-template-hash: 5d9f8c7b6}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v2-5d9f8c7b6, controller: true}]
  status: {podIP: 10.1.0.7}
"""
GATEWAY = "kubernetes://istio-ingressgateway-6b9d8c7f5-h2k4p.istio-system"
PRODUCTPAGE = "kubernetes://productpage-v1-7d6cfb7dfd-x2k4p.default"
REVIEWS = "kubernetes://reviews-v2-5d9f8c7b6-q8r9s.default"
RID = "5b1d2f3e-8c4a-4e6b-9f7a-0c1d2e3f4a5b"


def _istio_attributes(
    kind: str,
    source: str,
    destination: str,
    service: str,
    start: _dt.datetime,
    ms: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    """What an Istio 1.4 proxy's Mixer filter reports for one HTTP call."""
    return {
        "context.reporter.kind": kind,
        "context.reporter.uid": source if kind == "outbound" else destination,
        "context.protocol": "http",
        "source.uid": source,
        "destination.uid": destination,
        "destination.service.host": f"{service}.default.svc.cluster.local",
        "destination.service.name": service,
        "destination.service.namespace": "default",
        "request.time": start,
        "response.duration": _dt.timedelta(milliseconds=ms),
        "request.headers": headers,
        "request.id": headers["x-request-id"],
        "request.method": "GET",
        "request.path": f"/{service}",
        "request.host": service,
        "request.useragent": "python-requests/2.22",
        "response.code": 200,
    }


async def test_console_istio_example_feeds_the_console(tmp_path: Path) -> None:
    # The stock config and the addition, as Istio 1.4's proxies use them: the productpage sidecar's
    # Check mints x-transaction-id; the reports of ingressgateway -> productpage -> reviews (both
    # proxies of each call) become one transaction, workloads from kubernetesenv.
    pods = tmp_path / "pods.yaml"
    pods.write_text(ISTIO_PODS)
    docs = [d for d in yaml.safe_load_all(STOCK_CONFIG.read_text()) if d]
    for d in docs:
        if d["kind"] == "handler" and d["metadata"]["name"] == "kubernetesenv":
            d["spec"]["params"] = {"podsFile": str(pods)}
    text = yaml.safe_dump_all(docs) + "\n---\n" + (EXAMPLES / "console-istio.yaml").read_text()
    parsed = parse_text(text)
    assert not parsed.errors, parsed.errors
    settings = Settings(
        grpc_address="127.0.0.1:0",
        monitoring_address="127.0.0.1:0",
        prometheus_address="",
        http_authz_address="",
        console_store="sqlite:///" + str(tmp_path / "console.db").lstrip("/"),
    )
    server = Server(settings, store=MemoryStore(parsed.resources))
    await server.start()
    try:
        assert not server.runtime.status.errors, server.runtime.status.errors
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.listeners.grpc_port}") as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            checked = _dt.datetime.now(_dt.UTC)
            check = await stub.Check(
                build_check_request(
                    {
                        "context.reporter.kind": "inbound",
                        "context.protocol": "http",
                        "source.uid": GATEWAY,
                        "destination.uid": PRODUCTPAGE,
                        "destination.namespace": "default",
                        "request.headers": {"x-request-id": RID, ":path": "/productpage"},
                    }
                )
            )
            assert check.precondition.status.code == 0
            ops = check.precondition.route_directive.request_header_operations
            assert [(op.name, op.value) for op in ops] == [("x-transaction-id", RID)]

            first = {"x-request-id": RID}  # the gateway's request: no transaction id yet
            minted = {"x-request-id": RID, "x-transaction-id": RID}
            # Calls around the Check (the productpage's inbound one holds it), generously long so
            # that a slow Check still falls within them.
            t0 = checked - _dt.timedelta(seconds=5)
            ms = _dt.timedelta(milliseconds=1)
            await stub.Report(
                build_report_request(
                    [
                        _istio_attributes("outbound", GATEWAY, PRODUCTPAGE, "productpage", t0, 10_000, first),
                        _istio_attributes(
                            "inbound", GATEWAY, PRODUCTPAGE, "productpage", t0 + ms, 9_998, minted
                        ),
                        _istio_attributes(
                            "outbound", PRODUCTPAGE, REVIEWS, "reviews", t0 + 10 * ms, 20, minted
                        ),
                        _istio_attributes(
                            "inbound", PRODUCTPAGE, REVIEWS, "reviews", t0 + 11 * ms, 18, minted
                        ),
                    ]
                )
            )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.listeners.monitoring_port}/api/v1/transactions/{RID}"
            deadline = time.monotonic() + 15
            while True:
                async with session.get(url) as resp:
                    body = await resp.json()
                if resp.status == 200 and sum(len(h["reporters"]) for h in body["hops"]) == 4:
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.1)
    finally:
        await server.stop()
    hops = body["hops"]
    assert [
        (h["source"]["workload"], h["destination"]["workload"], h["destination"]["version"]) for h in hops
    ] == [("istio-ingressgateway", "productpage-v1", "v1"), ("productpage-v1", "reviews-v2", "v2")]
    assert [(h["depth"], h["parent"]) for h in hops] == [(0, None), (1, 0)]
    assert [h["reporters"] for h in hops] == [["source", "destination"]] * 2
    assert [h["source"]["namespace"] for h in hops] == ["istio-system", "default"]
    assert hops[1]["destination"]["service"] == "reviews.default.svc.cluster.local"
    assert hops[0]["request"]["id"] == RID
    (decision,) = body["decisions"]
    assert decision["verdict"] == "allow" and decision["hop"] == 0
    assert decision["destination"]["workload"] == "productpage-v1"
