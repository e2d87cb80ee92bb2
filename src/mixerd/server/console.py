"""The console in a running server: the store and its writer, the decision feed, what handlers and
front-ends record through, the JSON API (``/api/v1/...``) and the console's own metrics.

Records flow one way: the console adapter (hops), the front-ends (decisions) and the OTLP receiver
(spans, logs) call :class:`ConsoleSink` synchronously; the writer batches them to the store off the
request path; the API reads the store. Decisions also go to the live feed as they are recorded.

API errors are JSON ``{"error": "..."}``: 400 for a bad parameter (naming it), 404 for an unknown
transaction, 503 while the store cannot be reached (with the store's message, which never carries
its password). The API is served to loopback clients only unless ``--console-remote`` is given:
it shows who called what.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from mixerd.adapter import Clock, SystemClock
from mixerd.api.decisions import DECISIONS, DecisionRecorder
from mixerd.attribute import parse_duration
from mixerd.console import graph as graph_view
from mixerd.console import series, views
from mixerd.console.correlate import parse_order, request_id_key
from mixerd.console.feed import DecisionFeed
from mixerd.console.model import Decision, Hop, LogRecord, Span, Verdict
from mixerd.console.store import open_store
from mixerd.console.store.base import ConsoleStore, DecisionQuery, StoreUnavailable, TransactionQuery
from mixerd.console.writer import Writer
from mixerd.runtime import RuntimeMetrics
from mixerd.server.settings import Settings, is_loopback

__all__ = ["CONSOLE", "Console", "ConsoleSink", "default_store_url"]

_log = logging.getLogger("mixerd.console")

CONSOLE: Final = "console"
"""The name handlers find the console's sink under (``Env.shared``)."""

MAX_LIMIT: Final = 1000
MAX_WINDOW_S: Final = 30 * 86_400
SSE_HEARTBEAT_S: Final = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def default_store_url(environ: dict[str, str] | None = None) -> str:
    """``sqlite:///$XDG_STATE_HOME/mixerd/console.db`` when ``XDG_STATE_HOME`` is set, else a
    ``mixerd-state/console.db`` under the working directory."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME")
    directory = Path(base) / "mixerd" if base else Path.cwd() / "mixerd-state"
    return "sqlite:///" + str((directory / "console.db").resolve()).lstrip("/")


class ConsoleSink:
    """What the rest of the process records into: the writer, and the feed for decisions."""

    __slots__ = ("_feed", "_writer", "add_hop", "add_log", "add_span")

    def __init__(self, writer: Writer, feed: DecisionFeed) -> None:
        self._writer = writer
        self._feed = feed
        self.add_hop: Callable[[Hop], None] = writer.add_hop
        self.add_span: Callable[[Span], None] = writer.add_span
        self.add_log: Callable[[LogRecord], None] = writer.add_log

    def add_decision(self, decision: Decision) -> None:
        self._writer.add_decision(decision)
        self._feed.publish(decision)


class _BadParameter(ValueError):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _now_us() -> int:
    return time.time_ns() // 1000


def _int(request: web.Request, name: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _BadParameter(f"{name}: must be {bound}, got {value}")
    return value


def _duration_s(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        seconds = parse_duration(raw).total_seconds() if not raw.isdigit() else float(raw)
    except ValueError:
        raise _BadParameter(f"{name}: expected a duration such as 60s, 5m or 1h, got {raw[:40]!r}") from None
    if not 0 < seconds <= MAX_WINDOW_S:
        raise _BadParameter(f"{name}: must be above 0 and at most 30 days, got {raw[:40]!r}")
    return seconds


def _time_us(request: web.Request, name: str) -> int:
    """A time parameter: RFC 3339 (``2026-12-04T19:13:20Z``), or Unix seconds / milliseconds."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return 0
    try:
        if raw.replace(".", "", 1).isdigit():
            value = float(raw)
            return int(value * 1000) if value > 1e11 else int(value * 1_000_000)
        t = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return int(t.timestamp() * 1_000_000)
    except (ValueError, OverflowError):
        raise _BadParameter(f"{name}: expected an RFC 3339 time or Unix seconds, got {raw[:40]!r}") from None


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str = "") -> str:
    raw = request.query.get(name, default)
    if raw and raw not in choices:
        raise _BadParameter(f"{name}: expected one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


class Console:
    """The console of one server process (see the module docstring)."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        """Raises ValueError for a store URL or setting it cannot use."""
        self.settings = settings
        url = settings.console_store or default_store_url()
        self.store: ConsoleStore = open_store(url)
        self.key_order = parse_order(settings.console_transaction_headers)
        self._dropped: Any = None
        self.writer = Writer(
            self.store,
            on_drop=self._count_drop,
            retention=settings.console_retention_seconds,
            max_rows=settings.console_max_rows,
        )
        self.feed = DecisionFeed()
        self.sink = ConsoleSink(self.writer, self.feed)
        self.recorder = (
            DecisionRecorder(self.sink, clock or SystemClock(), self.key_order)
            if settings.console_decisions
            else None
        )

    def _count_drop(self, kind: str, count: int) -> None:
        if self._dropped is not None:
            self._dropped.labels(kind).inc(count)

    def register_metrics(self, metrics: RuntimeMetrics) -> None:
        """Add the console's figures to ``metrics`` (the runtime's registry, served on /metrics)."""
        self._dropped = metrics.counter(
            "mixerd_console_dropped",
            "Console records dropped (the writer's queue was full, or the store refused them), by kind.",
            ["kind"],
        )
        for kind in ("hop", "decision", "span", "log"):
            self._dropped.labels(kind)
        queued = metrics.gauge("mixerd_console_queued", "Console records waiting to be written.")
        queued.set_function(lambda: self.writer.stats().queued)
        available = metrics.gauge(
            "mixerd_console_store_available", "1 while the console store accepts writes, else 0."
        )
        available.set_function(lambda: 1.0 if self.writer.stats().store_available else 0.0)

    def services(self) -> dict[str, object]:
        """What the runtime hands handlers (``Env.shared``) and front-ends."""
        services: dict[str, object] = {CONSOLE: self.sink}
        if self.recorder is not None:
            services[DECISIONS] = self.recorder
        return services

    async def start(self) -> None:
        """Open the store (creating or migrating its schema) and start the writer. A store that
        cannot be reached is not fatal: the writer queues and retries, the API answers 503."""
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            _log.warning("console store unavailable at start (%s); records are queued meanwhile", exc)
        self.writer.start()
        _log.info("console store: %s", self.store.url_for_display)

    async def aclose(self) -> None:
        self.feed.close()
        await self.writer.aclose()
        await self.store.close()

    # -- the API -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/transactions", self._guard(self._transactions))
        r.add_get("/api/v1/transactions/{id}", self._guard(self._transaction))
        r.add_get("/api/v1/graph", self._guard(self._graph))
        r.add_get("/api/v1/decisions", self._guard(self._decisions))
        r.add_get("/api/v1/decisions/stream", self._guard(self._stream))
        r.add_get("/api/v1/services/{namespace}/{service}/metrics", self._guard(self._metrics))

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.settings.console_remote and not is_loopback(request.remote):
                return _error(403, "the console API is served to loopback clients only (--console-remote)")
            try:
                return await handler(request)
            except _BadParameter as exc:
                return _error(400, str(exc))
            except StoreUnavailable as exc:
                return _error(503, f"console store unavailable: {exc}")

        return guarded

    async def _transactions(self, request: web.Request) -> web.StreamResponse:
        q = TransactionQuery(
            service=request.query.get("service", ""),
            namespace=request.query.get("namespace", ""),
            status=_choice(request, "status", ("error", "denied", "ok")),
            min_duration_us=_int(request, "min_duration_ms", 0) * 1000,
            since_us=_time_us(request, "since"),
            until_us=_time_us(request, "until"),
            limit=_int(request, "limit", 100, lo=1, hi=MAX_LIMIT),
        )
        return web.json_response(views.transactions_json(await self.store.transactions(q)))

    async def _transaction(self, request: web.Request) -> web.StreamResponse:
        tid = request.match_info["id"]
        records = await self.store.transaction(request_id_key(tid))
        if records is None:
            return _error(404, f"no transaction {tid[:128]!r} in the console store")
        return web.json_response(views.transaction_json(records))

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        duration = _duration_s(request, "duration", 60.0)
        graph_type = _choice(request, "graphType", graph_view.GRAPH_TYPES, "workload") or "workload"
        namespaces = [n for n in request.query.get("namespaces", "").split(",") if n]
        until = _now_us()
        since = until - int(duration * 1_000_000)
        rollups = await self.store.edges(since, until, namespaces, step_us=until - since)
        return web.json_response(graph_view.graph(rollups, graph_type, duration))

    async def _decisions(self, request: web.Request) -> web.StreamResponse:
        verdict = _choice(request, "verdict", tuple(v.value for v in Verdict))
        q = DecisionQuery(
            since_us=_time_us(request, "since"),
            until_us=_time_us(request, "until"),
            verdict=Verdict(verdict) if verdict else None,
            rule=request.query.get("rule", ""),
            limit=_int(request, "limit", 100, lo=1, hi=MAX_LIMIT),
        )
        return web.json_response(views.decisions_json(await self.store.decisions(q)))

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        duration = _duration_s(request, "duration", 3600.0)
        step = _duration_s(request, "step", max(10.0, duration / 60))
        step_us = max(10_000_000, int(step * 1_000_000) // 10_000_000 * 10_000_000)
        until = _now_us()
        since = until - int(duration * 1_000_000)
        ns, svc = request.match_info["namespace"], request.match_info["service"]
        buckets = await self.store.service_buckets(ns, svc, since, until, step_us)
        try:
            body = series.service_metrics(buckets, since_us=since, until_us=until, step_us=step_us)
        except ValueError as exc:
            raise _BadParameter(f"step: {exc}") from None
        return web.json_response(body)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: one ``decision`` event per decision, filtered like the list; a
        comment every 15 s keeps proxies from closing an idle stream."""
        verdict = _choice(request, "verdict", tuple(v.value for v in Verdict))
        rule = request.query.get("rule", "")
        service = request.query.get("service", "")
        try:
            sub = self.feed.subscribe()
        except RuntimeError as exc:
            return _error(503, str(exc))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(b": mixerd decision feed\n\n")
            while True:
                try:
                    batch = await asyncio.wait_for(sub.next_batch(), SSE_HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if not batch:
                    break
                chunks = []
                for d in batch:
                    if verdict and d.verdict != verdict:
                        continue
                    if rule and d.rule != rule:
                        continue
                    if service and service not in (d.destination.service, d.destination.workload):
                        continue
                    data = json.dumps(views.decision_json(d), separators=(",", ":"))
                    chunks.append(f"event: decision\ndata: {data}\n\n")
                if sub.lost:
                    chunks.append(f"event: lost\ndata: {sub.lost}\n\n")
                    sub.lost = 0
                if chunks:
                    await response.write("".join(chunks).encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
        return response
