"""The console writer against a fake store: batching, the queue bound and its drop counts, retries
while the store is unavailable, the edge rollups it gathers from every hop, closing and retention."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mixerd.console import stats
from mixerd.console.model import Batch, Decision, Frontend, Hop, LogRecord, Peer, Reporter, Span, Verdict
from mixerd.console.store.base import EdgeRollup, StoreUnavailable
from mixerd.console.writer import ROLLUP_INTERVAL_US, Writer

SRC = Peer("default", "productpage-v1", "productpage", "v1", "", "cluster.local/ns/default/sa/productpage")
DST = Peer("default", "reviews-v2", "reviews", "v2", "reviews.default.svc.cluster.local", "")
T0 = 1_700_000_000_000_000  # a multiple of 10 s


def hop(
    start_us: int = T0,
    duration_us: int = 3_000,
    code: int = 200,
    flags: str = "",
    reporter: Reporter = Reporter.SOURCE,
    txn: str = "t1",
) -> Hop:
    return Hop(
        start_us,
        duration_us,
        reporter,
        SRC,
        DST,
        txn,
        protocol="http",
        response_code=code,
        response_flags=flags,
    )


def decision(txn: str = "t1") -> Decision:
    return Decision(T0, Frontend.EXT_AUTHZ_GRPC, Verdict.DENY, 7, "blocked", txn, SRC, DST)


class FakeStore:
    """Records writes; ``fail`` makes writes raise StoreUnavailable (``error`` another exception)."""

    url_for_display = "fake://"

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.rollups: list[EdgeRollup] = []
        self.attempts = 0
        self.fail = False
        self.error: Exception | None = None
        self.prunes: list[tuple[int, int]] = []
        self.prune_fails = False

    async def write(self, batch: Batch, rollups: Sequence[EdgeRollup]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.fail:
            raise StoreUnavailable("fake store: down")
        if self.error is not None:
            raise self.error
        self.batches.append(
            Batch(list(batch.hops), list(batch.decisions), list(batch.spans), list(batch.logs))
        )
        self.rollups.extend(rollups)

    async def prune(self, *, older_than_us: int, max_rows: int) -> int:
        if self.prune_fails:
            raise StoreUnavailable("fake store: down")
        self.prunes.append((older_than_us, max_rows))
        return 3

    @property
    def hops(self) -> list[Hop]:
        return [h for b in self.batches for h in b.hops]

    def rollup_totals(self) -> dict[tuple[Any, ...], list[int]]:
        """Rollups added up per (bucket, reporter, code), as the store would."""
        out: dict[tuple[Any, ...], list[int]] = {}
        for r in self.rollups:
            acc = out.setdefault((r.bucket_us, r.reporter, r.response_code), [0, 0, 0, 0, *stats.empty()])
            for i, n in enumerate((r.count, r.errors, r.denied, r.duration_sum_us, *r.histogram)):
                acc[i] += n
        return out


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def make(store: FakeStore, drops: list[tuple[str, int]] | None = None, **kwargs: Any) -> Writer:
    options: dict[str, Any] = {
        "flush_interval": 0.01,
        "retry_min": 0.01,
        "retry_max": 0.04,
        "retention": 0,
        **kwargs,
    }
    on_drop = (lambda kind, n: drops.append((kind, n))) if drops is not None else None
    return Writer(store, on_drop=on_drop, **options)  # type: ignore[arg-type]


async def test_a_full_batch_is_written_at_once_and_the_rest_on_close() -> None:
    store = FakeStore()
    writer = make(store, batch_size=3, flush_interval=60)
    writer.start()
    for i in range(7):
        writer.add_hop(hop(T0 + i))
    await eventually(lambda: len(store.batches) == 2)
    assert [len(b) for b in store.batches] == [3, 3]
    assert writer.stats().queued == 1
    await writer.aclose()
    assert [len(b) for b in store.batches] == [3, 3, 1]
    assert [h.start_us for h in store.hops] == [T0 + i for i in range(7)]
    assert writer.stats().written["hop"] == 7
    assert writer.stats().queued == 0


async def test_records_are_flushed_on_the_interval() -> None:
    store = FakeStore()
    writer = make(store, batch_size=1000)
    writer.start()
    writer.add_hop(hop())
    writer.add_decision(decision())
    writer.add_span(Span("ab" * 16, "cd" * 8, "", "GET /", "web", T0, 10, "t1"))
    writer.add_log(LogRecord(T0, "web", "INFO", "hello", "ab" * 16, "", ""))
    await eventually(lambda: len(store.batches) == 1)
    batch = store.batches[0]
    assert (len(batch.hops), len(batch.decisions), len(batch.spans), len(batch.logs)) == (1, 1, 1, 1)
    assert writer.stats().written == {"hop": 1, "decision": 1, "span": 1, "log": 1, "rollup": 1}
    await writer.aclose()


async def test_a_full_queue_drops_and_counts_per_kind() -> None:
    store = FakeStore()
    drops: list[tuple[str, int]] = []
    writer = make(store, drops, max_queue=5, batch_size=100)
    for i in range(8):
        writer.add_hop(hop(T0 + i))
    writer.add_decision(decision())
    writer.add_decision(decision())
    st = writer.stats()
    assert st.queued == 5
    assert st.dropped["hop"] == 3 and st.dropped["decision"] == 2
    assert st.dropped_by_reason == {("hop", "queue_full"): 3, ("decision", "queue_full"): 2}
    writer.start()
    await eventually(lambda: len(store.hops) == 5)
    await eventually(lambda: sorted(drops) == [("decision", 2), ("hop", 3)])
    # room again once written
    writer.add_hop(hop())
    await eventually(lambda: len(store.hops) == 6)
    await writer.aclose()
    assert sorted(drops) == [("decision", 2), ("hop", 3)]


async def test_rollups_count_every_hop_even_dropped_ones() -> None:
    store = FakeStore()
    writer = make(store, max_queue=2)
    for _ in range(5):
        writer.add_hop(hop())
    writer.start()
    await writer.aclose()
    assert len(store.hops) == 2
    ((_key, acc),) = store.rollup_totals().items()
    assert acc[0] == 5


async def test_retries_while_the_store_is_unavailable_then_writes_everything_once() -> None:
    store = FakeStore()
    store.fail = True
    drops: list[tuple[str, int]] = []
    writer = make(store, drops, batch_size=2)
    writer.start()
    for i in range(5):
        writer.add_hop(hop(T0 + i))
    await eventually(lambda: store.attempts >= 3)
    st = writer.stats()
    assert not st.store_available and "down" in st.last_error
    assert st.queued == 5 and st.written["hop"] == 0
    store.fail = False
    await eventually(lambda: len(store.hops) == 5)
    assert [h.start_us for h in store.hops] == [T0 + i for i in range(5)]
    st = writer.stats()
    assert st.store_available and st.queued == 0 and st.last_error == ""
    # the rollup gathered during the outage is written once, not lost and not doubled
    assert sum(acc[0] for acc in store.rollup_totals().values()) == 5
    await writer.aclose()
    assert drops == []


async def test_an_outage_longer_than_the_queue_drops_new_records() -> None:
    store = FakeStore()
    store.fail = True
    drops: list[tuple[str, int]] = []
    writer = make(store, drops, max_queue=10, batch_size=4)
    writer.start()
    for i in range(15):
        writer.add_hop(hop(T0 + i))
    await eventually(lambda: ("hop", 5) in drops)
    store.fail = False
    await eventually(lambda: len(store.hops) == 10)
    assert [h.start_us for h in store.hops] == [T0 + i for i in range(10)]  # the oldest are kept
    assert writer.stats().dropped_by_reason == {("hop", "queue_full"): 5}
    # ... while the rollups saw all 15
    assert sum(acc[0] for acc in store.rollup_totals().values()) == 15
    await writer.aclose()


async def test_rollups_aggregate_per_bucket_edge_and_code() -> None:
    store = FakeStore()
    writer = make(store)
    writer.add_hop(hop(duration_us=3_000))  # <= 5 ms
    writer.add_hop(hop(duration_us=7_000))  # <= 10 ms
    writer.add_hop(hop(duration_us=2_000_000, code=503, flags="UF"))  # error
    writer.add_hop(hop(duration_us=1_000, code=403, flags="UAEX"))  # denied
    writer.add_hop(hop(duration_us=1_000, reporter=Reporter.DESTINATION))
    writer.add_hop(hop(start_us=T0 + ROLLUP_INTERVAL_US, duration_us=1_000))  # next bucket
    writer.add_hop(hop(start_us=T0 + ROLLUP_INTERVAL_US - 500, duration_us=1_000))  # ends in the next
    writer.start()
    await writer.aclose()
    totals = store.rollup_totals()
    h = stats.empty()
    h[0], h[1] = 1, 1
    assert totals[T0, "source", 200] == [2, 0, 0, 10_000, *h]
    h = stats.empty()
    h[stats.bucket_of(2_000_000)] = 1
    assert totals[T0, "source", 503] == [1, 1, 0, 2_000_000, *h]
    assert totals[T0, "source", 403][:3] == [1, 0, 1]
    assert totals[T0, "destination", 200][:2] == [1, 0]
    assert totals[T0 + ROLLUP_INTERVAL_US, "source", 200][0] == 2
    r = next(r for r in store.rollups if r.response_code == 503)
    assert r.source == Peer("default", "productpage-v1", "productpage", "v1")  # no principal in rollups
    assert r.destination == Peer(
        "default", "reviews-v2", "reviews", "v2", "reviews.default.svc.cluster.local"
    )
    assert r.protocol == "http"


async def test_rollups_are_kept_in_memory_up_to_their_bound() -> None:
    store = FakeStore()
    writer = make(store, max_rollups=2)
    for code in (200, 201, 202, 203):
        writer.add_hop(hop(code=code))
    assert writer.stats().rollups_pending == 2
    assert writer.stats().dropped_by_reason == {("rollup", "queue_full"): 2}
    await writer.aclose()


async def test_close_writes_what_is_queued_and_later_records_are_dropped() -> None:
    store = FakeStore()
    drops: list[tuple[str, int]] = []
    writer = make(store, drops, flush_interval=60)
    writer.start()
    writer.add_hop(hop())
    writer.add_log(LogRecord(T0, "web", "INFO", "bye", "", "", "t1"))
    await writer.aclose()
    assert len(store.hops) == 1 and len(store.batches[0].logs) == 1
    writer.add_hop(hop())
    writer.add_decision(decision())
    assert writer.stats().dropped_by_reason == {("hop", "shutdown"): 1, ("decision", "shutdown"): 1}
    assert drops == [("hop", 1), ("decision", 1)]


async def test_close_gives_up_within_its_timeout_when_the_store_is_down() -> None:
    store = FakeStore()
    store.fail = True
    drops: list[tuple[str, int]] = []
    writer = make(store, drops)
    writer.start()
    for _ in range(3):
        writer.add_hop(hop())
    writer.add_span(Span("ab" * 16, "cd" * 8, "", "x", "web", T0, 1, ""))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await writer.aclose(timeout=0.2)
    assert loop.time() - t0 < 1.0
    assert sorted(drops) == [("hop", 3), ("rollup", 1), ("span", 1)]
    assert writer.stats().queued == 0


async def test_a_batch_the_store_refuses_is_dropped_and_the_writer_goes_on() -> None:
    store = FakeStore()
    store.error = RuntimeError("bug")
    drops: list[tuple[str, int]] = []
    writer = make(store, drops)
    writer.start()
    writer.add_hop(hop())
    await eventually(lambda: ("hop", 1) in drops)
    assert writer.stats().dropped_by_reason[("hop", "error")] == 1
    store.error = None
    writer.add_hop(hop())
    await eventually(lambda: len(store.hops) == 1)
    await writer.aclose()


async def test_the_request_path_never_raises() -> None:
    store = FakeStore()

    def broken(kind: str, n: int) -> None:
        raise RuntimeError("metrics broke")

    writer = Writer(store, on_drop=broken, flush_interval=0.01, retention=0)
    writer.add_hop(None)  # type: ignore[arg-type]
    writer.add_decision(None)  # type: ignore[arg-type]
    assert writer.stats().dropped_by_reason == {("hop", "error"): 1}  # the decision was queued as is
    writer.start()
    await eventually(lambda: store.attempts >= 1)  # the callback failing does not stop the writer
    await writer.aclose()


async def test_retention_prunes_by_age_and_size() -> None:
    store = FakeStore()
    writer = make(store, retention=3600, max_rows=1000, clock=lambda: 10_000.0)
    assert await writer.prune_now() == 3
    assert store.prunes == [((10_000 - 3600) * 1_000_000, 1000)]
    store.prune_fails = True
    assert await writer.prune_now() == 0
    assert writer.stats().pruned == 3
    await writer.aclose()


async def test_retention_runs_on_its_interval() -> None:
    store = FakeStore()
    writer = make(store, retention=60, prune_interval=0.01)
    writer.start()
    await eventually(lambda: len(store.prunes) >= 2)
    await writer.aclose()
    n = len(store.prunes)
    await asyncio.sleep(0.05)
    assert len(store.prunes) == n  # stopped with the writer


@pytest.mark.parametrize("kind", ["hop", "decision"])
async def test_records_given_before_start_are_written_after_it(kind: str) -> None:
    store = FakeStore()
    writer = make(store)
    writer.add_hop(hop()) if kind == "hop" else writer.add_decision(decision())
    writer.start()
    await eventually(lambda: len(store.batches) == 1)
    await writer.aclose()


def test_the_writers_bucket_lookup_is_stats_bucket_of() -> None:
    from mixerd.console.writer import _BOUNDS_US

    durations = {-1, 0, 1, *(b + d for b in _BOUNDS_US for d in (-1, 0, 1)), 10**12}
    for us in sorted(durations):
        assert bisect.bisect_left(_BOUNDS_US, us) == stats.bucket_of(us), us
