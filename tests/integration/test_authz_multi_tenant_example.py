"""The README's worked example, docs/examples/multi-tenant/, run as written: its identity provider
(idp.py), `mixerd serve` on its config and a real Envoy on its envoy.yaml, in front of an app that
echoes what it receives. Only the fixed ports are replaced by free ones."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.ext_authz_support import Upstream, start_upstream
from tests.support.net import free_port, wait_for
from tests.support.proc import stop_process

from .envoy_proc import start_envoy
from .mixerd_proc import start_mixerd
from .test_docs_examples import ported

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "multi-tenant"


@pytest.fixture
def idp() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "idp.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=1).status
                == 200
            ),
            timeout=20,
            what="idp.py",
        )
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await start_upstream()
    yield up
    await up.stop()


async def test_multi_tenant_example(tmp_path: Path, idp: int, upstream: Upstream) -> None:
    config = tmp_path / "mixerd-config.yaml"
    config.write_text(ported((EXAMPLE / "mixerd-config.yaml").read_text(), {8090: idp}))
    mixerd = start_mixerd(tmp_path, [config])
    listener, admin = free_port(), free_port()
    text = ported(
        (EXAMPLE / "envoy.yaml").read_text(), {10000: listener, 9091: mixerd.grpc_port, 8080: upstream.port}
    )
    text = f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n" + text
    envoy = start_envoy(tmp_path / "envoy", text, admin)
    base = f"http://127.0.0.1:{listener}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:

            async def token(sub: str, tenant: str, role: str, ttl: int = 3600) -> str:
                url = f"http://127.0.0.1:{idp}/token?sub={sub}&tenant={tenant}&role={role}&ttl={ttl}"
                async with s.get(url) as r:
                    return await r.text()

            async def call(
                path: str, tok: str | None, method: str = "GET"
            ) -> tuple[int, str, dict[str, str]]:
                headers = {"Authorization": f"Bearer {tok}"} if tok else {}
                async with s.request(method, base + path, headers=headers) as r:
                    return r.status, await r.text(), {k.lower(): v for k, v in r.headers.items()}

            admin_acme = await token("alice", "acme", "admin")
            viewer_acme = await token("victor", "acme", "viewer")
            viewer_globex = await token("gina", "globex", "viewer")

            # admins: every API of their tenant; the app learns who calls, never the token
            for method in ("GET", "POST", "DELETE"):
                status, body, _ = await call("/acme/orders", admin_acme, method)
                assert status == 200, body
            seen = upstream.seen[-1]["headers"]
            assert (seen["x-user"], seen["x-tenant"], seen["x-role"]) == ("alice", "acme", "admin")
            assert "authorization" not in seen

            # viewers: only GET
            status, body, _ = await call("/acme/orders", viewer_acme)
            assert status == 200, body
            status, body, headers = await call("/acme/orders", viewer_acme, "POST")
            assert status == 403
            assert headers["x-mixerd-authz-policy"] == "acme/admins,acme/viewers"

            # nobody crosses tenants, not even an admin
            status, body, headers = await call("/globex/orders", admin_acme)
            assert status == 403
            assert headers["x-mixerd-authz-policy"] == "globex/other-tenants"
            assert body == "denied by authorization policy globex/other-tenants"

            # no token: 403 (a token is required by the ALLOW policies); a bad one: 401
            status, _, _ = await call("/acme/orders", None)
            assert status == 403
            expired = await token("alice", "acme", "admin", ttl=-3600)
            status, body, headers = await call("/acme/orders", expired)
            assert status == 401 and body == "invalid JWT: token expired"
            assert headers["www-authenticate"].startswith("Bearer ")

            # each tenant its own quota: globex's plan is 5 requests a minute, acme is unaffected
            statuses = [(await call("/globex/orders", viewer_globex))[0] for _ in range(6)]
            assert statuses == [200] * 5 + [429]
            status, _, _ = await call("/acme/orders", viewer_acme)
            assert status == 200

        debug = json.loads(mixerd.http("/debug/config"))
        assert debug["jwks"] == {f"http://127.0.0.1:{idp}/.well-known/jwks.json": "ok (1 keys)"}
        assert "AuthorizationPolicy/other-tenants.globex" in debug["snapshot"]["security"]
    finally:
        envoy.stop()
        assert mixerd.stop() == 0, mixerd.log()
