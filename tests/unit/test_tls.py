"""TLS on every listener: serving, client certificates, the caller's SPIFFE identity in rules,
certificate rotation without restart, and clear errors for files that cannot be served.

Real sockets on 127.0.0.1 against an in-process :class:`~mixerd.server.app.Server`; certificates
are made here (``cryptography``) and mounted the way the kubelet mounts a Secret (files behind a
``..data`` symlink swapped in one rename). Blocking clients run in threads (the server runs on
the test's event loop); waits poll for their condition under a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.accesslog.convert import StreamState
from mixerd.api.caller import CALLER_PRINCIPAL, peercert_caller, spiffe_id
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.api.mixer_v1.decode import ProtoBag, decode_report
from mixerd.api.ratelimit.convert import decode_request
from mixerd.config import MemoryStore, parse_text
from mixerd.server.app import Server
from mixerd.server.settings import Settings, add_arguments
from mixerd.server.tls import TlsError, certificate_facts, listener_files, open_sources
from tests.support.certs import (
    BAD,
    CA,
    CALLER_POLICY,
    GOOD,
    Issued,
    KubeSecretDir,
    client_context,
    served_serial,
)

LISTENERS = ("grpc", "monitoring", "prometheus", "http_authz")


@dataclass
class Pki:
    ca: CA
    server: Issued
    good: Issued
    bad: Issued
    other_ca: CA
    stranger: Issued
    """A client certificate from a CA mixerd does not trust."""


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CA()
    other = CA("some other CA")
    return Pki(
        ca=ca,
        server=ca.server(),
        good=ca.issue("good", uris=(GOOD,), dns=("good.default.svc",)),
        bad=ca.issue("bad", uris=(BAD,)),
        other_ca=other,
        stranger=other.issue("stranger", uris=(GOOD,)),
    )


def _secret(tmp_path: Path, server: Issued, ca_pem: bytes) -> KubeSecretDir:
    d = KubeSecretDir(tmp_path / "certs")
    d.write({"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca_pem})
    return d


def _store() -> MemoryStore:
    parsed = parse_text(CALLER_POLICY, file="policy.yaml")
    assert not parsed.errors, parsed.errors
    store = MemoryStore()
    store.replace(parsed.resources, parsed.errors)
    return store


def _settings(secret: KubeSecretDir, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "grpc_address": "127.0.0.1:0",
        "monitoring_address": "127.0.0.1:0",
        "prometheus_address": "127.0.0.1:0",
        "http_authz_address": "127.0.0.1:0",
        "tls_cert": secret.path("tls.crt"),
        "tls_key": secret.path("tls.key"),
        "tls_client_ca": secret.path("ca.crt"),
        "tls_reload_interval": 0.1,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Settings], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(settings: Settings) -> Server:
        server = Server(settings, store=_store())
        servers.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(0)


def _port(server: Server, listener: str) -> int:
    return int(getattr(server.listeners, f"{listener}_port"))


# -- clients (blocking ones run in a thread: the server runs on this test's loop) ------------------


def _get(port: int, ctx: ssl.SSLContext | None, path: str, headers: dict[str, str] | None = None) -> int:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _refused(port: int, ctx: ssl.SSLContext) -> str:
    """Connect with ``ctx`` and send a request: the server must refuse the connection (a failed
    handshake, a TLS alert or a close), never answer. Returns how it refused."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=15) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            # TLS 1.3: the client finishes its handshake before the server checks its certificate
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: mixerd\r\n\r\n")
            data = tls.recv(64)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    assert data == b"", f"the server answered: {data!r}"
    return "closed"


def _grpc_credentials(trust: bytes, cert: Issued | None) -> grpc.ChannelCredentials:
    if cert is None:
        return grpc.ssl_channel_credentials(trust)
    return grpc.ssl_channel_credentials(trust, cert.key_pem, cert.cert_pem)


async def _mixer_check(port: int, creds: grpc.ChannelCredentials, **attrs: object) -> int:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        resp = await stub.Check(build_check_request({"request.path": "/", **attrs}), timeout=15)
        return int(resp.precondition.status.code)


async def _ext_authz(port: int, creds: grpc.ChannelCredentials) -> int:
    ctx = attribute_context_pb2.AttributeContext()
    ctx.request.http.method = "GET"
    ctx.request.http.path = "/"
    ctx.request.http.host = "example"
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        resp = await stub.Check(external_auth_pb2.CheckRequest(attributes=ctx), timeout=15)
        return int(resp.status.code)


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds (generous: CPU load)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


# -- serving ---------------------------------------------------------------------------------------


async def test_every_listener_serves_tls_and_asks_for_a_client_certificate(
    tmp_path: Path, pki: Pki, started: Callable[[Settings], Awaitable[Server]]
) -> None:
    server = await started(_settings(_secret(tmp_path, pki.server, pki.ca.pem)))
    good = client_context(pki.ca.pem, pki.good)
    for listener in LISTENERS:
        port = _port(server, listener)
        assert await asyncio.to_thread(served_serial, port, good) == pki.server.serial, listener
        # with a server name (SNI) too
        assert await asyncio.to_thread(served_serial, port, good, "localhost") == pki.server.serial
        for ctx in (client_context(pki.ca.pem), client_context(pki.ca.pem, pki.stranger)):
            assert await asyncio.to_thread(_refused, port, ctx), listener
        # over TLS 1.2 the handshake itself fails
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(served_serial, port, client_context(pki.ca.pem, tls12=True))
    ports = {name: _port(server, name) for name in LISTENERS}
    assert await asyncio.to_thread(_get, ports["monitoring"], good, "/healthz") == 200
    assert await asyncio.to_thread(_get, ports["prometheus"], good, "/metrics") == 200
    assert await asyncio.to_thread(_get, ports["http_authz"], good, "/anything") == 200
    assert await _mixer_check(ports["grpc"], _grpc_credentials(pki.ca.pem, pki.good)) == 0
    for creds in (_grpc_credentials(pki.ca.pem, None), _grpc_credentials(pki.ca.pem, pki.stranger)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _mixer_check(ports["grpc"], creds)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_per_listener_settings_replace_the_general_ones(
    tmp_path: Path, pki: Pki, started: Callable[[Settings], Awaitable[Server]]
) -> None:
    secret = _secret(tmp_path, pki.server, pki.ca.pem)
    server = await started(
        _settings(secret, monitoring_tls_cert="", http_authz_tls_client_ca="", prometheus_address="")
    )
    assert sorted(server.tls) == ["grpc", "http_authz"]
    assert server.tls["grpc"].files.client_auth and not server.tls["http_authz"].files.client_auth
    # monitoring in plaintext (kubelet probes), HTTP authorization over TLS without client certificates
    assert await asyncio.to_thread(_get, _port(server, "monitoring"), None, "/healthz") == 200
    assert await asyncio.to_thread(_get, _port(server, "http_authz"), client_context(pki.ca.pem), "/x") == 200
    assert await asyncio.to_thread(_refused, _port(server, "grpc"), client_context(pki.ca.pem))


# -- the caller's identity -------------------------------------------------------------------------


async def test_the_callers_spiffe_id_reaches_the_rules(
    tmp_path: Path, pki: Pki, started: Callable[[Settings], Awaitable[Server]]
) -> None:
    server = await started(_settings(_secret(tmp_path, pki.server, pki.ca.pem)))
    grpc_port = _port(server, "grpc")
    good = _grpc_credentials(pki.ca.pem, pki.good)
    bad = _grpc_credentials(pki.ca.pem, pki.bad)
    assert await _mixer_check(grpc_port, good) == 0
    assert await _mixer_check(grpc_port, bad) == 7
    # a caller cannot claim an identity by sending the attribute itself
    assert await _mixer_check(grpc_port, good, **{CALLER_PRINCIPAL: BAD}) == 0
    assert await _ext_authz(grpc_port, good) == 0
    assert await _ext_authz(grpc_port, bad) == 7
    authz = _port(server, "http_authz")
    assert await asyncio.to_thread(_get, authz, client_context(pki.ca.pem, pki.good), "/") == 200
    assert await asyncio.to_thread(_get, authz, client_context(pki.ca.pem, pki.bad), "/") == 403


async def test_mixerd_check_and_the_banner_speak_tls(
    tmp_path: Path,
    pki: Pki,
    started: Callable[[Settings], Awaitable[Server]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mixerd.cli.main import main
    from mixerd.cli.serve import _banner

    server = await started(_settings(_secret(tmp_path, pki.server, pki.ca.pem), monitoring_tls_cert=""))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.ca.pem)
    base = ["--server", f"127.0.0.1:{_port(server, 'grpc')}", "--tls-ca", str(ca_file)]

    def check(cert: Issued, *extra: str) -> int:
        cert_file, key_file = cert.files()
        return main(
            ["check", *base, "--tls-cert", cert_file, "--tls-key", key_file, *extra, "-a", "request.path=/"]
        )

    assert await asyncio.to_thread(check, pki.good) == 0
    assert await asyncio.to_thread(check, pki.bad) == 3
    assert await asyncio.to_thread(check, pki.good, "--tls-server-name", "localhost") == 0
    assert (
        await asyncio.to_thread(main, ["report", *base[:2], "--tls-cert", "x", "-a", "request.path=/"]) == 2
    )
    assert "need --tls-ca" in capsys.readouterr().err
    banner = _banner(server)
    assert "--tls-ca CA.pem --tls-cert CERT.pem --tls-key KEY.pem" in banner
    assert f"https://127.0.0.1:{_port(server, 'http_authz')}/  (TLS, client certificates required)" in banner
    assert f"http://127.0.0.1:{_port(server, 'monitoring')}/metrics" in banner
    assert f"http://127.0.0.1:{_port(server, 'monitoring')}/ui/" in banner


async def test_without_client_certificates_there_is_no_caller_principal(
    tmp_path: Path, pki: Pki, started: Callable[[Settings], Awaitable[Server]]
) -> None:
    server = await started(_settings(_secret(tmp_path, pki.server, pki.ca.pem), tls_client_ca=""))
    # the server asks for no certificate, so the "bad" one is never sent: the rule cannot match
    assert await _mixer_check(_port(server, "grpc"), _grpc_credentials(pki.ca.pem, pki.bad)) == 0
    assert (
        await _mixer_check(
            _port(server, "grpc"), _grpc_credentials(pki.ca.pem, None), **{CALLER_PRINCIPAL: BAD}
        )
        == 0
    )
    assert (
        await asyncio.to_thread(_get, _port(server, "http_authz"), client_context(pki.ca.pem, pki.bad), "/")
        == 200
    )


def test_the_attribute_on_decoded_requests() -> None:
    sent = {"request.path": "/", CALLER_PRINCIPAL: BAD}
    assert CALLER_PRINCIPAL not in ProtoBag(build_check_request(sent).attributes)
    report = build_report_request([sent, {"request.path": "/b"}])
    assert [b.get(CALLER_PRINCIPAL) for b in decode_report(report)] == [None, None]
    assert [b.get(CALLER_PRINCIPAL) for b in decode_report(report, caller=GOOD)] == [GOOD, GOOD]
    from envoy.service.ratelimit.v3 import rls_pb2

    rls = rls_pb2.RateLimitRequest(domain="api")
    rls.descriptors.add().entries.add(key="user", value="alice")
    assert decode_request(rls, caller=GOOD)[0].bag.get(CALLER_PRINCIPAL) == GOOD
    assert CALLER_PRINCIPAL not in decode_request(rls)[0].bag
    from envoy.service.accesslog.v3 import als_pb2

    als = als_pb2.StreamAccessLogsMessage()
    als.identifier.log_name = "als"
    als.http_logs.log_entry.add().request.path = "/"
    assert StreamState(caller=GOOD).convert(als).bags[0].get(CALLER_PRINCIPAL) == GOOD
    assert CALLER_PRINCIPAL not in StreamState().convert(als).bags[0]


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        ([GOOD], GOOD),
        (["https://example.com/x", GOOD], GOOD),
        ([GOOD, BAD], None),  # an X.509-SVID has exactly one SPIFFE ID
        (["https://example.com/x"], None),
        (["SPIFFE://cluster.local/ns/a/sa/b"], None),
        (["spiffe://"], None),
        ([], None),
    ],
)
def test_spiffe_id(uris: list[str], expected: str | None) -> None:
    assert spiffe_id(uris) == expected
    cert = {"subjectAltName": (*(("URI", u) for u in uris), ("DNS", "spiffe://dns"))}
    assert peercert_caller(cert) == expected


# -- rotation --------------------------------------------------------------------------------------


async def test_a_replaced_certificate_is_served_within_seconds(
    tmp_path: Path, pki: Pki, started: Callable[[Settings], Awaitable[Server]]
) -> None:
    secret = _secret(tmp_path, pki.server, pki.ca.pem)
    server = await started(_settings(secret))
    ports = [_port(server, name) for name in LISTENERS]
    good = client_context(pki.ca.pem, pki.good)

    async def serving(serial: int, ctx: ssl.SSLContext) -> bool:
        for port in ports:
            try:
                if await asyncio.to_thread(served_serial, port, ctx) != serial:
                    return False
            except (ssl.SSLError, OSError):
                return False
        return True

    renewed = pki.ca.server("mixerd renewed")
    secret.write({"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem, "ca.crt": pki.ca.pem})
    await _eventually(lambda: serving(renewed.serial, good), "the renewed certificate on every listener")
    assert await _mixer_check(ports[0], _grpc_credentials(pki.ca.pem, pki.bad)) == 7

    # a new CA: certificates it signed are accepted, those of the old one refused
    new_ca = CA("mixerd test CA 2")
    new_server, new_client = new_ca.server(), new_ca.issue("good2", uris=(GOOD,))
    secret.write({"tls.crt": new_server.cert_pem, "tls.key": new_server.key_pem, "ca.crt": new_ca.pem})
    await _eventually(
        lambda: serving(new_server.serial, client_context(new_ca.pem, new_client)), "the new CA's certificate"
    )
    for port in ports:
        assert await asyncio.to_thread(_refused, port, client_context(new_ca.pem, pki.good))
    assert await _mixer_check(ports[0], _grpc_credentials(new_ca.pem, new_client)) == 0
    assert server.tls["grpc"].generation == 2


async def test_bad_new_files_keep_the_certificate_in_use_and_are_logged_once(
    tmp_path: Path,
    pki: Pki,
    started: Callable[[Settings], Awaitable[Server]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = _secret(tmp_path, pki.server, pki.ca.pem)
    # no background polling: the test polls itself, so what is logged when is deterministic
    server = await started(_settings(secret, tls_reload_interval=3600))
    source = server.tls["grpc"]
    good = client_context(pki.ca.pem, pki.good)
    other = pki.ca.server("other")
    caplog.set_level(logging.INFO, logger="mixerd.tls")

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    # a key that does not match its certificate (a swap caught half way, or a bad secret)
    secret.write({"tls.crt": other.cert_pem, "tls.key": pki.server.key_pem, "ca.crt": pki.ca.pem})
    assert not source.poll()
    assert errors() == []  # seen once: may be a swap in progress
    assert not source.poll()
    assert not source.poll()
    (message,) = errors()
    assert f"TLS private key {secret.path('tls.key')} (--tls-key) does not match the certificate" in message
    assert "keeping the certificate in use" in message
    for listener in LISTENERS:
        port = _port(server, listener)
        assert await asyncio.to_thread(served_serial, port, good) == pki.server.serial

    # a half-written certificate, then a file that is missing
    Path(secret.path("tls.crt")).write_bytes(other.cert_pem[:120])
    assert not source.poll() and not source.poll()
    assert "no PEM certificate in it" in errors()[-1] and secret.path("tls.crt") in errors()[-1]
    secret.write({"tls.crt": other.cert_pem, "ca.crt": pki.ca.pem})  # tls.key now points nowhere
    assert not source.poll() and not source.poll()
    assert f"TLS private key {secret.path('tls.key')} (--tls-key): cannot read it" in errors()[-1]
    assert len(errors()) == 3

    # good files again: taken at once
    secret.write({"tls.crt": other.cert_pem, "tls.key": other.key_pem, "ca.crt": pki.ca.pem})
    assert source.poll()
    assert await asyncio.to_thread(served_serial, _port(server, "http_authz"), good) == other.serial
    assert await asyncio.to_thread(served_serial, _port(server, "grpc"), good) == other.serial
    assert len(errors()) == 3


# -- settings and start-up errors ------------------------------------------------------------------


def _parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ or {})
    return Settings.from_args(parser.parse_args(argv))


def test_flags_and_environment() -> None:
    s = _parse(
        [
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--grpc-tls-client-ca",
            "/ca.pem",
            "--monitoring-tls-cert",
            "",
        ],
        {"MIXERD_HTTP_AUTHZ_TLS_CERT": "/authz.pem", "MIXERD_HTTP_AUTHZ_TLS_KEY": "/authz.key"},
    )
    grpc_files = listener_files(s, "grpc")
    assert grpc_files is not None
    assert (grpc_files.cert, grpc_files.key, grpc_files.client_ca) == ("/c.pem", "/k.pem", "/ca.pem")
    assert grpc_files.client_ca_flag == "--grpc-tls-client-ca"
    assert listener_files(s, "monitoring") is None
    authz = listener_files(s, "http_authz")
    assert authz is not None and (authz.cert, authz.key, authz.client_ca) == ("/authz.pem", "/authz.key", "")
    prom = listener_files(s, "prometheus")
    assert prom is not None and prom.cert == "/c.pem" and not prom.client_auth
    assert _parse([]).tls_cert == "" and listener_files(_parse([]), "grpc") is None
    with pytest.raises(ValueError, match="--tls-reload-interval"):
        _parse(["--tls-reload-interval", "0"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_key": "/k.pem"}, "--tls-key is set but no listener has a certificate (--tls-cert)"),
        (
            {"tls_cert": "/c.pem"},
            "the gRPC listener has a certificate (--tls-cert /c.pem) but no private key",
        ),
        (
            {"prometheus_tls_client_ca": "/ca.pem"},
            "--prometheus-tls-client-ca is set but the prometheus adapter listener has no certificate",
        ),
    ],
)
def test_incomplete_settings(settings: dict[str, str], message: str) -> None:
    with pytest.raises(TlsError) as err:
        open_sources(Settings(**settings))  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"tls.key": None},
            "TLS private key {dir}/tls.key (--tls-key): cannot read it: No such file or directory",
        ),
        (
            {"tls.crt": b"not a certificate"},
            "TLS certificate {dir}/tls.crt (--tls-cert): no PEM certificate in it",
        ),
        (
            {"tls.crt": b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"},
            "TLS certificate {dir}/tls.crt (--tls-cert): not a valid PEM certificate",
        ),
        (
            {"tls.key": b"-----BEGIN CERTIFICATE-----\n"},
            "TLS private key {dir}/tls.key (--tls-key): no PEM private key",
        ),
        (
            {
                "tls.key": b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
            },
            "TLS private key {dir}/tls.key (--tls-key): the key is encrypted",
        ),
        (
            {"tls.key": "other"},
            "TLS private key {dir}/tls.key (--tls-key) does not match the certificate {dir}/tls.crt",
        ),
        ({"ca.crt": b"\n"}, "TLS client CA bundle {dir}/ca.crt (--tls-client-ca): no PEM certificate in it"),
    ],
)
def test_files_that_cannot_be_served_are_named(
    tmp_path: Path, pki: Pki, files: dict[str, bytes | str | None], message: str
) -> None:
    content: dict[str, bytes] = {
        "tls.crt": pki.server.cert_pem,
        "tls.key": pki.server.key_pem,
        "ca.crt": pki.ca.pem,
    }
    for name, data in files.items():
        if data is None:
            del content[name]
        elif data == "other":
            content[name] = pki.good.key_pem
        else:
            assert isinstance(data, bytes)
            content[name] = data
    d = tmp_path / "plain"
    d.mkdir()
    for name, data in content.items():
        (d / name).write_bytes(data)
    settings = Settings(
        tls_cert=str(d / "tls.crt"), tls_key=str(d / "tls.key"), tls_client_ca=str(d / "ca.crt")
    )
    with pytest.raises(TlsError) as err:
        open_sources(settings)
    assert message.format(dir=d) in str(err.value)
    assert "\n" not in str(err.value)


def test_mixerd_serve_refuses_to_start_with_a_mismatched_key(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "tls.crt").write_bytes(pki.server.cert_pem)
    (tmp_path / "tls.key").write_bytes(pki.good.key_pem)
    cmd = [
        sys.executable, "-m", "mixerd.cli.main", "serve",
        "--grpc-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0",
        "--prometheus-address", "", "--http-authz-address", "",
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"mixerd: TLS private key {tmp_path}/tls.key (--tls-key) does not match the certificate "
        f"{tmp_path}/tls.crt (--tls-cert)\n"
    )


def test_certificate_facts(pki: Pki) -> None:
    serial, not_after = certificate_facts(ssl.PEM_cert_to_DER_cert(pki.server.cert_pem.decode()))
    assert int(serial, 16) == pki.server.serial
    assert not_after is not None and not_after.year >= 2024
    assert certificate_facts(b"\x30\x03\x02\x01") == ("", None)
