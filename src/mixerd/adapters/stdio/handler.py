"""The stdio builder and handler.

Request handling never waits for a write: ``handle_logentry``/``handle_metric`` format the lines
and append them to a bounded in-memory queue (when it is full the oldest lines are dropped and
counted in :attr:`StdioHandler.dropped`, with a warning at most once a minute). A background task
started through ``env.spawn`` moves queued lines to the sink in a thread of the handler's own.
``close()`` flushes what is left, waiting at most :attr:`StdioHandler.flush_timeout` seconds.

An output that never takes its data (a FIFO nobody reads, a hung network mount) keeps that thread
in ``write()`` for ever. It is a daemon thread, not one of the event loop's executor threads
(which are joined when the loop and the process end): ``close()`` gives up on it after the flush
timeout, counts what it held as dropped (reason ``shutdown``; the output may have taken part of
that last write), and mixerd can still exit.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo
from mixerd.adapters.stdio.config import Level, StdioConfig, Stream, parse_config
from mixerd.adapters.stdio.format import format_line
from mixerd.adapters.stdio.sink import FileSink, RotatingFileSink, Sink, StreamSink

__all__ = ["StdioBuilder", "StdioHandler"]

DROP_WARNING_INTERVAL: Final = 60.0
_BATCH_LINES: Final = 4096

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _SinkThread:
    """Runs blocking sink calls one at a time, in order, in a daemon thread started on first use.
    :meth:`stop` lets the thread end once the calls handed to it are done (or never, if one of
    them never returns: the process does not wait for it)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Call ``fn`` in the thread; the future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"mixerd-stdio:{self._name}", daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, fn))
        return future

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the waiting coroutine
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this any more
                pass


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
        self._writer = _SinkThread(env.name)
        self._writing = 0
        """Lines handed to the sink whose write has not returned yet."""
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
                data = self._take()
                self._writing = data.count("\n")
                await self._writer.run(functools.partial(self._write_batch, data))
                self._writing = 0
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
        """Write what is queued, then close the sink, waiting at most :attr:`flush_timeout` for
        each. Lines not written by then (queued, or held by an output that does not take them)
        are counted as dropped; a blocked output is left to the writer thread."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        task = self._task
        if (task is None or task.done()) and self._queue:
            task = self._task = asyncio.get_running_loop().create_task(self._drain())
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self.flush_timeout)
            except TimeoutError:
                task.cancel()
        blocked = self._writing
        lost = len(self._queue) + blocked
        if lost:
            self.dropped += lost
            self._env.dropped(lost, "shutdown")
            self._queue.clear()
            self._env.logger.warning(
                "stdio: %d lines not written before close%s",
                lost,
                f" ({blocked} of them in a write the output did not finish within {self.flush_timeout:g}s)"
                if blocked
                else "",
            )
        self._closed = True
        closing = self._writer.run(self.sink.close)  # after the write in progress, if any
        self._writer.stop()
        if blocked:  # the write may never return: do not wait for it
            closing.add_done_callback(lambda f: f.cancelled() or f.exception())
            return
        try:
            await asyncio.wait_for(closing, timeout=self.flush_timeout)
        except TimeoutError:
            self._env.logger.warning("stdio: the output did not close within %gs", self.flush_timeout)


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
