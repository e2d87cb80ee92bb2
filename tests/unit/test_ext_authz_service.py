"""The ext_authz gRPC servicer over a real runtime, called through an in-process gRPC channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from mixerd.config import MemoryStore, parse_text
from tests.ext_authz_support import BOOM_POLICY, InProcessMixerd, start_mixerd_in_process


@pytest.fixture
async def mixerd() -> AsyncIterator[InProcessMixerd]:
    m = await start_mixerd_in_process(BOOM_POLICY)
    try:
        yield m
    finally:
        await m.stop()


def _request(
    headers: dict[str, str], *, path: str = "/", ext: dict[str, str] | None = None, source: str = "10.0.0.1"
) -> external_auth_pb2.CheckRequest:
    ctx = attribute_context_pb2.AttributeContext()
    ctx.source.address.socket_address.address = source
    ctx.source.address.socket_address.port_value = 5555
    http = ctx.request.http
    http.method = "GET"
    http.path = path
    http.host = "example"
    http.headers.update({":path": path, ":method": "GET", ":authority": "example", **headers})
    ctx.context_extensions.update(ext or {})
    return external_auth_pb2.CheckRequest(attributes=ctx)


async def _check(m: InProcessMixerd, req: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{m.grpc_port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(req, timeout=5)


async def test_allow_with_header_operations(mixerd: InProcessMixerd) -> None:
    resp = await _check(mixerd, _request({"x-user": "alice"}))
    assert resp.status.code == 0
    assert resp.WhichOneof("http_response") == "ok_response"
    assert [(h.header.key, h.header.value) for h in resp.ok_response.headers] == [("x-user-id", "alice")]
    assert [(h.header.key, h.header.value) for h in resp.ok_response.response_headers_to_add] == [
        ("x-authz", "ok")
    ]


async def test_deny(mixerd: InProcessMixerd) -> None:
    resp = await _check(mixerd, _request({"x-deny": "true"}))
    assert resp.status.code == 7
    assert resp.denied_response.status.code == 403
    assert "blocked by x-deny" in resp.denied_response.body


async def test_namespace_context_extension_and_quota_extension(mixerd: InProcessMixerd) -> None:
    resp = await _check(mixerd, _request({}, path="/admin", ext={"namespace": "shop"}))
    assert resp.denied_response.body.endswith("admin is closed")
    assert (await _check(mixerd, _request({}, path="/admin"))).status.code == 0
    quota = {"mixerd.quotas": "requestcount"}
    codes = [(await _check(mixerd, _request({"x-user": "g1"}, ext=quota))).status.code for _ in range(4)]
    assert codes == [0, 0, 0, 8]


async def test_error_response_hides_details(
    mixerd: InProcessMixerd, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await _check(mixerd, _request({"x-boom": "true", "x-request-id": "abc-1"}))
    assert resp.status.code == 13
    assert resp.WhichOneof("http_response") == "error_response"
    assert resp.error_response.status.code == 500
    body = resp.error_response.body
    assert body.startswith("handler failure (request id ") and "abc-1" not in body
    assert resp.status.message == body
    assert "hunter2" not in resp.status.message
    rid = body.rsplit(" ", 1)[1].rstrip(")")
    [line] = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
    assert "hunter2" in line and "x-request-id abc-1" in line


async def test_malformed_request_is_invalid_argument_and_server_stays_up(mixerd: InProcessMixerd) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _check(mixerd, _request({}, source="not-an-ip"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an IP address" in (info.value.details() or "")
    assert (await _check(mixerd, _request({}))).status.code == 0


QUOTA_SPEC = """
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: spec-users, namespace: istio-system}
spec:
  rules:
  - match: [{clause: {"request.headers[x-user]": {prefix: spec-}}}]
    quotas: [{quota: requestcount, charge: 1}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: everyone, namespace: istio-system}
spec:
  services: [{name: "*"}]
  quotaSpecs: [{name: spec-users}]
"""


async def test_quota_spec_bindings_of_the_config_in_force_are_charged(mixerd: InProcessMixerd) -> None:
    # Not configured yet: nothing is charged.
    codes = [(await _check(mixerd, _request({"x-user": "spec-a"}))).status.code for _ in range(4)]
    assert codes == [0, 0, 0, 0]
    # Add the QuotaSpec and its binding to the store; the service picks up the new snapshot.
    before = mixerd.runtime.snapshot
    store = mixerd.runtime.store
    assert isinstance(store, MemoryStore)
    store.set(*parse_text(QUOTA_SPEC).resources)
    for _ in range(200):
        if mixerd.runtime.snapshot is not before:
            break
        await asyncio.sleep(0.01)
    assert mixerd.runtime.snapshot is not before
    codes = [(await _check(mixerd, _request({"x-user": "spec-b"}))).status.code for _ in range(4)]
    assert codes == [0, 0, 0, 8]
    # A user the spec does not match is not charged.
    codes = [(await _check(mixerd, _request({"x-user": "other"}))).status.code for _ in range(4)]
    assert codes == [0, 0, 0, 0]
