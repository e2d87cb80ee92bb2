"""The process-wide registry of registries behind ``/metrics``.

Every live prometheus handler has its own :class:`~prometheus_client.CollectorRegistry` and
registers it here on build (unregisters on close). :meth:`PrometheusExporter.render` concatenates
them into one exposition.

Metric objects (:class:`~mixerd.adapters.prometheus.series.MetricVec`) are owned by the exporter,
keyed by the SHA-256 of their definition and reference counted:

* a handler whose metric definition is identical to a live one gets the *same* object, so when the
  runtime replaces a handler after an unrelated config change (build new, then close old) the
  counters carry on instead of resetting;
* a handler that redefines a metric it already exports (same owner, i.e. the same handler
  resource, with a changed definition) gets a fresh object; while both handlers are live the newer
  definition is the one exported, and the old series disappear when the old handler closes;
* a *different* handler defining an already exported name differently is refused with
  :class:`MetricConflictError` (one name, one meaning, as Prometheus requires).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Metric

from mixerd.adapters.prometheus.config import MetricDefinition
from mixerd.adapters.prometheus.series import MetricVec, OverflowCounter, render

__all__ = ["CONTENT_TYPE", "MetricConflictError", "PrometheusExporter"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class MetricConflictError(ValueError):
    """Another live handler exports the same metric name with a different definition."""


@dataclass(slots=True, eq=False)
class _Entry:
    vec: MetricVec
    sha: str
    generation: int
    owners: dict[str, int] = field(default_factory=dict)


class PrometheusExporter:
    """Live handlers' registries and the metric objects they share. Thread-safe."""

    content_type: Final = CONTENT_TYPE

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registries: list[CollectorRegistry] = []
        self._metrics: dict[str, list[_Entry]] = {}
        self._generation = 0
        self.overflow = OverflowCounter()
        """The shared ``mixerd_prometheus_series_overflow_total`` collector."""

    # -- metric objects ------------------------------------------------------------------------

    def acquire(self, owner: str, definition: MetricDefinition) -> MetricVec:
        """The metric object for ``definition`` on behalf of handler ``owner`` (see module doc)."""
        sha = definition.sha256
        with self._lock:
            entries = self._metrics.setdefault(definition.name, [])
            for entry in entries:
                if entry.sha == sha:
                    entry.owners[owner] = entry.owners.get(owner, 0) + 1
                    return entry.vec
            others = [e for e in entries if any(o != owner for o in e.owners)]
            if others:
                other = others[-1]
                holders = ", ".join(sorted(o for o in other.owners if o != owner))
                raise MetricConflictError(
                    f"metric '{definition.name}' is already exported by handler {holders} as "
                    f"{other.vec.definition.describe()}; this handler defines it as {definition.describe()}"
                )
            self._generation += 1
            entry = _Entry(MetricVec(definition), sha, self._generation, {owner: 1})
            entries.append(entry)
            self.overflow.ensure(definition.name)
            return entry.vec

    def release(self, owner: str, vec: MetricVec) -> None:
        """Drop one reference of ``owner`` to ``vec``; the last one removes the metric."""
        name = vec.definition.name
        with self._lock:
            entries = self._metrics.get(name, [])
            for entry in entries:
                if entry.vec is vec:
                    left = entry.owners.get(owner, 0) - 1
                    if left > 0:
                        entry.owners[owner] = left
                    else:
                        entry.owners.pop(owner, None)
                    if not entry.owners:
                        entries.remove(entry)
                    break
            if not entries:
                self._metrics.pop(name, None)
                self.overflow.forget(name)

    def live_metric(self, name: str) -> MetricVec | None:
        """The exported (newest) metric object of that name, if any."""
        with self._lock:
            entries = self._metrics.get(name)
            return max(entries, key=lambda e: e.generation).vec if entries else None

    # -- registries ----------------------------------------------------------------------------

    def register(self, registry: CollectorRegistry) -> None:
        with self._lock:
            if not any(r is registry for r in self._registries):
                self._registries.append(registry)

    def unregister(self, registry: CollectorRegistry) -> None:
        with self._lock:
            self._registries = [r for r in self._registries if r is not registry]

    @property
    def registries(self) -> tuple[CollectorRegistry, ...]:
        with self._lock:
            return tuple(self._registries)

    # -- exposition ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every family of every live registry, newest registry first, each name once (sorted).

        A name seen twice comes from a shared object (identical data) or from a handler and its
        replacement during the hand-over (the newer definition wins)."""
        families: dict[str, Metric] = {}
        for registry in reversed(self.registries):
            for family in registry.collect():
                families.setdefault(family.name, family)
        for name in sorted(families):
            yield families[name]

    def render(self) -> bytes:
        """The ``/metrics`` body (Prometheus text format 0.0.4); serve with :attr:`content_type`."""
        return render(self.collect())
