"""A small identity provider for tests: signing keys, tokens minted on demand, and a JWKS served
on loopback (a thread, so sync and async tests can use it, and Envoy or mixerd processes too)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["ISSUER", "Issuer", "JwksServer", "serve_jwks"]

ISSUER = "https://idp.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """Keys by name (``rsa1``, ``rsa2``: RS256; ``ec``: ES256; ``ed``: EdDSA), tokens, JWKS."""

    _ALG = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.private: dict[str, Any] = {
            "rsa1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(),
        }

    def alg(self, name: str) -> str:
        return self._ALG[name.rstrip("0123456789")]

    def jwk(self, name: str) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg(name))
        data = json.loads(algorithm.to_jwk(self.private[name].public_key()))
        data["kid"] = name
        data.setdefault("use", "sig")
        return dict(data)

    def jwks(self, *names: str) -> str:
        return json.dumps({"keys": [self.jwk(n) for n in names or ("rsa1",)]})

    def public_pem(self, name: str) -> bytes:
        return bytes(
            self.private[name]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def claims(self, sub: str = "alice", *, ttl: float = 3600, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        out: dict[str, Any] = {"iss": self.issuer, "sub": sub, "iat": now, "exp": now + int(ttl)}
        out.update(extra)
        return out

    def mint(self, claims: Mapping[str, Any], key: str = "rsa1", *, kid: str | None = "") -> str:
        """A token signed with ``key``; ``kid`` "" uses the key's name, None leaves it out."""
        headers: dict[str, Any] = {}
        if kid is not None:
            headers["kid"] = kid or key
        return jwt.encode(dict(claims), self.private[key], algorithm=self.alg(key), headers=headers)

    def forge_hmac(self, claims: Mapping[str, Any], key: str = "rsa1") -> str:
        """HS256 keyed with ``key``'s public key PEM: the classic algorithm-confusion forgery."""
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key}).encode())
        payload = _b64(json.dumps(dict(claims)).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = hmac.new(self.public_pem(key), signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    def forge_none(self, claims: Mapping[str, Any], key: str = "rsa1") -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key}).encode())
        payload = _b64(json.dumps(dict(claims)).encode())
        return f"{header}.{payload}."


class JwksServer:
    """Serves ``body`` at ``/jwks.json`` on 127.0.0.1; ``body`` may be changed at any time."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.requests = 0
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.delay:
                    time.sleep(outer.delay)
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                data = outer.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def serve_jwks(body: str) -> Iterator[JwksServer]:
    server = JwksServer(body)
    server.start()
    try:
        yield server
    finally:
        server.stop()
