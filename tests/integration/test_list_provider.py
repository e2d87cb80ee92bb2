"""The list adapter against a real HTTP list provider (aiohttp on 127.0.0.1:0).

The provider changes its list, fails (HTTP 500, connection refused, too slow) and serves oversize
bodies. Refreshes are driven by calling the handler's ``refresh`` directly (after the one fetch the
handler starts by itself has finished; the next periodic one is ``refreshInterval`` away) and the
``ttl`` is crossed with the harness's ManualClock, so every step is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from mixerd.adapter import Code, ManualClock
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.list import INFO, ListHandler, ListUnavailableError
from tests.support.net import free_port


@dataclass
class Provider:
    """What the fake list server answers."""

    body: bytes = b""
    status: int = 200
    delay: float = 0.0
    chunked: bool = False
    """Stream the body without a Content-Length."""
    requests: int = 0
    url: str = ""
    runner: web.AppRunner | None = field(default=None, repr=False)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="provider is sick")
        if not self.chunked:
            return web.Response(body=self.body, content_type="text/plain")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(self.body), 4096):
            await resp.write(self.body[i : i + 4096])
        await resp.write_eof()
        return resp

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    app = web.Application()
    app.router.add_get("/list", p.handle)
    p.runner = web.AppRunner(app, shutdown_timeout=1.0)
    await p.runner.setup()
    site = web.TCPSite(p.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p.url = f"http://127.0.0.1:{port}/list"
    yield p
    await p.stop()


class Checker:
    """A harness around one list handler, plus helpers."""

    def __init__(self, config: dict[str, Any], clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.harness = AdapterHarness(
            INFO, config, {"entry": ("listentry", {"value": "source.name"})}, clock=self.clock
        )
        handler = self.harness.handler
        assert isinstance(handler, ListHandler)
        self.handler = handler

    async def settled(self) -> None:
        async with asyncio.timeout(5):
            while self.handler.fetches == 0 or self.handler.refreshing:
                await asyncio.sleep(0.005)

    async def code(self, value: str) -> Code:
        return Code((await self.harness.check("entry", {"source.name": value})).status.code)

    async def close(self) -> None:
        await self.harness.close()


@pytest.fixture
async def checkers() -> AsyncIterator[list[Checker]]:
    made: list[Checker] = []
    yield made
    for c in made:
        await c.close()


async def start(checkers: list[Checker], config: dict[str, Any]) -> Checker:
    c = Checker(config)
    checkers.append(c)
    await c.settled()
    return c


async def test_first_fetch_starts_by_itself(provider: Provider, checkers: list[Checker]) -> None:
    provider.body = b"a\nb\n"
    c = await start(checkers, {"providerUrl": provider.url})
    assert provider.requests == 1
    assert c.handler.entries == 2
    assert await c.code("a") == Code.OK
    assert await c.code("c") == Code.PERMISSION_DENIED


async def test_a_changed_list_takes_effect_after_a_refresh(
    provider: Provider, checkers: list[Checker]
) -> None:
    provider.body = b"a\nb\n"
    c = await start(checkers, {"providerUrl": provider.url, "overrides": ["always"]})
    assert (await c.code("a"), await c.code("c"), await c.code("always")) == (
        Code.OK,
        Code.PERMISSION_DENIED,
        Code.OK,
    )
    provider.body = b"c\n"
    assert await c.code("c") == Code.PERMISSION_DENIED  # not refreshed yet
    assert await c.handler.refresh()
    assert (await c.code("a"), await c.code("c"), await c.code("always")) == (
        Code.PERMISSION_DENIED,
        Code.OK,
        Code.OK,
    )
    builds = c.handler.builds
    assert await c.handler.refresh()  # same body: fetched, not rebuilt
    assert c.handler.builds == builds
    assert provider.requests == 3


async def test_server_errors_keep_the_list_until_ttl_then_checks_fail(
    provider: Provider, checkers: list[Checker]
) -> None:
    provider.body = b"a\n"
    c = await start(checkers, {"providerUrl": provider.url, "refreshInterval": "10s", "ttl": "30s"})
    provider.status = 500
    c.clock.advance(20)
    assert not await c.handler.refresh()
    assert c.handler.last_error is not None and "500" in c.handler.last_error
    assert await c.code("a") == Code.OK  # the old list is kept ...
    c.clock.advance(10.5)  # ... until ttl has passed since the last successful fetch
    with pytest.raises(ListUnavailableError, match="500"):
        await c.code("a")
    assert c.handler.entries is None
    provider.status = 200
    assert await c.handler.refresh()
    assert await c.code("a") == Code.OK


async def test_an_unchanged_list_counts_as_a_refresh_for_ttl(
    provider: Provider, checkers: list[Checker]
) -> None:
    provider.body = b"a\n"
    c = await start(checkers, {"providerUrl": provider.url, "refreshInterval": "10s", "ttl": "30s"})
    for _ in range(5):
        c.clock.advance(20)
        assert await c.handler.refresh()
    assert c.handler.builds == 1
    assert await c.code("a") == Code.OK


async def test_connection_refused_keeps_the_list_until_ttl(
    checkers: list[Checker], provider: Provider
) -> None:
    provider.body = b"a\n"
    c = await start(checkers, {"providerUrl": provider.url, "refreshInterval": "1s", "ttl": "5s"})
    await provider.stop()
    assert not await c.handler.refresh()
    assert c.handler.last_error is not None and "could not fetch list" in c.handler.last_error
    assert await c.code("a") == Code.OK
    c.clock.advance(5)
    assert not await c.handler.refresh()  # a failed refresh after ttl purges the list
    assert c.handler.entries is None
    with pytest.raises(ListUnavailableError, match="could not fetch list"):
        await c.code("a")


async def test_a_provider_that_never_answered(checkers: list[Checker]) -> None:
    c = await start(checkers, {"providerUrl": f"http://127.0.0.1:{free_port()}/list", "overrides": ["a"]})
    assert c.handler.entries is None
    with pytest.raises(ListUnavailableError, match="could not fetch list"):
        await c.code("a")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversize_list_is_rejected_and_the_old_one_kept(
    provider: Provider, checkers: list[Checker], chunked: bool
) -> None:
    provider.body = b"a\n"
    c = await start(checkers, {"providerUrl": provider.url, "maxListBytes": 1000})
    provider.body = b"x" * 999 + b"\n" + b"b\n" * 50_000
    provider.chunked = chunked
    assert not await c.handler.refresh()
    assert c.handler.last_error is not None and "maxListBytes" in c.handler.last_error
    assert await c.code("a") == Code.OK
    assert await c.code("b") == Code.PERMISSION_DENIED
    provider.body = b"b\n"
    assert await c.handler.refresh()
    assert await c.code("b") == Code.OK


async def test_a_slow_provider_times_out(provider: Provider, checkers: list[Checker]) -> None:
    provider.body = b"a\n"
    c = await start(checkers, {"providerUrl": provider.url, "fetchTimeout": "100ms"})
    provider.delay = 0.5
    assert not await c.handler.refresh()
    assert c.handler.last_error is not None and "within 0.1s" in c.handler.last_error
    assert await c.code("a") == Code.OK


async def test_an_unparsable_list_keeps_the_old_one(provider: Provider, checkers: list[Checker]) -> None:
    provider.body = b"^a$\n"
    c = await start(checkers, {"providerUrl": provider.url, "entryType": "REGEX"})
    provider.body = b"^b$\n([\n"
    assert not await c.handler.refresh()
    assert c.handler.last_error is not None and "entry 2" in c.handler.last_error
    assert await c.code("a") == Code.OK
    assert await c.code("b") == Code.PERMISSION_DENIED


async def test_an_ip_blacklist_from_yaml_plus_overrides(provider: Provider, checkers: list[Checker]) -> None:
    provider.body = b"whitelist:\n- 10.10.0.0/16\n- 2001:db8::1\n"
    c = await start(
        checkers,
        {
            "providerUrl": provider.url,
            "entryType": "IP_ADDRESSES",
            "blacklist": True,
            "overrides": ["192.0.2.7"],
        },
    )
    assert c.handler.entries == 3
    result = await c.harness.check("entry", {"source.name": "10.10.4.4"})
    assert (result.status.code, result.status.message) == (Code.PERMISSION_DENIED, "10.10.4.4 is blacklisted")
    assert await c.code("192.0.2.7") == Code.PERMISSION_DENIED
    assert await c.code("2001:db8::1") == Code.PERMISSION_DENIED
    assert await c.code("10.11.0.1") == Code.OK
    assert await c.code("nonsense") == Code.INVALID_ARGUMENT
