"""memquota counters shared by several worker processes (``mixerd serve --workers N``).

One process owns the counters (the supervisor: :class:`QuotaOwner`, a :class:`QuotaCounters` per
handler) and serves them on a Unix socket; each worker's memquota handler resolves the instance to
a counter key and limit itself (its own config) and asks the owner over one connection
(:class:`QuotaClient`, requests pipelined by id). The owner answers every request inline on its
event loop, one at a time, so counting is exact across the workers, exactly as in one process.

The wire format is one JSON object per line. Request: ``i`` (id), ``s`` (scope: the handler and
a fingerprint of its config; a changed config starts fresh counters, as a rebuilt handler does in
one process), ``p`` (deduplication period, seconds), ``q`` / ``d`` (quota name, dimension pairs),
``m`` (max amount), ``v`` (valid duration, seconds), ``t`` (ticks), ``a`` (amount), ``b`` (best
effort), ``u`` (deduplication id). Answer: ``i`` and the :class:`QuotaResult` fields (durations in
seconds, absent for None), or ``e`` (an error text).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from mixerd.adapter import Env, Handler, QuotaArgs, QuotaResult
from mixerd.adapters.memquota.config import Limit, MemQuotaConfig
from mixerd.adapters.memquota.handler import SWEEP_INTERVAL, MemQuotaHandler, QuotaCounters, QuotaInstanceLike

__all__ = ["SHARED_SERVICE", "QuotaClient", "QuotaOwner", "SharedMemQuotaHandler"]

SHARED_SERVICE: Final = "memquota_owner"
"""The name of the :class:`QuotaClient` among the server's shared services (``Env.shared``)."""

_IDLE_SCOPE: Final = 600.0
"""Seconds after which a scope without counters and without requests is forgotten."""

_log = logging.getLogger("mixerd.memquota.shared")


def _seconds(value: _dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _delta(value: Any) -> _dt.timedelta | None:
    return None if value is None else _dt.timedelta(seconds=float(value))


class QuotaOwner:
    """The counters of every memquota handler of every worker (sans-IO: :meth:`answer` takes a
    decoded request; :meth:`serve` is the socket edge)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._scopes: dict[str, tuple[QuotaCounters, list[float]]] = {}

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        scope = str(request["s"])
        held = self._scopes.get(scope)
        if held is None:
            held = self._scopes[scope] = (QuotaCounters(float(request["p"]), now), [now])
        counters, used = held
        used[0] = now
        key = (str(request["q"]), tuple((str(n), str(v)) for n, v in request["d"]))
        limit = Limit(int(request["m"]), _dt.timedelta(seconds=float(request["v"])), int(request["t"]))
        result = counters.quota(key, limit, int(request["a"]), bool(request["b"]), str(request["u"]), now)
        return {
            "i": request["i"],
            "vd": _seconds(result.valid_duration),
            "a": result.amount,
            "l": result.limit,
            "r": result.remaining,
            "ra": _seconds(result.reset_after),
            "w": _seconds(result.window),
        }

    def sweep(self) -> None:
        """Drop expired windows, and scopes that hold nothing and were not asked for a while."""
        now = self._clock()
        for scope, (counters, used) in list(self._scopes.items()):
            counters.sweep(now)
            if counters.counter_count == 0 and now - used[0] > _IDLE_SCOPE:
                del self._scopes[scope]

    @property
    def scope_count(self) -> int:
        return len(self._scopes)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = self.answer(json.loads(line))
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    _log.warning("memquota owner: bad request from a worker: %s", exc)
                    request_id = None
                    try:
                        request_id = json.loads(line).get("i")
                    except (ValueError, AttributeError):
                        pass
                    reply = {"i": request_id, "e": f"bad quota request: {exc}"}
                writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(self, path: str) -> asyncio.AbstractServer:
        """Serve the counters on the Unix socket ``path`` (and sweep them every 10 s)."""
        server = await asyncio.start_unix_server(self._connection, path=path)

        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL)
                self.sweep()

        task = asyncio.get_running_loop().create_task(sweeper())
        self._sweeper = task
        return server

    def stop_sweeping(self) -> None:
        task = getattr(self, "_sweeper", None)
        if task is not None:
            task.cancel()


class QuotaClient:
    """A worker's connection to the :class:`QuotaOwner` (opened on first use, re-opened after a
    failure; requests on it are pipelined)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                try:
                    reader, writer = await asyncio.open_unix_connection(self.path)
                except OSError as exc:
                    raise ConnectionError(
                        f"memquota: cannot reach the supervisor's shared counters at {self.path}: {exc}"
                    ) from None
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: Exception = ConnectionError("memquota: the supervisor closed the shared counters")
        try:
            while line := await reader.readline():
                reply = json.loads(line)
                future = self._pending.pop(int(reply.get("i") or 0), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, ValueError) as exc:
            error = ConnectionError(f"memquota: shared counters connection failed: {exc}")
        finally:
            self._writer = None
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(error)

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        writer = await self._connect()
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request["i"] = request_id
        writer.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        reply = await future
        if "e" in reply:
            raise RuntimeError(str(reply["e"]))
        return reply

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except asyncio.CancelledError:
                pass


def config_scope(handler: str, config: MemQuotaConfig) -> str:
    """The owner's name for one handler's counters: its name and a digest of its config."""
    return f"{handler}#{hashlib.sha256(repr(config).encode()).hexdigest()[:16]}"


class SharedMemQuotaHandler(Handler):
    """memquota in a worker: resolves counter and limit here, counts in the owner."""

    def __init__(self, config: MemQuotaConfig, env: Env, client: QuotaClient) -> None:
        self._local = MemQuotaHandler(config, env.clock, env.logger)  # resolution only
        self._client = client
        self._scope = config_scope(env.name, config)
        self._period = config.min_deduplication_duration.total_seconds()

    async def handle_quota(self, instance: QuotaInstanceLike, args: QuotaArgs) -> QuotaResult:
        resolved = self._local.resolve(instance)
        if resolved is None:
            return QuotaResult()
        (quota, dims), limit = resolved
        reply = await self._client.call(
            {
                "s": self._scope,
                "p": self._period,
                "q": quota,
                "d": dims,
                "m": limit.max_amount,
                "v": limit.valid_duration.total_seconds(),
                "t": limit.ticks,
                "a": args.amount,
                "b": args.best_effort,
                "u": args.dedup_id,
            }
        )
        return QuotaResult(
            valid_duration=_delta(reply["vd"]) or _dt.timedelta(0),
            amount=int(reply["a"]),
            limit=reply["l"],
            remaining=reply["r"],
            reset_after=_delta(reply["ra"]),
            window=_delta(reply["w"]),
        )
