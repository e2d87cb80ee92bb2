"""JWT authentication and authorization policies through every checking front-end: ext_authz gRPC
and HTTP, and the Mixer v1 Check; 401 with WWW-Authenticate, 403 naming the policy, claims copied
upstream, dry run (counted, recorded, let through), and the attributes reaching the rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from mixerd._proto.mixer.v1 import check_pb2
from mixerd.adapter import ManualClock
from mixerd.api.decisions import DECISIONS, DecisionRecorder, recorder_of
from mixerd.api.ext_authz import HttpAuthzOptions
from mixerd.api.mixer_v1.client import encode_attributes
from mixerd.api.mixer_v1.service import MixerService
from mixerd.console.model import Decision, Verdict
from tests.ext_authz_support import InProcessMixerd, start_mixerd_in_process
from tests.support.jwt_issuer import Issuer


class _Sink:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def add_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)


def security_config(issuer: Issuer) -> str:
    jwks = json.dumps(issuer.jwks("rsa1"))
    return f"""
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: idp, namespace: shop}}
spec:
  jwtRules:
  - issuer: {issuer.issuer}
    audiences: [shop]
    jwks: {jwks}
    outputClaimToHeaders: [{{header: x-user-role, claim: role}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: members, namespace: shop}}
spec:
  rules:
  - from: [{{source: {{requestPrincipals: ["{issuer.issuer}/*"]}}}}]
    when: [{{key: "request.auth.claims[role]", values: [admin, viewer]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: no-delete, namespace: shop}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{methods: [DELETE]}}}}]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: viewers-read-only, namespace: shop, annotations: {{istio.io/dry-run: "true"}}}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{notMethods: [GET]}}}}]
    when: [{{key: "request.auth.claims[role]", values: [viewer]}}]
---
# the rules see the attributes: a header from the verified principal
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: principal-header, namespace: shop}}
spec:
  match: (request.auth.principal | "") != ""
  requestHeaderOperations: [{{name: x-principal, values: [request.auth.principal]}}]
"""


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
async def mixerd(issuer: Issuer) -> AsyncIterator[tuple[InProcessMixerd, _Sink]]:
    sink = _Sink()
    m = await start_mixerd_in_process(
        security_config(issuer),
        http_options=HttpAuthzOptions(extension_headers=True),
        services={DECISIONS: DecisionRecorder(sink, ManualClock())},
    )
    try:
        yield m, sink
    finally:
        await m.stop()


def _token(issuer: Issuer, role: str, **extra: Any) -> str:
    return issuer.mint(issuer.claims("alice", **{"aud": "shop", "role": role, **extra}))


def _grpc_request(method: str, headers: dict[str, str]) -> external_auth_pb2.CheckRequest:
    ctx = attribute_context_pb2.AttributeContext()
    ctx.source.address.socket_address.address = "10.0.0.1"
    http = ctx.request.http
    http.method = method
    http.path = "/orders"
    http.host = "shop.example"
    http.headers.update({":path": "/orders", ":method": method, ":authority": "shop.example", **headers})
    ctx.context_extensions["namespace"] = "shop"
    return external_auth_pb2.CheckRequest(attributes=ctx)


async def _grpc(m: InProcessMixerd, method: str, headers: dict[str, str]) -> external_auth_pb2.CheckResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{m.grpc_port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(_grpc_request(method, headers), timeout=5)


def _headers(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


async def test_ext_authz_grpc(issuer: Issuer, mixerd: tuple[InProcessMixerd, _Sink]) -> None:
    m, sink = mixerd
    ok = await _grpc(m, "GET", {"authorization": f"Bearer {_token(issuer, 'admin')}"})
    assert ok.status.code == 0
    up = _headers(ok.ok_response.headers)
    assert up["x-user-role"] == "admin"
    assert up["x-principal"] == f"{issuer.issuer}/alice"
    assert list(ok.ok_response.headers_to_remove) == ["authorization"]

    none = await _grpc(m, "GET", {})  # no token: not authenticated, so no ALLOW policy matches
    assert none.status.code == 7 and none.denied_response.status.code == 403
    assert _headers(none.denied_response.headers)["x-mixerd-authz-policy"] == "shop/members"
    assert "shop/members" in none.denied_response.body

    bad = await _grpc(m, "GET", {"authorization": f"Bearer {_token(issuer, 'admin', aud='other')}"})
    assert bad.status.code == 16 and bad.denied_response.status.code == 401
    assert bad.denied_response.body == "invalid JWT: audience not allowed"
    www = _headers(bad.denied_response.headers)["www-authenticate"]
    assert www.startswith('Bearer realm="shop.example", error="invalid_token"')

    delete = await _grpc(m, "DELETE", {"authorization": f"Bearer {_token(issuer, 'admin')}"})
    assert delete.denied_response.status.code == 403
    assert _headers(delete.denied_response.headers)["x-mixerd-authz-policy"] == "shop/no-delete"
    assert delete.denied_response.body == "denied by authorization policy shop/no-delete"

    # dry run: a viewer's POST would be denied by viewers-read-only; it goes through, counted and recorded
    post = await _grpc(m, "POST", {"authorization": f"Bearer {_token(issuer, 'viewer')}"})
    assert post.status.code == 0
    metrics = m.runtime.metrics
    labels = {"policy": "shop/viewers-read-only", "action": "deny", "dry_run": "true"}
    assert metrics.value("mixerd_authz_decisions_total", labels) == 1
    assert (
        metrics.value(
            "mixerd_authz_decisions_total", {"policy": "shop/members", "action": "allow", "dry_run": "false"}
        )
        == 2
    )
    assert (
        metrics.value(
            "mixerd_authz_decisions_total", {"policy": "shop/no-delete", "action": "deny", "dry_run": "false"}
        )
        == 1
    )
    verdicts = [(d.verdict, d.status_code, d.rule, d.handler) for d in sink.decisions]
    assert verdicts == [
        (Verdict.ALLOW, 0, "", ""),
        (Verdict.DENY, 7, "shop/members", "authz"),
        (Verdict.DENY, 16, "", "authn"),
        (Verdict.DENY, 7, "shop/no-delete", "authz"),
        (Verdict.ALLOW, 0, "shop/viewers-read-only", "authz (dry run: would deny)"),
    ]


async def test_http_endpoint(issuer: Issuer, mixerd: tuple[InProcessMixerd, _Sink]) -> None:
    m, _ = mixerd
    base = {"X-Mixerd-Ext-Namespace": "shop", "X-Original-URI": "/orders", "X-Original-Method": "GET"}
    async with aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{m.http_port}/"
        async with s.get(url, headers={**base, "Authorization": f"Bearer {_token(issuer, 'viewer')}"}) as r:
            assert r.status == 200
            assert r.headers["x-user-role"] == "viewer"
            assert r.headers["x-envoy-auth-headers-to-remove"] == "authorization"
        async with s.get(url, headers={**base, "Authorization": "Bearer not-a-jwt"}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
            assert "invalid JWT: malformed token" in await r.text()
        async with s.get(url, headers=base) as r:
            assert r.status == 403
            assert r.headers["x-mixerd-authz-policy"] == "shop/members"


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(details)


async def test_mixer_v1_check(issuer: Issuer, mixerd: tuple[InProcessMixerd, _Sink]) -> None:
    m, _ = mixerd
    svc = MixerService(m.runtime.dispatcher, recorder=recorder_of(m.runtime))
    try:
        # Istio 1.4 sidecars verify the token themselves and send request.auth.* as attributes
        attrs = {
            "destination.namespace": "shop",
            "request.method": "GET",
            "request.auth.principal": f"{issuer.issuer}/alice",
            "request.auth.claims": {"role": "viewer"},
        }
        resp = await svc.Check(check_pb2.CheckRequest(attributes=encode_attributes(attrs)), _Context())
        assert resp.precondition.status.code == 0
        ops = {h.name: h.value for h in resp.precondition.route_directive.request_header_operations}
        assert ops["x-principal"] == f"{issuer.issuer}/alice"
        denied = {**attrs, "request.auth.claims": {"role": "intruder"}}
        resp = await svc.Check(check_pb2.CheckRequest(attributes=encode_attributes(denied)), _Context())
        assert resp.precondition.status.code == 7
        assert "shop/members" in resp.precondition.status.message
        # a token in the headers is verified by mixerd: UNAUTHENTICATED when invalid
        forged = {
            **attrs,
            "request.headers": {"authorization": f"Bearer {issuer.forge_none({'iss': issuer.issuer})}"},
        }
        resp = await svc.Check(check_pb2.CheckRequest(attributes=encode_attributes(forged)), _Context())
        assert resp.precondition.status.code == 16
        assert resp.precondition.status.message.startswith("invalid JWT: unsigned token")
    finally:
        await svc.aclose()
