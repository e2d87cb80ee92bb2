"""RED series of a service (mixerd.console.series)."""

from __future__ import annotations

import json

import pytest

from mixerd.console import stats
from mixerd.console.series import MAX_POINTS, service_metrics
from mixerd.console.store.base import ServiceBucket
from mixerd.console.timefmt import rfc3339

T0 = 1_800_000_000_000_000  # a multiple of every step used here
MIN = 60_000_000


def _hist(b5: int = 0, b10: int = 0, b100: int = 0) -> tuple[int, ...]:
    counts = stats.empty()
    counts[0], counts[1], counts[4] = b5, b10, b100
    return tuple(counts)


def _bucket(
    minute: float, version: str, count: int, errors: int = 0, hist: tuple[int, ...] = ()
) -> ServiceBucket:
    return ServiceBucket(
        bucket_us=T0 + round(minute * MIN), version=version, count=count, errors=errors, histogram=hist
    )


def test_steps_per_version_with_empty_steps() -> None:
    buckets = [
        _bucket(0, "v1", 60, 6, _hist(b5=30, b10=30)),
        _bucket(2, "v1", 120, 0, _hist(b10=120)),
        _bucket(0, "v2", 6, 6, _hist(b100=6)),
        _bucket(4, "v2", 3),  # no durations recorded
    ]
    got = service_metrics(buckets, since_us=T0, until_us=T0 + 5 * MIN, step_us=MIN)
    json.dumps(got)
    assert got["start"] == rfc3339(T0) and got["end"] == rfc3339(T0 + 5 * MIN)
    assert got["step_s"] == 60.0
    assert got["timestamps"] == [rfc3339(T0 + k * MIN) for k in range(5)]
    assert list(got["versions"]) == ["v1", "v2"]
    v1, v2, total = got["versions"]["v1"], got["versions"]["v2"], got["total"]
    assert v1 == {
        "requests": [60, 0, 120, 0, 0],
        "errors": [6, 0, 0, 0, 0],
        "request_rate": [1.0, 0.0, 2.0, 0.0, 0.0],
        "error_rate": [0.1, 0.0, 0.0, 0.0, 0.0],
        "error_percent": [10.0, None, 0.0, None, None],
        "p50": [5.0, None, 7.5, None, None],
        "p95": [pytest.approx(9.5), None, pytest.approx(9.75), None, None],
        "p99": [pytest.approx(9.9), None, pytest.approx(9.95), None, None],
    }
    assert v2["requests"] == [6, 0, 0, 0, 3]
    assert v2["error_percent"] == [100.0, None, None, None, 0.0]
    assert v2["p50"] == [75.0, None, None, None, None]
    assert total["requests"] == [66, 0, 120, 0, 3]
    assert total["errors"] == [12, 0, 0, 0, 0]
    assert total["request_rate"] == [1.1, 0.0, 2.0, 0.0, 0.05]
    # 30 + 30 + 6 durations: p50 at rank 33 is 3/30 into (5, 10]
    assert total["p50"][0] == pytest.approx(5.5)
    assert total["p99"][0] == pytest.approx(100.0 - 50.0 * (66 - 0.99 * 66) / 6)


def test_steps_align_to_the_step_and_cover_the_range() -> None:
    buckets = [
        _bucket(-1, "v1", 1),  # before the first step
        _bucket(0, "v1", 2),
        _bucket(1.5, "v1", 4),  # not on a step boundary: the step holding it
        _bucket(2, "v1", 8),
        _bucket(3, "v1", 16),  # at or after the end of the last step
    ]
    got = service_metrics(buckets, since_us=T0 + 30_000_000, until_us=T0 + 150_000_000, step_us=MIN)
    assert got["timestamps"] == [rfc3339(T0), rfc3339(T0 + MIN), rfc3339(T0 + 2 * MIN)]
    assert got["start"] == rfc3339(T0) and got["end"] == rfc3339(T0 + 3 * MIN)
    assert got["versions"]["v1"]["requests"] == [2, 4, 8]


def test_a_version_that_is_not_labelled_is_unknown() -> None:
    got = service_metrics(
        [_bucket(0, "", 1), _bucket(0, "unknown", 2), _bucket(0, "v1", 4)],
        since_us=T0,
        until_us=T0 + MIN,
        step_us=MIN,
    )
    assert {v: s["requests"] for v, s in got["versions"].items()} == {"unknown": [3], "v1": [4]}


def test_no_traffic() -> None:
    got = service_metrics([], since_us=T0, until_us=T0 + 3 * 10_000_000, step_us=10_000_000)
    assert got["versions"] == {}
    assert got["total"] == {
        "requests": [0, 0, 0],
        "errors": [0, 0, 0],
        "request_rate": [0.0, 0.0, 0.0],
        "error_rate": [0.0, 0.0, 0.0],
        "error_percent": [None, None, None],
        "p50": [None, None, None],
        "p95": [None, None, None],
        "p99": [None, None, None],
    }


@pytest.mark.parametrize(
    ("since", "until", "step", "message"),
    [
        (T0, T0 + MIN, 0, "step must be positive"),
        (T0, T0, MIN, "the range ends before it starts"),
        (T0, T0 - 1, MIN, "the range ends before it starts"),
        (T0, T0 + (MAX_POINTS + 1) * 1_000_000, 1_000_000, "11001 steps exceed the maximum of 11000"),
    ],
)
def test_bad_ranges(since: int, until: int, step: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        service_metrics([], since_us=since, until_us=until, step_us=step)


def test_the_most_steps_allowed() -> None:
    got = service_metrics([], since_us=T0, until_us=T0 + MAX_POINTS * 1_000_000, step_us=1_000_000)
    assert len(got["timestamps"]) == MAX_POINTS
