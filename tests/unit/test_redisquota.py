"""redisquota without a Redis server: config, keys, script replies, and the failure policy
against a port nothing listens on."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from redis.crc import key_slot

from mixerd.adapter import Code, Env, InstanceInfo, ManualClock, QuotaArgs
from mixerd.adapters.redisquota import INFO, RedisQuotaHandler
from mixerd.adapters.redisquota.config import (
    DEFAULT_TIMEOUT,
    Algorithm,
    FailurePolicy,
    Topology,
    parse_address,
    parse_config,
)
from mixerd.adapters.redisquota.dims import bucket_keys, dimension_strings, redis_key
from mixerd.adapters.redisquota.policy import OutageTracker
from mixerd.adapters.redisquota.scripts import script_result
from mixerd.templates import QuotaInstance as Instance
from tests.support.net import free_port

QUOTA = {"name": "q", "maxAmount": 10, "validDuration": "10s"}


def errors(config: Mapping[str, Any], *names: str) -> list[str]:
    return [str(e) for e in INFO.builder(config, {n: InstanceInfo(n, "quota") for n in names}).validate()]


# -- config -------------------------------------------------------------------------------------


def test_defaults() -> None:
    config, errs = parse_config({"quotas": [QUOTA]}, {})
    assert errs == []
    assert (config.address.url, config.address.display) == ("redis://localhost:6379/0", "localhost:6379")
    assert (config.pool_size, config.timeout, config.failure_policy) == (
        10,
        DEFAULT_TIMEOUT,
        FailurePolicy.FAIL_OPEN,
    )
    [quota] = config.quotas
    assert (quota.algorithm, quota.window_ms, quota.bucket_ms) == (Algorithm.FIXED_WINDOW, 10_000, 0)
    assert errors(dict(INFO.default_config, quotas=[QUOTA]), "q") == []


def test_mixerd_params_and_field_paths() -> None:
    config = {
        "quotas": [dict(QUOTA, maxAmount=-1, extra=1), dict(QUOTA, rateLimitAlgorithm="SLIDING")],
        "timeout": "0s",
        "failurePolicy": "MAYBE",
        "connectionPoolSize": 0,
        "redisServerUrl": "http://x",
        "bogus": 1,
    }
    assert errors(config, "q") == [
        "quotas[0].maxAmount: must be >= 0, got -1",
        "quotas[0].extra: unknown field",
        "quotas[1].rateLimitAlgorithm: expected one of FIXED_WINDOW, ROLLING_WINDOW, got 'SLIDING'",
        "timeout: must be greater than zero",
        "failurePolicy: expected one of FAIL_OPEN, FAIL_CLOSE, got 'MAYBE'",
        "bogus: unknown field",
        "quotas[1].name: duplicate quota name 'q' (also quotas[0])",
        "connection_pool_size: connection_pool_size of 0 is invalid, must be > 0",
        "redisServerUrl: invalid redis server url 'http://x': unsupported scheme 'http' "
        "(expected redis://, rediss://, redis+cluster:// or redis+sentinel://)",
    ]


def test_snake_case_keys_and_policy_numbers_are_accepted() -> None:
    config, errs = parse_config(
        {
            "quotas": [{"name": "q", "max_amount": 1, "valid_duration": "1s", "rate_limit_algorithm": 1,
                        "bucket_duration": "500us"}],
            "redis_server_url": "redis://:secret@10.1.2.3:6380/2",
            "connection_pool_size": 3,
            "failure_policy": 1,
            "timeout": "250ms",
        },
        {},
    )  # fmt: skip
    assert errs == []
    assert config.address.display == "10.1.2.3:6380"  # no credentials in messages
    assert (config.pool_size, config.timeout, config.failure_policy) == (
        3,
        dt.timedelta(milliseconds=250),
        FailurePolicy.FAIL_CLOSE,
    )
    assert (config.quotas[0].algorithm, config.quotas[0].bucket_ms) == (Algorithm.ROLLING_WINDOW, 1)


@pytest.mark.parametrize(
    ("text", "url", "display"),
    [
        ("localhost:6379", "redis://localhost:6379/0", "localhost:6379"),
        ("redis.example", "redis://redis.example:6379/0", "redis.example:6379"),
        ("[::1]:7000", "redis://[::1]:7000/0", "::1:7000"),
        ("redis://h:1/3", "redis://h:1/3", "h:1"),
        ("rediss://h", "rediss://h", "h:6379"),
    ],
)
def test_addresses(text: str, url: str, display: str) -> None:
    address = parse_address(text)
    assert (address.url, address.display) == (url, display)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("h:0", "the port must be a number from 1 to 65535"),
        ("h:http", "the port must be a number from 1 to 65535"),
        (":6379", "missing host"),
        ("redis://h:99999", "the port must be a number from 1 to 65535"),
        ("redis://h/db", "the database must be a number, got 'db'"),
        ("redis:///0", "missing host"),
    ],
)
def test_bad_addresses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_address(text)


def test_cluster_and_sentinel_addresses() -> None:
    cluster = parse_address("redis+cluster://127.0.0.1:7000,[::1]:7001,node-c")
    assert (cluster.topology, cluster.nodes, cluster.display, cluster.tls) == (
        Topology.CLUSTER,
        (("127.0.0.1", 7000), ("::1", 7001), ("node-c", 6379)),
        "127.0.0.1:7000,[::1]:7001,node-c:6379 (cluster)",
        False,
    )
    secure = parse_address("rediss+cluster://app:p%40ss@h:7000/")
    assert (secure.username, secure.password, secure.tls) == ("app", "p@ss", True)

    sentinel = parse_address(
        "redis+sentinel://:hunter2@10.0.0.1,10.0.0.2:26380/my%20primary/3?sentinel_password=s3cret"
    )
    assert (sentinel.topology, sentinel.nodes, sentinel.master_name, sentinel.db) == (
        Topology.SENTINEL,
        (("10.0.0.1", 26379), ("10.0.0.2", 26380)),
        "my primary",
        3,
    )
    assert (sentinel.username, sentinel.password, sentinel.sentinel_password) == (None, "hunter2", "s3cret")
    assert sentinel.display == "my primary via sentinels 10.0.0.1:26379,10.0.0.2:26380"
    # neither the messages nor the dataclass's repr show a password
    for address in (secure, sentinel):
        assert (
            "p@ss" not in repr(address) and "hunter2" not in repr(address) and "s3cret" not in repr(address)
        )
    assert parse_address("redis+sentinel://h/m/").master_name == "m"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("redis+cluster://", "missing host"),
        ("redis+cluster://a:1,,b:2", "missing host"),
        ("redis+cluster://a:1,b:x", "the port must be a number from 1 to 65535"),
        ("redis+cluster://a:1/2", "a Redis Cluster has only database 0"),
        ("redis+cluster://a:1?timeout=1", "unknown option 'timeout' \\(known: none\\)"),
        ("redis+sentinel://a:1", "missing the master name"),
        ("redis+sentinel://a:1/", "missing the master name"),
        ("redis+sentinel://a:1/m/x", "the path must be /<master name>\\[/<database number>\\]"),
        ("redis+sentinel://a:1/m/1/2", "the path must be"),
        (
            "redis+sentinel://a:1/m?db=1",
            "unknown option 'db' \\(known: sentinel_username, sentinel_password\\)",
        ),
        ("redis+sentinel://a:1/m#x", "a fragment"),
        ("u:pw@h:6379", "credentials and databases need a URL"),
    ],
)
def test_bad_cluster_and_sentinel_addresses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_address(text)


def test_topology_errors_have_field_paths_and_no_passwords() -> None:
    assert errors({"quotas": [QUOTA], "redisServerUrl": "redis+sentinel://:hunter2@a:1,b:2"}, "q") == [
        "redisServerUrl: invalid redis server url 'redis+sentinel://:***@a:1,b:2': missing the master name "
        "(redis+sentinel://host:port,host:port/<master name>)"
    ]
    assert errors({"quotas": [QUOTA], "redis_server_url": "redis+cluster://u:hunter2@a:1,b:port"}, "q") == [
        "redis_server_url: invalid redis server url 'redis+cluster://***': "
        "the port must be a number from 1 to 65535"
    ]
    # "{<name>...}" is the hash tag: a name starting with "}" would leave it empty
    odd = dict(QUOTA, name="}q")
    assert errors({"quotas": [QUOTA, odd], "redisServerUrl": "redis+cluster://a:1"}, "q", "}q") == [
        "quotas[1].name: a quota name cannot start with '}' on a Redis Cluster"
    ]
    assert errors({"quotas": [odd], "redisServerUrl": "a:1"}, "}q") == []


# -- keys and replies ---------------------------------------------------------------------------


def test_bucket_keys() -> None:
    # one server and Sentinel: the names mixerd always used, so counters survive an upgrade
    assert bucket_keys("q-d0f8") == ["q-d0f8.meta", "q-d0f8.data"]
    assert bucket_keys("q.rolling", "req-1") == ["q.rolling.meta", "q.rolling.data", "req-1-q.rolling.meta"]
    # cluster: one hash tag per bucket, the caller's dedup id after it (it may hold braces)
    assert bucket_keys("q-d0f8", "a{b}", hash_tag=True) == [
        "{q-d0f8}.meta",
        "{q-d0f8}.data",
        "{q-d0f8}.dedup.a{b}",
    ]
    # every key of a bucket hashes to one slot, whatever braces the name or the dedup id hold
    names = ["q", "q.rolling", "a}b", "a{b}c", "{x}", "q-" + "f" * 32, "ünïcode"]
    for base in names:
        slots = {key_slot(k.encode()) for k in bucket_keys(base, "id-{7}", hash_tag=True)}
        assert len(slots) == 1, base
    # and buckets spread over the slots
    assert len({key_slot(bucket_keys(f"q-{i}", hash_tag=True)[0].encode()) for i in range(100)}) > 90


def test_keys_are_per_dimension_set_and_stable() -> None:
    assert redis_key("q", {}) == "q"
    key = redis_key("q", dimension_strings({"source": "a", "destination": "b"}))
    assert key == redis_key("q", {"destination": "b", "source": "a"})
    # pinned: SHA-256 of [["destination","b"],["source","a"]], first 32 hex digits. Changing the
    # recipe would silently reset every counter in a running Redis.
    assert key == "q-d0f86819adb334d4dd2980785c6a1402"
    assert redis_key("q", {"a": "b,c"}) != redis_key("q", {"a": "b", "c": ""})
    assert redis_key("q", {"n": "1"}) == redis_key("q", dimension_strings({"n": 1}))


def test_script_replies() -> None:
    granted = script_result([3, 10_000, 7, 9_000, 0], 10)
    assert (
        granted.status.code,
        granted.amount,
        granted.valid_duration,
        granted.remaining,
        granted.reset_after,
    ) == (
        Code.OK,
        3,
        dt.timedelta(seconds=10),
        7,
        dt.timedelta(seconds=9),
    )
    retried = script_result([3, 4_000, -1, 4_000, 1], 10)  # a deduplicated retry
    assert (retried.amount, retried.valid_duration, retried.remaining) == (3, dt.timedelta(seconds=4), None)
    denied = script_result([0, 0, 2, 500, 0], 10)
    assert (
        denied.status.code,
        denied.status.message,
        denied.amount,
        denied.valid_duration,
        denied.limit,
    ) == (
        Code.RESOURCE_EXHAUSTED,
        "redisquota: Resource exhausted",
        0,
        dt.timedelta(0),
        10,
    )
    for bad in (None, [1, 2, 3], [1, 2, 3, 4, b"5"]):
        with pytest.raises(ValueError):
            script_result(bad, 10)


# -- the outage tracker -------------------------------------------------------------------------


def test_outage_tracker_skips_after_the_threshold_and_retries() -> None:
    t = OutageTracker(threshold=3, retry_interval=0.5, log_interval=10.0)
    assert t.failure(0.0, "refused") == "1 failed call since the last report; last error: refused"
    assert not t.should_skip(0.0)
    assert t.failure(0.1, "refused") is None  # logged at most once per interval
    assert not t.should_skip(0.1)
    assert t.failure(0.2, "refused") is None
    assert t.should_skip(0.3) and t.should_skip(0.69)
    assert not t.should_skip(0.7)  # time to try again
    assert t.failure(10.5, "timeout") == "3 failed calls since the last report; last error: timeout"
    assert t.success() == "after 4 failed calls in a row"
    assert not t.should_skip(10.6)
    assert t.success() is None
    assert t.failures == 4


def test_recovery_is_logged_only_for_reported_outages() -> None:
    t = OutageTracker(threshold=3, retry_interval=0.5, log_interval=10.0)
    assert t.failure(0.0, "x") is not None
    assert t.success() is not None
    assert t.failure(1.0, "x") is None  # within the log interval: not reported...
    assert t.success() is None  # ...so neither is its end


# -- the handler, with nothing listening --------------------------------------------------------


@pytest.fixture
async def built() -> AsyncIterator[list[tuple[RedisQuotaHandler, Env]]]:
    made: list[tuple[RedisQuotaHandler, Env]] = []
    yield made
    for handler, env in made:
        await handler.close()
        await env.aclose()


def make(made: list[tuple[RedisQuotaHandler, Env]], clock: ManualClock, **params: Any) -> RedisQuotaHandler:
    config = {"quotas": [QUOTA], "redisServerUrl": f"127.0.0.1:{free_port()}", **params}
    builder = INFO.builder(config, {})
    assert builder.validate() == []
    env = Env("redisquota.unit", clock=clock)
    handler = builder.build(env)
    assert isinstance(handler, RedisQuotaHandler)
    made.append((handler, env))
    return handler


async def test_fail_open_grants_quickly_and_logs_once(
    built: list[tuple[RedisQuotaHandler, Env]], caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    h = make(built, clock)
    caplog.set_level(logging.INFO)
    started = time.perf_counter()
    results = [await h.handle_quota(Instance("q"), QuotaArgs(4, best_effort=False)) for _ in range(20)]
    assert time.perf_counter() - started < 1.0
    assert {(r.status.code, r.amount, r.valid_duration, r.limit) for r in results} == {
        (Code.OK, 4, dt.timedelta(seconds=1), 10)
    }
    best = await h.handle_quota(Instance("q"), QuotaArgs(40, best_effort=True))
    assert best.amount == 10
    too_much = await h.handle_quota(Instance("q"), QuotaArgs(40))
    assert (too_much.status.code, too_much.amount) == (Code.RESOURCE_EXHAUSTED, 0)
    # three failed tries (the background script load may be one of them), then no more waiting
    assert h.stats.failures == 3
    assert h.stats.skipped >= 22 - 3
    assert h.stats.fail_open_grants == 21
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable (granting requests)" in warnings[0].getMessage()


async def test_fail_close_says_which_redis_and_why(built: list[tuple[RedisQuotaHandler, Env]]) -> None:
    clock = ManualClock()
    h = make(built, clock, failurePolicy="FAIL_CLOSE")
    r = await h.handle_quota(Instance("q"), QuotaArgs(1))
    assert (r.status.code, r.amount, r.valid_duration) == (Code.UNAVAILABLE, 0, dt.timedelta(0))
    # the caller is not told where Redis is or what it said (that goes to the log)
    assert r.status.message == "redisquota: quota backend unavailable (FAIL_CLOSE)"
    assert not await h.load_scripts()


async def test_requests_redis_cannot_serve(built: list[tuple[RedisQuotaHandler, Env]]) -> None:
    h = make(built, ManualClock())
    r = await h.handle_quota(Instance("elsewhere"), QuotaArgs(1))
    assert (r.status.code, r.amount) == (Code.OK, 0)  # no quota configured: Mixer's answer
    r = await h.handle_quota(Instance("q"), QuotaArgs(-1))
    assert r.status.code == Code.INVALID_ARGUMENT
    assert h.stats.failures == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:{a},127.0.0.1:{b}",
        "redis+sentinel://:hunter2@127.0.0.1:{a},127.0.0.1:{b}/mymaster",
    ],
    ids=["cluster", "sentinel"],
)
async def test_cluster_and_sentinel_nothing_listening(
    url: str, built: list[tuple[RedisQuotaHandler, Env]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = make(
        built,
        ManualClock(),
        redisServerUrl=url.format(a=free_port(), b=free_port()),
        failurePolicy="FAIL_CLOSE",
    )
    started = time.perf_counter()
    results = [await h.handle_quota(Instance("q"), QuotaArgs(1)) for _ in range(10)]
    assert time.perf_counter() - started < 1.0
    assert {(r.status.code, r.amount) for r in results} == {(Code.UNAVAILABLE, 0)}
    assert 1 <= h.stats.failures <= 3  # then the breaker answers without trying
    assert "hunter2" not in caplog.text
    assert "127.0.0.1" in caplog.text  # the log says where
