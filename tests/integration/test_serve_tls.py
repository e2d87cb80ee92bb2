"""``mixerd serve`` (uvloop, flags from MIXERD_* variables) with mTLS, end to end: the caller's
SPIFFE ID in a rule, and a certificate replaced under it (kubelet-style ``..data`` swap)."""

from __future__ import annotations

import http.client
from pathlib import Path

import grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request
from tests.support.certs import BAD, CA, CALLER_POLICY, KubeSecretDir, client_context, served_serial
from tests.support.net import wait_for

from .mixerd_proc import start_mixerd


def _authz(port: int, ctx: object) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=ctx)  # type: ignore[arg-type]
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_mixerd_serve_with_mtls_and_a_rotated_certificate(tmp_path: Path) -> None:
    ca = CA()
    server = ca.server()
    good = ca.issue("good", uris=("spiffe://cluster.local/ns/default/sa/good",))
    bad = ca.issue("bad", uris=(BAD,))
    secret = KubeSecretDir(tmp_path / "certs")
    secret.write({"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca.pem})
    config = tmp_path / "config"
    config.mkdir()
    (config / "policy.yaml").write_text(CALLER_POLICY)
    env = {
        "MIXERD_TLS_CERT": secret.path("tls.crt"),
        "MIXERD_TLS_KEY": secret.path("tls.key"),
        "MIXERD_TLS_CLIENT_CA": secret.path("ca.crt"),
        "MIXERD_MONITORING_TLS_CERT": "",  # plaintext, for the readiness probe
        "MIXERD_TLS_RELOAD_INTERVAL": "0.2",
    }
    mixerd = start_mixerd(tmp_path, [config], env=env)
    try:
        good_ctx, bad_ctx = client_context(ca.pem, good), client_context(ca.pem, bad)
        assert _authz(mixerd.http_authz_port, good_ctx) == 200
        assert _authz(mixerd.http_authz_port, bad_ctx) == 403
        for client, code in ((good, 0), (bad, 7)):
            creds = grpc.ssl_channel_credentials(ca.pem, client.key_pem, client.cert_pem)
            with grpc.secure_channel(mixerd.grpc_address, creds) as channel:
                resp = mixer_pb2_grpc.MixerStub(channel).Check(build_check_request({}), timeout=15)
                assert resp.precondition.status.code == code

        renewed = ca.server("renewed")
        secret.write({"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem, "ca.crt": ca.pem})
        ports = (mixerd.grpc_port, mixerd.http_authz_port, mixerd.prometheus_port)
        wait_for(
            lambda: all(served_serial(port, good_ctx) == renewed.serial for port in ports),
            timeout=15,
            what="the renewed certificate",
        )
        assert "serving the new TLS certificate" in mixerd.log()
        assert _authz(mixerd.http_authz_port, bad_ctx) == 403
    finally:
        assert mixerd.stop() == 0
    assert "Traceback" not in mixerd.log()
