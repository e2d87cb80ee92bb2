import pytest

from mixerd.console import stats


def _hist(**by_bound: int) -> list[int]:
    counts = stats.empty()
    for key, n in by_bound.items():
        bound = float(key[1:]) if key != "inf" else None
        i = len(stats.BOUNDS_MS) if bound is None else stats.BOUNDS_MS.index(bound)
        counts[i] = n
    return counts


@pytest.mark.parametrize(
    ("duration_us", "bucket"),
    [(0, 0), (5000, 0), (5001, 1), (10_000, 1), (10_000_000, 10), (10_000_001, 11)],
)
def test_bounds_are_inclusive(duration_us: int, bucket: int) -> None:
    assert stats.bucket_of(duration_us) == bucket


def test_quantile_interpolates_like_histogram_quantile() -> None:
    # 100 observations: 50 in (0, 5], 50 in (5, 10]: the median is 5, p95 is 5 + 5 * 45/50.
    counts = _hist(b5=50, b10=50)
    assert stats.quantile(0.5, counts) == pytest.approx(5.0)
    assert stats.quantile(0.95, counts) == pytest.approx(9.5)


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert stats.quantile(0.99, _hist(b5=1, inf=99)) == 10000


def test_empty_histogram_has_no_quantile() -> None:
    assert stats.quantile(0.5, stats.empty()) is None


def test_merge_adds_bucketwise() -> None:
    assert stats.merge([_hist(b5=1), _hist(b5=2, inf=1)]) == _hist(b5=3, inf=1)
