"""Metric storage and the text exposition format (pure, no I/O).

A :class:`MetricVec` holds the series of one metric (one per label-value tuple), updated from the
event loop, and is a prometheus_client collector (``collect``/``describe``) yielding a
:class:`prometheus_client.Metric` family. It is written for the report path: a series is found by a
plain dict lookup on the label tuple and updated with one method call.

Why not prometheus_client's ``Counter``/``Histogram``: they rename counters (``request_count`` is
exported as ``request_count_total``) and add ``_created`` series, so Mixer's metric names and
dashboards would break; they are also several times slower per update. The registry, the family
objects and the parser in tests are prometheus_client's. :func:`render` writes the text format
0.0.4 as Go's client does (names as configured, ``le="1e+06"``, values ``1`` not ``1.0``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client import Metric
from prometheus_client.samples import Sample

from mixerd.adapters.prometheus.config import Kind, MetricDefinition
from mixerd.adapters.prometheus.values import format_sample_value, stringify

__all__ = [
    "OVERFLOW_METRIC",
    "CounterSeries",
    "GaugeSeries",
    "HistogramSeries",
    "MetricVec",
    "OverflowCounter",
    "Series",
    "VecFamily",
    "render",
]

OVERFLOW_METRIC: Final = "mixerd_prometheus_series_overflow_total"
_TYPES: Final = {Kind.GAUGE: "gauge", Kind.COUNTER: "counter", Kind.DISTRIBUTION: "histogram"}


class CounterSeries:
    __slots__ = ("alive", "label_text", "touched", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.touched = 0.0
        """Monotonic time of the last update (for expiry)."""
        self.alive = True
        """False once removed from its metric (caches holding it must look again)."""
        self.label_text: str | None = None
        """The series' labels in exposition syntax, made on the first scrape."""

    def update(self, amount: float) -> None:
        if amount < 0:
            raise ValueError(f"counters can only increase, got {amount}")
        self.value += amount


class GaugeSeries:
    __slots__ = ("alive", "label_text", "touched", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.touched = 0.0
        self.alive = True
        self.label_text: str | None = None

    def update(self, value: float) -> None:
        self.value = value


class HistogramSeries:
    __slots__ = ("alive", "bounds", "count", "counts", "label_text", "sum", "touched")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket (not cumulative); the last one is ``+Inf``."""
        self.sum = 0.0
        self.count = 0
        self.touched = 0.0
        self.alive = True
        self.label_text: str | None = None

    def update(self, value: float) -> None:
        # Bucket i counts value <= bounds[i]; NaN lands in +Inf, as in Go's client.
        i = bisect.bisect_left(self.bounds, value) if value == value else len(self.bounds)
        self.counts[i] += 1
        self.sum += value
        self.count += 1


Series = CounterSeries | GaugeSeries | HistogramSeries


class MetricVec:
    """All series of one metric definition. Shared (by the exporter) between handlers whose
    definitions are identical, so a replaced handler's counts carry over to its successor."""

    __slots__ = ("_le", "_sorted_idx", "definition", "last_overflow_warning", "series")

    def __init__(self, definition: MetricDefinition) -> None:
        self.definition = definition
        self.series: dict[tuple[str, ...], Series] = {}
        """Label-value tuple (in ``definition.label_names`` order) -> series."""
        self.last_overflow_warning = -1e18
        """Monotonic time of the last cardinality warning (rate limiting)."""
        names = definition.label_names
        self._sorted_idx = tuple(sorted(range(len(names)), key=names.__getitem__))
        self._le = (*(format_sample_value(b) for b in definition.bounds), "+Inf")

    # -- series --------------------------------------------------------------------------------

    def new_series(self, key: tuple[str, ...]) -> Series:
        """Create (and store) the series for ``key``; the caller checks the cardinality limit."""
        kind = self.definition.kind
        series: Series
        if kind is Kind.COUNTER:
            series = CounterSeries()
        elif kind is Kind.GAUGE:
            series = GaugeSeries()
        else:
            series = HistogramSeries(self.definition.bounds)
        self.series[key] = series
        return series

    def labels(self, *values: str) -> Series:
        """The series for these label values, created if needed (prometheus_client-style API)."""
        if len(values) != len(self.definition.label_names):
            raise ValueError(
                f"{self.definition.name} has labels {self.definition.label_names}, got {len(values)} values"
            )
        series = self.series.get(values)
        return series if series is not None else self.new_series(values)

    def remove(self, *values: str) -> bool:
        """Delete one series; False if it did not exist."""
        series = self.series.pop(values, None)
        if series is None:
            return False
        series.alive = False
        return True

    def expire(self, deadline: float) -> int:
        """Remove every series last updated at or before ``deadline``; returns how many."""
        stale = [k for k, s in list(self.series.items()) if s.touched <= deadline]
        for k in stale:
            series = self.series.pop(k, None)
            if series is not None:
                series.alive = False
        return len(stale)

    # -- collector -----------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        d = self.definition
        return [Metric(d.name, d.help, _TYPES[d.kind])]

    def collect(self) -> list[Metric]:
        return [VecFamily(self, list(self.series.items()))]

    def label_text(self, key: tuple[str, ...]) -> str:
        """``a="x",b="y"`` for a label-value tuple (names sorted, values escaped)."""
        names = self.definition.label_names
        return ",".join(f'{names[i]}="{_escape_value(_text(key[i]))}"' for i in self._sorted_idx)

    def sample_lines(self, items: list[tuple[tuple[str, ...], Series]]) -> Iterator[str]:
        """Exposition lines of a snapshot of this metric's series, sorted by label values."""
        name = self.definition.name
        for key, series in _sorted(items):
            text = series.label_text
            if text is None:
                text = series.label_text = self.label_text(key)
            braced = f"{{{text}}}" if text else ""
            if isinstance(series, HistogramSeries):
                bucket = f'{name}_bucket{{{text},le="' if text else f'{name}_bucket{{le="'
                cumulative = 0
                for le, count in zip(self._le, list(series.counts), strict=True):
                    cumulative += count
                    yield f'{bucket}{le}"}} {cumulative}\n'
                yield f"{name}_sum{braced} {format_sample_value(series.sum)}\n"
                yield f"{name}_count{braced} {cumulative}\n"
            else:
                yield f"{name}{braced} {format_sample_value(series.value)}\n"

    def samples(self, items: list[tuple[tuple[str, ...], Series]]) -> list[Sample]:
        """prometheus_client samples of a snapshot (for consumers of the collector API)."""
        d = self.definition
        family = Metric(d.name, d.help, _TYPES[d.kind])
        names = d.label_names
        for key, series in _sorted(items):
            labels = {names[i]: _text(key[i]) for i in self._sorted_idx}
            if isinstance(series, HistogramSeries):
                cumulative = 0
                for le, count in zip(self._le, list(series.counts), strict=True):
                    cumulative += count
                    family.add_sample(d.name + "_bucket", {**labels, "le": le}, cumulative)
                family.add_sample(d.name + "_sum", labels, series.sum)
                family.add_sample(d.name + "_count", labels, cumulative)
            else:
                family.add_sample(d.name, labels, series.value)
        return family.samples


def _sorted(items: list[tuple[tuple[str, ...], Series]]) -> list[tuple[tuple[str, ...], Series]]:
    """Series in label-value order (as Go's client writes them)."""
    try:
        return sorted(items, key=lambda kv: kv[0])
    except TypeError:  # a non-text label value (see _text)
        return sorted(items, key=lambda kv: tuple(map(_text, kv[0])))


def _text(value: Any) -> str:
    # Label values are text by construction; a value of the wrong type (a bag that did not match
    # its manifest) must still not break the whole exposition.
    return value if isinstance(value, str) else stringify(value)


class VecFamily(Metric):
    """A snapshot of a :class:`MetricVec` as a prometheus_client family. ``samples`` are built on
    first access; :func:`render` writes :meth:`text` instead, which formats a series' labels once
    in its lifetime (cached on the series) rather than once per sample and scrape."""

    def __init__(self, vec: MetricVec, items: list[tuple[tuple[str, ...], Series]]) -> None:
        self._vec = vec
        self._items = items
        self._samples: list[Sample] | None = None
        d = vec.definition
        super().__init__(d.name, d.help, _TYPES[d.kind])

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self._vec.samples(self._items)
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value or None  # Metric.__init__ assigns an empty list

    def __len__(self) -> int:
        return len(self._items)

    def text(self) -> Iterator[str]:
        return self._vec.sample_lines(self._items)


class OverflowCounter:
    """``mixerd_prometheus_series_overflow_total{metric=...}``: label sets refused by the
    cardinality guard. One per exporter, registered in every handler's registry."""

    __slots__ = ("counts",)

    help: Final = "Label sets not recorded because the metric reached maxSeriesPerMetric."

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def ensure(self, metric: str) -> None:
        self.counts.setdefault(metric, 0.0)

    def inc(self, metric: str) -> None:
        self.counts[metric] = self.counts.get(metric, 0.0) + 1.0

    def forget(self, metric: str) -> None:
        self.counts.pop(metric, None)

    def value(self, metric: str) -> float:
        return self.counts.get(metric, 0.0)

    def describe(self) -> list[Metric]:
        return [Metric(OVERFLOW_METRIC, self.help, "counter")]

    def collect(self) -> list[Metric]:
        family = Metric(OVERFLOW_METRIC, self.help, "counter")
        for metric, count in sorted(list(self.counts.items())):
            family.add_sample(OVERFLOW_METRIC, {"metric": metric}, count)
        return [family]


# -- text exposition ---------------------------------------------------------------------------

_TYPE_NAMES: Final = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "unknown": "untyped"}


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    if "\\" in text or "\n" in text or '"' in text:
        return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return text


def render(families: Iterable[Metric]) -> bytes:
    """The text format (0.0.4) of ``families`` in the given order; empty families are left out.

    Unlike prometheus_client's ``generate_latest`` it does not append ``_total`` to counter
    names, so what Mixer exported as ``istio_request_count`` keeps that name."""
    out: list[str] = []
    for family in families:
        if (len(family) if isinstance(family, VecFamily) else len(family.samples)) == 0:
            continue
        out.append(f"# HELP {family.name} {_escape_help(family.documentation)}\n")
        out.append(f"# TYPE {family.name} {_TYPE_NAMES.get(family.type, family.type)}\n")
        out.extend(family.text() if isinstance(family, VecFamily) else _sample_lines(family))
    return "".join(out).encode()


def _sample_lines(family: Metric) -> Iterator[str]:
    for s in family.samples:
        if s.labels:
            labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in s.labels.items())
            yield f"{s.name}{{{labels}}} {format_sample_value(s.value)}\n"
        else:
            yield f"{s.name} {format_sample_value(s.value)}\n"
