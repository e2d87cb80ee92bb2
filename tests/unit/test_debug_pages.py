"""/debug/* shows the policy in force: loopback clients only, unless --debug-remote opens it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mixerd.config import MemoryStore
from mixerd.server.app import Server
from mixerd.server.settings import Settings, is_loopback


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        (None, True),  # a Unix socket peer
        ("10.0.0.1", False),
        ("192.0.2.7", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_is_loopback(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


def _request(remote: str) -> Any:
    return SimpleNamespace(remote=remote)


async def test_debug_pages_refuse_remote_clients_by_default() -> None:
    server = Server(Settings(), store=MemoryStore())
    for handler in (server._routes, server._config):
        refused = await handler(_request("10.0.0.1"))
        assert refused.status == 403
        assert refused.text is not None and "--debug-remote" in refused.text
        assert (await handler(_request("127.0.0.1"))).status == 200


async def test_debug_remote_opens_them() -> None:
    server = Server(Settings(debug_remote=True), store=MemoryStore())
    assert (await server._config(_request("10.0.0.1"))).status == 200
    assert (await server._routes(_request("10.0.0.1"))).status == 200


async def test_debug_config_says_why_the_latest_change_is_not_in_force() -> None:
    import json

    server = Server(Settings(), store=MemoryStore())
    assert json.loads((await server._config(_request("127.0.0.1"))).text or "")["apply_error"] is None
    server.runtime.apply_error = "the latest config change was not applied (boom); config x keeps serving"
    body = json.loads((await server._config(_request("127.0.0.1"))).text or "")
    assert body["apply_error"].startswith("the latest config change was not applied")
