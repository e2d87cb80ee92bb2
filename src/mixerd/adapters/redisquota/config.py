"""redisquota params: reading and validation (pure; validation never connects to Redis).

Mixer's checks keep Mixer's field names and messages (``valid_duration: quotas.valid_duration
should be bigger must be > 0``), so tools that match on them keep working; type errors and
mixerd's own checks use field paths such as ``quotas[0].maxAmount``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, InstanceInfo, Params, redact_url
from mixerd.attribute import format_duration

__all__ = [
    "DEFAULT_POOL_SIZE",
    "DEFAULT_REDIS_URL",
    "DEFAULT_TIMEOUT",
    "Algorithm",
    "FailurePolicy",
    "RedisAddress",
    "RedisOverride",
    "RedisQuota",
    "RedisQuotaConfig",
    "parse_address",
    "parse_config",
]

DEFAULT_REDIS_URL: Final = "localhost:6379"
DEFAULT_POOL_SIZE: Final = 10
DEFAULT_TIMEOUT: Final = _dt.timedelta(milliseconds=100)
_MS: Final = _dt.timedelta(milliseconds=1)


class Algorithm(enum.Enum):
    FIXED_WINDOW = 0
    ROLLING_WINDOW = 1


class FailurePolicy(enum.Enum):
    """What to answer when Redis cannot be reached (or errs)."""

    FAIL_OPEN = 0
    """Grant the request (up to the quota's maximum) with a short validity."""
    FAIL_CLOSE = 1
    """Answer UNAVAILABLE."""


@dataclass(frozen=True, slots=True)
class RedisOverride:
    dimensions: tuple[tuple[str, str], ...]
    max_amount: int

    def matches(self, dimensions: Mapping[str, str]) -> bool:
        return all(dimensions.get(name, "") == value for name, value in self.dimensions)


@dataclass(frozen=True, slots=True)
class RedisQuota:
    name: str
    max_amount: int
    valid_duration: _dt.timedelta
    bucket_duration: _dt.timedelta
    algorithm: Algorithm
    overrides: tuple[RedisOverride, ...] = ()

    @property
    def window_ms(self) -> int:
        """The window in whole milliseconds (rounded up), as the scripts take it."""
        return max(1, math.ceil(self.valid_duration / _MS))

    @property
    def bucket_ms(self) -> int:
        return max(1, math.ceil(self.bucket_duration / _MS)) if self.bucket_duration else 0

    def max_amount_for(self, dimensions: Mapping[str, str]) -> int:
        """The first matching override's maximum, else the quota's."""
        for override in self.overrides:
            if override.matches(dimensions):
                return override.max_amount
        return self.max_amount


@dataclass(frozen=True, slots=True)
class RedisAddress:
    url: str
    """What redis-py connects to (``redis://host:port/db``, ``rediss://...``)."""
    display: str
    """``host:port``, for messages (never includes credentials)."""


@dataclass(frozen=True, slots=True)
class RedisQuotaConfig:
    quotas: tuple[RedisQuota, ...]
    address: RedisAddress
    pool_size: int = DEFAULT_POOL_SIZE
    timeout: _dt.timedelta = DEFAULT_TIMEOUT
    failure_policy: FailurePolicy = FailurePolicy.FAIL_OPEN


def parse_address(text: str) -> RedisAddress:
    """``host:port``, ``host`` (port 6379), ``[v6]:port``, ``redis://[user:pass@]host:port/db`` or
    ``rediss://...``. Raises ValueError with a reason."""
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported scheme {parts.scheme!r} (expected redis:// or rediss://)")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        host = parts.hostname
        if not host:
            raise ValueError("missing host")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"the database must be a number, got {db!r}")
        return RedisAddress(text, f"{host}:{port}")
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = text, "6379"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    host = host.strip("[]")
    if not host:
        raise ValueError("missing host")
    url_host = f"[{host}]" if ":" in host else host
    return RedisAddress(f"redis://{url_host}:{port_text}/0", f"{host}:{port_text}")


def parse_config(
    config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]
) -> tuple[RedisQuotaConfig, list[ConfigError]]:
    """Read the params; return the config and every problem found, in Mixer's order."""
    p = Params(config)
    quotas: list[RedisQuota] = []
    for _, q in p.list("quotas"):
        overrides = []
        for _, o in q.list("overrides"):
            overrides.append(
                RedisOverride(tuple(sorted(o.str_map("dimensions").items())), o.int("max_amount"))
            )
            o.errors.extend(o.unknown_fields())
        quotas.append(
            RedisQuota(
                name=q.str("name"),
                max_amount=q.int("max_amount", minimum=0),
                valid_duration=q.duration("valid_duration"),
                bucket_duration=q.duration("bucket_duration"),
                algorithm=q.enum("rate_limit_algorithm", Algorithm, Algorithm.FIXED_WINDOW),
                overrides=tuple(overrides),
            )
        )
        q.errors.extend(q.unknown_fields())
    url_key, url_value = p.raw("redis_server_url")
    url = p.str("redis_server_url", default=DEFAULT_REDIS_URL)
    pool_size = p.int("connection_pool_size", default=DEFAULT_POOL_SIZE)
    timeout = p.duration("timeout", default=DEFAULT_TIMEOUT, positive=True)
    policy = p.enum("failure_policy", FailurePolicy, FailurePolicy.FAIL_OPEN)
    errors = p.errors + p.unknown_fields()

    # Mixer's checks, in Mixer's order and words
    def fail(path: str, message: str) -> None:
        errors.append(ConfigError(path, message))

    if not quotas:
        fail("quotas", "quota should not be empty")
    defined: dict[str, int] = {}
    for i, quota in enumerate(quotas):
        if not quota.name:
            fail("name", "quotas.name should not be empty")
            continue
        if quota.name in defined:
            fail(
                f"quotas[{i}].name",
                f"duplicate quota name {quota.name!r} (also quotas[{defined[quota.name]}])",
            )
        defined.setdefault(quota.name, i)
        if quota.valid_duration <= _dt.timedelta(0):
            fail("valid_duration", "quotas.valid_duration should be bigger must be > 0")
            continue
        if quota.algorithm is Algorithm.ROLLING_WINDOW:
            if quota.bucket_duration <= _dt.timedelta(0):
                fail("bucket_duration", "quotas.bucket_duration should be > 0 for ROLLING_WINDOW algorithm")
                continue
            if quota.valid_duration <= quota.bucket_duration:
                fail(
                    "valid_duration",
                    f"quotas.valid_duration: {format_duration(quota.valid_duration)} should be longer than "
                    f"quotas.bucket_duration: {format_duration(quota.bucket_duration)} for ROLLING_WINDOW "
                    "algorithm",
                )
                continue
        for override in quota.overrides:
            if override.max_amount <= 0:
                fail("max_amount", "quotas.overrides.max_amount must be > 0")
                continue
            if not override.dimensions:
                fail("dimensions", "quotas.overrides.dimensions is empty")
                continue
    for instance in sorted({info.name for info in instances.values()}):
        if instance not in defined:
            fail("quotas", f"did not find limit defined for quota {instance}")
    if pool_size <= 0:
        fail("connection_pool_size", f"connection_pool_size of {pool_size} is invalid, must be > 0")

    address = RedisAddress(f"redis://{DEFAULT_REDIS_URL}/0", DEFAULT_REDIS_URL)
    if url_value is not None and isinstance(url_value, str):
        if not url:
            fail("redis_server_url", "redis_server_url should not be empty")
            # Mixer dials the server while validating; mixerd never does I/O here, but an empty
            # address cannot be dialled either, so it reports what Mixer reported.
            fail("redisquota", "could not create a connection to redis server: dial tcp: missing address")
        else:
            try:
                address = parse_address(url)
            except ValueError as exc:
                shown = redact_url(url)
                fail(url_key, f"invalid redis server url {shown!r}: {str(exc).replace(url, shown)}")
    return RedisQuotaConfig(tuple(quotas), address, pool_size, timeout, policy), errors
