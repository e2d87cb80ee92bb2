"""The handler table: one live handler per configured handler that some rule uses.

A handler's *signature* is a SHA-256 over its adapter, params, connection and the sorted list of
instances it receives (template and params of each). When a new snapshot arrives, a handler whose
name and signature are unchanged is reused as is (its state, e.g. quota counters or Prometheus
series, survives the config change); every other handler is validated and built anew. Handlers
the new table does not reuse are *retired*: the controller closes them once no request uses the
old routing table any more.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixerd.adapter import Clock, ConfigError, Env, Info, InstanceInfo, SystemClock, handler_method
from mixerd.adapter.grpc_client import RemoteHandler
from mixerd.config import Snapshot, missing_adapter_message
from mixerd.templates import TEMPLATES, Variety

__all__ = ["HandlerEntry", "HandlerTable", "build_handler_table", "handler_signature"]

_log = logging.getLogger(__name__)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def handler_signature(
    adapter: str,
    params: Any,
    connection: Any,
    instances: Sequence[tuple[str, str, Any]],
) -> str:
    """SHA-256 over the adapter, its config and its (name-sorted) instances' templates and params."""
    h = hashlib.sha256()
    h.update(_canonical([adapter, params, connection]).encode())
    for name, template, params_ in sorted(instances, key=lambda i: i[0]):
        h.update(b"\x00")
        h.update(_canonical([name, template, params_]).encode())
    return h.hexdigest()


@dataclass(slots=True, eq=False)
class HandlerEntry:
    """A live handler and how to call it."""

    name: str
    adapter: str
    signature: str
    handler: Any
    env: Env
    methods: dict[str, tuple[Callable[..., Any], bool]] = field(default_factory=dict)
    """template name -> (bound method, is_async)."""

    def method(self, template: str) -> tuple[Callable[..., Any], bool] | None:
        return self.methods.get(template)


@dataclass(slots=True)
class HandlerTable:
    entries: dict[str, HandlerEntry]
    errors: list[str]
    built: int = 0
    reused: int = 0

    def retired_since(self, old: HandlerTable | None) -> list[HandlerEntry]:
        """Entries of ``old`` that this table does not carry over."""
        if old is None:
            return []
        live = {id(e) for e in self.entries.values()}
        return [e for e in old.entries.values() if id(e) not in live]


def _bind_methods(handler: Any, templates: Sequence[str]) -> dict[str, tuple[Callable[..., Any], bool]]:
    methods: dict[str, tuple[Callable[..., Any], bool]] = {}
    for t in templates:
        variety = TEMPLATES[t].variety if t in TEMPLATES else None
        fn = getattr(handler, handler_method(t, variety is Variety.ATTRIBUTE_GENERATOR), None)
        if fn is not None:
            methods[t] = (fn, inspect.iscoroutinefunction(fn))
    return methods


def _remote_entry(
    fqn: str, cfg: Any, instances: Sequence[Any], sig: str, clock: Clock, errors: list[str]
) -> HandlerEntry | None:
    """A handler of an out-of-process adapter (:class:`~mixerd.adapter.grpc_client.RemoteHandler`)."""
    templates = {i.template: i.builder.template for i in instances}
    types = {i.key.fqn: (i.template, dict(i.builder.types)) for i in instances}
    try:
        handler = RemoteHandler(
            fqn,
            cfg.remote,
            cfg.connection.address,
            cfg.params,
            templates,
            types,
            timeout=cfg.connection.timeout,
            clock=clock,
        )
    except ValueError as exc:
        errors.append(f"handler {fqn}: {exc}")
        return None
    methods = {t: (fn, True) for t, fn in handler.methods().items()}
    return HandlerEntry(fqn, cfg.adapter, sig, handler, Env(fqn, clock=clock), methods)


def build_handler_table(
    snapshot: Snapshot,
    adapters: Mapping[str, Info],
    old: HandlerTable | None = None,
    *,
    clock: Clock | None = None,
    on_drop: Callable[[str, int, str], None] | None = None,
    services: Mapping[str, object] | None = None,
) -> HandlerTable:
    """Build (or reuse) a handler for every handler that a rule action references.

    ``on_drop(handler, count, reason)`` receives what handlers report through ``Env.dropped``;
    ``services`` is what ``Env.shared`` gives handlers.
    """
    clock = clock or SystemClock()
    # handler fqn -> instance fqns it receives (through any rule)
    wanted: dict[str, set[str]] = {}
    for rule in snapshot.rules:
        for action in rule.actions:
            wanted.setdefault(action.handler_fqn, set()).update(action.instance_fqns)

    entries: dict[str, HandlerEntry] = {}
    errors: list[str] = []
    built = reused = 0
    for fqn in sorted(wanted):
        cfg = snapshot.handlers.get(fqn)
        if cfg is None:
            continue
        instances = [snapshot.instances[i] for i in sorted(wanted[fqn]) if i in snapshot.instances]
        connection: Any = cfg.connection
        if cfg.remote is not None:  # what the adapter and template resources declare counts too
            connection = [
                cfg.connection,
                cfg.remote.fingerprint,
                cfg.remote.session_based,
                sorted(
                    {(i.template, getattr(i.builder.template.remote, "fingerprint", "")) for i in instances}
                ),
            ]
        sig = handler_signature(
            cfg.adapter,
            cfg.params,
            connection,
            [(i.key.fqn, i.template, i.params) for i in instances],
        )
        previous = old.entries.get(fqn) if old is not None else None
        if previous is not None and previous.signature == sig:
            entries[fqn] = previous
            reused += 1
            continue
        if cfg.remote is not None and cfg.connection is not None:
            entry = _remote_entry(fqn, cfg, instances, sig, clock, errors)
            if entry is not None:
                entries[fqn] = entry
                built += 1
            continue
        info = adapters.get(cfg.adapter)
        if info is None:
            missing = f"no adapter named '{cfg.adapter}' is installed"
            errors.append(f"handler {fqn}: {missing_adapter_message(cfg.adapter, missing)}")
            continue
        infos = {i.key.fqn: InstanceInfo(i.key.fqn, i.template, dict(i.builder.types)) for i in instances}
        try:
            builder = info.builder(dict(cfg.params or {}), infos)
            problems: list[ConfigError] = builder.validate()
            if problems:
                errors.extend(f"handler {fqn}: spec.params.{p}" for p in problems)
                continue
            env = Env(
                fqn,
                clock=clock,
                on_drop=None if on_drop is None else functools.partial(on_drop, fqn),
                services=services,
            )
            handler = builder.build(env)
        except Exception as exc:  # an adapter bug must not stop the rest of the config
            _log.exception("building handler %s failed", fqn)
            errors.append(f"handler {fqn}: build failed: {type(exc).__name__}: {exc}")
            continue
        templates = sorted({i.template for i in instances})
        entries[fqn] = HandlerEntry(fqn, cfg.adapter, sig, handler, env, _bind_methods(handler, templates))
        built += 1
    return HandlerTable(entries, errors, built, reused)
