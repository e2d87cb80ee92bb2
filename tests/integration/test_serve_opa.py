"""End to end: ``mixerd serve`` (a real process) with an opa handler, an authorization instance
and a rule; Mixer API Check and Envoy ext_authz Check allowed and denied by the Rego policy, and
the decisions counted on /metrics."""

from __future__ import annotations

from pathlib import Path

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request

from .mixerd_proc import start_mixerd

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: opahandler, namespace: istio-system}
spec:
  compiledAdapter: opa
  params:
    checkMethod: data.mixerauthz.allow
    failClose: true
    policy:
    - |
      package mixerauthz
      default allow = false
      allow {
        input.subject.user == "admin"
      }
      allow {
        input.action.method == "GET"
        startswith(input.action.path, "/public/")
      }
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: authzinstance, namespace: istio-system}
spec:
  compiledTemplate: authorization
  params:
    subject:
      user: request.headers["x-user"] | ""
    action:
      method: request.method | ""
      path: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: opa-authz, namespace: istio-system}
spec:
  actions: [{handler: opahandler, instances: [authzinstance]}]
"""


def _mixer_check(stub: mixer_pb2_grpc.MixerStub, user: str, method: str, path: str) -> tuple[int, str]:
    attrs = {"request.headers": {"x-user": user}, "request.method": method, "request.path": path}
    status = stub.Check(build_check_request(attrs), timeout=10).precondition.status
    return int(status.code), status.message


def _ext_authz(stub: external_auth_pb2_grpc.AuthorizationStub, user: str, method: str, path: str) -> int:
    ctx = attribute_context_pb2.AttributeContext()
    ctx.request.http.method = method
    ctx.request.http.path = path
    ctx.request.http.host = "example"
    ctx.request.http.headers["x-user"] = user
    return int(stub.Check(external_auth_pb2.CheckRequest(attributes=ctx), timeout=10).status.code)


def test_opa_rule_allows_and_denies(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "opa.yaml").write_text(CONFIG)
    mixerd = start_mixerd(tmp_path, [config])
    try:
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            mixer = mixer_pb2_grpc.MixerStub(channel)
            assert _mixer_check(mixer, "admin", "POST", "/private") == (0, "")
            assert _mixer_check(mixer, "eve", "GET", "/public/index.html") == (0, "")
            code, message = _mixer_check(mixer, "eve", "POST", "/private")
            assert code == 7
            assert message == "opahandler.handler.istio-system:opa: request was rejected"

            authz = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert _ext_authz(authz, "admin", "DELETE", "/private") == 0
            assert _ext_authz(authz, "eve", "GET", "/public/a") == 0
            assert _ext_authz(authz, "eve", "DELETE", "/private") == 7

        policy = "opahandler.handler.istio-system"
        assert (
            mixerd.metric("mixerd_authz_decisions_total", policy=policy, action="allow", dry_run="false") == 4
        )
        assert (
            mixerd.metric("mixerd_authz_decisions_total", policy=policy, action="deny", dry_run="false") == 2
        )
        assert "opahandler.handler.istio-system (opa)" in mixerd.http("/debug/routes")
    finally:
        code = mixerd.stop()
    assert code == 0, mixerd.log()
