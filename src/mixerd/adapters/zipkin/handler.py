"""The zipkin builder and handler: tracespan instances -> spans, queued, POSTed in batches.

Request path (``handle_tracespan``, called by the report pipeline with a batch of instances):
each instance is sampled and converted (:mod:`mixerd.adapters.zipkin.convert`) and the span
appended to a queue of ``maxQueueSize`` spans; a span that finds the queue full is dropped
(``queue_full``), one whose ids do not parse too (``bad_id``). Nothing there waits for the
collector.

Background task (one per handler): every ``flushInterval``, or as soon as ``maxBatchSize``
spans wait, POSTs up to ``maxBatchSize`` spans in one request (``Content-Type:
application/json`` or ``application/x-protobuf``) within ``timeout``. A batch the collector does
not take (a connection error, a timeout, a status other than 2xx) is dropped and counted
(``send_failed``): spans are telemetry, and resending would let a slow collector fill the queue.

Close: what is queued is sent, waiting at most :attr:`ZipkinHandler.flush_timeout`; spans left
are dropped (``shutdown``). Drops go to ``env.dropped`` (``mixerd_adapter_dropped_total``) and are
logged at most once a minute per reason, with counts.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, RateLimitedWarning, redact_url
from mixerd.adapters.zipkin.config import ExportFormat, ZipkinConfig, parse_config
from mixerd.adapters.zipkin.convert import Span, otlp_request, sampled, span_of, zipkin_json

__all__ = ["ZipkinBuilder", "ZipkinHandler"]

_WARN_INTERVAL: Final = 60.0


class ZipkinHandler(Handler):
    """Exports trace spans to a Zipkin (or OTLP/HTTP) collector (see the module doc)."""

    def __init__(self, config: ZipkinConfig, env: Env) -> None:
        self.config = config
        self._env = env
        self._url_shown = redact_url(config.url)
        self._encode = zipkin_json if config.export_format is ExportFormat.ZIPKIN_JSON else otlp_request
        self._queue: collections.deque[Span] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._closed = False
        self._sending = 0
        """Spans of the POST in progress (counted as lost if close() cancels it)."""
        self._warnings: dict[str, RateLimitedWarning] = {}
        self.flush_timeout = 5.0
        """Seconds ``close()`` waits for the queue to be sent."""
        self.sent = 0
        """Spans the collector took."""
        self.posts = 0
        self.dropped = 0
        self.not_sampled = 0

    # -- request path --------------------------------------------------------------------------

    def handle_tracespan(self, instances: Sequence[Any]) -> None:
        probability = self.config.sample_probability
        if probability <= 0.0:
            return  # Mixer: no sampler, tracing off
        queue = self._queue
        limit = self.config.max_queue_size
        for inst in instances:
            span = span_of(inst)
            if span is None:
                self._drop(1, "bad_id")
                continue
            if not sampled(span.trace_id, probability):
                self.not_sampled += 1
                continue
            if self._closing:
                self._drop(1, "shutdown")
            elif len(queue) >= limit:
                self._drop(1, "queue_full")
            else:
                queue.append(span)
        if queue:
            if self._task is None:
                self._task = self._env.spawn(self._run, "export")
            if len(queue) >= self.config.max_batch_size:
                self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue) + self._sending

    # -- accounting ----------------------------------------------------------------------------

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._env.dropped(count, reason)
        self._warn(reason, f"spans dropped ({reason.replace('_', ' ')})", count)

    def _warn(self, key: str, message: str, count: int = 1) -> None:
        warning = self._warnings.get(key)
        if warning is None:
            warning = self._warnings[key] = RateLimitedWarning(
                self._env.clock, _WARN_INTERVAL, logger=self._env.logger
            )
        warning.add(count, f"zipkin {self._url_shown}: {message}")

    # -- sending -------------------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self.config.flush_interval.total_seconds()
        while True:
            if not self._closing and len(self._queue) < self.config.max_batch_size:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), interval)
                except TimeoutError:
                    pass
            self._wakeup.clear()
            while self._queue:
                await self._post_batch()
                if not self._closing and len(self._queue) < self.config.max_batch_size:
                    break
            if self._closing and not self._queue:
                return

    async def _post_batch(self) -> None:
        n = min(len(self._queue), self.config.max_batch_size)
        batch = [self._queue.popleft() for _ in range(n)]
        try:
            body = self._encode(batch)
        except Exception as exc:  # a value the encoder cannot take: that batch only
            self._drop(n, "encode_error")
            self._warn("encode", f"cannot encode spans: {type(exc).__name__}: {exc}")
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._sending = n
        try:
            async with self._session.post(
                self.config.url,
                data=body,
                headers={"Content-Type": self.config.content_type},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()),
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._sending = 0
            self._drop(n, "send_failed")
            self._warn("send", f"POST failed ({type(exc).__name__}: {exc})")
            return
        self._sending = 0
        if not ok:
            self._drop(n, "send_failed")
            self._warn("status", f"the collector answered HTTP {status}")
            return
        self.sent += n
        self.posts += 1

    # -- close ---------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        task = self._task
        if (task is None or task.done()) and self._queue:
            task = self._task = asyncio.get_running_loop().create_task(self._run())
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self.flush_timeout)
            except TimeoutError:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        lost = len(self._queue) + self._sending
        self._sending = 0
        if lost:
            self._queue.clear()
            self._drop(lost, "shutdown")
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class ZipkinBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed, self.errors = parse_config(config)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> ZipkinHandler:
        return ZipkinHandler(self.parsed, env)
