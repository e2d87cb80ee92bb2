"""The README's example configs, run for real: `mixerd serve` with docs/examples/mixerd-config.yaml
behind a real Envoy (docs/examples/envoy.yaml) and a real nginx (docs/examples/nginx.conf).

The example files are used as they are, except that their fixed ports are replaced by free ones
(and Envoy gets an admin listener so the test knows when it is ready).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ext_authz_support import Upstream, start_upstream
from tests.support.net import free_port

from .envoy_proc import start_envoy
from .mixerd_proc import MixerdProcess, start_mixerd
from .nginx_proc import start_nginx

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def ported(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(\d{4,5})\b", lambda m: str(ports.get(int(m.group(1)), m.group(1))), text)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await start_upstream()
    yield up
    await up.stop()


@pytest.fixture
def mixerd(tmp_path: Path) -> Any:
    proc = start_mixerd(
        tmp_path, [EXAMPLES / "mixerd-config.yaml"], env={"MIXERD_HTTP_AUTHZ_PREFIX": "/authz"}
    )
    yield proc
    assert proc.stop() == 0, proc.log()


async def get(session: aiohttp.ClientSession, url: str, user: str | None) -> tuple[int, str, Any]:
    headers = {"x-user": user} if user is not None else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_envoy_example(tmp_path: Path, upstream: Upstream, mixerd: MixerdProcess) -> None:
    grpc_listener, http_listener, admin = free_port(), free_port(), free_port()
    text = ported(
        (EXAMPLES / "envoy.yaml").read_text(),
        {
            10000: grpc_listener,
            10001: http_listener,
            9091: mixerd.grpc_port,
            9192: mixerd.http_authz_port,
            8080: upstream.port,
        },
    ).replace("0.0.0.0", "127.0.0.1")
    text = f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n" + text
    envoy = start_envoy(tmp_path / "envoy", text, admin)
    try:
        async with aiohttp.ClientSession() as s:
            for listener in (grpc_listener, http_listener):
                url = f"http://127.0.0.1:{listener}/orders"
                status, _, _ = await get(s, url, "alice")
                assert status == 200, envoy.log()[-2000:]
                assert upstream.seen[-1]["headers"]["x-user-id"] == "alice"
                status, body, headers = await get(s, url, "mallory")
                assert (status, body) == (403, "mallory is not welcome here")
                assert headers["x-mixerd-status"] == "PERMISSION_DENIED"
                status, body, _ = await get(s, url, None)
                assert (status, body) == (401, "say who you are (x-user)")
            # The Check charges "requestcount": 10 per 10 seconds per user.
            url = f"http://127.0.0.1:{grpc_listener}/orders"
            statuses = [(await get(s, url, "bob"))[0] for _ in range(12)]
            assert statuses == [200] * 10 + [429] * 2, statuses
            # The access logs of the gRPC-mode listener reached mixerd and moved its example
            # counter, Envoy's response flags included (UAEX: denied by the external authorizer).
            want = [
                'mixerd_example_requests_total{response_code="200",response_flags="-",user="alice"} 1',
                'mixerd_example_requests_total{response_code="403",response_flags="UAEX",user="mallory"} 1',
                'mixerd_example_requests_total{response_code="401",response_flags="UAEX",user="anonymous"} 1',
                'mixerd_example_requests_total{response_code="200",response_flags="-",user="bob"} 10',
                'mixerd_example_requests_total{response_code="429",response_flags="UAEX",user="bob"} 2',
            ]
            for _ in range(100):
                text = mixerd.http("/metrics", mixerd.prometheus_port)
                if all(line in text for line in want):
                    break
                await asyncio.sleep(0.1)
            assert [line for line in want if line not in text] == [], text
    finally:
        envoy.stop()


async def test_nginx_example(tmp_path: Path, upstream: Upstream, mixerd: MixerdProcess) -> None:
    port = free_port()
    text = ported(
        (EXAMPLES / "nginx.conf").read_text(), {8000: port, 9192: mixerd.http_authz_port, 8080: upstream.port}
    )
    nginx = start_nginx(tmp_path / "nginx", text, port)
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/orders?id=7"
            status, _, _ = await get(s, url, "alice")
            assert status == 200, nginx.log()[-2000:]
            assert upstream.seen[-1]["headers"]["x-user-id"] == "alice"
            assert upstream.seen[-1]["path"] == "/orders?id=7"
            status, _, _ = await get(s, url, "mallory")
            assert status == 403
            status, _, _ = await get(s, url, None)
            assert status == 401
    finally:
        nginx.stop()
