"""The fluentd builder and handler: log entries queued on the request path, encoded, batched and
pushed to Fluentd over TCP by a background task.

Request path: ``handle_logentry`` appends each entry to a queue of ``instanceBufferSize`` entries
and returns; an entry that finds the queue full is dropped (``queue_full``), as Mixer dropped it
when its channel was full.

Background task (one per handler): takes entries from the queue, encodes each (see
:mod:`mixerd.adapters.fluentd.encode`) and adds it to the current batch; an entry larger than
``maxBatchSizeBytes`` is dropped (``too_large``). The batch is pushed when the next entry would
take it past ``maxBatchSizeBytes``, every ``pushIntervalDuration``, and on close.

A push writes the batch on the connection (opened when needed, within ``pushTimeoutDuration``):

* Mixer's way (default): Message-mode messages ``[tag, time, record]``, one per entry, written
  together. A write that does not drain within ``pushTimeoutDuration`` (Fluentd not reading) is
  given up and the batch dropped (``timeout``), as Mixer did.
* ``requireAck: true``: one Forward-mode message ``[tag, [[time, record] ...], {chunk, size}]``
  per tag of the batch; the push succeeds when Fluentd has acknowledged every chunk. Without the
  acknowledgements within ``pushTimeoutDuration`` the batch is sent again (at-least-once).

When Fluentd cannot be reached (refused, reset, closed), the batch is kept and pushed again after
a backoff (0.5 s doubling to 30 s, back to 0.5 s after a success), on a new connection; meanwhile
new entries wait in the queue and, once it is full, are dropped and counted. A connection Fluentd
has closed is noticed before the next write and replaced.

Close: what is queued is pushed, waiting at most :attr:`FluentdHandler.flush_timeout`; a push
that fails then is not retried. Entries left are dropped (``shutdown``).

Every drop goes to ``env.dropped`` (the runtime's ``mixerd_adapter_dropped_total{handler,
reason}``) and to :attr:`FluentdHandler.dropped`; warnings are logged at most once a minute per
kind.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, RateLimitedWarning
from mixerd.adapters.fluentd.config import FluentdConfig, parse_config
from mixerd.adapters.fluentd.encode import encode_event, message, record_of
from mixerd.attribute import logsafe

__all__ = ["FluentdBuilder", "FluentdHandler"]

_WARN_INTERVAL: Final = 60.0
_packer: Final = msgpack.Packer(use_bin_type=True)


@dataclass(slots=True)
class _Batch:
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    """(tag, event body) in arrival order."""
    size: int = 0
    """Bytes of the Message-mode encoding (what ``maxBatchSizeBytes`` limits)."""

    def messages(self) -> bytes:
        return b"".join(message(tag, body) for tag, body in self.entries)

    def forward(self) -> tuple[bytes, set[str]]:
        """Forward-mode messages, one per tag, each with a fresh chunk id; and the chunk ids."""
        groups: dict[str, list[bytes]] = {}
        for tag, body in self.entries:
            groups.setdefault(tag, []).append(body)
        out: list[bytes] = []
        chunks: set[str] = set()
        for tag, bodies in groups.items():
            chunk = base64.b64encode(uuid.uuid4().bytes).decode()
            chunks.add(chunk)
            out.append(b"\x93" + _packer.pack(tag) + _packer.pack_array_header(len(bodies)))
            out.extend(b"\x92" + body for body in bodies)
            out.append(_packer.pack({"chunk": chunk, "size": len(bodies)}))
        return b"".join(out), chunks


class _PushError(Exception):
    """The batch was not delivered and should be pushed again."""


class FluentdHandler(Handler):
    """Forwards log entries to Fluentd (see the module doc)."""

    retry_initial = 0.5
    retry_max = 30.0

    def __init__(self, config: FluentdConfig, env: Env) -> None:
        self.config = config
        self._env = env
        self._int_dur = config.integer_duration
        self._max_queue = config.instance_buffer_size
        self._max_batch = config.max_batch_size_bytes
        self._interval = config.push_interval.total_seconds()
        self._timeout = config.push_timeout.total_seconds()
        self._queue: collections.deque[Any] = collections.deque()
        self._batch = _Batch()
        self._pending: _Batch | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._warnings: dict[str, RateLimitedWarning] = {}
        self._backoff = self.retry_initial
        self.flush_timeout = 5.0
        """Seconds ``close()`` waits for the queue to be pushed."""
        self.sent = 0
        """Entries delivered (written; with ``requireAck``, acknowledged)."""
        self.batches = 0
        self.connects = 0
        self.push_failures = 0
        self.dropped = 0

    # -- request path --------------------------------------------------------------------------

    def handle_logentry(self, instances: Sequence[Any]) -> None:
        queue = self._queue
        for inst in instances:
            if self._closing:
                self._drop(1, "shutdown")
            elif len(queue) >= self._max_queue:
                self._drop(1, "queue_full")
            else:
                queue.append(inst)
        if queue:
            if not self._started:
                self._started = True
                self._task = self._env.spawn(self._run, "push")
            self._wakeup.set()

    @property
    def queued(self) -> int:
        """Entries not delivered yet (queued, batched or awaiting a retry)."""
        pending = len(self._pending.entries) if self._pending is not None else 0
        return len(self._queue) + len(self._batch.entries) + pending

    # -- accounting ----------------------------------------------------------------------------

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._env.dropped(count, reason)
        self._warn(reason, f"log entries dropped ({reason.replace('_', ' ')})", count)

    def _warn(self, key: str, message: str, count: int = 1) -> None:
        """Log ``message`` (with the count of such events) at most once a minute per ``key``."""
        warning = self._warnings.get(key)
        if warning is None:
            warning = self._warnings[key] = RateLimitedWarning(
                self._env.clock, _WARN_INTERVAL, logger=self._env.logger
            )
        warning.add(count, f"fluentd {self.config.address}: {message}")

    # -- batching ------------------------------------------------------------------------------

    def _encode_queued(self) -> None:
        """Move entries from the queue into the batch until the queue is empty or the batch is
        full (then it becomes the pending batch)."""
        queue = self._queue
        now = self._env.clock.now
        while queue and self._pending is None:
            inst = queue.popleft()
            try:
                tag, record = record_of(inst.name, inst.severity, inst.variables, self._int_dur)
                body = encode_event(inst.timestamp or now(), record)
            except Exception as exc:  # a value msgpack cannot take: that entry only
                self._drop(1, "encode_error")
                self._warn("encode", f"cannot encode a log entry of {inst.name}: {logsafe(str(exc))}")
                continue
            size = len(body) + len(tag) + 6
            if size > self._max_batch:
                self._drop(1, "too_large")
                continue
            batch = self._batch
            if batch.entries and batch.size + size > self._max_batch:
                self._pending, self._batch = batch, _Batch()
                batch = self._batch
            batch.entries.append((tag, body))
            batch.size += size

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_push = loop.time() + self._interval
        retry_at = 0.0
        while True:
            self._encode_queued()
            now = loop.time()
            due = now >= next_push
            if due:
                next_push = now + self._interval
            if self._pending is None and self._batch.entries and (due or self._closing):
                self._pending, self._batch = self._batch, _Batch()
            if self._pending is not None and (now >= retry_at or self._closing):
                if await self._push(self._pending):
                    self._pending = None
                    self._backoff = self.retry_initial
                    continue
                if self._closing:
                    return  # one last attempt on close, no backoff: close() counts what is left
                retry_at = loop.time() + self._backoff
                self._backoff = min(self._backoff * 2, self.retry_max)
            if self._closing and not self._queue and not self._batch.entries and self._pending is None:
                return
            wake_at = next_push if self._pending is None else min(next_push, retry_at)
            if self._queue and self._pending is None:
                continue  # more to encode (after a push made room)
            timeout = wake_at - loop.time()
            if timeout > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass
            self._wakeup.clear()

    # -- pushing -------------------------------------------------------------------------------

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        old_reader, old_writer = self._reader, self._writer
        if old_reader is not None and old_writer is not None:
            if not old_writer.is_closing() and not old_reader.at_eof() and old_reader.exception() is None:
                return old_reader, old_writer
            self._disconnect()
        cfg = self.config
        reader, writer = await asyncio.wait_for(asyncio.open_connection(cfg.host, cfg.port), self._timeout)
        self._reader, self._writer = reader, writer
        self.connects += 1
        if self.connects > 1:
            self._env.logger.info("fluentd %s: connected again", cfg.address)
        return reader, writer

    def _disconnect(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.transport.abort()

    async def _push(self, batch: _Batch) -> bool:
        """Deliver ``batch``: True when done with it (delivered, or dropped after a timeout),
        False when it should be pushed again later."""
        try:
            reader, writer = await self._connection()
        except (OSError, TimeoutError) as exc:
            self.push_failures += 1
            self._warn("connect", f"cannot connect ({exc or type(exc).__name__}); {self.queued} entries wait")
            return False
        count = len(batch.entries)
        try:
            if self.config.require_ack:
                data, chunks = batch.forward()
                writer.write(data)
                await asyncio.wait_for(self._drain_and_ack(reader, writer, chunks), self._timeout)
            else:
                writer.write(batch.messages())
                await asyncio.wait_for(writer.drain(), self._timeout)
        except TimeoutError:
            self._disconnect()
            self.push_failures += 1
            if self.config.require_ack:
                self._warn("ack", f"no acknowledgement within {self._timeout:g}s; sending the batch again")
                return False
            self._drop(count, "timeout")
            return True
        except (OSError, _PushError, ValueError) as exc:
            self._disconnect()
            self.push_failures += 1
            self._warn("push", f"push failed ({exc or type(exc).__name__}); sending the batch again")
            return False
        self.sent += count
        self.batches += 1
        return True

    async def _drain_and_ack(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: set[str]
    ) -> None:
        await writer.drain()
        unpacker = msgpack.Unpacker(raw=False)
        waiting = set(chunks)
        while waiting:
            data = await reader.read(4096)
            if not data:
                raise _PushError("connection closed before the acknowledgement")
            unpacker.feed(data)
            for answer in unpacker:
                if isinstance(answer, Mapping):
                    waiting.discard(str(answer.get("ack")))

    # -- close ---------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        task = self._task
        if (task is None or task.done()) and self.queued:
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
        lost = self.queued
        if lost:
            self._queue.clear()
            self._batch = _Batch()
            self._pending = None
            self._drop(lost, "shutdown")
        self._closed = True
        self._disconnect()


class FluentdBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed, self.errors = parse_config(config)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> FluentdHandler:
        return FluentdHandler(self.parsed, env)
