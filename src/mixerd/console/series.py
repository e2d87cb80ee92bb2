"""RED time series of one destination service, per version, for charts and canary comparison.

``GET /api/v1/services/{namespace}/{service}/metrics`` answers :func:`service_metrics`::

    {"start": "2026-12-04T19:00:00.000Z", "end": "2026-12-04T19:10:00.000Z", "step_s": 60.0,
     "timestamps": ["2026-12-04T19:00:00.000Z", "2026-12-04T19:01:00.000Z", ...],
     "versions": {"v1": SERIES, "v2": SERIES},
     "total": SERIES}

    SERIES = {"requests": [int], "errors": [int],
              "request_rate": [float], "error_rate": [float], "error_percent": [float | null],
              "p50": [float | null], "p95": [float | null], "p99": [float | null]}

One value per step: ``timestamps`` holds each step's start, ``start`` and ``end`` are the start of
the first step and the end of the last. Steps are aligned to multiples of
``step`` since the epoch (as the store's merged buckets are): the first is the step holding
``since``, the last the step holding the instant before ``until`` (so the first and the last step
may be partly outside the range asked for; their rates still divide by the whole step).
``request_rate`` and ``error_rate`` are per second; ``error_percent`` is the share (0..100) of
requests that failed, null in a step without requests; ``p50``/``p95``/``p99`` are latencies in
milliseconds, interpolated in Istio's buckets like Prometheus's ``histogram_quantile``, null in a
step without recorded durations. A step without data is a zero rate, not a gap. ``versions`` is
keyed by the destination version (``unknown`` when not labelled), sorted; ``total`` adds every
version up. Values are numbers, not rounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mixerd.console import stats
from mixerd.console.store.base import ServiceBucket
from mixerd.console.timefmt import rfc3339

__all__ = ["MAX_POINTS", "service_metrics"]

MAX_POINTS = 11_000
"""The most steps one answer has (Prometheus's limit for a range query)."""

Json = dict[str, Any]


class _Series:
    __slots__ = ("errors", "histograms", "requests")

    def __init__(self, points: int) -> None:
        self.requests = [0] * points
        self.errors = [0] * points
        self.histograms: list[list[int]] = [stats.empty() for _ in range(points)]

    def add(self, i: int, bucket: ServiceBucket) -> None:
        self.requests[i] += bucket.count
        self.errors[i] += bucket.errors
        if bucket.histogram:
            self.histograms[i] = stats.merge([self.histograms[i], bucket.histogram])

    def json(self, step_s: float) -> Json:
        def quantiles(q: float) -> list[float | None]:
            return [_float_or_none(stats.quantile(q, h)) for h in self.histograms]

        return {
            "requests": self.requests,
            "errors": self.errors,
            "request_rate": [n / step_s for n in self.requests],
            "error_rate": [n / step_s for n in self.errors],
            "error_percent": [
                100 * e / n if n else None for n, e in zip(self.requests, self.errors, strict=True)
            ],
            "p50": quantiles(0.5),
            "p95": quantiles(0.95),
            "p99": quantiles(0.99),
        }


def service_metrics(buckets: Iterable[ServiceBucket], *, since_us: int, until_us: int, step_us: int) -> Json:
    """The RED series of ``buckets`` (one service's, as the store merged them per ``step_us``)
    between ``since_us`` and ``until_us``. Buckets outside the steps are ignored.
    :class:`ValueError` for a step that is not positive, an empty range, or more than
    :data:`MAX_POINTS` steps."""
    if step_us <= 0:
        raise ValueError(f"step must be positive, got {step_us} µs")
    if until_us <= since_us:
        raise ValueError("the range ends before it starts")
    first = since_us - since_us % step_us
    points = -(-(until_us - first) // step_us)
    if points > MAX_POINTS:
        raise ValueError(f"{points} steps exceed the maximum of {MAX_POINTS}; use a longer step")
    step_s = step_us / 1_000_000

    versions: dict[str, _Series] = {}
    total = _Series(points)
    for bucket in buckets:
        i = (bucket.bucket_us - first) // step_us
        if not 0 <= i < points:
            continue
        version = bucket.version if bucket.version not in ("", "unknown") else "unknown"
        series = versions.get(version)
        if series is None:
            series = versions[version] = _Series(points)
        series.add(i, bucket)
        total.add(i, bucket)

    return {
        "start": rfc3339(first),
        "end": rfc3339(first + points * step_us),
        "step_s": step_s,
        "timestamps": [rfc3339(first + k * step_us) for k in range(points)],
        "versions": {v: versions[v].json(step_s) for v in sorted(versions)},
        "total": total.json(step_s),
    }


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
