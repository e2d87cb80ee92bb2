"""Header bytes that are not UTF-8 cannot slip past a deny rule, on either ext_authz wire.

Regression for a bypass: the HTTP endpoint's header text (decoded by aiohttp with
``surrogateescape``) made ``.matches`` fail to evaluate, so the deny rule did not apply, while the
same bytes over gRPC were denied. Both now see U+FFFD in place of the bad byte.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.ext_authz_support import start_mixerd_in_process

DENY_BAD_USERS = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: badusercheck, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-bad-users, namespace: istio-system}
spec:
  match: '"^bad".matches(request.headers["x-user"])'
  actions: [{handler: deny-header, instances: [badusercheck]}]
"""


async def _raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_same_non_utf8_bytes_are_denied_over_http_and_grpc() -> None:
    mixerd = await start_mixerd_in_process(DENY_BAD_USERS)
    try:
        head = await _raw_http(
            mixerd.http_port,
            b"GET /x HTTP/1.1\r\nHost: h\r\nX-User: bad\xffguy\r\nConnection: close\r\n\r\n",
        )
        assert head.startswith(b"HTTP/1.1 403"), head
        ok = await _raw_http(
            mixerd.http_port,
            b"GET /x HTTP/1.1\r\nHost: h\r\nX-User: good\xffguy\r\nConnection: close\r\n\r\n",
        )
        assert ok.startswith(b"HTTP/1.1 200"), ok

        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.header_map.headers.add(key=":path", raw_value=b"/x")
        http.header_map.headers.add(key="x-user", raw_value=b"bad\xffguy")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mixerd.grpc_port}") as channel:
            answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)
        assert answer.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    finally:
        await mixerd.stop()
