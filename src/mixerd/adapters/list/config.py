"""The ``list`` adapter's params, read and validated field by field (pure, no I/O).

Mixer's params (``mixer/adapter/list/config/config.proto``), camelCase or snake_case:

=====================  ==========  ==========================================================
field                  default     meaning
=====================  ==========  ==========================================================
``providerUrl``        (none)      where to fetch the list (``http``/``https``); none = only
                                   ``overrides``
``refreshInterval``    60s         how often to fetch (at least 1s)
``ttl``                300s        how long a fetched list stays usable without a successful
                                   refresh (at least ``refreshInterval``)
``cachingInterval``    300s        ``valid_duration`` of every check result (>= 0)
``cachingUseCount``    10000       ``valid_use_count`` of every check result (>= 0)
``overrides``          []          entries always in the list, in addition to fetched ones
``entryType``          STRINGS     STRINGS, CASE_INSENSITIVE_STRINGS, IP_ADDRESSES or REGEX
``blacklist``          false       the list names what to deny instead of what to allow
=====================  ==========  ==========================================================

mixerd-specific params (Mixer read fetched lists with no timeout and no size bound):

=====================  ==========  ==========================================================
``fetchTimeout``       10s         total time allowed for one fetch
``maxListBytes``       10 MiB      a longer body is rejected (the previous list stays)
=====================  ==========  ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, Params
from mixerd.adapters.list.matcher import EntryType, check_entry

__all__ = ["DEFAULT_CONFIG", "ListParams", "parse_params"]

_KNOWN: Final = (
    "provider_url",
    "refresh_interval",
    "ttl",
    "caching_interval",
    "caching_use_count",
    "overrides",
    "entry_type",
    "blacklist",
    "fetch_timeout",
    "max_list_bytes",
)

DEFAULT_CONFIG: Final[Mapping[str, Any]] = {
    "refreshInterval": "60s",
    "ttl": "300s",
    "cachingInterval": "300s",
    "cachingUseCount": 10000,
    "entryType": "STRINGS",
    "blacklist": False,
    "fetchTimeout": "10s",
    "maxListBytes": 10 << 20,
}


@dataclass(frozen=True, slots=True)
class ListParams:
    provider_url: str = ""
    refresh_interval: _dt.timedelta = _dt.timedelta(seconds=60)
    ttl: _dt.timedelta = _dt.timedelta(seconds=300)
    caching_interval: _dt.timedelta = _dt.timedelta(seconds=300)
    caching_use_count: int = 10000
    overrides: tuple[str, ...] = ()
    entry_type: EntryType = EntryType.STRINGS
    blacklist: bool = False
    fetch_timeout: _dt.timedelta = _dt.timedelta(seconds=10)
    max_list_bytes: int = 10 << 20


def _url_problem(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"'{url}' is not a valid URL: {exc}"
    if not parts.scheme or not host:
        return f"'{url}': URL scheme and host cannot be empty"
    if parts.scheme.lower() not in ("http", "https"):
        return f"'{url}': only http and https URLs can be fetched"
    return None


def parse_params(config: Mapping[str, Any] | None) -> tuple[ListParams, list[ConfigError]]:
    """The params and every problem with them (each with its field path)."""
    defaults = ListParams()
    p = Params(config)
    url = p.str("provider_url")
    refresh = p.duration("refresh_interval", default=defaults.refresh_interval)
    ttl = p.duration("ttl", default=defaults.ttl)
    caching_interval = p.duration("caching_interval", default=defaults.caching_interval)
    caching_use_count = p.int("caching_use_count", default=defaults.caching_use_count, minimum=0)
    overrides = p.str_list("overrides")
    entry_type = p.enum("entry_type", EntryType, defaults.entry_type)
    blacklist = p.bool("blacklist")
    fetch_timeout = p.duration("fetch_timeout", default=defaults.fetch_timeout, positive=True)
    max_bytes = p.int("max_list_bytes", default=defaults.max_list_bytes, minimum=1)

    if url:
        problem = _url_problem(url)
        if problem is not None:
            p.error(p.raw("provider_url")[0], problem)
        if _dt.timedelta(0) <= refresh < _dt.timedelta(seconds=1):
            p.error(
                p.raw("refresh_interval")[0], f"refresh interval must be at least 1 second, it is {refresh}"
            )
        if refresh >= _dt.timedelta(seconds=1) and ttl < refresh:
            p.error(
                p.raw("ttl")[0],
                f"ttl must be at least refreshInterval, ttl is {ttl} and refreshInterval is {refresh}",
            )

    key = p.raw("overrides")[0]
    for i, entry in enumerate(overrides):
        problem = check_entry(entry_type, entry)
        if problem is not None:
            p.error(f"{key}[{i}]", f"invalid {entry_type.name} override: {problem}")

    errors = p.errors + p.unknown_fields(_KNOWN)
    params = ListParams(
        provider_url=url,
        refresh_interval=refresh,
        ttl=ttl,
        caching_interval=caching_interval,
        caching_use_count=caching_use_count,
        overrides=tuple(overrides),
        entry_type=entry_type,
        blacklist=blacklist,
        fetch_timeout=fetch_timeout,
        max_list_bytes=max_bytes,
    )
    return params, errors
