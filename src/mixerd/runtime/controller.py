"""The controller: turns store state into the routing table in force, again on every change.

One linear pipeline per change (Mixer's ``processNewConfig``):

    store state -> Snapshot -> HandlerTable (reuse handlers with an unchanged signature)
    -> RoutingTable -> atomic swap in the Dispatcher -> wait until no request uses the old
    table (bounded) -> close the handlers the new table did not keep.

A bad resource is dropped with its errors and the rest takes effect; if building the new
table fails altogether, the last good table keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from mixerd.adapter import Clock, Info, InstanceInfo, SystemClock, load_adapters
from mixerd.adapter.authz_metrics import AUTHZ_DECISIONS
from mixerd.attribute import builtin_manifest
from mixerd.config import Snapshot, Store, build_snapshot, missing_adapter_message
from mixerd.runtime.checkcache import DEFAULT_CACHE_ENTRIES
from mixerd.runtime.dispatcher import Dispatcher
from mixerd.runtime.handlers import HandlerEntry, HandlerTable, build_handler_table
from mixerd.runtime.metrics import RuntimeMetrics
from mixerd.runtime.routing import RoutingTable, build_routing_table

__all__ = ["AdapterRegistryCatalog", "Runtime", "RuntimeStatus", "close_handler"]

_log = logging.getLogger(__name__)


class AdapterRegistryCatalog:
    """What the config layer needs to know about adapters, answered from installed adapters."""

    def __init__(self, adapters: Mapping[str, Info]) -> None:
        self._adapters = adapters

    def templates_of(self, adapter: str) -> tuple[str, ...] | None:
        info = self._adapters.get(adapter)
        return None if info is None else info.templates

    def validate_params(
        self,
        adapter: str,
        params: Mapping[str, Any],
        instances: Mapping[str, tuple[str, Mapping[str, Any]]],
    ) -> list[tuple[str, str]]:
        info = self._adapters.get(adapter)
        if info is None:
            return [("", missing_adapter_message(adapter, f"no adapter named '{adapter}' is installed"))]
        infos = {name: InstanceInfo(name, t, dict(types)) for name, (t, types) in instances.items()}
        try:
            problems = info.builder(dict(params or {}), infos).validate()
        except Exception as exc:  # an adapter bug is a config error, not a crash
            return [("", f"adapter {adapter} could not validate its config: {type(exc).__name__}: {exc}")]
        return [(p.path, p.message) for p in problems]


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What the config in force is, for /debug/config and /readyz."""

    snapshot: Snapshot | None
    table: RoutingTable
    errors: tuple[str, ...]
    ready: bool


async def close_handler(entry: HandlerEntry, metrics: RuntimeMetrics | None = None) -> None:
    """Close one handler, containing its failures (counted in ``metrics`` when given)."""
    try:
        close = getattr(entry.handler, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, 10.0)
    except Exception:
        _log.exception("closing handler %s failed", entry.name)
    await entry.env.aclose()
    if metrics is not None:
        metrics.handlers_closed.inc()


class Runtime:
    """Owns the store watch, the handler table and the dispatcher, and what every component of
    one mixerd shares: its clock (:attr:`clock`, a ``ManualClock`` in tests) and its metrics
    (:attr:`metrics`, a registry per runtime). The dispatcher carries both to the front-ends."""

    def __init__(
        self,
        store: Store,
        *,
        default_namespace: str = "istio-system",
        adapters: Mapping[str, Info] | None = None,
        clock: Clock | None = None,
        drain_timeout: float = 10.0,
        check_deadline: float = 1.0,
        check_cache_entries: int = DEFAULT_CACHE_ENTRIES,
        services: Mapping[str, object] | None = None,
        fail_closed: bool = False,
    ) -> None:
        self.store = store
        self.default_namespace = default_namespace
        self.adapters = adapters if adapters is not None else load_adapters()
        self.catalog = AdapterRegistryCatalog(self.adapters)
        self.clock: Clock = clock or SystemClock()
        self.metrics = RuntimeMetrics()
        self.services: Mapping[str, object] = {
            AUTHZ_DECISIONS: self.metrics.authz_decisions,
            **(services or {}),
        }
        """Process-wide services handlers reach through ``Env.shared`` (the console writer, the
        authorization decision counter)."""
        self._adapter_drops = self.metrics.counter(
            "mixerd_adapter_dropped",
            "Work that handlers dropped (log lines, points ...), by handler and reason, as they report it "
            "through Env.dropped.",
            ["handler", "reason"],
        )
        self.drain_timeout = drain_timeout
        self.fail_closed = fail_closed
        """Deny a Check when a check or quota rule cannot be evaluated, for rules without a
        ``mixerd.io/fail-closed`` annotation (``--fail-closed``)."""
        empty = HandlerTable({}, [])
        self._handlers = empty
        self.snapshot: Snapshot | None = None
        self.dispatcher = Dispatcher(
            RoutingTable(0, default_namespace, {}, {}, empty, []),
            check_deadline=check_deadline,
            check_cache_entries=check_cache_entries,
            metrics=self.metrics,
            clock=self.clock,
        )
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.ready = False
        self.generation = 0
        self.apply_error: str | None = None  # why the latest change is not in force, if it is not

    def _count_adapter_drop(self, handler: str, count: int, reason: str) -> None:
        self._adapter_drops.labels(handler, reason).inc(count)

    @property
    def status(self) -> RuntimeStatus:
        errors = tuple(str(e) for e in self.snapshot.errors) if self.snapshot else ()
        if self.apply_error is not None:
            errors = (self.apply_error, *errors)
        return RuntimeStatus(
            self.snapshot, self.dispatcher.table, errors + tuple(self.dispatcher.table.errors), self.ready
        )

    async def start(self) -> None:
        """Load the config once (so the server starts with it) and keep watching the store."""
        changes = self.store.watch()  # subscribe before listing, so no change falls in between
        await self.reload()
        self.ready = True
        self._watch_task = asyncio.create_task(self._watch(changes), name="mixerd-config-watch")

    async def _watch(self, changes: AsyncIterator[Any]) -> None:
        async for _batch in changes:
            try:
                await self.reload()
            except Exception as exc:
                _log.exception("applying a config change failed; the previous config keeps serving")
                self.apply_error = (
                    f"the latest config change was not applied ({type(exc).__name__}: {exc}); "
                    f"config {self.dispatcher.table.id} keeps serving"
                )

    async def reload(self) -> RoutingTable:
        """Read the store and put its config in force."""
        async with self._lock:
            resources = await self.store.list()
            problems = self.store.problems()
            ignored: Any = getattr(self.store, "ignored", tuple)()
            return await self._apply(list(resources.values()), problems, ignored)

    async def _apply(self, resources: list[Any], problems: Any = (), ignored: Any = ()) -> RoutingTable:
        snapshot = build_snapshot(
            resources,
            default_namespace=self.default_namespace,
            adapters=self.catalog,
            base_manifest=builtin_manifest(),
            problems=problems,
            ignored=ignored,
        )
        handlers = build_handler_table(
            snapshot,
            self.adapters,
            self._handlers,
            clock=self.clock,
            on_drop=self._count_adapter_drop,
            services=self.services,
        )
        table = build_routing_table(
            snapshot, handlers, self.default_namespace, self.metrics, fail_closed=self.fail_closed
        )
        retired = handlers.retired_since(self._handlers)
        old = self.dispatcher.swap(table)
        self._handlers = handlers
        self.snapshot = snapshot
        self.apply_error = None
        self.generation += 1
        m = self.metrics
        m.handlers_built.inc(handlers.built)
        m.handlers_reused.inc(handlers.reused)
        m.config_generation.set(snapshot.id)
        problems = len(snapshot.errors) + len(table.errors)
        m.config_errors.set(problems)
        _log.info(
            "config %s in force: %d rules, %d handlers (%d built, %d reused, %d retired), %d problems",
            snapshot.id,
            len(snapshot.rules),
            len(handlers.entries),
            handlers.built,
            handlers.reused,
            len(retired),
            problems,
        )
        for e in list(snapshot.errors) + table.errors:
            _log.warning("config: %s", e)
        if retired:
            await self._drain(old)
            for entry in retired:
                await close_handler(entry, self.metrics)
        return table

    async def _drain(self, old: RoutingTable) -> None:
        """Wait (bounded) until no request uses ``old``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while old.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if old.in_flight > 0:
            _log.warning(
                "%d requests still use config %s after %.1fs; closing its retired handlers anyway",
                old.in_flight,
                old.id,
                self.drain_timeout,
            )

    async def close(self) -> None:
        """Stop watching and close every handler (front-ends flush their report queues first)."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            try:
                await self._watch_task
            except (asyncio.CancelledError, Exception):
                pass
        await self._drain(self.dispatcher.table)
        for entry in self._handlers.entries.values():
            await close_handler(entry, self.metrics)
        self._handlers = HandlerTable({}, [])
        close = getattr(self.store, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
