"""The ``list`` handler: answers listentry checks from a compiled list and keeps a fetched list fresh.

Lifecycle of a list with a ``providerUrl`` (Mixer's ``list.go``, with bounds added):

* the first fetch starts as soon as the handler runs (``env.every(refreshInterval, refresh)``);
  until one succeeds, checks raise :class:`ListUnavailableError` (Mixer answered an empty OK result
  in that window, i.e. failed open; Mixer fetched synchronously in ``Build``, we cannot block);
* each fetch is bounded by ``fetchTimeout`` and ``maxListBytes``; the body's SHA-256 is compared with
  the previous one and an unchanged list is not rebuilt (it only counts as a successful refresh);
* a failed fetch or an unparsable body keeps the current list and records the error;
* once ``ttl`` has passed since the last successful refresh the list is purged and every check
  raises :class:`ListUnavailableError` carrying the last fetch error, until a fetch succeeds again.
  Like Mixer, which returned the fetch error from ``HandleListEntry``, this is a handler *error*
  (the runtime turns it into an error for the Check call, which the proxy's fail-open/close policy
  handles), not a cached denial. The purge drops the overrides too: they are part of the list.

Without a ``providerUrl`` the list is the ``overrides`` alone and never changes.

Results (Mixer's): a whitelist miss is ``PERMISSION_DENIED "<value> is not whitelisted"``, a
blacklist hit ``PERMISSION_DENIED "<value> is blacklisted"``, a value that is neither a string nor
an IP address (or, in an IP list, not an IP address) ``INVALID_ARGUMENT``; every result, OK or not,
carries ``valid_duration = cachingInterval`` and ``valid_use_count = cachingUseCount``. The runtime
prefixes messages with the handler name (``staticversion.listchecker.istio-system:``), as Mixer's
dispatcher did.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from mixerd.adapter import (
    OK,
    Builder,
    CheckResult,
    Code,
    ConfigError,
    Env,
    Handler,
    InstanceInfo,
    Status,
    redact_url,
)
from mixerd.adapters.list.config import ListParams, parse_params
from mixerd.adapters.list.fetch import FetchError, fetch_list
from mixerd.adapters.list.matcher import (
    EntryError,
    InvalidValueError,
    IpMatcher,
    ListParseError,
    Matcher,
    build_matcher,
    parse_body,
    value_text,
)
from mixerd.attribute import IPAddress

__all__ = ["ListBuilder", "ListHandler", "ListUnavailableError"]


class ListUnavailableError(RuntimeError):
    """There is no usable list: it was never fetched, or it expired (``ttl``) without a refresh."""


class ListHandler(Handler):
    """Checks listentry values against a white or black list."""

    def __init__(self, params: ListParams, env: Env) -> None:
        self.params = params
        self._env = env
        self._clock = env.clock
        self._log = env.logger
        self._ok = CheckResult(OK, params.caching_interval, params.caching_use_count)
        self._matcher: Matcher | None = None
        self._expires_at = math.inf
        self._digest: bytes | None = None
        self._last_error: str | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Fetch attempts so far."""
        self.builds = 0
        """How many times a list was compiled (an unchanged body is not recompiled)."""
        if params.provider_url:
            env.every(params.refresh_interval.total_seconds(), self._periodic_refresh, "refresh")
        else:
            self._matcher = build_matcher(params.entry_type, params.overrides)
            self.builds = 1

    # -- checks ----------------------------------------------------------------------------------

    def handle_listentry(self, instance: Any) -> CheckResult:
        matcher = self._matcher
        if matcher is None or self._expires_at <= self._clock.monotonic():
            raise self._unavailable()
        params = self.params
        value = instance.value
        try:
            if isinstance(value, IPAddress) and isinstance(matcher, IpMatcher):
                found = matcher.contains_ip(value)  # no round trip through text
            else:
                value = value_text(value)
                found = matcher.contains(value)
        except InvalidValueError as exc:
            return CheckResult(
                Status(Code.INVALID_ARGUMENT, str(exc)), params.caching_interval, params.caching_use_count
            )
        if params.blacklist:
            if not found:
                return self._ok
            message = f"{value} is blacklisted"
        else:
            if found:
                return self._ok
            message = f"{value} is not whitelisted"
        return CheckResult(
            Status(Code.PERMISSION_DENIED, message), params.caching_interval, params.caching_use_count
        )

    def _unavailable(self) -> ListUnavailableError:
        url = redact_url(self.params.provider_url)
        expired = self._matcher is not None
        if expired:
            self._purge()
        if self._last_error is not None:
            return ListUnavailableError(self._last_error)
        if expired or self.builds:
            return ListUnavailableError(f"the list from {url} expired (no successful refresh within ttl)")
        return ListUnavailableError(f"the list from {url} has not been fetched yet")

    def _purge(self) -> None:
        self._log.warning(
            "purging the list from %s: no successful refresh for %s (ttl); last error: %s",
            redact_url(self.params.provider_url),
            self.params.ttl,
            self._last_error,
        )
        self._matcher = None
        self._digest = None

    # -- refresh ---------------------------------------------------------------------------------

    @property
    def entries(self) -> int | None:
        """Entries in the current list (``None`` when there is no usable list)."""
        return None if self._matcher is None else len(self._matcher)

    @property
    def refreshing(self) -> bool:
        """Whether a fetch is in progress."""
        return self._lock.locked()

    @property
    def last_error(self) -> str | None:
        """Why the last fetch failed (``None`` after a success)."""
        return self._last_error

    async def refresh(self) -> bool:
        """Fetch the list once and install it if it changed; ``True`` on success.

        Called every ``refreshInterval`` by the handler's own task; tests call it directly.
        """
        async with self._lock:
            return await self._refresh()

    async def _periodic_refresh(self) -> None:
        await self.refresh()

    async def _refresh(self) -> bool:
        params = self.params
        self.fetches += 1
        try:
            body = await fetch_list(
                params.provider_url,
                timeout=params.fetch_timeout.total_seconds(),
                max_bytes=params.max_list_bytes,
            )
        except FetchError as exc:
            return self._failed(str(exc))
        digest = hashlib.sha256(body).digest()
        if digest == self._digest and self._matcher is not None:
            self._log.debug("the list from %s is unchanged", redact_url(params.provider_url))
            self._succeeded()
            return True
        try:
            matcher = await asyncio.to_thread(self._compile, body)
        except (ListParseError, EntryError) as exc:
            return self._failed(f"could not parse the list from {redact_url(params.provider_url)}: {exc}")
        self._matcher = matcher
        self._digest = digest
        self.builds += 1
        self._succeeded()
        self._log.info(
            "installed the list from %s: %d entries", redact_url(params.provider_url), len(matcher)
        )
        return True

    def _compile(self, body: bytes) -> Matcher:
        params = self.params
        entries = parse_body(params.entry_type, body)
        try:
            return build_matcher(params.entry_type, [*entries, *params.overrides])
        except EntryError as exc:
            raise EntryError(exc.index, f"entry {exc.index + 1}: {exc.message}") from None

    def _succeeded(self) -> None:
        self._last_error = None
        self._expires_at = self._clock.monotonic() + self.params.ttl.total_seconds()

    def _failed(self, message: str) -> bool:
        self._log.error("%s", message)
        self._last_error = message
        if self._matcher is not None and self._expires_at <= self._clock.monotonic():
            self._purge()
        return False

    def close(self) -> None:
        """Nothing to release: the refresh task belongs to the handler's ``Env``."""


class ListBuilder(Builder):
    """Validates the params (all problems, with field paths) and builds a :class:`ListHandler`."""

    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.params, self._errors = parse_params(config)

    def validate(self) -> list[ConfigError]:
        return list(self._errors)

    def build(self, env: Env) -> ListHandler:
        return ListHandler(self.params, env)
