"""The JWKS fetcher (mixerd.runtime.jwks) against a key set served on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from mixerd.adapter import ManualClock
from mixerd.runtime.jwks import JwksFetcher
from tests.support.jwt_issuer import Issuer, JwksServer, serve_jwks


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def server(issuer: Issuer) -> Iterator[JwksServer]:
    with serve_jwks(issuer.jwks("rsa1")) as s:
        yield s


async def _until(predicate: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_first_fetch_rotation_and_unknown_kid_rate_limit(issuer: Issuer, server: JwksServer) -> None:
    clock = ManualClock()
    fetcher = JwksFetcher(clock, unknown_kid_interval=5.0)
    try:
        keys = fetcher.provider(server.url)
        ks = await keys.ready()
        assert ks is not None and [k.key_id for k in ks.keys] == ["rsa1"]
        server.body = issuer.jwks("rsa1", "rsa2")
        fresh = await keys.refresh()  # a token named an unknown kid: fetched at once
        assert fresh is not None and [k.key_id for k in fresh.keys] == ["rsa1", "rsa2"]
        before = server.requests
        server.body = issuer.jwks("ec")
        await keys.refresh()  # again within 5 s: not fetched
        assert server.requests == before
        clock.advance(5.0)
        again = await keys.refresh()
        assert again is not None and [k.key_id for k in again.keys] == ["ec"]
        assert fetcher.status() == {server.url: "ok (1 keys)"}
    finally:
        await fetcher.close()


async def test_periodic_refresh(issuer: Issuer, server: JwksServer) -> None:
    fetcher = JwksFetcher(ManualClock(), refresh_interval=0.05)
    try:
        keys = fetcher.provider(server.url)
        await keys.ready()
        server.body = issuer.jwks("ed")
        await _until(lambda: keys.current() is not None and keys.current().keys[0].key_id == "ed")
    finally:
        await fetcher.close()


async def test_failures_keep_the_keys_in_hand(issuer: Issuer, server: JwksServer) -> None:
    fetcher = JwksFetcher(ManualClock(), max_bytes=4096, timeout=10.0, unknown_kid_interval=0.0)
    try:
        keys = fetcher.provider(server.url)
        first = await keys.ready()
        assert first is not None
        server.body = json.dumps({"keys": [issuer.jwk("rsa1")] * 20})  # more than 4096 bytes
        assert await keys.refresh() is first
        assert "more than the limit of 4096" in keys.error and "(the JWKS size limit)" in keys.error
        server.body = "{not json"
        assert await keys.refresh() is first
        assert keys.error.startswith(f"JWKS from {server.url}: not JSON")
        server.body = issuer.jwks("rsa2")
        fetcher.timeout, server.delay = 0.5, 3.0  # the answer comes long after the timeout
        assert await keys.refresh() is first
        assert "no complete answer within 0.5s" in keys.error
        fetcher.timeout, server.delay = 10.0, 0.0
        fresh = await keys.refresh()
        assert fresh is not None and fresh.keys[0].key_id == "rsa2" and keys.error == ""
    finally:
        await fetcher.close()


async def test_unreachable_uri_and_retain(issuer: Issuer) -> None:
    with serve_jwks(issuer.jwks()) as s:
        url = s.url
    fetcher = JwksFetcher(ManualClock(), timeout=1.0)
    try:
        keys = fetcher.provider(url)
        assert await keys.ready() is None
        assert keys.error.startswith(f"could not fetch JWKS from {url}")
        await fetcher.retain(())
        assert fetcher.status() == {}
    finally:
        await fetcher.close()
