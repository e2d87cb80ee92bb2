"""What the runtime gives a handler: a logger, a clock and supervised background tasks."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

__all__ = ["WORKER_COUNT", "Clock", "Env", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Time, as handlers see it. Tests pass a :class:`ManualClock`."""

    def now(self) -> _dt.datetime:
        """Wall-clock time (UTC)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (``advance``)."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, start: _dt.datetime | None = None) -> None:
        self._wall = start or _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
        self._mono = 1000.0

    def now(self) -> _dt.datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float | _dt.timedelta) -> None:
        step = seconds.total_seconds() if isinstance(seconds, _dt.timedelta) else float(seconds)
        self._mono += step
        self._wall += _dt.timedelta(seconds=step)


WORKER_COUNT: Final = "worker_count"
"""The shared service (an ``int``) a worker of ``mixerd serve --workers N`` provides: N. Absent in
a single process. Adapters whose limits must hold for the whole server divide them by it."""


class Env:
    """One per handler. Background work goes through :meth:`spawn` / :meth:`every`, never bare tasks:
    the runtime cancels it when the handler is closed, and a crash is logged, not lost."""

    def __init__(
        self,
        name: str,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
        on_drop: Callable[[int, str], None] | None = None,
        services: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        self._services: Mapping[str, object] = services or {}
        self.clock: Clock = clock or SystemClock()
        self.logger = logger or logging.getLogger(f"mixerd.handler.{name}")
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_drop = on_drop
        self.failures = 0
        """How many background tasks ended with an exception."""
        self.drops = 0
        """How much work the handler reported as dropped (see :meth:`dropped`)."""

    def shared(self, name: str) -> object | None:
        """A process-wide service the server provides to handlers by name (``"console"``: the
        console's record writer), or None where this process has none (``mixerd validate``, a server
        started with the service off). Adapters check the type they expect."""
        return self._services.get(name)

    def dropped(self, count: int, reason: str) -> None:
        """Say that the handler dropped ``count`` items of work (lines, points, spans ...) for
        ``reason`` (a short word: ``queue_full``, ``shutdown`` ...). The runtime counts them in
        ``mixerd_adapter_dropped_total{handler, reason}``: an adapter never loses work silently."""
        if count <= 0:
            return
        self.drops += count
        if self._on_drop is not None:
            self._on_drop(count, reason)

    def spawn(self, factory: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None] | None:
        """Run ``factory()`` as a supervised task. Without a running event loop nothing is started
        (handlers built in synchronous code, e.g. ``mixerd validate``, do no background work)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None

        async def supervised() -> None:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                self.logger.exception("background task %s of %s failed", name, self.name)

        task = loop.create_task(supervised(), name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def every(
        self, interval: float, fn: Callable[[], Awaitable[None]], name: str, *, initial_delay: float = 0.0
    ) -> asyncio.Task[None] | None:
        """Call ``fn`` every ``interval`` seconds; an exception is logged and the loop goes on."""

        async def loop() -> None:
            if initial_delay:
                await asyncio.sleep(initial_delay)
            while True:
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failures += 1
                    self.logger.exception("periodic task %s of %s failed", name, self.name)
                await asyncio.sleep(interval)

        return self.spawn(loop, name)

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel every background task and wait (bounded) for them to end."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
