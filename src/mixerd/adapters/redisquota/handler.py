"""The redisquota handler: counts in Redis through Lua scripts, bounded by a timeout (I/O).

Every allocation is one ``EVALSHA`` of a quota script. Allocations that arrive together are
sent together: a :class:`~mixerd.adapters.redisquota.batch.Batcher` per Redis node puts every
call that arrives while a round trip is in flight into the next one (at most ``MAX_BATCH``
calls), with at most ``MAX_ROUND_TRIPS`` (and ``connectionPoolSize``) round trips in flight per
node. On one server and through Sentinel a round trip is one ``EVALSHA`` of the ``BATCH``
script, which runs each call's script in turn; on a cluster it is one pipeline of the calls'
own scripts. Redis runs each script atomically, in the order sent, so batching
changes no count. Scripts that Redis does not know (``NOSCRIPT``: a restart, a failover, a
``SCRIPT FLUSH``) are loaded and those calls sent once more. A caller waits at most
``timeout`` (queueing, connecting and the round trip included; redis-py's own retries are off
so the bound holds), and each round trip is bounded by it too; when Redis cannot answer in time,
``failurePolicy`` decides for every caller of that round trip (see
:mod:`mixerd.adapters.redisquota.policy`).

The round trips run in the batcher's tasks, not in the callers': a caller cancelled by its
deadline never leaves a connection mid-reply. :meth:`RedisQuotaHandler.close` refuses new
calls, waits for the round trips and primary checks in flight (each bounded by ``timeout``) and
then closes every connection.

Where the call goes depends on the topology ``redisServerUrl`` names:

* one server: a blocking pool of ``connectionPoolSize`` connections;
* a Redis Cluster (:class:`redis.asyncio.cluster.RedisCluster`): the call goes to the primary
  that owns the bucket's hash slot (all keys of a bucket share one, see
  :func:`~mixerd.adapters.redisquota.dims.bucket_keys`); ``MOVED`` and ``ASK`` redirects are
  followed by the client, which keeps the slot map current. At most ``connectionPoolSize``
  calls are in flight, so no node gets more connections than that;
* Sentinel (:class:`redis.asyncio.sentinel.Sentinel`): a connection asks the Sentinels for the
  primary when it connects. After a failover the old primary's connections fail (closed by
  Sentinel, refused, or ``READONLY`` once it is a replica, which redis-py turns into a
  disconnect), and new ones find the new primary; calls in between get the failure policy's
  answer. At most ``connectionPoolSize`` calls are in flight, as for a cluster.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, NoScriptError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mixerd.adapter import Clock, Code, Env, Handler, QuotaArgs, QuotaResult, Status
from mixerd.adapters.redisquota.batch import Batcher, BatcherClosed
from mixerd.adapters.redisquota.config import (
    Algorithm,
    FailurePolicy,
    RedisAddress,
    RedisQuota,
    RedisQuotaConfig,
    Topology,
)
from mixerd.adapters.redisquota.dims import bucket_keys, dimension_strings, redis_key
from mixerd.adapters.redisquota.policy import OutageTracker
from mixerd.adapters.redisquota.scripts import (
    BATCH,
    EXHAUSTED,
    FIXED_WINDOW,
    ROLLING_WINDOW,
    BatchCall,
    batch_command,
    script_result,
)
from mixerd.attribute import remember

__all__ = [
    "FAIL_OPEN_VALIDITY",
    "MAX_BATCH",
    "MAX_ROUND_TRIPS",
    "PRIMARY_CHECK_INTERVAL",
    "QuotaInstanceLike",
    "RedisQuotaHandler",
    "RedisQuotaStats",
]

MAX_BATCH: Final = 256
"""The most allocations one round trip carries."""

MAX_ROUND_TRIPS: Final = 2
"""Round trips in flight per Redis node (never more than ``connectionPoolSize``): one on the
wire while the next batch gathers its calls."""

PRIMARY_CHECK_INTERVAL: Final = 0.5
"""Sentinel: how often (seconds) the handler asks the Sentinels where the primary is."""

FAIL_OPEN_VALIDITY: Final = _dt.timedelta(seconds=1)
"""How long a grant made without Redis lives (at most the quota's window): short, so callers
come back soon and enforcement resumes as soon as Redis does."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MS: Final = _dt.timedelta(milliseconds=1)
_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError, BatcherClosed)
"""What a call to Redis can fail with (RedisClusterException is not a RedisError)."""
_UNREACHABLE: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    RedisClusterException,
    OSError,
    TimeoutError,
    BatcherClosed,
)
_T = TypeVar("_T")


class QuotaInstanceLike(Protocol):
    """What the handler reads from a ``quota`` instance."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> Mapping[str, Any]: ...


@dataclass(slots=True)
class RedisQuotaStats:
    """Counters about Redis trouble, for tests and operators."""

    failures: int = 0
    """Calls to Redis that failed or timed out."""
    skipped: int = 0
    """Calls answered by the failure policy without trying Redis (it was known to be down)."""
    fail_open_grants: int = 0
    fail_close_denials: int = 0


def _hp(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Backend:
    client: Redis | RedisCluster
    sentinel: Sentinel | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    slots: asyncio.Semaphore | None = None
    """Bounds the calls in flight where the client's pool does not block (cluster, Sentinel)."""

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def _connect(address: RedisAddress, pool_size: int, timeout: float) -> _Backend:
    """A client for the topology (nothing connects until the first call)."""
    no_retries = Retry(NoBackoff(), 0)
    sockets: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if address.topology is Topology.CLUSTER:
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            max_connections=pool_size,
            retry=no_retries,
            username=address.username,
            password=address.password,
            ssl=address.tls,
            **sockets,
        )
        return _Backend(cluster, slots=asyncio.Semaphore(pool_size))
    if address.topology is Topology.SENTINEL:
        sentinel = Sentinel(
            list(address.nodes),
            sentinel_kwargs={
                **sockets,
                "retry": no_retries,
                "username": address.sentinel_username,
                "password": address.sentinel_password,
                "ssl": address.tls,
            },
        )
        primary = sentinel.master_for(
            address.master_name,
            max_connections=pool_size,
            retry=no_retries,
            db=address.db,
            username=address.username,
            password=address.password,
            ssl=address.tls,
            **sockets,
        )
        return _Backend(primary, sentinel, address.nodes, asyncio.Semaphore(pool_size))
    pool = BlockingConnectionPool.from_url(
        address.url, max_connections=pool_size, timeout=timeout, retry=no_retries, **sockets
    )
    return _Backend(Redis.from_pool(pool))


_MAX_BUCKETS: Final = 10_000
"""Dimension sets whose keys and limit a handler remembers (forgotten all at once when full)."""


@dataclass(frozen=True, slots=True)
class _Bucket:
    base: str
    keys: tuple[str, ...]
    """The keys of a call without a deduplication id."""
    max_amount: int
    algorithm: int
    window_ms: int
    bucket_ms: int


class RedisQuotaHandler(Handler):
    def __init__(self, config: RedisQuotaConfig, clock: Clock, logger: logging.Logger) -> None:
        self._quotas = {q.name: q for q in config.quotas}
        self._clock = clock
        self._logger = logger
        self._policy = config.failure_policy
        self._where = config.address.display
        self.topology = config.address.topology
        self._hash_tags = self.topology is Topology.CLUSTER
        self._timeout = config.timeout.total_seconds()
        self._backend = _connect(config.address, config.pool_size, self._timeout)
        self._cluster = client if isinstance(client := self._backend.client, RedisCluster) else None
        # a cluster runs one script per allocation (its keys must share a slot); one server and
        # Sentinel run one BATCH script per round trip
        self._scripts = (
            [client.register_script(FIXED_WINDOW), client.register_script(ROLLING_WINDOW)]
            if self._cluster is not None
            else [client.register_script(BATCH)]
        )
        self._shas = [script.sha for script in self._scripts]
        self._round_trips = max(1, min(MAX_ROUND_TRIPS, config.pool_size))
        self._batchers: dict[str, Batcher[BatchCall, Any]] = {}
        """Per node (see :meth:`_node_of`)."""
        self._buckets: dict[Any, _Bucket] = {}
        self._checking = asyncio.Lock()
        """Held while :meth:`check_primary` talks to the Sentinels (close waits for it)."""
        self._outages: dict[str, OutageTracker] = {"": OutageTracker()}
        self._warned: set[str] = set()
        self._preload: asyncio.Task[None] | None = None
        self._closed = False
        self._primary: tuple[str, int] | None = None
        """Sentinel: where :meth:`check_primary` last found the primary."""
        self.stats = RedisQuotaStats()

    @classmethod
    def build(cls, config: RedisQuotaConfig, env: Env) -> RedisQuotaHandler:
        handler = cls(config, env.clock, env.logger)

        async def load() -> None:
            await handler.load_scripts()

        handler._preload = env.spawn(load, "load scripts")
        if handler.topology is Topology.SENTINEL:

            async def check() -> None:
                await handler.check_primary()

            env.every(PRIMARY_CHECK_INTERVAL, check, "check primary", initial_delay=PRIMARY_CHECK_INTERVAL)
        return handler

    async def check_primary(self) -> bool:
        """Sentinel: ask the Sentinels where the primary is; when it moved, drop every connection
        to the old one, busy ones included, and return True.

        Connections find the primary when they connect, and a failover that kills the primary
        breaks them. A failover of a primary that is still up (``SENTINEL FAILOVER``, a
        partition that heals) does not: the old primary goes on accepting writes until Sentinel
        turns it into a replica, 8 s or more later, and then drops them with the rest of its
        data. Asking every ``PRIMARY_CHECK_INTERVAL`` (0.5 s) keeps what is counted there, and
        lost, to what arrives between the replica's promotion and the Sentinels announcing it
        (up to about a second) plus that interval."""
        client = self._backend.client
        pool = client.connection_pool if isinstance(client, Redis) else None
        if self._closed or not isinstance(pool, SentinelConnectionPool):
            return False
        async with self._checking:
            if self._closed:
                return False
            return await self._check_primary(pool)

    async def _check_primary(self, pool: SentinelConnectionPool) -> bool:
        try:
            async with asyncio.timeout(self._timeout * len(self._backend.nodes)):
                # drops the idle connections if it moved (redis-py's sentinel module has no types)
                after = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except _ERRORS:
            return False  # the calls find out for themselves, through the failure policy
        # compared with what this check saw last, not with the pool's idea: a connection opened
        # since the move has updated that, and dropped only the idle connections
        before, self._primary = self._primary, after
        if before is None or after == before:
            return False
        self._logger.warning(
            "redisquota: redis at %s: the Sentinels moved the primary from %s to %s; "
            "closing every connection to the old one",
            self._where,
            _hp(before),
            _hp(after),
        )
        await pool.disconnect(inuse_connections=True)
        return True

    async def load_scripts(self) -> bool:
        """``SCRIPT LOAD`` the scripts ahead of the first call (calls load them on demand too);
        False when Redis could not be reached, which counts as a failed call."""
        client = self._backend.client
        try:
            for script in self._scripts:
                await self._call(functools.partial(client.script_load, script.script))
        except _ERRORS as exc:
            self._failed(exc, "")
            return False
        self._succeeded("")
        return True

    async def handle_quota(self, instance: QuotaInstanceLike, args: QuotaArgs) -> QuotaResult:
        quota = self._quotas.get(instance.name)
        if quota is None:
            # Validation rejects configs that route unknown instances here; answer like Mixer.
            if instance.name not in self._warned:
                self._warned.add(instance.name)
                self._logger.warning("redisquota: no quota configured for instance %s", instance.name)
            return QuotaResult()
        if args.amount < 0:
            return QuotaResult(
                status=Status(
                    Code.INVALID_ARGUMENT, "redisquota: releasing quota (a negative amount) is not supported"
                )
            )
        bucket = self._bucket(quota, instance.dimensions)
        max_amount = bucket.max_amount
        keys = (
            bucket.keys
            if not args.dedup_id
            else bucket_keys(bucket.base, args.dedup_id, hash_tag=self._hash_tags)
        )
        node = self._node_of(keys[0])
        outage = self._outages.get(node) or self._outages.setdefault(node, OutageTracker())
        if outage.should_skip(self._clock.monotonic()):
            self.stats.skipped += 1
            return self._without_redis(quota, max_amount, args, outage.last_error, unreachable=True)
        # the time ("now") is the round trip's, added when it leaves (see _send)
        call = (
            bucket.algorithm,
            keys,
            (max_amount, bucket.window_ms, bucket.bucket_ms, 1 if args.best_effort else 0, args.amount),
            args.dedup_id,
        )
        try:
            batcher = self._batchers.get(node) or self._batcher(node)
            result = script_result(await batcher.submit(call), max_amount, quota.valid_duration)
        except (*_ERRORS, ValueError) as exc:
            reason, unreachable = self._failed(exc, node)
            return self._without_redis(quota, max_amount, args, reason, unreachable=unreachable)
        if outage.consecutive:
            self._succeeded(node)
        return result

    def _bucket(self, quota: RedisQuota, dimensions: Mapping[str, Any]) -> _Bucket:
        """Where ``quota`` counts for these dimensions, and its limit (remembered per dimension
        set: a pure function of the config and the dimensions' text). Only dimension sets of
        strings and integers are remembered: values of other types can be equal and still read
        differently (``True == 1``, one instant in two time zones)."""
        cache_key: Any = None
        bucket = None
        if all(type(v) is str or type(v) is int for v in dimensions.values()):
            cache_key = (quota.name, tuple(dimensions.items()))
            bucket = self._buckets.get(cache_key)
            if bucket is not None:
                return bucket
        dims = dimension_strings(dimensions)
        base = redis_key(quota.name, dims)
        if quota.algorithm is Algorithm.ROLLING_WINDOW:
            base += ".rolling"  # its keys hold other types: never mix them with a fixed window's
        bucket = _Bucket(
            base,
            tuple(bucket_keys(base, hash_tag=self._hash_tags)),
            quota.max_amount_for(dims),
            quota.algorithm.value,
            quota.window_ms,
            quota.bucket_ms,
        )
        if cache_key is not None:
            remember(self._buckets, cache_key, bucket, _MAX_BUCKETS)
        return bucket

    def _node_of(self, key: str) -> str:
        """Whose outage a call for ``key`` meets: on a cluster, the primary that owns its slot as
        the client's slot map has it (``host:port``), so a primary that is down or stalled costs
        only the buckets it holds; anywhere else, and before the slot map is known, ``""``: one
        server for all."""
        if self._cluster is None:
            return ""
        try:
            owner = self._cluster.get_node_from_key(key)
        except RedisClusterException:
            return ""
        return owner.name if owner is not None else ""

    def _batcher(self, node: str) -> Batcher[BatchCall, Any]:
        if self._closed:
            raise BatcherClosed("the handler is closed")
        send = self._pipeline if self._cluster is not None else self._batch
        slots = self._backend.slots

        async def bounded(calls: Sequence[BatchCall]) -> list[Any]:
            # the batcher bounds the round trip by the time its calls have left
            now_ms = (self._clock.now() - _EPOCH) // _MS
            if slots is None:
                return await send(calls, now_ms)
            async with slots:
                return await send(calls, now_ms)

        batcher = self._batchers[node] = Batcher(
            bounded, timeout=self._timeout, max_batch=MAX_BATCH, max_running=self._round_trips
        )
        return batcher

    async def _batch(self, calls: Sequence[BatchCall], now_ms: int) -> list[Any]:
        """One server or Sentinel: one ``EVALSHA`` of the batch script for every call, on a
        pooled connection; loads the script and sends again once when Redis does not know it."""
        client = self._backend.client
        assert isinstance(client, Redis)
        pool = client.connection_pool
        command = batch_command(self._shas[0], calls, now_ms)
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # send and read close the connection themselves when they fail or are cancelled
            await conn.send_packed_command(command, check_health=False)
            try:
                replies = await conn.read_response()
            except NoScriptError:
                await conn.send_command("SCRIPT", "LOAD", BATCH, check_health=False)
                await conn.read_response()
                await conn.send_packed_command(command, check_health=False)
                replies = await conn.read_response()
        finally:
            await pool.release(conn)
        if not isinstance(replies, list):
            raise ValueError(f"unexpected reply from the quota script: {replies!r}")
        return replies

    async def _pipeline(self, calls: Sequence[BatchCall], now_ms: int) -> list[Any]:
        """A cluster: one ``EVALSHA`` per call in one pipeline (the client sends each to the
        primary of its slot and follows redirects); the calls whose script Redis did not know are
        sent again after loading the scripts."""
        client = self._backend.client
        shas = self._shas
        pipe = client.pipeline(transaction=False)
        for algorithm, keys, argv, dedup_id in calls:
            pipe.execute_command("EVALSHA", shas[algorithm], len(keys), *keys, *argv, now_ms, dedup_id)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for script in self._scripts:
                await client.script_load(script.script)
            pipe = client.pipeline(transaction=False)
            for i in missing:
                algorithm, keys, argv, dedup_id = calls[i]
                pipe.execute_command("EVALSHA", shas[algorithm], len(keys), *keys, *argv, now_ms, dedup_id)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """One call to Redis within the timeout, waiting for a free slot included."""
        async with asyncio.timeout(self._timeout):
            if self._backend.slots is None:
                return await call()
            async with self._backend.slots:
                return await call()

    def _failed(self, exc: Exception, node: str) -> tuple[str, bool]:
        """Count and (at most once per interval and node) log a failed call; returns its reason
        and whether Redis was unreachable (rather than answering with an error)."""
        unreachable = isinstance(exc, _UNREACHABLE)
        reason = str(exc) or f"no answer within {self._timeout * 1000:g} ms"
        self.stats.failures += 1
        report = self._outages[node].failure(self._clock.monotonic(), reason)
        if report is not None:
            self._logger.warning(
                "redisquota: redis at %s %s (%s): %s",
                self._where_is(node),
                "unreachable" if unreachable else "failed",
                "granting requests" if self._policy is FailurePolicy.FAIL_OPEN else "denying requests",
                report,
            )
        return reason, unreachable

    def _succeeded(self, node: str) -> None:
        recovered = self._outages[node].success()
        if recovered is not None:
            self._logger.info("redisquota: redis at %s reachable again %s", self._where_is(node), recovered)

    def _where_is(self, node: str) -> str:
        return f"{self._where}, node {node}" if node else self._where

    def _without_redis(
        self, quota: RedisQuota, max_amount: int, args: QuotaArgs, reason: str, *, unreachable: bool
    ) -> QuotaResult:
        """The failure policy's answer."""
        if self._policy is FailurePolicy.FAIL_CLOSE:
            self.stats.fail_close_denials += 1
            # The caller learns that the backend is unavailable, not where it is or what it said:
            # the address and the error are in mixerd's log (see _failed).
            return QuotaResult(
                status=Status(Code.UNAVAILABLE, "redisquota: quota backend unavailable (FAIL_CLOSE)")
            )
        # fail open: behave as if the window had room, but never beyond the configured maximum
        if args.best_effort:
            granted = min(args.amount, max_amount)
        else:
            granted = args.amount if args.amount <= max_amount else 0
        if granted <= 0:
            return QuotaResult(status=EXHAUSTED, limit=max_amount)
        self.stats.fail_open_grants += 1
        return QuotaResult(
            valid_duration=min(quota.valid_duration, FAIL_OPEN_VALIDITY), amount=granted, limit=max_amount
        )

    @property
    def round_trips(self) -> tuple[int, int]:
        """(round trips made, round trips under way) over every node."""
        batchers = self._batchers.values()
        return sum(b.batches for b in batchers), sum(b.in_flight for b in batchers)

    def open_connections(self) -> int:
        """Connections to Redis that are open now (one server and Sentinel; 0 once closed)."""
        client = self._backend.client
        if not isinstance(client, Redis):
            return sum(1 for node in client.get_nodes() for c in node._connections if c.is_connected)
        pool = client.connection_pool
        return sum(1 for c in (*pool._available_connections, *pool._in_use_connections) if c.is_connected)

    async def close(self) -> None:
        """Refuse new calls, wait for the round trips and the primary check in flight (each
        bounded by the timeout: cancelling them could leave a connection to be released in the
        background, after its pool is closed), then close every connection."""
        self._closed = True
        preload, self._preload = self._preload, None
        if preload is not None and not preload.done():
            preload.cancel()
            await asyncio.wait([preload])
        for batcher in list(self._batchers.values()):
            await batcher.aclose()
        async with self._checking:
            pass
        client = self._backend.client
        if isinstance(client, Redis):
            # releases redis-py hands to a task of its own (a call cancelled while it waited
            # for the pool's lock) must be over before the pool closes its connections
            releases = getattr(client.connection_pool, "_background_releases", None)
            while releases:
                await asyncio.wait(list(releases))
        await self._backend.aclose()
