"""The redisquota handler: counts in Redis through Lua scripts, bounded by a timeout (I/O).

Every call is one ``EVALSHA`` (redis-py reloads the script with ``SCRIPT LOAD`` when Redis
answers ``NOSCRIPT``, e.g. after a restart) on a blocking connection pool of
``connectionPoolSize`` connections. The whole call, waiting for a pooled connection included,
is bounded by ``timeout``; redis-py's own retries are off so the bound holds. When Redis cannot
answer in time, ``failurePolicy`` decides (see :mod:`mixerd.adapters.redisquota.policy`).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mixerd.adapter import Clock, Code, Env, Handler, QuotaArgs, QuotaResult, Status
from mixerd.adapters.redisquota.config import Algorithm, FailurePolicy, RedisQuota, RedisQuotaConfig
from mixerd.adapters.redisquota.dims import dimension_strings, redis_key
from mixerd.adapters.redisquota.policy import OutageTracker
from mixerd.adapters.redisquota.scripts import EXHAUSTED, FIXED_WINDOW, ROLLING_WINDOW, ScriptReply

__all__ = ["FAIL_OPEN_VALIDITY", "QuotaInstanceLike", "RedisQuotaHandler", "RedisQuotaStats"]

FAIL_OPEN_VALIDITY: Final = _dt.timedelta(seconds=1)
"""How long a grant made without Redis lives (at most the quota's window): short, so callers
come back soon and enforcement resumes as soon as Redis does."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MS: Final = _dt.timedelta(milliseconds=1)


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


class RedisQuotaHandler(Handler):
    def __init__(self, config: RedisQuotaConfig, clock: Clock, logger: logging.Logger) -> None:
        self._quotas = {q.name: q for q in config.quotas}
        self._clock = clock
        self._logger = logger
        self._policy = config.failure_policy
        self._where = config.address.display
        self._timeout = config.timeout.total_seconds()
        pool = BlockingConnectionPool.from_url(
            config.address.url,
            max_connections=config.pool_size,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._scripts = {
            Algorithm.FIXED_WINDOW: self._redis.register_script(FIXED_WINDOW),
            Algorithm.ROLLING_WINDOW: self._redis.register_script(ROLLING_WINDOW),
        }
        self._outage = OutageTracker()
        self._warned: set[str] = set()
        self._preload: asyncio.Task[None] | None = None
        self.stats = RedisQuotaStats()

    @classmethod
    def build(cls, config: RedisQuotaConfig, env: Env) -> RedisQuotaHandler:
        handler = cls(config, env.clock, env.logger)

        async def load() -> None:
            await handler.load_scripts()

        handler._preload = env.spawn(load, "load scripts")
        return handler

    async def load_scripts(self) -> bool:
        """``SCRIPT LOAD`` both scripts ahead of the first call (calls load them on demand too);
        False when Redis could not be reached, which counts as a failed call."""
        try:
            async with asyncio.timeout(self._timeout * len(self._scripts)):
                for script in self._scripts.values():
                    await self._redis.script_load(script.script)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return False
        self._succeeded()
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
        dims = dimension_strings(instance.dimensions)
        max_amount = quota.max_amount_for(dims)
        if self._outage.should_skip(self._clock.monotonic()):
            self.stats.skipped += 1
            return self._without_redis(quota, max_amount, args, self._outage.last_error, unreachable=True)

        key = redis_key(quota.name, dims)
        if quota.algorithm is Algorithm.ROLLING_WINDOW:
            key += ".rolling"  # its keys hold other types: never mix them with a fixed window's
        keys = [f"{key}.meta", f"{key}.data"]
        if args.dedup_id:
            keys.append(f"{args.dedup_id}-{key}.meta")
        argv = [
            max_amount,
            quota.window_ms,
            quota.bucket_ms,
            1 if args.best_effort else 0,
            args.amount,
            (self._clock.now() - _EPOCH) // _MS,
            args.dedup_id,
        ]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._scripts[quota.algorithm](keys=keys, args=argv)
            reply = ScriptReply.parse(raw)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            reason, unreachable = self._failed(exc)
            return self._without_redis(quota, max_amount, args, reason, unreachable=unreachable)
        self._succeeded()
        return reply.result(max_amount, quota.valid_duration)

    def _failed(self, exc: Exception) -> tuple[str, bool]:
        """Count and (at most once per interval) log a failed call; returns its reason and
        whether Redis was unreachable (rather than answering with an error)."""
        unreachable = isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError)
        reason = str(exc) or f"no answer within {self._timeout * 1000:g} ms"
        self.stats.failures += 1
        report = self._outage.failure(self._clock.monotonic(), reason)
        if report is not None:
            self._logger.warning(
                "redisquota: redis at %s %s (%s): %s",
                self._where,
                "unreachable" if unreachable else "failed",
                "granting requests" if self._policy is FailurePolicy.FAIL_OPEN else "denying requests",
                report,
            )
        return reason, unreachable

    def _succeeded(self) -> None:
        recovered = self._outage.success()
        if recovered is not None:
            self._logger.info("redisquota: redis at %s reachable again %s", self._where, recovered)

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

    async def close(self) -> None:
        preload, self._preload = self._preload, None
        if preload is not None and not preload.done():
            preload.cancel()
            await asyncio.wait([preload])
        await self._redis.aclose()
