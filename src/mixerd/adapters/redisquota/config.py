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
from dataclasses import dataclass, field
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
    "Topology",
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


class Topology(enum.Enum):
    """How the Redis servers are arranged, chosen by the scheme of ``redisServerUrl``."""

    SERVER = "server"
    """One server (``host:port``, ``redis://``, ``rediss://``)."""
    CLUSTER = "cluster"
    """A Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    SENTINEL = "sentinel"
    """A primary found through Redis Sentinel (``redis+sentinel://``, ``rediss+sentinel://``)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    url: str = field(repr=False)
    """What redis-py connects to for one server (``redis://host:port/db``, ``rediss://...``);
    for a cluster or Sentinel, the URL as written (never shown: it may hold a password)."""
    display: str
    """Where Redis is, for messages (never includes credentials): ``host:port``,
    ``host:port,host:port (cluster)`` or ``<master> via sentinels host:port,host:port``."""
    topology: Topology = Topology.SERVER
    nodes: tuple[tuple[str, int], ...] = ()
    """Cluster: the nodes to discover the cluster from. Sentinel: the Sentinels."""
    master_name: str = ""
    """Sentinel: the name the Sentinels monitor the primary under."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """Credentials for the Redis servers (cluster nodes, the primary)."""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    """Credentials for the Sentinels themselves (none unless given)."""
    tls: bool = False


@dataclass(frozen=True, slots=True)
class RedisQuotaConfig:
    quotas: tuple[RedisQuota, ...]
    address: RedisAddress
    pool_size: int = DEFAULT_POOL_SIZE
    timeout: _dt.timedelta = DEFAULT_TIMEOUT
    failure_policy: FailurePolicy = FailurePolicy.FAIL_OPEN


_SCHEMES: Final = {
    "redis": (Topology.SERVER, False),
    "rediss": (Topology.SERVER, True),
    "redis+cluster": (Topology.CLUSTER, False),
    "rediss+cluster": (Topology.CLUSTER, True),
    "redis+sentinel": (Topology.SENTINEL, False),
    "rediss+sentinel": (Topology.SENTINEL, True),
}
_SENTINEL_PORT: Final = 26379
_SENTINEL_QUERY: Final = ("sentinel_username", "sentinel_password")


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text or (host.count(":") and not host.startswith("[")):
        host, port_text = text, str(default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    if "@" in host or "/" in host:
        raise ValueError("credentials and databases need a URL (redis://user:password@host:port/db)")
    host = host.strip("[]")
    if not host:
        raise ValueError("missing host")
    return host, int(port_text)


def _joined(nodes: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)


def parse_address(text: str) -> RedisAddress:
    """``host:port``, ``host`` (port 6379), ``[v6]:port``, ``redis://[user:pass@]host:port/db``,
    ``rediss://...``, ``redis+cluster://[user:pass@]host:port,host:port...`` or
    ``redis+sentinel://[user:pass@]host:port,host:port.../master[/db][?sentinel_password=...]``
    (and their ``rediss+`` forms). Raises ValueError with a reason."""
    if "://" not in text:
        host, port = _host_port(text, 6379)
        url_host = f"[{host}]" if ":" in host else host
        return RedisAddress(f"redis://{url_host}:{port}/0", f"{host}:{port}")
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"unsupported scheme {scheme!r} (expected redis://, rediss://, redis+cluster:// or redis+sentinel://)"
        )
    topology, tls = _SCHEMES[scheme.lower()]
    if topology is Topology.SERVER:
        parts = urllib.parse.urlsplit(text)
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError("missing host")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"the database must be a number, got {db!r}")
        return RedisAddress(text, f"{parts.hostname}:{port}", tls=tls)

    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    if not hosts:
        raise ValueError("missing host")
    default_port = _SENTINEL_PORT if topology is Topology.SENTINEL else 6379
    nodes = tuple(_host_port(h, default_port) for h in hosts.split(","))
    if fragment:
        raise ValueError("a fragment (#...) means nothing here")
    options: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if topology is not Topology.SENTINEL or name not in _SENTINEL_QUERY:
            known = ", ".join(_SENTINEL_QUERY) if topology is Topology.SENTINEL else "none"
            raise ValueError(f"unknown option {name!r} (known: {known})")
        options[name] = value
    segments = [urllib.parse.unquote(s) for s in path.split("/")] if slash and path else []
    if topology is Topology.CLUSTER:
        if segments not in ([], ["0"], ["0", ""]):
            raise ValueError("a Redis Cluster has only database 0: write no path")
        return RedisAddress(
            text, f"{_joined(nodes)} (cluster)", Topology.CLUSTER, nodes,
            username=username, password=password, tls=tls,
        )  # fmt: skip
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise ValueError("missing the master name (redis+sentinel://host:port,host:port/<master name>)")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError(f"the path must be /<master name>[/<database number>], got {'/' + path!r}")
    return RedisAddress(
        text,
        f"{segments[0]} via sentinels {_joined(nodes)}",
        Topology.SENTINEL,
        nodes,
        master_name=segments[0],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls=tls,
    )


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
    if address.topology is Topology.CLUSTER:
        for i, quota in enumerate(quotas):
            if quota.name.startswith("}"):
                # keys are "{<name>...}.meta": a name starting with "}" makes the hash tag empty,
                # and the keys of one bucket would land in different slots
                fail(f"quotas[{i}].name", "a quota name cannot start with '}' on a Redis Cluster")
    return RedisQuotaConfig(tuple(quotas), address, pool_size, timeout, policy), errors
