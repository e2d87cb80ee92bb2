"""The console end to end through real Envoy: a three-service chain edge -> A -> B, sidecar style.

Topology (everything on loopback; each pod has an address of its own in 127.0.0.0/8)::

    client (127.0.0.1)
      |
      v  inbound listener, ext_authz (mints x-transaction-id) + ALS "inbound"
    [edge sidecar Envoy]  -> edge app (127.0.0.11) -> outbound listener, ALS "outbound"
      |                                                  (binds 127.0.0.11 towards A)
      v  inbound listener, ext_authz + ALS
    [a sidecar Envoy]     -> a app (127.0.0.12)    -> outbound listener, ALS "outbound"
      |                                                  (binds 127.0.0.12 towards B)
      v  inbound listener, ext_authz + ALS
    [b sidecar Envoy]     -> b app (127.0.0.13)

One Envoy per pod (its own node id), the apps are tiny aiohttp servers that call the next service
through their sidecar's outbound listener, forwarding the ``x-transaction-id`` they received (as an
instrumented app forwards trace headers; they do not forward ``x-request-id``, so each call has its
own request id and only the transaction id ties them). ext_authz (gRPC) and the access-log service
(gRPC ALS) go to one ``mixerd serve`` subprocess with a SQLite console store, running the embedded
default config (deny ``x-user: blocked``, mint ``x-transaction-id``, record every report as a hop)
plus ``kubernetesenv`` over a pods file.

Where each hop field comes from (nothing here is Istio-specific software, only Istio's naming):

- reporter kind and destination service: the upstream cluster names, ``inbound|80|http|a.shop.svc.
  cluster.local`` and ``outbound|80||b.shop.svc.cluster.local`` (the ALS mapping's ``parse_cluster``);
- the reporting workload: the Envoy node id ``sidecar~IP~POD.shop~shop.svc.cluster.local`` gives
  ``destination.uid`` of inbound and ``source.uid`` of outbound entries, which kubernetesenv resolves;
- the peer workload, which plain Envoy cannot name (Istio's proxies exchanged peer metadata for
  that): kubernetesenv looks the peer up by IP. Inbound entries have the caller's address as
  ``source.ip`` (each outbound cluster binds its pod's address), outbound entries the callee's
  listener address as ``destination.ip``. That needs the pods' own IPs and an instance passing
  ``destination_ip`` (the stock Istio ``attributes`` instance passes only ``source_ip``).
- the transaction key: the ALS loggers log ``x-transaction-id`` (``additional_request_headers_to_log``;
  the first hop's inbound entry logs the header the ext_authz answer added); every entry carries
  its request id (``request.id``), the key of a request that has no transaction id (the denied one).

The calls, hence the three hops of one transaction:

0. client -> edge: reported by the edge's inbound side only (the client is outside the mesh, its
   workload ``unknown``); depth 0;
1. edge -> a: the edge's outbound record and a's inbound record joined into one hop; depth 1,
   parent 0;
2. a -> b: a's outbound record and b's inbound record; depth 2, parent 1.

The edge is a service with a sidecar, not a bare gateway Envoy: a gateway's single listener logs
one entry per request, the outbound one (Istio's gateways report as ``source``), so the call into
the edge would not be a hop. Each inbound ext_authz check is a decision of the transaction (on hop
0, 1 and 2: kubernetesenv names their workloads too). A request with ``x-user: blocked`` is denied
at the edge's inbound ext_authz: one hop (403, flags UAEX) and the deny decision, in the feed and
in its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mixerd.console.correlate import request_id_key
from mixerd.server.app import default_config_text

from .envoy_proc import EnvoyProcess, envoy_binary, start_envoy
from .mixerd_proc import MixerdProcess, start_mixerd

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "shop"
ALLOWED = 3
"""Allowed transactions sent through the chain."""
DEADLINE_S = 20.0
_T = "type.googleapis.com/envoy.extensions."


@dataclass(frozen=True)
class Pod:
    app: str
    ip: str
    hash: str

    @property
    def workload(self) -> str:
        return f"{self.app}-v1"

    @property
    def name(self) -> str:
        return f"{self.workload}-{self.hash}-x2k4p"

    @property
    def host(self) -> str:
        return f"{self.app}.{NS}.svc.cluster.local"

    @property
    def node_id(self) -> str:
        return f"sidecar~{self.ip}~{self.name}.{NS}~{NS}.svc.cluster.local"


EDGE = Pod("edge", "127.0.0.11", "7f6d5c4b3")
A = Pod("a", "127.0.0.12", "6c8f9d7b5")
B = Pod("b", "127.0.0.13", "5b7e8c6a4")
CHAIN = (EDGE, A, B)


def free_ports(ip: str, n: int) -> list[int]:
    """``n`` distinct TCP ports nothing listens on at ``ip`` (free when asked; bind them soon)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((ip, 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass(frozen=True)
class Ports:
    admin: int
    inbound: int
    outbound: int
    app: int


# --- mixerd's config ----------------------------------------------------------------------------


def pods_yaml() -> str:
    items = []
    for pod in CHAIN:
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name,
                    "namespace": NS,
                    "labels": {"app": pod.app, "version": "v1", "pod-template-hash": pod.hash},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": f"{pod.workload}-{pod.hash}",
                            "controller": True,
                        }
                    ],
                },
                "spec": {"serviceAccountName": pod.app, "containers": [{"name": pod.app}]},
                "status": {"podIP": pod.ip},
            }
        )
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)


def kubernetesenv_config(pods_file: Path) -> str:
    """kubernetesenv over a pods file, looking both peers up by uid, else by IP."""
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: pods, namespace: istio-system}}
spec:
  compiledAdapter: kubernetesenv
  params: {{podsFile: {pods_file}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: peers, namespace: istio-system}}
spec:
  compiledTemplate: kubernetes
  params:
    source_uid: source.uid | ""
    source_ip: source.ip | ip("0.0.0.0")
    destination_uid: destination.uid | ""
    destination_ip: destination.ip | ip("0.0.0.0")
    destination_port: destination.port | 0
  attributeBindings:
    source.namespace: $out.source_namespace | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
    source.workload.name: $out.source_workload_name | "unknown"
    source.workload.namespace: $out.source_workload_namespace | "unknown"
    destination.namespace: $out.destination_namespace | "unknown"
    destination.labels: $out.destination_labels | emptyStringMap()
    destination.workload.name: $out.destination_workload_name | "unknown"
    destination.workload.namespace: $out.destination_workload_namespace | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: peers, namespace: istio-system}}
spec:
  actions:
  - {{handler: pods, instances: [peers]}}
"""


# --- Envoy --------------------------------------------------------------------------------------


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _cluster(
    name: str, ip: str, port: int, *, http2: bool = False, bind: str | None = None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(ip, port)}}]}],
        },
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if bind is not None:
        # The callee's inbound entries then have this pod's address as source.ip.
        c["upstream_bind_config"] = {"source_address": {"address": bind, "port_value": 0}}
    return c


def _als(log_name: str) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": _T + "access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": log_name,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd"}},
                "buffer_flush_interval": "0.1s",
            },
            # The transaction key; the request id comes with every entry (request.id).
            "additional_request_headers_to_log": ["x-transaction-id"],
        },
    }


def _listener(
    name: str, ip: str, port: int, cluster: str, filters: list[dict[str, Any]], route_extra: dict[str, Any]
) -> dict[str, Any]:
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": _T + "filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "always_set_request_id_in_response": True,
        "access_log": [_als(name)],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}, **route_extra}],
                }
            ]
        },
        "http_filters": [*filters, router],
    }
    return {
        "name": name,
        "address": _address(ip, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def sidecar_config(pod: Pod, ports: Ports, mixerd_port: int, upstream: tuple[Pod, Ports] | None) -> str:
    """One pod's sidecar: the inbound listener (ext_authz, then the app) and, when the app calls
    another service, the outbound listener (to that service's inbound listener)."""
    inbound_cluster = f"inbound|80|http|{pod.host}"
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": _T + "filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "mixerd"}, "timeout": "5s"},
            "failure_mode_allow": False,
        },
    }
    # The namespace whose rules apply and the destination service, as Istio's sidecar told Mixer.
    per_route = {
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": _T + "filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "check_settings": {"context_extensions": {"namespace": NS, "service.host": pod.host}},
            }
        }
    }
    listeners = [_listener("inbound", pod.ip, ports.inbound, inbound_cluster, [ext_authz], per_route)]
    clusters = [
        _cluster("mixerd", "127.0.0.1", mixerd_port, http2=True),
        _cluster(inbound_cluster, pod.ip, ports.app),
    ]
    if upstream is not None:
        callee, callee_ports = upstream
        outbound_cluster = f"outbound|80||{callee.host}"
        listeners.append(_listener("outbound", pod.ip, ports.outbound, outbound_cluster, [], {}))
        clusters.append(_cluster(outbound_cluster, callee.ip, callee_ports.inbound, bind=pod.ip))
    config = {
        "admin": {"address": _address("127.0.0.1", ports.admin)},
        "node": {"id": pod.node_id, "cluster": f"{pod.app}.{NS}"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    return yaml.safe_dump(config, sort_keys=False)


# --- the apps -----------------------------------------------------------------------------------


@dataclass
class App:
    pod: Pod
    runner: web.AppRunner
    session: aiohttp.ClientSession
    seen: list[dict[str, str]] = field(default_factory=list)
    """The headers of every request the app received, lower-case names."""

    async def stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


async def start_app(pod: Pod, port: int, outbound: str | None, callee: Pod | None) -> App:
    """An app on ``pod.ip:port`` that records the headers it gets and, with a callee, calls it
    through ``outbound`` (its sidecar's outbound listener), forwarding ``x-transaction-id``."""
    holder: list[App] = []

    async def handle(request: web.Request) -> web.Response:
        app = holder[0]
        app.seen.append({k.lower(): v for k, v in request.headers.items()})
        if outbound is None or callee is None:
            return web.json_response({"service": pod.app})
        headers = {"Host": callee.host}
        tid = request.headers.get("x-transaction-id")
        if tid is not None:
            headers["x-transaction-id"] = tid
        async with app.session.get(outbound + request.path_qs, headers=headers) as resp:
            body = await resp.json()
            return web.json_response({"service": pod.app, "next": body}, status=resp.status)

    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, pod.ip, port).start()
    app = App(pod, runner, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)))
    holder.append(app)
    return app


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Sent:
    status: int
    request_id: str
    """The edge's x-request-id (Envoy returns it: ``always_set_request_id_in_response``)."""
    client_headers: dict[str, str]


@dataclass
class Stack:
    mixerd: MixerdProcess
    envoys: list[EnvoyProcess]
    apps: dict[str, App]
    session: aiohttp.ClientSession
    edge_url: str
    allowed: list[Sent] = field(default_factory=list)
    denied: Sent | None = None

    async def api(self, path: str, expect: int = 200) -> Any:
        url = f"http://127.0.0.1:{self.mixerd.monitoring_port}{path}"
        async with self.session.get(url) as resp:
            body = await resp.json()
            assert resp.status == expect, (path, resp.status, body)
            return body

    async def send(self, user: str) -> Sent:
        headers = {"x-user": user}
        async with self.session.get(self.edge_url + "/checkout?cart=7", headers=headers) as resp:
            await resp.read()
            return Sent(resp.status, resp.headers.get("x-request-id", ""), headers)

    def diagnostics(self) -> str:
        logs = [f"--- envoy {e.log_path} ---\n{e.log()[-2000:]}" for e in self.envoys]
        return "\n".join([f"--- mixerd ---\n{self.mixerd.log()[-4000:]}", *logs])


async def poll(
    what: str, probe: Callable[[], Awaitable[Any]], stack: Stack, timeout: float = DEADLINE_S
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the last answer and the logs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last: {last!r}\n" + stack.diagnostics()
            )
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    envoy_binary()  # fails (never skips) with an install hint when Envoy is missing
    tmp = tmp_path_factory.mktemp("console-envoy")
    pods = tmp / "pods.yaml"
    pods.write_text(pods_yaml())
    default = tmp / "default-config.yaml"
    default.write_text(default_config_text())
    overlay = tmp / "kubernetesenv.yaml"
    overlay.write_text(kubernetesenv_config(pods))
    store = "sqlite:///" + str(tmp / "console.db").lstrip("/")
    mixerd = await asyncio.to_thread(start_mixerd, tmp, [default, overlay], "--console-store", store)

    admin = free_ports("127.0.0.1", len(CHAIN))
    ports = {p.app: Ports(admin[i], *free_ports(p.ip, 3)) for i, p in enumerate(CHAIN)}
    apps: dict[str, App] = {}
    envoys: list[EnvoyProcess] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        for caller, callee in zip(CHAIN, (*CHAIN[1:], None), strict=True):
            outbound = f"http://{caller.ip}:{ports[caller.app].outbound}" if callee is not None else None
            apps[caller.app] = await start_app(caller, ports[caller.app].app, outbound, callee)

        def envoy(caller: Pod, callee: Pod | None) -> EnvoyProcess:
            upstream = (callee, ports[callee.app]) if callee is not None else None
            config = sidecar_config(caller, ports[caller.app], mixerd.grpc_port, upstream)
            return start_envoy(tmp / f"envoy-{caller.app}", config, ports[caller.app].admin, concurrency=1)

        started = await asyncio.gather(
            *(
                asyncio.to_thread(envoy, caller, callee)
                for caller, callee in zip(CHAIN, (*CHAIN[1:], None), strict=True)
            ),
            return_exceptions=True,
        )
        envoys = [e for e in started if isinstance(e, EnvoyProcess)]
        for e in started:
            if isinstance(e, BaseException):
                raise e
        stack = Stack(mixerd, envoys, apps, session, f"http://{EDGE.ip}:{ports['edge'].inbound}")
        for _ in range(ALLOWED):
            stack.allowed.append(await stack.send("alice"))
        stack.denied = await stack.send("blocked")
        yield stack
    finally:
        await session.close()
        for app in apps.values():
            await app.stop()
        for e in envoys:
            await asyncio.to_thread(e.stop)
        assert await asyncio.to_thread(mixerd.stop) == 0, mixerd.log()


def txid(sent: Sent) -> str:
    return request_id_key(sent.request_id)


async def transaction(stack: Stack, sent: Sent, records: int, decisions: int) -> dict[str, Any]:
    """The transaction of ``sent`` once its proxy ``records`` and ``decisions`` are in the store."""

    async def probe() -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{stack.mixerd.monitoring_port}/api/v1/transactions/{txid(sent)}"
        async with stack.session.get(url) as resp:
            if resp.status != 200:
                return None
            body: dict[str, Any] = await resp.json()
        seen = sum(len(h["reporters"]) for h in body["hops"])
        return body if seen >= records and len(body["decisions"]) >= decisions else None

    result: dict[str, Any] = await poll(f"transaction {txid(sent)}", probe, stack)
    return result


# --- the tests ----------------------------------------------------------------------------------


async def test_requests_went_through_the_chain(stack: Stack) -> None:
    assert [s.status for s in stack.allowed] == [200] * ALLOWED, stack.diagnostics()
    assert stack.denied is not None and stack.denied.status == 403
    assert all(s.request_id for s in [*stack.allowed, stack.denied])
    assert len({s.request_id for s in stack.allowed}) == ALLOWED


async def test_transaction_id_is_minted_at_the_edge(stack: Stack) -> None:
    # The client sent no x-transaction-id; the edge's ext_authz answer added one, made of the
    # request id the edge's Envoy generated; edge, a and b all received it (edge and a forward it,
    # while every call gets a request id of its own).
    for i, sent in enumerate(stack.allowed):
        assert "x-transaction-id" not in sent.client_headers
        for app in ("edge", "a", "b"):
            headers = stack.apps[app].seen[i]
            assert headers["x-transaction-id"] == sent.request_id, (app, headers)
        assert stack.apps["edge"].seen[i]["x-request-id"] == sent.request_id
        assert stack.apps["a"].seen[i]["x-request-id"] != sent.request_id
        assert stack.apps["b"].seen[i]["x-request-id"] != stack.apps["a"].seen[i]["x-request-id"]
    # The denied request never reached the edge app.
    assert len(stack.apps["edge"].seen) == ALLOWED


def _peer(hop: dict[str, Any], side: str) -> tuple[str, str]:
    return hop[side]["namespace"], hop[side]["workload"]


async def test_one_transaction_with_three_hops_in_order(stack: Stack) -> None:
    sent = stack.allowed[0]
    # 5 records: edge inbound; edge outbound + a inbound; a outbound + b inbound.
    body = await transaction(stack, sent, records=5, decisions=3)
    assert body["id"] == txid(sent)
    hops = body["hops"]
    assert len(hops) == 3, hops
    client_edge, edge_a, a_b = hops

    assert _peer(client_edge, "source") == ("unknown", "unknown")
    assert _peer(client_edge, "destination") == (NS, "edge-v1")
    assert client_edge["destination"]["service"] == EDGE.host
    assert (client_edge["depth"], client_edge["parent"]) == (0, None)
    assert client_edge["reporters"] == ["destination"]
    assert client_edge["request"]["id"] == sent.request_id
    assert client_edge["request"]["path"] == "/checkout?cart=7"

    assert _peer(edge_a, "source") == (NS, "edge-v1")
    assert _peer(edge_a, "destination") == (NS, "a-v1")
    assert edge_a["destination"]["service"] == A.host
    assert (edge_a["destination"]["app"], edge_a["destination"]["version"]) == ("a", "v1")
    assert (edge_a["depth"], edge_a["parent"]) == (1, 0)
    assert edge_a["reporters"] == ["source", "destination"]
    assert edge_a["request"]["host"] == A.host

    assert _peer(a_b, "source") == (NS, "a-v1")
    assert _peer(a_b, "destination") == (NS, "b-v1")
    assert a_b["destination"]["service"] == B.host
    assert (a_b["depth"], a_b["parent"]) == (2, 1)
    assert a_b["reporters"] == ["source", "destination"]
    assert edge_a["request"]["id"] != a_b["request"]["id"]

    for hop in hops:
        assert hop["response"] == {"code": 200, "flags": ""}, hop
        assert hop["error"] is False and hop["denied"] is False
        assert hop["request"]["method"] == "GET"
    starts = [h["start"] for h in hops]
    assert starts == sorted(starts)
    # Each call lies within its parent's.
    durations = [h["duration_ms"] for h in hops]
    assert durations[0] >= durations[1] >= durations[2] > 0, durations

    # The three ext_authz checks (one per inbound sidecar) allowed, each on its own hop.
    decisions = body["decisions"]
    assert [(d["frontend"], d["verdict"]) for d in decisions] == [("ext_authz_grpc", "allow")] * 3
    assert [d["hop"] for d in decisions] == [0, 1, 2], decisions
    assert [d["destination"]["service"] for d in decisions] == [EDGE.host, A.host, B.host]
    assert [_peer(d, "destination") for d in decisions] == [(NS, "edge-v1"), (NS, "a-v1"), (NS, "b-v1")]
    assert [_peer(d, "source") for d in decisions] == [("unknown", "unknown"), (NS, "edge-v1"), (NS, "a-v1")]
    assert {d["transaction_id"] for d in decisions} == {txid(sent)}

    listed = await stack.api("/api/v1/transactions?limit=1000")
    mine = [t for t in listed["transactions"] if t["id"] == txid(sent)]
    assert len(mine) == 1, listed
    summary = mine[0]
    assert summary["hops"] == 3
    assert summary["error"] is False and summary["denied"] is False
    # The first caller is outside the mesh: the root is the edge it called.
    assert summary["root"] == {"namespace": NS, "workload": "edge-v1", "service": EDGE.host}
    assert summary["services"] == sorted([A.host, B.host, EDGE.host])


async def test_every_allowed_request_is_its_own_transaction(stack: Stack) -> None:
    for sent in stack.allowed:
        body = await transaction(stack, sent, records=5, decisions=3)
        assert [(h["depth"], h["parent"]) for h in body["hops"]] == [(0, None), (1, 0), (2, 1)]
    listed = await stack.api("/api/v1/transactions?limit=1000&status=ok")
    ids = {t["id"] for t in listed["transactions"]}
    assert {txid(s) for s in stack.allowed} <= ids
    assert stack.denied is not None and txid(stack.denied) not in ids


async def test_denied_request_in_the_feed_and_in_its_transaction(stack: Stack) -> None:
    sent = stack.denied
    assert sent is not None
    body = await transaction(stack, sent, records=1, decisions=1)
    (hop,) = body["hops"]
    assert hop["response"] == {"code": 403, "flags": "UAEX"}
    assert hop["denied"] is True
    assert _peer(hop, "destination") == (NS, "edge-v1")
    assert hop["request"]["id"] == sent.request_id
    (decision,) = body["decisions"]
    assert decision["verdict"] == "deny"
    assert decision["hop"] == 0
    assert decision["status"]["name"] == "PERMISSION_DENIED"
    assert decision["status"]["message"] == "the user is blocked by mixerd's default policy"
    assert decision["frontend"] == "ext_authz_grpc"
    assert decision["transaction_id"] == txid(sent)
    assert decision["request"]["id"] == sent.request_id
    assert _peer(decision, "destination") == (NS, "edge-v1")
    assert decision["source"]["workload"] == "unknown"

    feed = await stack.api("/api/v1/decisions?verdict=deny&limit=1000")
    (denial,) = [d for d in feed["decisions"] if d["transaction_id"] == txid(sent)]
    assert denial["rule"].startswith("deny-blocked-users"), denial
    assert denial["handler"].startswith("blocked-users"), denial
    assert denial["request"]["path"] == "/checkout?cart=7"
    allowed = await stack.api("/api/v1/decisions?verdict=allow&limit=1000")
    assert sum(d["transaction_id"] == txid(sent) for d in allowed["decisions"]) == 0
    assert len(allowed["decisions"]) >= 3 * ALLOWED

    listed = await stack.api("/api/v1/transactions?status=denied&limit=1000")
    (summary,) = [t for t in listed["transactions"] if t["id"] == txid(sent)]
    assert summary["denied"] is True and summary["hops"] == 1


async def test_graph_has_the_chain_edges_with_counts(stack: Stack) -> None:
    want = {
        f"unknown->wl_{NS}_edge-v1": {"200": ALLOWED, "403": 1},
        f"wl_{NS}_edge-v1->wl_{NS}_a-v1": {"200": ALLOWED},
        f"wl_{NS}_a-v1->wl_{NS}_b-v1": {"200": ALLOWED},
    }
    last: dict[str, Any] = {}

    async def probe() -> dict[str, Any] | None:
        nonlocal last
        last = await stack.api(f"/api/v1/graph?namespaces={NS}&duration=60s&graphType=workload")
        responses = {e["data"]["id"]: e["data"]["traffic"]["responses"] for e in last["elements"]["edges"]}
        return last if responses == want else None

    # Each call counts once although edge -> a and a -> b were reported by both proxies.
    g = await poll(f"the graph's edges {want}", probe, stack)
    edges = {e["data"]["id"]: e["data"] for e in g["elements"]["edges"]}
    front = edges[f"unknown->wl_{NS}_edge-v1"]["traffic"]
    assert front["rates"]["http"] == pytest.approx((ALLOWED + 1) / 60)
    assert front["rates"]["httpDenied"] == pytest.approx(1 / 60)
    assert front["rates"]["httpPercentErr"] == 0
    for edge in edges.values():
        assert edge["traffic"]["protocol"] == "http"
        assert edge["responseTime"] is not None and edge["responseTime"] > 0, edge
    nodes = {n["data"]["id"]: n["data"] for n in g["elements"]["nodes"]}
    assert set(nodes) == {"unknown", f"wl_{NS}_edge-v1", f"wl_{NS}_a-v1", f"wl_{NS}_b-v1"}
    assert nodes["unknown"]["nodeType"] == "unknown"
    for pod in CHAIN:
        node = nodes[f"wl_{NS}_{pod.workload}"]
        assert (node["nodeType"], node["namespace"], node["app"], node["version"]) == (
            "workload",
            NS,
            pod.app,
            "v1",
        )
