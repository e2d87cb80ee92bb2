"""kubernetesenv's API source against a FAKE Kubernetes API server written here.

No real API server can run on our machines (no cluster, no kind/minikube, no etcd), so this test
serves the two calls the adapter makes with aiohttp on 127.0.0.1:0, following the Kubernetes API
conventions the client relies on: a paginated list (``limit``/``continue``, ``resourceVersion`` in
the list's metadata) and a watch (``watch=1&resourceVersion=...``) that streams newline-delimited
JSON events ``ADDED``/``MODIFIED``/``DELETED``, ends with an ``ERROR`` event carrying a ``410``
Status when the version is too old, or refuses the watch with HTTP ``410``. Both make the client
list again. Authentication (bearer token) and TLS (a certificate made with ``openssl``) are
checked too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from mixerd.adapter import Env
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.kubernetesenv import INFO, KubernetesEnvHandler, PodCache
from mixerd.adapters.kubernetesenv.sources import ApiSource
from mixerd.attribute import IPAddress
from mixerd.config.k8s.api import in_cluster_config, load_kubeconfig

PODS = "/api/v1/pods"
REPLICASETS = "/apis/apps/v1/replicasets"
RCS = "/api/v1/replicationcontrollers"
PATHS = (PODS, REPLICASETS, RCS)
TOKEN = "s3cr3t"
_END = object()
_GONE = object()


def pod_obj(name: str, ns: str = "default", ip: str = "", rs: str = "", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels)}
    if rs:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True}
        ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {
            "serviceAccountName": f"{name}-sa",
            "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}],
        },
        "status": {"podIP": ip} if ip else {},
    }


def rs_obj(name: str, deployment: str, ns: str = "default") -> dict[str, Any]:
    owner = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "controller": True}]
    return {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owner},
    }


class FakeKubeApi:
    """Objects per collection, a resource version counter, and one event queue per collection."""

    def __init__(self, page_size: int = 2) -> None:
        self.token = TOKEN
        self.page_size = page_size
        self.objects: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in PATHS}
        self.queues: dict[str, asyncio.Queue[object]] = {p: asyncio.Queue() for p in PATHS}
        self.version = 100
        self.lists: Counter[str] = Counter()
        self.pages: Counter[str] = Counter()
        self.watches: list[tuple[str, str]] = []
        self.refuse_next_watch: set[str] = set()
        self.hold_lists: asyncio.Event | None = None
        self.peer_certs: list[Any] = []
        """The client certificate of each TLS request (``None`` when none was presented)."""
        self.url = ""
        self.runner: web.AppRunner | None = None

    # -- state changes (the test's side) ------------------------------------------------------

    def put(self, path: str, obj: dict[str, Any], event: str | None = None) -> None:
        """Store ``obj``; with ``event`` also send it to watchers (``None``: a silent change)."""
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        self.objects[path][key] = obj
        if event:
            self.queues[path].put_nowait((event, obj))

    def remove(self, path: str, ns: str, name: str, event: bool = True) -> None:
        obj = self.objects[path].pop(f"{ns}/{name}")
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        if event:
            self.queues[path].put_nowait(("DELETED", obj))

    def expire(self, path: str) -> None:
        """End the current watch with an ERROR event: 410 Gone."""
        self.queues[path].put_nowait(_GONE)

    def end_watch(self, path: str) -> None:
        self.queues[path].put_nowait(_END)

    # -- HTTP --------------------------------------------------------------------------------

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.transport is not None and request.transport.get_extra_info("sslcontext") is not None:
            self.peer_certs.append(request.transport.get_extra_info("peercert"))
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            status = {"kind": "Status", "status": "Failure", "message": "Unauthorized", "code": 401}
            return web.json_response(status, status=401)
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        path = request.path
        if request.query.get("watch") == "1":
            return await self._watch(request, path)
        if self.hold_lists is not None:
            await self.hold_lists.wait()
        offset = int(request.query.get("continue") or 0)
        if offset == 0:
            self.lists[path] += 1
        self.pages[path] += 1
        limit = min(int(request.query.get("limit") or 500), self.page_size)
        keys = sorted(self.objects[path])
        items = []
        for key in keys[offset : offset + limit]:
            item = dict(self.objects[path][key])
            item.pop("kind", None)  # list items carry no kind, as in the real API
            items.append(item)
        meta: dict[str, Any] = {"resourceVersion": str(self.version)}
        if offset + limit < len(keys):
            meta["continue"] = str(offset + limit)
        return web.json_response({"kind": "List", "apiVersion": "v1", "metadata": meta, "items": items})

    async def _watch(self, request: web.Request, path: str) -> web.StreamResponse:
        self.watches.append((path, request.query.get("resourceVersion", "")))
        if path in self.refuse_next_watch:
            self.refuse_next_watch.discard(path)
            gone = {"kind": "Status", "status": "Failure", "message": "too old resource version", "code": 410}
            return web.json_response(gone, status=410)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        queue = self.queues[path]
        while True:
            item = await queue.get()
            if item is _END:
                break
            if item is _GONE:
                status = {
                    "kind": "Status",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version",
                }
                await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                break
            assert isinstance(item, tuple)
            event, obj = item
            await resp.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        for path in PATHS:
            app.router.add_get(path, self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        for q in self.queues.values():
            q.put_nowait(_END)
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApi]:
    server = FakeKubeApi()
    server.put(REPLICASETS, rs_obj("productpage-v1-6b746f74dc", "productpage-v1"))
    server.put(
        PODS,
        pod_obj(
            "productpage-v1-6b746f74dc-aaaaa",
            ip="10.44.0.11",
            rs="productpage-v1-6b746f74dc",
            app="productpage",
        ),
    )
    server.put(PODS, pod_obj("ratings-v1-0", ip="10.44.0.12", app="ratings"))
    server.put(PODS, pod_obj("details-v1-0", ip="10.44.0.13", app="details"))
    server.put(PODS, pod_obj("curl", ns="tools", ip="10.44.9.9"))
    server.put(PODS, pod_obj("pending", ns="tools"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command line tool)."""
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(crt),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return crt, key


def kubeconfig(
    tmp_path: Path, server: str, user: dict[str, Any], cluster: dict[str, Any] | None = None
) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "mixerd"}}],
                "clusters": [{"name": "fake", "cluster": {"server": server, **(cluster or {})}}],
                "users": [{"name": "mixerd", "user": user}],
            }
        )
    )
    return path


INSTANCE = (
    "kubernetes",
    {
        "source_uid": 'source.uid | ""',
        "source_ip": 'source.ip | ip("0.0.0.0")',
        "destination_uid": 'destination.uid | ""',
        "destination_port": "destination.port | 0",
    },
)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Harness:
    def __init__(self, config: dict[str, Any]) -> None:
        self.harness = AdapterHarness(INFO, config, {"attributes": INSTANCE})
        handler = self.harness.handler
        assert isinstance(handler, KubernetesEnvHandler)
        self.handler = handler
        source = handler.source
        assert isinstance(source, ApiSource)
        self.source = source

    def outputs(self, uid: str, port: int = 0) -> dict[str, Any]:
        builder = self.harness.builders["attributes"]
        return self.handler.generate_kubernetes(
            builder.build({"source.uid": uid, "destination.uid": uid, "destination.port": port})
        )

    def source_field(self, uid: str, field: str) -> Any:
        return self.outputs(uid).get(f"source_{field}")

    async def close(self) -> None:
        await self.harness.close()


@pytest.fixture
async def harnesses() -> AsyncIterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        await h.close()


async def connect(harnesses: list[Harness], config: dict[str, Any]) -> Harness:
    h = Harness(config)
    harnesses.append(h)
    assert await h.handler.wait_synced(5)
    return h


PRODUCTPAGE = "kubernetes://productpage-v1-6b746f74dc-aaaaa.default"


async def test_list_then_follow_watch_events(
    api: FakeKubeApi, tmp_path: Path, harnesses: list[Harness]
) -> None:
    h = await connect(harnesses, {"kubeconfigPath": str(kubeconfig(tmp_path, api.url, {"token": TOKEN}))})
    assert api.pages[PODS] == 3 and api.lists[PODS] == 1  # 5 pods in pages of 2
    assert len(h.handler.cache) == 5 and h.handler.cache.controllers == 1
    out = h.outputs(PRODUCTPAGE, 8080)
    assert out["source_workload_name"] == "productpage-v1"
    assert out["source_owner"] == "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1"
    assert out["destination_container_name"] == "app"
    assert h.source_field("kubernetes://pending.tools", "pod_name") == "pending"
    assert "source_pod_ip" not in h.outputs("kubernetes://pending.tools")

    api.put(PODS, pod_obj("reviews-v1-5d9f-x", ip="10.44.0.20", rs="reviews-v1-5d9f", app="reviews"), "ADDED")
    await eventually(lambda: h.source_field("kubernetes://reviews-v1-5d9f-x.default", "pod_name") is not None)
    assert h.source_field("kubernetes://reviews-v1-5d9f-x.default", "workload_name") == "reviews-v1-5d9f"
    api.put(REPLICASETS, rs_obj("reviews-v1-5d9f", "reviews-v1"), "ADDED")
    await eventually(
        lambda: h.source_field("kubernetes://reviews-v1-5d9f-x.default", "workload_name") == "reviews-v1"
    )

    api.put(PODS, pod_obj("pending", ns="tools", ip="10.44.9.10", stage="running"), "MODIFIED")
    await eventually(lambda: h.source_field("kubernetes://pending.tools", "labels") == {"stage": "running"})
    builder = h.harness.builders["attributes"]
    by_ip = h.handler.generate_kubernetes(builder.build({"source.ip": IPAddress.parse("10.44.9.10")}))
    assert by_ip["source_pod_name"] == "pending"

    api.remove(PODS, "tools", "curl")
    await eventually(lambda: h.source_field("kubernetes://curl.tools", "pod_name") is None)
    assert api.lists[PODS] == 1  # all of that without listing again
    assert all(version != "" for _, version in api.watches)


def gone_relists_without_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """410 is the normal end of a watch that fell behind: listed again at once, not as an error."""
    relists = [r for r in caplog.records if "listing again" in r.getMessage()]
    assert relists and all(r.levelno == logging.INFO and " in " not in r.getMessage() for r in relists)


async def test_a_410_error_event_makes_the_client_list_again(
    api: FakeKubeApi, tmp_path: Path, harnesses: list[Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = await connect(harnesses, {"kubeconfigPath": str(kubeconfig(tmp_path, api.url, {"token": TOKEN}))})
    api.put(PODS, pod_obj("missed", ip="10.44.3.3"))  # changes the watch never reported
    api.remove(PODS, "tools", "curl", event=False)
    api.expire(PODS)
    await eventually(lambda: api.lists[PODS] == 2)
    await eventually(lambda: h.source_field("kubernetes://missed.default", "pod_name") == "missed")
    assert h.source_field("kubernetes://curl.tools", "pod_name") is None
    reflector = next(r for r in h.source.reflectors if r.resource.path == PODS)
    assert reflector.lists == 2 and reflector.last_error is None
    gone_relists_without_backoff(caplog)
    # the watch goes on after the re-list
    api.put(PODS, pod_obj("after", ip="10.44.3.4"), "ADDED")
    await eventually(lambda: h.source_field("kubernetes://after.default", "pod_name") == "after")


async def test_a_watch_refused_with_http_410_makes_the_client_list_again(
    api: FakeKubeApi, tmp_path: Path, harnesses: list[Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = await connect(harnesses, {"kubeconfigPath": str(kubeconfig(tmp_path, api.url, {"token": TOKEN}))})
    api.put(PODS, pod_obj("missed", ip="10.44.3.3"))
    api.refuse_next_watch.add(PODS)
    api.end_watch(PODS)  # the server ends the watch (as on its timeout); the client watches again
    await eventually(lambda: api.lists[PODS] == 2)
    await eventually(lambda: h.source_field("kubernetes://missed.default", "pod_name") == "missed")
    gone_relists_without_backoff(caplog)


async def test_a_rejected_token_is_retried_with_backoff(api: FakeKubeApi, tmp_path: Path) -> None:
    config = load_kubeconfig(kubeconfig(tmp_path, api.url, {"token": "wrong"}))
    env = Env("kubernetesenv.test")
    source = ApiSource(config, PodCache(), env, watch_seconds=60, backoff=(0.01, 0.05))
    try:
        pods = source.reflectors[0]
        await eventually(lambda: pods.last_error is not None)
        assert pods.last_error is not None and "401" in pods.last_error
        assert not source.synced and len(source.cache) == 0
        api.token = "wrong"  # the server now accepts it: the next retry succeeds
        assert await source.wait_synced(5)
        assert len(source.cache) == 5
    finally:
        await env.aclose()


async def test_malformed_objects_are_skipped(
    api: FakeKubeApi, tmp_path: Path, harnesses: list[Harness]
) -> None:
    api.put(PODS, pod_obj("bad-ip", ip="not-an-ip"))
    h = await connect(harnesses, {"kubeconfigPath": str(kubeconfig(tmp_path, api.url, {"token": TOKEN}))})
    assert h.source.skipped == 1
    assert len(h.handler.cache) == 5


@pytest.mark.parametrize("auth", ["token-file", "client-certificate"])
async def test_tls_with_a_ca(
    tmp_path: Path, cert: tuple[Path, Path], harnesses: list[Harness], auth: str
) -> None:
    crt, key = cert
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(crt, key)
    api = FakeKubeApi()
    user: dict[str, Any]
    if auth == "token-file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        user = {"tokenFile": "token"}
    else:
        # the server requires a client certificate signed by its CA (here: the same self-signed one)
        server_ssl.verify_mode = ssl.CERT_REQUIRED
        server_ssl.load_verify_locations(crt)
        api.token = ""
        user = {
            "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        }
    api.put(PODS, pod_obj("secure", ip="10.1.1.1"))
    await api.start(server_ssl)
    try:
        ca = {"certificate-authority-data": base64.b64encode(crt.read_bytes()).decode()}
        path = kubeconfig(tmp_path, api.url, user, ca)
        h = await connect(harnesses, {"kubeconfigPath": str(path)})
        assert h.source_field("kubernetes://secure.default", "pod_name") == "secure"
        assert api.url.startswith("https://")
        if auth == "client-certificate":
            assert api.peer_certs and all(c is not None for c in api.peer_certs)
    finally:
        await api.stop()


async def test_in_cluster_service_account(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    crt, key = cert
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(crt, key)
    api = FakeKubeApi()
    api.put(PODS, pod_obj("incluster", ip="10.1.1.2"))
    await api.start(server_ssl)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    (sa / "ca.crt").write_bytes(crt.read_bytes())
    port = api.url.rsplit(":", 1)[1]
    config = in_cluster_config({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, sa)
    env = Env("kubernetesenv.test")
    try:
        source = ApiSource(config, PodCache(), env, watch_seconds=60)
        assert await source.wait_synced(5)
        assert source.cache.pod("kubernetes://incluster.default") is not None
    finally:
        await env.aclose()
        await api.stop()


async def test_a_replacement_handler_serves_the_old_pods_until_its_list(
    api: FakeKubeApi, tmp_path: Path, harnesses: list[Harness]
) -> None:
    config = {"kubeconfigPath": str(kubeconfig(tmp_path, api.url, {"token": TOKEN}))}
    first = await connect(harnesses, config)
    assert first.source_field(PRODUCTPAGE, "workload_name") == "productpage-v1"
    api.hold_lists = asyncio.Event()
    second = Harness({**config, "cacheRefreshDuration": "60s"})
    harnesses.append(second)
    assert not second.handler.synced
    assert second.source_field(PRODUCTPAGE, "workload_name") == "productpage-v1"  # copied, not listed
    api.hold_lists.set()
    assert await second.handler.wait_synced(5)
    assert second.handler.cache is not first.handler.cache
