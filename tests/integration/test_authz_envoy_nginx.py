"""JWT authentication and authorization policies end to end: a real Envoy (ext_authz over gRPC and
HTTP) and a real nginx (auth_request) in front of mixerd, the issuer's JWKS served on loopback and
fetched by mixerd (jwksUri), tokens minted in the test.

Policies (root namespace, so every workload): a token is required except under /public; /admin is
denied to everyone; a dry-run policy would deny POST (it is only counted and recorded). The
token's subject goes upstream as x-user-id (outputClaimToHeaders), the token itself does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from mixerd.adapter import ManualClock
from mixerd.api.decisions import DECISIONS, DecisionRecorder
from mixerd.api.ext_authz import HttpAuthzOptions
from mixerd.console.model import Decision, Verdict
from tests.ext_authz_support import InProcessMixerd, Upstream, start_mixerd_in_process, start_upstream
from tests.support.jwt_issuer import Issuer, JwksServer, serve_jwks
from tests.support.net import free_port

from .envoy_proc import EnvoyProcess, authz_config, start_envoy
from .nginx_proc import NginxProcess, auth_request_config, start_nginx


def policies(jwks_uri: str, issuer: str) -> str:
    return f"""
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: idp, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: {issuer}
    jwksUri: {jwks_uri}
    outputClaimToHeaders: [{{header: x-user-id, claim: sub}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{notPaths: ["/public*"]}}}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: istio-system}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin*"]}}}}]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: read-only-trial, namespace: istio-system, annotations: {{istio.io/dry-run: "true"}}}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{methods: [POST]}}}}]}}]
"""


class _Sink:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def add_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)


@dataclass
class Stack:
    issuer: Issuer
    jwks: JwksServer
    mixerd: InProcessMixerd
    upstream: Upstream
    sink: _Sink
    session: aiohttp.ClientSession

    async def call(
        self, url: str, token: str | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, url, headers=headers) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.text()


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def jwks(issuer: Issuer) -> Iterator[JwksServer]:
    with serve_jwks(issuer.jwks("rsa1", "ec")) as s:
        yield s


@pytest.fixture
async def base(issuer: Issuer, jwks: JwksServer) -> AsyncIterator[Stack]:
    sink = _Sink()
    mixerd = await start_mixerd_in_process(
        policies(jwks.url, issuer.issuer),
        http_options=HttpAuthzOptions(prefix="/authz"),  # Envoy's http_service.path_prefix
        services={DECISIONS: DecisionRecorder(sink, ManualClock())},
    )
    upstream = await start_upstream()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Stack(issuer, jwks, mixerd, upstream, sink, session)
    finally:
        await session.close()
        await upstream.stop()
        await mixerd.stop()


async def _check_paths(stack: Stack, url: str, *, grpc: bool) -> None:
    issuer = stack.issuer
    good = issuer.mint(issuer.claims("alice"))
    status, _, body = await stack.call(url + "/orders", good)
    assert status == 200, body
    seen = stack.upstream.seen[-1]
    assert seen["headers"]["x-user-id"] == "alice"
    if grpc:
        assert "authorization" not in seen["headers"]  # forwardOriginalToken is false

    status, headers, body = await stack.call(url + "/orders")  # no token
    assert status == 403
    assert headers["x-mixerd-authz-policy"] == "istio-system/require-jwt"
    assert "istio-system/require-jwt" in body

    status, _, body = await stack.call(url + "/public/info")  # no token needed
    assert status == 200, body
    assert "x-user-id" not in stack.upstream.seen[-1]["headers"]

    status, headers, body = await stack.call(url + "/admin", good)
    assert status == 403
    assert headers["x-mixerd-authz-policy"] == "istio-system/no-admin"

    expired = issuer.mint(issuer.claims("alice", ttl=-3600))
    status, headers, body = await stack.call(url + "/orders", expired)
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="127.0.0.1')
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert body == "invalid JWT: token expired"

    forged = issuer.forge_hmac(issuer.claims("root"))
    status, _, body = await stack.call(url + "/orders", forged)
    assert status == 401 and "no key for the token's algorithm HS256" in body

    # dry run: a POST goes through, counted as a would-deny
    before = stack.mixerd.runtime.metrics.value(
        "mixerd_authz_decisions_total",
        {"policy": "istio-system/read-only-trial", "action": "deny", "dry_run": "true"},
    )
    status, _, body = await stack.call(url + "/orders", good, method="POST")
    assert status == 200, body
    after = stack.mixerd.runtime.metrics.value(
        "mixerd_authz_decisions_total",
        {"policy": "istio-system/read-only-trial", "action": "deny", "dry_run": "true"},
    )
    assert after == before + 1
    last = stack.sink.decisions[-1]
    assert (last.verdict, last.rule, last.handler) == (
        Verdict.ALLOW,
        "istio-system/read-only-trial",
        "authz (dry run: would deny)",
    )


async def test_envoy_grpc_and_http(base: Stack, tmp_path: Path) -> None:
    ports = {k: free_port() for k in ("admin", "grpc", "http")}
    config = authz_config(
        admin_port=ports["admin"],
        grpc_listener_port=ports["grpc"],
        http_listener_port=ports["http"],
        authz_grpc_port=base.mixerd.grpc_port,
        authz_http_port=base.mixerd.http_port,
        upstream_port=base.upstream.port,
    )
    envoy: EnvoyProcess = await asyncio.to_thread(start_envoy, tmp_path / "envoy", config, ports["admin"])
    try:
        await _check_paths(base, f"http://127.0.0.1:{ports['grpc']}", grpc=True)
        await _check_paths(base, f"http://127.0.0.1:{ports['http']}", grpc=False)
        # a rotated key: the issuer starts signing with a new key; its first token fetches the keys again
        base.jwks.body = base.issuer.jwks("rsa2")
        rotated = base.issuer.mint(base.issuer.claims("bob"), "rsa2")
        status, _, body = await base.call(f"http://127.0.0.1:{ports['grpc']}/orders", rotated)
        assert status == 200, body
        assert base.upstream.seen[-1]["headers"]["x-user-id"] == "bob"
    finally:
        await asyncio.to_thread(envoy.stop)


async def test_nginx_auth_request(base: Stack, tmp_path: Path) -> None:
    port = free_port()
    conf = auth_request_config(
        listen_port=port, mixerd_port=base.mixerd.http_port, upstream_port=base.upstream.port
    )
    nginx: NginxProcess = await asyncio.to_thread(start_nginx, tmp_path / "nginx", conf, port)
    url = f"http://127.0.0.1:{port}"
    try:
        issuer = base.issuer
        status, _, body = await base.call(url + "/orders", issuer.mint(issuer.claims("carol"), "ec"))
        assert status == 200, body
        assert base.upstream.seen[-1]["headers"]["x-user-id"] == "carol"
        status, _, _ = await base.call(url + "/orders")
        assert status == 403  # nginx answers with its own page; the policy is in mixerd's answer
        status, headers, _ = await base.call(
            url + "/orders", issuer.mint(issuer.claims("carol", aud="x", nbf=2**31))
        )
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer ")  # nginx passes the challenge on
        status, _, _ = await base.call(
            url + "/orders", issuer.mint(issuer.claims("dave"), "ec"), method="POST"
        )
        assert status == 200  # the dry-run policy lets it through
    finally:
        await asyncio.to_thread(nginx.stop)
