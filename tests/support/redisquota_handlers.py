"""redisquota handlers built in the test's own event loop, for tests against real Redis servers
(one server, a cluster, Sentinel); the ``handlers`` fixture of tests/integration/conftest.py
closes them at the end of a test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mixerd.adapter import Env, QuotaArgs, QuotaResult
from mixerd.adapter.env import Clock
from mixerd.adapters.redisquota import INFO, RedisQuotaHandler
from mixerd.adapters.redisquota.config import Topology
from mixerd.templates import QuotaInstance as Instance

__all__ = ["Handlers", "ask"]


class Handlers:
    """Builds handlers and closes them all at the end of a test."""

    def __init__(self) -> None:
        self._built: list[tuple[RedisQuotaHandler, Env]] = []

    def build(
        self,
        address: str,
        quota: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        clock: Clock,
        **params: Any,
    ) -> RedisQuotaHandler:
        """A handler on ``address`` (any ``redisServerUrl``) for one quota or several. Tests of
        counting semantics get a 2 s timeout: with the default 100 ms, a first call that opens its
        connection on a busy machine can time out and be answered by the failure policy, which is
        not what they test. The outage tests set the timeout they measure explicitly."""
        params.setdefault("timeout", "2s")
        quotas = [quota] if isinstance(quota, Mapping) else list(quota)
        builder = INFO.builder({"quotas": quotas, "redisServerUrl": address, **params}, {})
        assert builder.validate() == []
        env = Env("redisquota.it", clock=clock)
        handler = builder.build(env)
        assert isinstance(handler, RedisQuotaHandler)
        self._built.append((handler, env))
        return handler

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait until every handler's background work (the script preload spawned by ``build``)
        is over. A test that stops or stalls Redis waits for this first: a preload still in flight
        would meet the outage too and count a failed call of its own."""
        deadline = time.monotonic() + timeout
        # a handler on Sentinel checks where the primary is for as long as it lives
        while busy := [
            env.name for h, env in self._built if env.task_count > (h.topology is Topology.SENTINEL)
        ]:
            assert time.monotonic() < deadline, f"background tasks still running after {timeout}s: {busy}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for handler, env in self._built:
            await handler.close()
            await env.aclose()


async def ask(handler: RedisQuotaHandler, amount: int = 1, *, quota: str = "q", **kw: Any) -> QuotaResult:
    """Ask ``handler`` for ``amount`` of ``quota``; ``dims`` gives the instance's dimensions, the
    rest goes to :class:`QuotaArgs`."""
    dims = kw.pop("dims", {})
    return await handler.handle_quota(Instance(quota, dims), QuotaArgs(amount, **kw))
