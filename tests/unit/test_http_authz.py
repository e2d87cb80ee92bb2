"""The HTTP forward-auth endpoint over a real runtime (an aiohttp client, MemoryStore config)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from mixerd.api.ext_authz import HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.runtime import Runtime
from tests.ext_authz_support import BOOM_POLICY, start_runtime


class _Client:
    """Requests to one running endpoint (paths relative to it)."""

    def __init__(self, server: HttpAuthzServer, port: int) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()

    async def request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.request(method, self.base + path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def close(self) -> None:
        await self.session.close()
        await self.server.close(0.5)


MakeClient = Callable[..., Awaitable[_Client]]


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = await start_runtime(BOOM_POLICY)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
def make_client() -> MakeClient:
    """The endpoint as ``mixerd serve`` runs it, on a free loopback port."""

    async def make(runtime: Runtime, options: HttpAuthzOptions | None = None) -> _Client:
        server = build_http_authz_server(runtime, options)
        return _Client(server, await server.start("127.0.0.1", 0))

    return make


async def test_allowed_is_200_with_an_empty_body(runtime: Runtime, make_client: MakeClient) -> None:
    client = await make_client(runtime)
    try:
        for method in ("GET", "POST", "DELETE"):
            resp = await client.request(method, "/any/path?x=1")
            assert resp.status == 200
            assert resp.headers["Content-Length"] == "0"
            assert await resp.read() == b""
            assert "x-mixerd-status" not in resp.headers
    finally:
        await client.close()


async def test_header_operations_come_back_as_response_headers(
    runtime: Runtime, make_client: MakeClient
) -> None:
    client = await make_client(runtime)
    try:
        resp = await client.get("/_mixerd", headers={"X-User": "alice", "X-Original-URI": "/orders"})
        assert resp.status == 200
        assert resp.headers["x-user-id"] == "alice"
        assert resp.headers["x-authz"] == "ok"
        assert await resp.read() == b""
    finally:
        await client.close()


async def test_denied_is_403_with_a_short_text_body(runtime: Runtime, make_client: MakeClient) -> None:
    client = await make_client(runtime)
    try:
        resp = await client.get("/_mixerd", headers={"X-Deny": "true", "X-User": "alice"})
        assert resp.status == 403
        assert resp.headers["x-mixerd-status"] == "PERMISSION_DENIED"
        assert "x-user-id" not in resp.headers  # header operations apply only to allowed requests
        body = await resp.text()
        assert "blocked by x-deny" in body
        assert len(body.encode()) <= 200
    finally:
        await client.close()


async def test_namespace_from_extension_headers_selects_namespace_rules(
    runtime: Runtime, make_client: MakeClient
) -> None:
    client = await make_client(runtime, HttpAuthzOptions(extension_headers=True))
    try:
        shop = {"X-Mixerd-Ext-Namespace": "shop", "X-Original-URI": "/admin/users"}
        resp = await client.get("/_mixerd", headers=shop)
        assert resp.status == 403
        assert "admin is closed" in await resp.text()
        resp = await client.get("/_mixerd", headers={"X-Original-URI": "/admin/users"})
        assert resp.status == 200
    finally:
        await client.close()


async def test_extension_headers_are_ignored_unless_enabled(
    runtime: Runtime, make_client: MakeClient
) -> None:
    client = await make_client(runtime)
    try:
        resp = await client.get(
            "/_mixerd", headers={"X-Mixerd-Ext-Namespace": "shop", "X-Original-URI": "/admin"}
        )
        assert resp.status == 200
    finally:
        await client.close()


async def test_prefix_is_stripped_from_the_request_line(runtime: Runtime, make_client: MakeClient) -> None:
    client = await make_client(runtime, HttpAuthzOptions(prefix="/authz", extension_headers=True))
    try:
        resp = await client.post("/authz/admin/x?y=1", headers={"X-Mixerd-Ext-Namespace": "shop"})
        assert resp.status == 403
        resp = await client.post("/authz/public", headers={"X-Mixerd-Ext-Namespace": "shop"})
        assert resp.status == 200
    finally:
        await client.close()


async def test_quota_exhaustion_is_429_with_rate_limit_headers(
    runtime: Runtime, make_client: MakeClient
) -> None:
    client = await make_client(runtime, HttpAuthzOptions(extension_headers=True))
    try:
        q = {"X-Mixerd-Ext-mixerd.quotas": "requestcount", "X-User": "q1"}
        for _ in range(3):
            resp = await client.get("/_mixerd", headers=q)
            assert resp.status == 200
            assert resp.headers["x-user-id"] == "q1"
        resp = await client.get("/_mixerd", headers=q)
        assert resp.status == 429
        assert resp.headers["x-mixerd-status"] == "RESOURCE_EXHAUSTED"
        assert resp.headers["x-ratelimit-limit"] == "3"
        assert resp.headers["x-ratelimit-remaining"] == "0"
        assert int(resp.headers["retry-after"]) > 0
        assert await resp.text() == "quota exhausted: requestcount"
        # Another user has their own counter; requests that ask for no quota are not charged.
        assert (await client.get("/_mixerd", headers={**q, "X-User": "q2"})).status == 200
        assert (await client.get("/_mixerd", headers={"X-User": "q1"})).status == 200
        # A charge larger than the limit is refused outright.
        big = {"X-Mixerd-Ext-mixerd.quotas": "requestcount=5", "X-User": "q3"}
        assert (await client.get("/_mixerd", headers=big)).status == 429
    finally:
        await client.close()


async def test_a_failing_handler_gives_500_without_internal_details(
    runtime: Runtime, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(runtime)
    try:
        with caplog.at_level(logging.ERROR):
            resp = await client.get("/_mixerd", headers={"X-Boom": "true", "X-Request-Id": "rid-7"})
        assert resp.status == 500
        body = await resp.text()
        # mixerd's own id (the caller's x-request-id is not trusted as one), logged with the
        # detail, the handler and the caller's x-request-id on one line.
        rid = body.removeprefix("handler failure (request id ").removesuffix(")")
        assert body == f"handler failure (request id {rid})" and len(rid) == 16 and rid != "rid-7"
        assert resp.headers["x-mixerd-status"] == "INTERNAL"
        [line] = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
        assert "hunter2" in line and "x-request-id rid-7" in line and "handler boom" in line
        # Without x-request-id the line has mixerd's id only.
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            resp = await client.get("/_mixerd", headers={"X-Boom": "true"})
        rid = (await resp.text()).rsplit(" ", 1)[1].rstrip(")")
        assert len(rid) == 16 and rid in caplog.text and "x-request-id" not in caplog.text
        # The endpoint keeps serving.
        assert (await client.get("/_mixerd")).status == 200
    finally:
        await client.close()


async def test_a_malformed_request_is_400(runtime: Runtime, make_client: MakeClient) -> None:
    client = await make_client(runtime)
    try:
        resp = await client.get("/_mixerd", headers={"X-Real-IP": "999.1.1.1"})
        assert resp.status == 400
        assert "X-Real-IP" in await resp.text()
        bad_quota = {"X-Mixerd-Ext-mixerd.quotas": "requestcount=0"}
        client2 = await make_client(runtime, HttpAuthzOptions(extension_headers=True))
        try:
            resp = await client2.get("/_mixerd", headers=bad_quota)
            assert resp.status == 400
        finally:
            await client2.close()
        assert (await client.get("/_mixerd")).status == 200
    finally:
        await client.close()


async def test_source_ip_from_x_real_ip_reaches_rules(runtime: Runtime, make_client: MakeClient) -> None:
    extra = """
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-ip, namespace: istio-system}
spec:
  match: source.ip == ip("192.0.2.66")
  actions: [{handler: deny-header, instances: [denycheck]}]
"""
    rt = await start_runtime(extra)
    client = await make_client(rt)
    try:
        assert (await client.get("/", headers={"X-Real-IP": "192.0.2.66"})).status == 403
        assert (await client.get("/", headers={"X-Forwarded-For": "192.0.2.66, 10.0.0.1"})).status == 403
        assert (await client.get("/", headers={"X-Real-IP": "192.0.2.67"})).status == 200
    finally:
        await client.close()
        await rt.close()
