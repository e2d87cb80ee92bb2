"""A small local identity provider for the multi-tenant example (development only: it hands a
token to anyone who asks, so it listens on loopback).

    python idp.py [--port 8090]

GET /.well-known/jwks.json   the public key (EC P-256, made at start-up), as a JSON Web Key Set
GET /token?sub=alice&tenant=acme&role=admin[&ttl=3600]
                             a token signed with it: iss http://127.0.0.1:<port>, aud tenant-api
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8090, help="loopback port to listen on (default 8090)")
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update(kid="tenants-1", use="sig", alg="ES256")
    jwks = json.dumps({"keys": [public]}).encode()
    issuer = f"http://127.0.0.1:{args.port}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/jwks.json":
                self._answer(200, "application/json", jwks)
            elif url.path == "/token":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                now = int(time.time())
                claims = {
                    "iss": issuer,
                    "aud": "tenant-api",
                    "sub": q.get("sub", "anonymous"),
                    "tenant": q.get("tenant", ""),
                    "role": q.get("role", "viewer"),
                    "iat": now,
                    "exp": now + int(q.get("ttl", "3600")),
                }
                token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "tenants-1"})
                self._answer(200, "text/plain", token.encode())
            else:
                self._answer(404, "text/plain", b"not found\n")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"identity provider on {issuer} (keys: {issuer}/.well-known/jwks.json)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
