"""Latency histograms for the console's rollups, with Mixer's request-duration buckets and
Prometheus's ``histogram_quantile`` interpolation, so the console's p95 matches what a Prometheus
fed by the stock Istio config would say for the same traffic."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["BOUNDS_MS", "bucket_of", "empty", "merge", "quantile"]

BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds (milliseconds) of the finite buckets: Istio's ``request_duration`` buckets. A
histogram is a tuple of ``len(BOUNDS_MS) + 1`` counts, the last one for ``+Inf``."""

_SIZE = len(BOUNDS_MS) + 1


def empty() -> list[int]:
    return [0] * _SIZE


def bucket_of(duration_us: int) -> int:
    """The index of the bucket a duration falls in (bounds are inclusive, as Prometheus's ``le``)."""
    ms = duration_us / 1000.0
    for i, bound in enumerate(BOUNDS_MS):
        if ms <= bound:
            return i
    return _SIZE - 1


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = empty()
    for h in histograms:
        for i, n in enumerate(h):
            total[i] += n
    return total


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds, interpolated linearly inside its bucket as
    ``histogram_quantile`` does (the first bucket starts at 0; a quantile in ``+Inf`` answers the
    highest finite bound). ``None`` for an empty histogram."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == _SIZE - 1:
                return BOUNDS_MS[-1]
            lower = BOUNDS_MS[i - 1] if i else 0.0
            return lower + (BOUNDS_MS[i] - lower) * ((rank - seen) / n)
        seen += n
    return BOUNDS_MS[-1]
