"""The prometheus builder and handler: metric instances in, series in the exporter's registries."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry

from mixerd.adapter import WORKER_COUNT, Builder, ConfigError, Env, Handler, InstanceInfo
from mixerd.adapters.prometheus.config import MetricConfig, PrometheusConfig, parse_config
from mixerd.adapters.prometheus.exporter import PrometheusExporter
from mixerd.adapters.prometheus.series import MetricVec, Series
from mixerd.adapters.prometheus.values import prom_value, stringify
from mixerd.attribute import ValueType, remember

__all__ = ["HandleMetricError", "PrometheusBuilder", "PrometheusHandler"]

OVERFLOW_WARNING_INTERVAL: Final = 60.0
_MAX_ERROR_DETAILS: Final = 5
_STRINGS: Final = frozenset({ValueType.STRING, ValueType.DNS_NAME, ValueType.EMAIL_ADDRESS, ValueType.URI})
# Types whose values are hashable and equal exactly when their label texts are equal (one static
# type per position), so a tuple of them can stand for the label set.
_RAW_KEY_SAFE: Final = _STRINGS | {
    ValueType.INT64,
    ValueType.BOOL,
    ValueType.TIMESTAMP,
    ValueType.DURATION,
    ValueType.IP_ADDRESS,
}


class HandleMetricError(ValueError):
    """Some instances of a batch could not be recorded (the others were)."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:_MAX_ERROR_DETAILS])
        more = len(problems) - _MAX_ERROR_DETAILS
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))
        self.problems = problems


def _bool_label(value: Any) -> str:
    return "true" if value else "false"


def _converter(vtype: ValueType | None) -> Callable[[Any], str] | None:
    """How to turn a dimension of a statically known type into a label value (None: it is a str)."""
    if vtype in _STRINGS:
        return None
    if vtype is ValueType.INT64:
        return str
    if vtype is ValueType.BOOL:
        return _bool_label
    return stringify


class _LabelIndex:
    """The series of every route reading the same dimensions in the same order, by their raw
    values: one lookup finds a label set's series in all of those metrics (the stock Istio
    config's four HTTP metrics share one, and their instances share one dimensions map)."""

    __slots__ = ("entries", "width")

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], list[Series | None]] = {}
        """Raw dimension values -> the series of each route (by its ``slot``), found so far."""
        self.width = 0
        """How many routes use this index."""


class _Route:
    """One metric fed by one instance: where its label values come from and where they go."""

    __slots__ = ("fixups", "getter", "index", "keys", "slot", "vec")

    def __init__(self, mc: MetricConfig, vec: MetricVec) -> None:
        self.vec = vec
        keys = mc.dimension_keys
        self.keys: tuple[str, ...] = tuple(keys)
        if not keys:
            self.getter: Callable[[Mapping[str, Any]], tuple[Any, ...]] = lambda d: ()
        elif len(keys) == 1:
            only = keys[0]
            self.getter = lambda d: (d[only],)
        else:
            self.getter = operator.itemgetter(*keys)
        self.fixups: tuple[tuple[int, Callable[[Any], str]], ...] | None
        if any(t is None for t in mc.dimension_types):
            self.fixups = None  # types unknown: check every value at run time
        else:
            fix = [(i, _converter(t)) for i, t in enumerate(mc.dimension_types)]
            self.fixups = tuple((i, conv) for i, conv in fix if conv is not None)
        # When some dimensions are not strings, turning them into label text costs more than the
        # lookup itself; an index keyed by the raw values skips that for label sets seen before
        # (given by the handler to the routes whose raw values are safe keys).
        self.index: _LabelIndex | None = None
        self.slot = 0

    def raw_keys_are_safe(self, mc: MetricConfig) -> bool:
        """Whether raw dimension values can stand for the label texts (see ``_RAW_KEY_SAFE``)."""
        return bool(self.fixups) and all(t in _RAW_KEY_SAFE for t in mc.dimension_types)

    def labels(self, raw: tuple[Any, ...]) -> tuple[str, ...]:
        """Label values (text) from raw dimension values."""
        fixups = self.fixups
        if fixups is None:
            return tuple([v if v.__class__ is str else stringify(v) for v in raw])
        if not fixups:
            return raw
        values = list(raw)
        for i, conv in fixups:
            values[i] = conv(values[i])
        return tuple(values)


class PrometheusHandler(Handler):
    """Records metric instances. Label sets beyond ``maxSeriesPerMetric`` are refused and counted."""

    def __init__(
        self, config: PrometheusConfig, env: Env, exporter: PrometheusExporter, vecs: list[MetricVec]
    ) -> None:
        self._env = env
        self._clock = env.clock
        self._exporter = exporter
        self._owner = env.name
        self._acquired = vecs
        self._max_series = config.max_series_per_metric
        workers = env.shared(WORKER_COUNT)
        if isinstance(workers, int) and workers > 1:
            # One of N workers (mixerd serve --workers N): a share of the limit each, so the merged
            # /metrics never holds more than maxSeriesPerMetric series of a metric.
            self._max_series = max(1, self._max_series // workers)
        self._expiration = config.expiration
        routes: dict[str, list[_Route]] = {}
        indexes: dict[tuple[str, ...], _LabelIndex] = {}
        for mc, vec in zip(config.metrics, vecs, strict=True):
            route = _Route(mc, vec)
            if route.raw_keys_are_safe(mc):
                index = route.index = indexes.setdefault(route.keys, _LabelIndex())
                route.slot = index.width
                index.width += 1
            routes.setdefault(mc.instance_name, []).append(route)
        self._routes: dict[str, tuple[_Route, ...]] = {k: tuple(v) for k, v in routes.items()}
        self._vecs: tuple[MetricVec, ...] = tuple({id(v): v for v in vecs}.values())
        self.registry = CollectorRegistry(auto_describe=True)
        """This handler's registry: its metrics and the shared overflow counter."""
        self.errors = 0
        """Instances that could not be recorded (bad value, unknown instance, missing dimension)."""
        self.overflowed = 0
        """Label sets refused by the cardinality guard."""
        self._closed = False
        for vec in self._vecs:
            self.registry.register(vec)
        self.registry.register(exporter.overflow)
        exporter.register(self.registry)
        if config.expiration is not None:
            interval = config.expiration.check_interval
            env.every(interval, self._expire_task, "expire-series", initial_delay=interval)

    # -- report path ---------------------------------------------------------------------------

    def handle_metric(self, instances: Sequence[Any]) -> None:
        now = self._clock.monotonic()
        routes = self._routes
        problems: list[str] | None = None
        # The label set last looked up: consecutive instances of one attribute set share their
        # dimensions map, so the next metric of the same index finds its series without hashing.
        last_dims: Any = None
        last_index: _LabelIndex | None = None
        last_raw: tuple[Any, ...] = ()
        entry: list[Series | None] = []
        for inst in instances:
            rs = routes.get(inst.name)
            if rs is None:
                problems = problems or []
                problems.append(f"could not find metric info from adapter config for {inst.name}")
                continue
            value = inst.value
            if value.__class__ is not float:
                try:
                    value = prom_value(value)
                except ValueError as exc:
                    problems = problems or []
                    problems.append(f"could not get value for metric {inst.name}: {exc}")
                    continue
            dims = inst.dimensions
            for route in rs:
                index = route.index
                if index is None or dims is not last_dims or index is not last_index:
                    try:
                        raw = route.getter(dims)
                    except KeyError as exc:
                        problems = problems or []
                        problems.append(f"metric {inst.name}: no dimension {exc} for its label")
                        continue
                    if index is not None:
                        entries = index.entries
                        found = entries.get(raw)
                        if found is None:
                            empty: list[Series | None] = [None] * index.width
                            found = remember(entries, raw, empty, self._max_series)
                        entry, last_dims, last_index, last_raw = found, dims, index, raw
                if index is not None:
                    series = entry[route.slot]
                    if series is None or not series.alive:
                        series = self._series(route.vec, route.labels(last_raw), now)
                        if series is None:
                            continue
                        entry[route.slot] = series
                else:
                    key = raw if route.fixups == () else route.labels(raw)
                    series = route.vec.series.get(key)
                    if series is None:
                        series = self._series(route.vec, key, now)
                        if series is None:
                            continue
                try:
                    series.update(value)
                except ValueError as exc:
                    problems = problems or []
                    problems.append(f"metric {inst.name}: {exc}")
                    continue
                series.touched = now
        if problems:
            self.errors += len(problems)
            raise HandleMetricError(problems)

    def _series(self, vec: MetricVec, key: tuple[str, ...], now: float) -> Series | None:
        """The series for ``key``, created if the cardinality guard allows (None if not)."""
        series = vec.series.get(key)
        if series is not None:
            return series
        if len(vec.series) < self._max_series:
            return vec.new_series(key)
        name = vec.definition.name
        self.overflowed += 1
        self._exporter.overflow.inc(name)
        if now - vec.last_overflow_warning >= OVERFLOW_WARNING_INTERVAL:
            vec.last_overflow_warning = now
            self._env.logger.warning(
                "metric %s has %d series (maxSeriesPerMetric); new label sets are dropped and counted "
                "in mixerd_prometheus_series_overflow_total",
                name,
                len(vec.series),
            )
        return None

    # -- expiry --------------------------------------------------------------------------------

    def expire_now(self) -> int:
        """One expiry pass: remove series not updated for ``metricsExpiryDuration``."""
        if self._expiration is None:
            return 0
        deadline = self._clock.monotonic() - self._expiration.expiry
        removed = 0
        for vec in self._vecs:
            removed += vec.expire(deadline)
        return removed

    async def _expire_task(self) -> None:
        removed = self.expire_now()
        if removed:
            self._env.logger.debug("removed %d expired series", removed)

    # -- introspection and lifecycle -----------------------------------------------------------

    def metrics_for(self, instance_name: str) -> tuple[MetricVec, ...]:
        """The metric objects an instance feeds (empty if it is not configured)."""
        return tuple(r.vec for r in self._routes.get(instance_name, ()))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._exporter.unregister(self.registry)
        for vec in self._acquired:
            self._exporter.release(self._owner, vec)


class PrometheusBuilder(Builder):
    def __init__(
        self,
        config: Mapping[str, Any],
        instances: Mapping[str, InstanceInfo],
        *,
        exporter: PrometheusExporter,
    ) -> None:
        super().__init__(config, instances)
        self.exporter = exporter
        self.parsed, self.errors = parse_config(config, instances)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> PrometheusHandler:
        """Raises ``MetricConflictError`` if another live handler defines a metric differently."""
        acquired: list[MetricVec] = []
        try:
            for mc in self.parsed.metrics:
                acquired.append(self.exporter.acquire(env.name, mc.definition))
            return PrometheusHandler(self.parsed, env, self.exporter, acquired)
        except Exception:
            for vec in acquired:
                self.exporter.release(env.name, vec)
            raise
