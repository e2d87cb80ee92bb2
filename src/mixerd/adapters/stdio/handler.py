"""The stdio builder and handler.

Request handling never waits for a write: ``handle_logentry``/``handle_metric`` format the lines
and append them to a bounded in-memory queue (when it is full the oldest lines are dropped and
counted in :attr:`StdioHandler.dropped`, with a warning at most once a minute). A background task
started through ``env.spawn`` moves queued lines to the sink in a worker thread. ``close()``
flushes what is left, waiting at most :attr:`StdioHandler.flush_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from typing import Any, Final

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo
from mixerd.adapters.stdio.config import Level, StdioConfig, Stream, parse_config
from mixerd.adapters.stdio.format import format_line
from mixerd.adapters.stdio.sink import FileSink, RotatingFileSink, Sink, StreamSink

__all__ = ["StdioBuilder", "StdioHandler"]

DROP_WARNING_INTERVAL: Final = 60.0
_BATCH_LINES: Final = 4096


class StdioHandler(Handler):
    """Writes log entries and metrics as lines (JSON or text) to a stream or file."""

    def __init__(
        self,
        config: StdioConfig,
        env: Env,
        sink: Sink,
        orders: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self._env = env
        self._clock = env.clock
        self._severity = config.severity_levels
        self._as_json = config.output_as_json
        self._min_level = config.output_level
        self._metric_level = config.metric_level
        self._orders: Mapping[str, tuple[str, ...]] = orders or {}
        self._queue: collections.deque[str] = collections.deque(maxlen=config.max_queued_lines)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._inline = False
        self._closing = False
        self._closed = False
        self._drops_reported = 0
        self._drops_reported_at = -1e18
        self.flush_timeout = 5.0
        """Seconds ``close()`` waits for queued lines to be written."""
        self.dropped = 0
        """Lines lost: pushed out of a full queue, or still queued when the flush timed out."""
        self.written = 0
        """Lines handed to the sink."""
        self.write_errors = 0

    # -- report path ---------------------------------------------------------------------------

    def handle_logentry(self, instances: Sequence[Any]) -> None:
        for inst in instances:
            level = self._severity.get(inst.severity, Level.INFO)
            if level < self._min_level:
                continue
            variables = inst.variables
            order = self._orders.get(inst.name)
            if order:
                fields = [(k, variables[k]) for k in order if k in variables]
            else:
                fields = [(k, variables[k]) for k in sorted(variables)]
            when = inst.timestamp or self._clock.now()
            self._enqueue(format_line(self._as_json, level, when, inst.name, fields))

    def handle_metric(self, instances: Sequence[Any]) -> None:
        level = self._metric_level
        if level < self._min_level or not instances:
            return
        when = self._clock.now()
        for inst in instances:
            dims = inst.dimensions
            fields = [("value", inst.value)]
            fields += [(k, dims[k]) for k in sorted(dims)]
            self._enqueue(format_line(self._as_json, level, when, inst.name, fields))

    def _enqueue(self, line: str) -> None:
        if self._closing:
            self.dropped += 1
            self._env.dropped(1, "shutdown")
            return
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
            self._env.dropped(1, "queue_full")
        queue.append(line)
        if not self._started:
            self._start()
        if self._inline:
            self._write_batch(self._take())
        else:
            self._wakeup.set()

    def _start(self) -> None:
        self._started = True
        self._task = self._env.spawn(self._drain, "write")
        # No event loop (a synchronous caller such as ``mixerd validate``): write in place.
        self._inline = self._task is None

    # -- writer --------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> str:
        queue = self._queue
        n = min(len(queue), _BATCH_LINES)
        return "".join([queue.popleft() for _ in range(n)])

    def _write_batch(self, data: str) -> None:
        if not data:
            return
        try:
            self.sink.write(data)
            self.written += data.count("\n")
        except Exception:
            self.write_errors += 1
            self._env.logger.exception("stdio: could not write %d lines", data.count("\n"))

    async def _drain(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await asyncio.to_thread(self._write_batch, self._take())
            self._report_drops()
            if self._closing and not self._queue:
                return

    def _report_drops(self) -> None:
        if self.dropped == self._drops_reported:
            return
        now = self._clock.monotonic()
        if now - self._drops_reported_at < DROP_WARNING_INTERVAL:
            return
        self._env.logger.warning(
            "stdio: %d lines dropped because the output queue (%d lines) was full",
            self.dropped - self._drops_reported,
            self._queue.maxlen,
        )
        self._drops_reported = self.dropped
        self._drops_reported_at = now

    async def close(self) -> None:
        """Write what is queued (bounded by :attr:`flush_timeout`), then close the sink."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self.flush_timeout)
            except TimeoutError:
                task.cancel()
        elif self._queue:
            await asyncio.to_thread(self._flush_all)
        lost = len(self._queue)
        if lost:
            self.dropped += lost
            self._env.dropped(lost, "shutdown")
            self._queue.clear()
            self._env.logger.warning("stdio: %d lines not written before close", lost)
        await asyncio.to_thread(self.sink.close)
        self._closed = True

    def _flush_all(self) -> None:
        while self._queue:
            self._write_batch(self._take())


class StdioBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed, self.errors = parse_config(config)
        # Mixer wrote variables in sorted order; the order is fixed per instance from its types.
        orders: dict[str, tuple[str, ...]] = {}
        for info in instances.values():
            if info.template == "logentry":
                names = [k.removeprefix("variables.") for k in info.types if k.startswith("variables.")]
                if names:
                    orders[info.name] = tuple(sorted(names))
        self.orders = orders

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> StdioHandler:
        cfg = self.parsed
        sink: Sink
        if cfg.log_stream is Stream.STDOUT:
            sink = StreamSink("stdout")
        elif cfg.log_stream is Stream.STDERR:
            sink = StreamSink("stderr")
        elif cfg.log_stream is Stream.FILE:
            sink = FileSink(cfg.output_path)
        else:
            sink = RotatingFileSink(
                cfg.output_path,
                cfg.max_bytes_before_rotation,
                cfg.max_days_before_rotation,
                cfg.max_rotated_files,
                env.clock.now,
            )
        return StdioHandler(cfg, env, sink, self.orders)
