"""Fetching JSON Web Key Sets for RequestAuthentication's ``jwksUri`` (the runtime's JWT I/O).

One :class:`JwksFetcher` per runtime, shared by every config: a URI's keys survive config
changes. Each URI in use has a background task that fetches it (within ``timeout``, 5 s, at most
``max_bytes``, through :func:`mixerd.adapter.fetch.fetch_bounded`), then again every
``refresh_interval`` seconds, and after a failure with a backoff from 1 s up to the interval.
A fetch that fails, or a document without a usable key, keeps the keys in hand and is logged
(rate-limited, with the URL's secrets redacted). A token whose key id is unknown makes the
request fetch the keys again at once, at most once per ``unknown_kid_interval`` per URI (so a
stream of forged key ids cannot turn into a stream of fetches): a rotated key is picked up by
its first token. A request arriving before the first fetch finished waits for it, bounded by the
fetch timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from mixerd.adapter import Clock, RateLimitedWarning, redact_url
from mixerd.adapter.fetch import FetchError, fetch_bounded
from mixerd.runtime.authn import KeySet, parse_jwks

__all__ = ["JwksFetcher"]

_log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[bytes]]

_MIN_BACKOFF: Final = 1.0


class _Keys:
    """One URI's keys (a :class:`~mixerd.runtime.authn.KeyProvider`)."""

    __slots__ = ("_fetcher", "_first", "_inflight", "_last_forced", "_task", "error", "keys", "uri")

    def __init__(self, fetcher: JwksFetcher, uri: str) -> None:
        self.uri = uri
        self._fetcher = fetcher
        self.keys: KeySet | None = None
        self.error = ""
        self._first = asyncio.Event()
        self._inflight: asyncio.Task[None] | None = None
        self._last_forced: float | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> KeySet | None:
        return self.keys

    async def ready(self) -> KeySet | None:
        if not self._first.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), self._fetcher.timeout + 0.5)
        return self.keys

    async def refresh(self) -> KeySet | None:
        now = self._fetcher.clock.monotonic()
        last = self._last_forced
        if last is not None and now - last < self._fetcher.unknown_kid_interval:
            return self.keys
        self._last_forced = now
        await self._fetch_once()
        return self.keys

    async def _fetch_once(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        f = self._fetcher
        shown = redact_url(self.uri)
        try:
            body = await f.fetch(self.uri)
            keys = parse_jwks(body)
        except (FetchError, ValueError) as exc:
            message = str(exc) if isinstance(exc, FetchError) else f"JWKS from {shown}: {exc}"
            self.error = message
            f.warning.add(1, f"JWKS fetch failed, keeping the keys in hand (latest: {message})")
            f.fetches.labels("error").inc()
        else:
            if keys.problems:
                f.warning.add(1, f"JWKS from {shown}: keys left out: {'; '.join(keys.problems)}")
            self.keys = keys
            self.error = ""
            f.fetches.labels("ok").inc()
        finally:
            self._first.set()

    async def run(self) -> None:
        f = self._fetcher
        backoff = _MIN_BACKOFF
        while True:
            await self._fetch_once()
            if self.error:
                delay = min(backoff, f.refresh_interval)
                backoff = min(backoff * 2, f.refresh_interval)
            else:
                delay = f.refresh_interval
                backoff = _MIN_BACKOFF
            await asyncio.sleep(delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"mixerd-jwks {self.uri}")

    async def stop(self) -> None:
        for task in (self._task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class JwksFetcher:
    """The key sets of every ``jwksUri`` in use, kept fresh in the background."""

    def __init__(
        self,
        clock: Clock,
        *,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
        refresh_interval: float = 600.0,
        unknown_kid_interval: float = 5.0,
        fetch: Fetch | None = None,
        metrics_counter: Any = None,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.refresh_interval = refresh_interval
        self.unknown_kid_interval = unknown_kid_interval
        self.fetch: Fetch = fetch or self._fetch
        self.warning = RateLimitedWarning(clock, logger=_log)
        self.fetches: Any = metrics_counter if metrics_counter is not None else _NullCounter()
        """``mixerd_jwks_fetches_total{result}``."""
        self._uris: dict[str, _Keys] = {}

    async def _fetch(self, uri: str) -> bytes:
        return await fetch_bounded(
            uri,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            what="JWKS",
            limit_name="the JWKS size limit",
            accept="application/jwk-set+json, application/json",
        )

    def provider(self, uri: str) -> _Keys:
        """The keys of ``uri``, fetched from now on (call from the event loop)."""
        keys = self._uris.get(uri)
        if keys is None:
            keys = self._uris[uri] = _Keys(self, uri)
            keys.start()
        return keys

    async def retain(self, uris: Iterable[str]) -> None:
        """Stop fetching the URIs no config in force uses any more."""
        keep = set(uris)
        for uri in [u for u in self._uris if u not in keep]:
            await self._uris.pop(uri).stop()

    def status(self) -> dict[str, str]:
        """URI (redacted) -> ``ok (n keys)`` or the latest error, for /debug/config."""
        out: dict[str, str] = {}
        for uri, k in self._uris.items():
            if k.error:
                out[redact_url(uri)] = k.error
            elif k.keys is not None:
                out[redact_url(uri)] = f"ok ({len(k.keys.keys)} keys)"
            else:
                out[redact_url(uri)] = "fetching"
        return out

    async def close(self) -> None:
        await self.retain(())


class _NullCounter:
    def labels(self, *values: str) -> _NullCounter:
        return self

    def inc(self, amount: float = 1) -> None:
        return None
