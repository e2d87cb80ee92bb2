"""The console store contract, one suite for every backend: SQLite in a temp dir and a real
PostgreSQL server (Debian's binaries, started for the session; each test gets a new database).

Backend-specific cases at the end: replicas migrating together, the PostgreSQL server stopped and
started again under a live writer, an unusable SQLite path."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from mixerd.console import stats
from mixerd.console.model import Batch, Decision, Frontend, Hop, LogRecord, Peer, Reporter, Span, Verdict
from mixerd.console.store import _codec as codec
from mixerd.console.store import open_store, postgres, sqlite
from mixerd.console.store.base import (
    ConsoleStore,
    DecisionQuery,
    EdgeRollup,
    StoreUnavailable,
    TransactionQuery,
)
from mixerd.console.writer import Writer
from tests.support.postgres_server import PASSWORD, PostgresProcess

S = 1_000_000  # one second in microseconds
MS = 1_000
T0 = 1_700_000_000 * S  # a multiple of 10 s
B = 10 * S  # rollup bucket

EXTERNAL = Peer()
INGRESS = Peer("istio-system", "istio-ingressgateway", "istio-ingressgateway", "", "", "")
PRODUCTPAGE = Peer(
    "default", "productpage-v1", "productpage", "v1", "productpage.default.svc.cluster.local",
    "cluster.local/ns/default/sa/bookinfo-productpage",
)  # fmt: skip
REVIEWS = Peer(
    "default", "reviews-v2", "reviews", "v2", "reviews.default.svc.cluster.local",
    "cluster.local/ns/default/sa/bookinfo-reviews",
)  # fmt: skip
FRONTEND = Peer("shop", "frontend-v1", "frontend", "v1", "frontend.shop.svc.cluster.local", "")
CART = Peer("shop", "cart-v1", "cart", "v1", "cart.shop.svc.cluster.local", "")
WEB = Peer("edge", "web-v1", "web", "v1", "web.edge.svc.cluster.local", "")
API = Peer("edge", "api-v1", "api", "v1", "api.edge.svc.cluster.local", "")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def as_source(p: Peer) -> Peer:
    return replace(p, service="")


def hop(
    txn: str,
    start_us: int,
    duration_us: int,
    source: Peer,
    destination: Peer,
    reporter: Reporter = Reporter.DESTINATION,
    code: int = 200,
    flags: str = "",
    **more: object,
) -> Hop:
    fields: dict[str, object] = {
        "protocol": "http",
        "method": "GET",
        "host": destination.service,
        "path": "/",
    }
    return Hop(
        start_us=start_us,
        duration_us=duration_us,
        reporter=reporter,
        source=as_source(source),
        destination=destination,
        transaction_id=txn,
        response_code=code,
        response_flags=flags,
        **{**fields, **more},  # type: ignore[arg-type]
    )


def call(
    txn: str, start_us: int, duration_us: int, source: Peer, destination: Peer, **more: object
) -> list[Hop]:
    """One call as both proxies report it: the caller's record slightly longer than the callee's."""
    return [
        hop(txn, start_us, duration_us, source, destination, Reporter.SOURCE, **more),
        hop(txn, start_us + 200, duration_us - 400, source, destination, Reporter.DESTINATION, **more),
    ]


def decision(
    txn: str,
    time_us: int,
    verdict: Verdict = Verdict.ALLOW,
    rule: str = "",
    source: Peer = WEB,
    destination: Peer = API,
) -> Decision:
    denied = verdict is not Verdict.ALLOW
    return Decision(
        time_us=time_us,
        frontend=Frontend.EXT_AUTHZ_GRPC,
        verdict=verdict,
        status_code=7 if verdict is Verdict.DENY else 8 if denied else 0,
        message="blocked by rule" if denied else "",
        transaction_id=txn,
        source=as_source(source),
        destination=destination,
        rule=rule,
        handler="denyall.istio-system" if denied else "",
        quotas={"requestcount": 0 if denied else 1},
        attributes=("request.headers", "source.principal"),
        request_id="7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11",
        method="GET",
        host="api",
        path="/x",
        duration_us=300,
    )


def rollup(
    bucket_us: int,
    source: Peer,
    destination: Peer,
    reporter: str = "destination",
    code: int = 200,
    count: int = 10,
    errors: int = 0,
    durations_ms: tuple[float, ...] = (3.0,),
) -> EdgeRollup:
    histogram = stats.empty()
    for ms in durations_ms:
        histogram[stats.bucket_of(int(ms * MS))] += count // len(durations_ms)
    return EdgeRollup(
        bucket_us=bucket_us,
        reporter=reporter,
        source=Peer(source.namespace, source.workload, source.app, source.version),
        destination=Peer(destination.namespace, destination.workload, destination.app, destination.version,
                         destination.service),
        protocol="http",
        response_code=code,
        count=count,
        errors=errors,
        denied=0,
        duration_sum_us=int(sum(durations_ms) * MS) * (count // len(durations_ms)),
        histogram=tuple(histogram),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# backends


@dataclass
class Backend:
    name: str
    url: str
    server: PostgresProcess | None = None
    schema: str = ""
    opened: list[ConsoleStore] = field(default_factory=list)

    @property
    def schema_version(self) -> int:
        return postgres.SCHEMA_VERSION if self.server is not None else sqlite.SCHEMA_VERSION

    async def open(self) -> ConsoleStore:
        store = open_store(self.url)
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite://{tmp_path}/console/console.db")
    else:
        server: PostgresProcess = request.getfixturevalue("postgres_server")
        server.start()  # in case a test stopped it and failed before starting it again
        schema = server.create_schema()  # tables of its own, much quicker than a database
        yield Backend("postgresql", server.url("postgres", schema), server, schema)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ConsoleStore]:
    s = await backend.open()
    yield s
    for opened in backend.opened:
        await opened.close()


# ---------------------------------------------------------------------------------------------
# the contract


async def test_schema_version_is_recorded(backend: Backend, store: ConsoleStore) -> None:
    assert await store.schema_version() == backend.schema_version  # type: ignore[attr-defined]
    if backend.server is not None:
        rows = backend.server.psql(f"SELECT version FROM {backend.schema}.schema_version")
    else:
        with sqlite3.connect(backend.url.removeprefix("sqlite://")) as conn:
            rows = "\n".join(str(v) for (v,) in conn.execute("SELECT version FROM schema_version"))
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert rows.split() == [str(v) for v in range(1, backend.schema_version + 1)]


async def test_a_transaction_keeps_both_reporters_and_every_field(store: ConsoleStore) -> None:
    hops = [
        hop(TRACE, T0, 50 * MS, EXTERNAL, INGRESS, Reporter.SOURCE, request_id="7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11",
            trace_id=TRACE, span_id="00f067aa0ba902b7", request_bytes=120, response_bytes=3_400),
        *call(TRACE, T0 + 2 * MS, 40 * MS, INGRESS, PRODUCTPAGE, trace_id=TRACE, span_id="a2fb4a1d1a96d312",
              parent_span_id="00f067aa0ba902b7", request_id="7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11"),
        *call(TRACE, T0 + 10 * MS, 20 * MS, PRODUCTPAGE, REVIEWS, code=503, flags="UF,URX",
              request_id="X-Request-Not-A-UUID"),
    ]  # fmt: skip
    checks = [decision(TRACE, T0 - 1 * MS, rule=""), decision(TRACE, T0 + 9 * MS)]
    other = hop("another", T0, 1 * MS, PRODUCTPAGE, REVIEWS)
    await store.write(Batch(hops=[*reversed(hops), other], decisions=checks), [])

    got = await store.transaction(TRACE)
    assert got is not None and got.id == TRACE
    assert got.hops == sorted(hops, key=lambda h: h.start_us)
    assert {h.reporter for h in got.hops} == {Reporter.SOURCE, Reporter.DESTINATION}
    assert got.decisions == checks
    assert got.spans == [] and got.logs == []


@pytest.mark.parametrize(
    "txn",
    [
        "order-42/ü",
        "7C4D6A6E-7B0F-4E0C-9D6A-2A9C3E1F0B11",
        "abc",
        "0" * 64,
        "7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11",
    ],
)
async def test_any_transaction_id_comes_back_as_given(store: ConsoleStore, txn: str) -> None:
    h = hop(txn, T0, 1 * MS, PRODUCTPAGE, REVIEWS, request_id=txn, trace_id=txn, span_id=txn)
    await store.write(Batch(hops=[h]), [])
    got = await store.transaction(txn)
    assert got is not None and got.hops == [h]
    assert [s.id for s in await store.transactions(TransactionQuery())] == [txn]


async def test_a_long_transaction_gives_its_earliest_hops(store: ConsoleStore) -> None:
    limit = codec.MAX_RECORDS_PER_TRANSACTION
    hops = [hop("long", T0 + i, 1, PRODUCTPAGE, REVIEWS, path=f"/{i}") for i in range(limit + 2_000)]
    # written out of order: later batches hold earlier hops
    for part in (hops[5_000 : limit + 1_000], hops[:5_000], hops[limit + 1_000 :]):
        await store.write(Batch(hops=part), [])
    got = await store.transaction("long")
    assert got is not None and got.hops == hops[:limit]


async def test_many_transactions_in_one_batch_and_again_in_the_next(store: ConsoleStore) -> None:
    """A batch of more transactions than one statement takes (the SQLite writer binds a few dozen
    summaries or a couple of hundred hop groups per statement), then their second calls in the next
    batch: every transaction is listed once, with both calls and its summary added up."""
    n = 450
    first = [hop(f"t{i}", T0 + i * MS, 2 * MS, PRODUCTPAGE, REVIEWS) for i in range(n)]
    second = [hop(f"t{i}", T0 + i * MS + 1, 1 * MS, FRONTEND, CART, code=503) for i in range(n)]
    await store.write(Batch(hops=first), [])
    await store.write(Batch(hops=second), [])
    listed = await store.transactions(TransactionQuery(limit=1_000))
    assert sorted(s.id for s in listed) == sorted(f"t{i}" for i in range(n))
    assert all(s.hops == 2 and s.error and s.start_us == T0 + int(s.id[1:]) * MS for s in listed)
    assert {s.services for s in listed} == {(CART.service, REVIEWS.service)}
    for i in (0, 57, 58, 199, 200, n - 1):
        got = await store.transaction(f"t{i}")
        assert got is not None and got.hops == [first[i], second[i]]


async def test_a_transactions_sets_merge_across_batches(store: ConsoleStore) -> None:
    """A transaction whose calls come in many batches, each between other services: its summary
    lists every service once, sorted, and each name and namespace filter finds it, however many
    batches added to it (the SQLite store appends new members and rewrites a long text)."""
    peers = [
        Peer(f"ns{i % 3}", f"w{i}-v1", f"w{i}", "v1", f"w{i}.ns{i % 3}.svc.cluster.local", "")
        for i in range(60)
    ]
    for k in range(len(peers) - 1):
        calls = [hop("merged", T0 + k * MS, 1 * MS, as_source(peers[k]), peers[k + 1])]
        calls.append(hop("merged", T0 + k * MS, 1 * MS, as_source(peers[0]), peers[1]))  # again and again
        await store.write(Batch(hops=calls), [])
    (got,) = await store.transactions(TransactionQuery())
    assert got.services == tuple(sorted(p.service for p in peers[1:]))
    assert got.hops == 2 * (len(peers) - 1)
    for name in ("w1", "w30", "w59", "w0", "w59.ns2.svc.cluster.local"):
        assert [s.id for s in await store.transactions(TransactionQuery(service=name))] == ["merged"]
    assert await store.transactions(TransactionQuery(service="w60")) == []
    for ns in ("ns0", "ns1", "ns2"):
        assert [s.id for s in await store.transactions(TransactionQuery(namespace=ns))] == ["merged"]


async def test_an_unknown_transaction_is_none(store: ConsoleStore) -> None:
    await store.write(Batch(hops=[hop("known", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [])
    assert await store.transaction("unknown") is None
    assert await store.transaction("") is None
    assert await store.transaction("KNOWN") is None


async def _write_transactions(store: ConsoleStore) -> None:
    # a: external -> ingress -> productpage -> reviews, all fine, 50 ms; written in two batches, the
    # later one holding the earlier hops (the root must move to them)
    await store.write(Batch(hops=call("a", T0 + 10 * MS, 20 * MS, PRODUCTPAGE, REVIEWS)), [])
    await store.write(
        Batch(
            hops=[
                hop("a", T0, 50 * MS, EXTERNAL, INGRESS),
                *call("a", T0 + 2 * MS, 45 * MS, INGRESS, PRODUCTPAGE),
            ]
        ),
        [],
    )
    # b: frontend -> cart fails (503), only the caller reports it
    await store.write(
        Batch(hops=[hop("b", T0 + 1 * S, 5 * MS, FRONTEND, CART, Reporter.SOURCE, code=503, flags="UF")]), []
    )
    # c: web -> api denied by ext_authz (403 UAEX) with its decision
    await store.write(
        Batch(
            hops=[hop("c", T0 + 2 * S, 1 * MS, WEB, API, code=403, flags="UAEX")],
            decisions=[decision("c", T0 + 2 * S + 100, Verdict.DENY, rule="deny-blocked.rule.edge")],
        ),
        [],
    )
    # d: only a rate-limit decision (no proxy record arrived)
    await store.write(Batch(decisions=[decision("d", T0 + 3 * S, Verdict.QUOTA_EXHAUSTED)]), [])


async def test_a_caller_named_unknown_is_outside_the_mesh(store: ConsoleStore) -> None:
    # Regression: the stock config's bindings name a caller outside the mesh "unknown"; the root
    # was then that "unknown" caller instead of the edge workload it called.
    unknown = Peer("unknown", "unknown", "unknown", "unknown", "", "unknown")
    await store.write(
        Batch(
            hops=[
                hop("u", T0, 50 * MS, unknown, INGRESS),
                *call("u", T0 + 2 * MS, 45 * MS, INGRESS, PRODUCTPAGE),
            ]
        ),
        [],
    )
    (summary,) = await store.transactions(TransactionQuery())
    assert summary.root == INGRESS and summary.hops == 2


async def test_transaction_summaries(store: ConsoleStore) -> None:
    await _write_transactions(store)
    got = {s.id: s for s in await store.transactions(TransactionQuery())}
    assert list(got) == ["d", "c", "b", "a"]  # newest first
    a = got["a"]
    assert (a.start_us, a.end_us) == (T0, T0 + 50 * MS)
    assert a.root == INGRESS  # the caller of the first hop is outside the mesh: its callee
    assert a.hops == 3  # max(3 reported by sources, 3 by destinations)
    assert a.services == (
        "istio-ingressgateway",
        "productpage.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
    )
    assert not a.error and not a.denied
    b = got["b"]
    assert b.root == as_source(FRONTEND) and b.hops == 1 and b.error and not b.denied
    c = got["c"]
    assert c.hops == 1 and c.denied and not c.error and c.end_us == T0 + 2 * S + 1 * MS
    d = got["d"]
    assert (
        d.hops == 0
        and d.denied
        and d.start_us == T0 + 3 * S
        and d.services == ("api.edge.svc.cluster.local",)
    )


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        (TransactionQuery(service="reviews.default.svc.cluster.local"), ["a"]),
        (TransactionQuery(service="reviews"), ["a"]),  # the host's short name
        (TransactionQuery(service="productpage-v1"), ["a"]),  # a workload
        (TransactionQuery(service="cart"), ["b"]),
        (TransactionQuery(service="frontend-v1"), ["b"]),  # a caller's workload
        (TransactionQuery(service="nothing"), []),
        (TransactionQuery(namespace="shop"), ["b"]),
        (TransactionQuery(namespace="default"), ["a"]),
        (TransactionQuery(namespace="edge"), ["d", "c"]),
        (TransactionQuery(status="error"), ["b"]),
        (TransactionQuery(status="denied"), ["d", "c"]),
        (TransactionQuery(status="ok"), ["a"]),
        (TransactionQuery(min_duration_us=30 * MS), ["a"]),
        (TransactionQuery(since_us=T0 + 1 * S), ["d", "c", "b"]),
        (TransactionQuery(until_us=T0 + 2 * S), ["b", "a"]),
        (TransactionQuery(since_us=T0 + 1 * S, until_us=T0 + 3 * S), ["c", "b"]),
        (TransactionQuery(limit=2), ["d", "c"]),
        (TransactionQuery(namespace="edge", status="denied", limit=1), ["d"]),
    ],
)
async def test_transaction_filters(store: ConsoleStore, query: TransactionQuery, ids: list[str]) -> None:
    await _write_transactions(store)
    assert [s.id for s in await store.transactions(query)] == ids


async def test_decision_filters(store: ConsoleStore) -> None:
    ds = [
        decision("t1", T0, Verdict.ALLOW),
        decision("t2", T0 + 1 * S, Verdict.DENY, rule="deny-blocked.rule.edge"),
        decision("", T0 + 2 * S, Verdict.QUOTA_EXHAUSTED, rule="ratelimit.rule.istio-system"),
        decision("t4", T0 + 3 * S, Verdict.DENY, rule="deny-blocked.rule.edge"),
        decision("t5", T0 + 4 * S, Verdict.ALLOW),
    ]
    await store.write(Batch(decisions=ds[:2]), [])
    await store.write(Batch(decisions=ds[2:]), [])

    async def times(**query: object) -> list[int]:
        return [(d.time_us - T0) // S for d in await store.decisions(DecisionQuery(**query))]  # type: ignore[arg-type]

    assert await store.decisions(DecisionQuery()) == ds[::-1]  # every field, newest first
    assert await times(verdict=Verdict.DENY) == [3, 1]
    assert await times(verdict=Verdict.ALLOW) == [4, 0]
    assert await times(verdict=Verdict.QUOTA_EXHAUSTED) == [2]
    assert await times(rule="deny-blocked.rule.edge") == [3, 1]
    assert await times(rule="ratelimit.rule.istio-system", verdict=Verdict.DENY) == []
    assert await times(since_us=T0 + 1 * S, until_us=T0 + 3 * S) == [2, 1]
    assert await times(limit=2) == [4, 3]


async def test_rollups_add_up_across_writes_and_replicas(backend: Backend, store: ConsoleStore) -> None:
    r = rollup(T0, PRODUCTPAGE, REVIEWS, count=10, errors=1, durations_ms=(3.0, 40.0))
    await store.write(Batch(), [r])
    await store.write(Batch(), [r])
    replica = await backend.open()  # another mixerd on the same database
    await replica.write(
        Batch(), [replace(r, count=5, errors=0, duration_sum_us=100, histogram=(5, *[0] * 11))]
    )
    (got,) = await store.edges(T0, T0 + B, [])
    assert (got.count, got.errors, got.duration_sum_us) == (25, 2, 2 * r.duration_sum_us + 100)
    assert got.histogram == tuple(2 * n + (5 if i == 0 else 0) for i, n in enumerate(r.histogram))
    assert (got.source, got.destination, got.reporter, got.protocol, got.response_code) == (
        r.source, r.destination, "destination", "http", 200,
    )  # fmt: skip
    assert await replica.edges(T0, T0 + B, []) == [got]


async def test_edges_by_namespace_and_time_window(store: ConsoleStore) -> None:
    payments = Peer("shop", "payments-v1", "payments", "v1", "payments.shop.svc.cluster.local")
    for bucket in (T0, T0 + B, T0 + 2 * B):
        await store.write(
            Batch(),
            [
                rollup(bucket, PRODUCTPAGE, REVIEWS, count=10),
                rollup(bucket, PRODUCTPAGE, REVIEWS, reporter="source", count=10),
                rollup(bucket, PRODUCTPAGE, REVIEWS, code=503, count=2, errors=2),
                rollup(bucket, FRONTEND, CART, count=4),
                rollup(bucket, REVIEWS, payments, count=1),  # crosses namespaces
            ],
        )

    def edges_of(rollups: list[EdgeRollup]) -> list[tuple[int, str, str, str, int]]:
        return sorted(
            ((r.bucket_us - T0) // B, r.reporter, r.source.workload, r.destination.workload, r.response_code)
            for r in rollups
        )

    shop = await store.edges(T0, T0 + 2 * B, ["shop"])
    assert edges_of(shop) == [
        (0, "destination", "frontend-v1", "cart-v1", 200),
        (0, "destination", "reviews-v2", "payments-v1", 200),
        (1, "destination", "frontend-v1", "cart-v1", 200),
        (1, "destination", "reviews-v2", "payments-v1", 200),
    ]
    assert len(await store.edges(T0, T0 + 3 * B, [])) == 15
    assert len(await store.edges(T0 + B, T0 + 2 * B, ["default", "shop"])) == 5
    assert await store.edges(T0 + 3 * B, T0 + 4 * B, []) == []
    assert await store.edges(T0, T0 + 3 * B, ["nowhere"]) == []

    # merged in the database: one rollup per edge and code over the window
    merged = await store.edges(T0, T0 + 3 * B, ["default"], step_us=3 * B)
    assert edges_of(merged) == [
        (0, "destination", "productpage-v1", "reviews-v2", 200),
        (0, "destination", "productpage-v1", "reviews-v2", 503),
        (0, "destination", "reviews-v2", "payments-v1", 200),
        (0, "source", "productpage-v1", "reviews-v2", 200),
    ]
    errors = next(r for r in merged if r.response_code == 503)
    assert (errors.count, errors.errors, errors.histogram[0]) == (6, 6, 6)
    # ... or per step: two steps of 20 s over 30 s of buckets
    stepped = await store.edges(T0, T0 + 3 * B, ["shop"], step_us=2 * B)
    assert sorted(((r.bucket_us - T0) // B, r.destination.workload, r.count) for r in stepped) == [
        (0, "cart-v1", 8), (0, "payments-v1", 2), (2, "cart-v1", 4), (2, "payments-v1", 1),
    ]  # fmt: skip


async def test_edges_over_long_windows_add_up_exactly(store: ConsoleStore) -> None:
    # 20 minutes of 10-s buckets (counts 1, 2, 3 ...) over two edges, written in uneven batches:
    # a window merged into one step is read from 5-min rollups where it can, and must give the
    # same totals as the 10-s rollups for any window, aligned or not
    buckets = [T0 + i * B for i in range(120)]
    rollups = [
        rollup(bucket, src, dst, count=i + 1, durations_ms=(3.0,))
        for i, bucket in enumerate(buckets)
        for src, dst in ((PRODUCTPAGE, REVIEWS), (FRONTEND, CART))
    ]
    for i in range(0, len(rollups), 37):
        await store.write(Batch(), rollups[i : i + 37])
    for since, until in [
        (T0, T0 + 1200 * S),
        (T0 + 10 * S, T0 + 1190 * S),
        (T0 - 3600 * S, T0 + 3600 * S),
        (T0 + 290 * S, T0 + 610 * S),
        (T0 + 300 * S - T0 % (300 * S), T0 + 900 * S - T0 % (300 * S)),  # aligned to 5 min
        (T0 + 35 * S, T0 + 36 * S),
    ]:
        expected = sum(i + 1 for i, bucket in enumerate(buckets) if since <= bucket < until)
        merged = await store.edges(since, until, ["default"], step_us=until - since)
        assert [(r.bucket_us, r.count, r.histogram[0]) for r in merged] == (
            [(since, expected, expected)] if expected else []
        ), (since - T0, until - T0)
        fine = await store.edges(since, until, ["default"])
        assert sum(r.count for r in fine) == expected


async def test_service_buckets_per_step_and_version(store: ConsoleStore) -> None:
    reviews_v1 = replace(REVIEWS, workload="reviews-v1", version="v1")
    reviews_v3 = replace(REVIEWS, workload="reviews-v3", version="v3")  # no sidecar: only callers report
    for bucket in (T0, T0 + B, T0 + 2 * B):
        await store.write(
            Batch(),
            [
                rollup(bucket, PRODUCTPAGE, REVIEWS, count=10, durations_ms=(3.0,)),
                rollup(bucket, PRODUCTPAGE, REVIEWS, reporter="source", count=10, durations_ms=(4.0,)),
                rollup(bucket, PRODUCTPAGE, REVIEWS, code=503, count=2, errors=2, durations_ms=(900.0,)),
                rollup(bucket, PRODUCTPAGE, reviews_v1, count=6),
                rollup(bucket, PRODUCTPAGE, reviews_v3, reporter="source", count=3),
                rollup(bucket, FRONTEND, CART, count=4),
            ],
        )
    got = await store.service_buckets("default", "reviews", T0, T0 + 3 * B, 2 * B)
    assert [((b.bucket_us - T0) // B, b.version, b.count, b.errors) for b in got] == [
        (0, "v1", 12, 0), (0, "v2", 24, 4), (0, "v3", 6, 0),
        (2, "v1", 6, 0), (2, "v2", 12, 2), (2, "v3", 3, 0),
    ]  # fmt: skip
    v2 = got[1]
    assert v2.histogram[stats.bucket_of(3 * MS)] == 20 and v2.histogram[stats.bucket_of(900 * MS)] == 4
    by_host = await store.service_buckets(
        "default", "reviews.default.svc.cluster.local", T0, T0 + 3 * B, 2 * B
    )
    assert by_host == got
    assert await store.service_buckets("shop", "reviews", T0, T0 + 3 * B, 2 * B) == []
    assert await store.service_buckets("default", "review", T0, T0 + 3 * B, 2 * B) == []


async def test_spans_and_logs_join_by_trace_id(store: ConsoleStore) -> None:
    trace_b = "5bf92f3577b34da6a3ce929d0e0e4737"
    other = "6bf92f3577b34da6a3ce929d0e0e4738"
    h = hop("tx", T0, 10 * MS, PRODUCTPAGE, REVIEWS, trace_id=TRACE, span_id="00f067aa0ba902b7")
    spans = [
        Span(TRACE, "1111111111111111", "00f067aa0ba902b7", "GET /reviews", "reviews", T0 + 1 * MS, 5 * MS, "",
             kind="server", status="ok", attributes={"http.route": "/reviews/{id}"}),
        Span(trace_b, "2222222222222222", "", "batch job", "worker", T0 + 2 * MS, 1 * MS, "tx", status="error"),
        Span(other, "3333333333333333", "", "unrelated", "worker", T0, 1 * MS, ""),
    ]  # fmt: skip
    logs = [
        LogRecord(T0 + 1 * MS, "reviews", "INFO", "fetched", TRACE, "1111111111111111", "", {"k": "v"}),
        LogRecord(T0 + 3 * MS, "worker", "ERROR", "failed", trace_b, "2222222222222222", ""),
        LogRecord(T0 + 4 * MS, "web", "WARN", "by key only", "", "", "tx"),
        LogRecord(T0 + 5 * MS, "worker", "INFO", "unrelated", other, "", ""),
    ]
    await store.write(Batch(hops=[h], spans=spans, logs=logs), [])
    got = await store.transaction("tx")
    assert got is not None
    assert got.spans == spans[:2]
    assert got.logs == logs[:3]
    # spans and logs alone make a transaction too
    await store.write(Batch(logs=[LogRecord(T0, "web", "INFO", "alone", "", "", "solo")]), [])
    solo = await store.transaction("solo")
    assert solo is not None and solo.hops == [] and [g.body for g in solo.logs] == ["alone"]


async def test_prune_by_age(store: ConsoleStore) -> None:
    old, new = T0, T0 + 3600 * S
    await store.write(
        Batch(
            hops=[
                hop("old", old, 1 * MS, PRODUCTPAGE, REVIEWS),
                hop("new", new, 1 * MS, PRODUCTPAGE, REVIEWS),
            ],
            decisions=[decision("old", old), decision("new", new)],
            spans=[Span(TRACE, "1111111111111111", "", "s", "svc", old, 1, "old")],
            logs=[
                LogRecord(old, "svc", "INFO", "x", "", "", "old"),
                LogRecord(new, "svc", "INFO", "y", "", "", "new"),
            ],
        ),
        [rollup(old, PRODUCTPAGE, REVIEWS), rollup(new, PRODUCTPAGE, REVIEWS)],
    )
    removed = await store.prune(older_than_us=new - 60 * S, max_rows=0)
    assert removed == 4  # a hop, a decision, a span, a log
    assert await store.transaction("old") is None
    assert [s.id for s in await store.transactions(TransactionQuery())] == ["new"]
    new_records = await store.transaction("new")
    assert new_records is not None and len(new_records.hops) == len(new_records.decisions) == 1
    assert [r.bucket_us for r in await store.edges(0, new + B, [])] == [new]
    assert await store.prune(older_than_us=new - 60 * S, max_rows=0) == 0


async def test_prune_by_max_rows(store: ConsoleStore) -> None:
    hops = [hop(f"t{i}", T0 + i * S, 1 * MS, PRODUCTPAGE, REVIEWS) for i in range(10)]
    spans = [Span(TRACE, "1111111111111111", "", "s", "svc", T0 + i * S, 1, f"t{i}") for i in (1, 8)]
    await store.write(Batch(hops=hops[:5], spans=spans), [])
    await store.write(Batch(hops=hops[5:]), [])
    removed = await store.prune(older_than_us=0, max_rows=4)
    assert removed == 7  # 6 hops, and the span of t1 whose transaction went
    assert [s.id for s in await store.transactions(TransactionQuery())] == ["t9", "t8", "t7", "t6"]
    assert await store.transaction("t5") is None
    t8 = await store.transaction("t8")
    assert t8 is not None and len(t8.spans) == 1
    assert await store.prune(older_than_us=0, max_rows=4) == 0
    assert await store.prune(older_than_us=0, max_rows=0) == 0  # no bound


async def test_reopening_keeps_the_data(backend: Backend) -> None:
    first = await backend.open()
    await first.write(
        Batch(hops=[hop("kept", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [rollup(T0, PRODUCTPAGE, REVIEWS)]
    )
    await first.close()
    backend.opened.remove(first)
    again = await backend.open()
    assert await again.schema_version() == backend.schema_version  # type: ignore[attr-defined]
    kept = await again.transaction("kept")
    assert kept is not None and len(kept.hops) == 1
    assert len(await again.edges(T0, T0 + B, [])) == 1
    await again.close()
    backend.opened.remove(again)


async def test_values_a_database_refuses_are_stored_anyway(store: ConsoleStore) -> None:
    odd = hop(
        "odd",
        T0,
        1 * MS,
        PRODUCTPAGE,
        replace(REVIEWS, workload="rev\x00iews"),
        code=2**40,
        path="/a\x00b\udcff",
        request_bytes=2**70,
        response_bytes=-(2**70),
    )
    span = Span(
        TRACE, "1111111111111111", "", "n\udc80", "svc", T0, 1, "odd", attributes={"k\x00": "v\udcff"}
    )
    await store.write(
        Batch(hops=[odd], spans=[span]), [rollup(T0, PRODUCTPAGE, replace(REVIEWS, app="a\x00"))]
    )
    got = await store.transaction("odd")
    assert got is not None and len(got.hops) == 1 and len(got.spans) == 1
    h = got.hops[0]
    assert (h.path.startswith("/a") and h.path.endswith("b\ufffd")) or h.path == "/a\x00b\udcff"
    assert h.response_code in (2**40, 2**31 - 1)
    assert h.request_bytes in (2**70, 2**63 - 1) and h.response_bytes in (-(2**70), -(2**63))
    assert len(await store.edges(T0, T0 + B, [])) == 1


# ---------------------------------------------------------------------------------------------
# one backend


async def test_sqlite_unusable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = open_store(f"sqlite://{tmp_path}/file/console.db")
    with pytest.raises(StoreUnavailable, match=r"console store sqlite:///.*/file/console\.db"):
        await store.open()
    await store.close()
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"garbage" * 1000)
    store = open_store(f"sqlite://{not_a_db}")
    with pytest.raises(StoreUnavailable, match="not a database"):
        await store.open()
    await store.close()


async def test_sqlite_schema_1_hops_move_to_hop_groups(tmp_path: Path) -> None:
    """Schema 1 -> 2 -> 3: the hops move into hop groups, and each summary lists its groups."""
    path = tmp_path / "console.db"
    hops = [
        *call(TRACE, T0, 40 * MS, INGRESS, PRODUCTPAGE, trace_id=TRACE, span_id="a2fb4a1d1a96d312",
              request_id="7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11"),
        hop(TRACE, T0 + 10 * MS, 20 * MS, PRODUCTPAGE, REVIEWS, code=503, flags="UF", path="/ü"),
        hop("", T0, 1 * MS, WEB, API),
    ]  # fmt: skip
    with sqlite3.connect(path) as conn:  # a database as schema 1 left it
        conn.executescript(sqlite._MIGRATIONS[1])
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_us INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        columns = ", ".join(codec.HOP_COLUMNS)
        conn.executemany(
            f"INSERT INTO hops ({columns}) VALUES ({', '.join('?' * len(codec.HOP_COLUMNS))})",
            [codec.hop_row(h) for h in hops],
        )
        conn.executemany(  # and their summaries, as the schema 1 writer wrote them with the hops
            f"INSERT INTO transactions ({', '.join(codec.SUMMARY_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(codec.SUMMARY_COLUMNS))})",
            [s.values(sqlite._encode_set) for s in codec.summarize(Batch(hops=hops))],
        )
    store = open_store(f"sqlite://{path}")
    await store.open()
    try:
        assert await store.schema_version() == sqlite.SCHEMA_VERSION  # type: ignore[attr-defined]
        got = await store.transaction(TRACE)
        assert got is not None and got.hops == hops[:3]
        assert await store.prune(older_than_us=T0 + 1 * S, max_rows=0) == 4
    finally:
        await store.close()


async def test_sqlite_a_transaction_finds_only_its_own_hop_groups(tmp_path: Path) -> None:
    """A summary lists its hop groups by rowid; a group pruned since is gone, and a rowid that
    SQLite gave again to another key's group (once every group was deleted) is not taken for it."""
    path = tmp_path / "console.db"
    store = open_store(f"sqlite://{path}")
    await store.open()
    try:
        await store.write(Batch(hops=call("first", T0, 1 * MS, PRODUCTPAGE, REVIEWS)), [])
        await store.write(Batch(hops=[hop("first", T0 + 5 * MS, 1 * MS, REVIEWS, CART)]), [])
        got = await store.transaction("first")
        assert got is not None and len(got.hops) == 3
        with sqlite3.connect(path) as conn:
            listed = conn.execute("SELECT group_rowids FROM transactions").fetchall()
            assert listed == [("1,2",)]
            conn.execute("DELETE FROM hop_groups")  # as a prune of every hop would
        await store.write(Batch(hops=call("second", T0, 1 * MS, WEB, API)), [])
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT rowid FROM hop_groups").fetchall() == [(1,)]  # reused
        assert await store.transaction("first") is None
        second = await store.transaction("second")
        assert second is not None and len(second.hops) == 2
    finally:
        await store.close()


async def test_sqlite_a_damaged_hop_group_makes_its_transaction_unavailable(tmp_path: Path) -> None:
    """A hop group whose body was damaged on disk: the transaction is refused with a message naming
    it (the API answers 503), the other transactions and the lists still answer."""
    path = tmp_path / "console.db"
    store = open_store(f"sqlite://{path}")
    await store.open()
    try:
        await store.write(Batch(hops=[*call("damaged", T0, 1 * MS, PRODUCTPAGE, REVIEWS),
                                      *call("fine", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [])  # fmt: skip
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE hop_groups SET body = substr(body, 1, 30) WHERE txn = ?", (codec.pack_id("damaged"),)
            )
        with pytest.raises(StoreUnavailable, match="transaction 'damaged': a stored hop group is damaged"):
            await store.transaction("damaged")
        fine = await store.transaction("fine")
        assert fine is not None and len(fine.hops) == 2
        listed = await store.transactions(TransactionQuery(since_us=0))
        assert {s.id for s in listed} == {"damaged", "fine"}
    finally:
        await store.close()


async def test_postgres_replicas_starting_together_migrate_once(postgres_server: PostgresProcess) -> None:
    schema = postgres_server.create_schema()
    stores = [open_store(postgres_server.url("postgres", schema)) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert postgres_server.psql(f"SELECT count(*) FROM {schema}.schema_version").split() == ["1"]
    for s in stores:
        await s.close()


async def test_postgres_unreachable_at_open_then_back(postgres_server: PostgresProcess) -> None:
    url = postgres_server.url("postgres", postgres_server.create_schema())
    postgres_server.stop()
    try:
        store = open_store(url)
        with pytest.raises(StoreUnavailable) as err:
            await store.open()
        assert PASSWORD not in str(err.value) and "postgres:***@" in str(err.value)
    finally:
        postgres_server.start()
    await store.write(Batch(hops=[hop("late", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [])  # connects, migrates
    assert await store.transaction("late") is not None
    await store.close()


async def test_postgres_stopped_mid_run_then_restarted(postgres_server: PostgresProcess) -> None:
    store = open_store(postgres_server.url("postgres", postgres_server.create_schema()))
    await store.open()
    drops: list[tuple[str, int]] = []
    writer = Writer(
        store,
        on_drop=lambda kind, n: drops.append((kind, n)),
        flush_interval=0.05,
        retry_min=0.05,
        retry_max=0.2,
        retention=0,
    )
    writer.start()

    async def until(predicate: object, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():  # type: ignore[operator]
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.02)

    try:
        writer.add_hop(hop("before", T0 - 1 * S, 1 * MS, PRODUCTPAGE, REVIEWS))
        await until(lambda: writer.stats().written["hop"] == 1)

        postgres_server.stop()
        for i in range(50):  # the request path goes on: nothing raises, nothing awaits
            writer.add_hop(hop("during", T0 + i * MS, 1 * MS, PRODUCTPAGE, REVIEWS))
            writer.add_decision(decision("during", T0 + i * MS))
        await until(lambda: not writer.stats().store_available)
        assert writer.stats().queued == 100
        for read in (
            store.transactions(TransactionQuery()),
            store.transaction("before"),
            store.decisions(DecisionQuery()),
            store.edges(T0, T0 + B, []),
            store.service_buckets("default", "reviews", T0, T0 + B, B),
        ):
            with pytest.raises(StoreUnavailable) as err:
                await read
            message = str(err.value)
            assert PASSWORD not in message and "postgresql://postgres:***@127.0.0.1" in message
        with pytest.raises(StoreUnavailable):
            await store.write(Batch(hops=[hop("direct", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [])
        assert await writer.prune_now() == 0  # retention skips the round

        postgres_server.start()  # no manual step after this
        await until(lambda: writer.stats().queued == 0 and writer.stats().store_available)
        during = await store.transaction("during")
        assert during is not None and len(during.hops) == 50 and len(during.decisions) == 50
        assert [s.id for s in await store.transactions(TransactionQuery())] == ["during", "before"]
        edges = await store.edges(T0 - B, T0 + B, [])
        assert sum(e.count for e in edges) == 51  # rollups gathered during the outage were kept
        assert drops == []
    finally:
        postgres_server.start()
        await writer.aclose()
        await store.close()


async def test_postgres_over_a_unix_socket(postgres_server: PostgresProcess) -> None:
    schema = postgres_server.create_schema()
    url = (
        f"postgresql:///postgres?host={postgres_server.socket_dir}&port={postgres_server.port}"
        f"&user=postgres&search_path={schema}"
    )
    store = open_store(url)
    assert store.url_for_display == url  # no password to hide
    await store.open()
    try:
        await store.write(Batch(hops=[hop("unix", T0, 1 * MS, PRODUCTPAGE, REVIEWS)]), [])
        assert await store.transaction("unix") is not None
    finally:
        await store.close()
