"""Console store: ingestion, transaction lookups and the graph query, for SQLite and PostgreSQL.

1. Ingestion: hops per second through ``store.write`` in the writer's batches (2,000 hops with
   their transaction summaries, one database transaction each): 3-call transactions, each call
   reported by both proxies, random W3C trace ids as transaction ids, Envoy request ids. A
   transaction's six hops come together, SQLite's best case (it stores the hops of a transaction
   that one batch brings in one row); ``bench_report_console.py`` spreads them over batches.
2. ``transaction(id)`` latency (p50, p99 over 1,000 random stored ids) with 1,000,000 stored
   hops (filled with the same writes in 10,000-hop batches). Goal: p99 under 50 ms.
3. ``edges`` over one hour of 10-s rollups of 100 services (each calling two others, both
   reporters, some 503s): merged per edge in the database (``step_us`` = the hour, what the graph
   asks) and, for reference, every stored rollup. Goal: under 300 ms.

4. Decision ingestion: policy decisions per second through ``store.write`` in 2,000-decision
   batches (one per call of a 3-call transaction, 2% denials naming a rule, Envoy request ids),
   with the process CPU per decision (the writer thread's included).

Also what ``Writer.add_hop`` and ``Writer.add_decision`` cost the request path.

PostgreSQL runs as started by tests/support/postgres_server.py with PostgreSQL's default
durability (fsync on, synchronous commit), over TCP on loopback; SQLite in WAL mode with
synchronous=NORMAL.

    python benchmarks/bench_console_store.py [--hops N] [--pg-hops N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.postgres_server

from _util import table

from mixerd.console import stats
from mixerd.console.model import Batch, Decision, Frontend, Hop, Peer, Reporter, Verdict
from mixerd.console.store.base import ConsoleStore, EdgeRollup, TransactionQuery
from mixerd.console.store.postgres import PostgresStore
from mixerd.console.store.sqlite import SQLiteStore

S = 1_000_000
T0 = 1_700_000_000 * S
SERVICES = 100
rng = random.Random(42)


def _peer(i: int) -> Peer:
    ns = f"ns{i % 10}"
    return Peer(
        ns,
        f"svc{i}-v1",
        f"svc{i}",
        "v1",
        f"svc{i}.{ns}.svc.cluster.local",
        f"cluster.local/ns/{ns}/sa/svc{i}",
    )


PEERS = [_peer(i) for i in range(SERVICES)]
SOURCES = [Peer(p.namespace, p.workload, p.app, p.version, "", p.principal) for p in PEERS]


def _uuid() -> str:
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def hops(n: int, start_us: int = T0) -> Iterator[list[Hop]]:
    """``n`` hops in lists of 6 (a transaction: 3 calls, each reported by both ends)."""
    t = start_us
    for _ in range(n // 6):
        txn = os.urandom(16).hex()
        chain = rng.sample(range(SERVICES), 4)
        out = []
        for depth in range(3):
            src, dst = chain[depth], chain[depth + 1]
            request_id = _uuid()
            span = os.urandom(8).hex()
            code = 503 if rng.random() < 0.02 else 200
            for reporter, skew in ((Reporter.SOURCE, 0), (Reporter.DESTINATION, 300)):
                out.append(
                    Hop(
                        start_us=t + depth * 1_000 + skew,
                        duration_us=20_000 - depth * 5_000 - skew,
                        reporter=reporter,
                        source=SOURCES[src],
                        destination=PEERS[dst],
                        transaction_id=txn,
                        protocol="http",
                        method="GET",
                        host=PEERS[dst].service,
                        path=f"/api/v1/items/{rng.randrange(1000)}",
                        response_code=code,
                        response_flags="" if code == 200 else "UF",
                        request_bytes=rng.randrange(100, 2000),
                        response_bytes=rng.randrange(100, 20000),
                        request_id=request_id,
                        trace_id=txn,
                        span_id=span,
                    )
                )
        t += 50  # 20,000 transactions per second of traffic
        yield out


def decisions(n: int, start_us: int = T0) -> Iterator[list[Decision]]:
    """``n`` decisions in lists of 3 (a transaction's calls, each asked of ext_authz)."""
    t = start_us
    attributes = ("destination.namespace", "request.headers", "request.path", "source.principal")
    for _ in range(n // 3):
        txn = _uuid()
        chain = rng.sample(range(SERVICES), 4)
        out = []
        for depth in range(3):
            denied = rng.random() < 0.02
            out.append(
                Decision(
                    t + depth * 1_000,
                    Frontend.EXT_AUTHZ_GRPC,
                    Verdict.DENY if denied else Verdict.ALLOW,
                    7 if denied else 0,
                    "PERMISSION_DENIED:denyall.handler.istio-system:blocked" if denied else "",
                    txn,
                    SOURCES[chain[depth]],
                    PEERS[chain[depth + 1]],
                    "denyall.rule.istio-system" if denied else "",
                    "denyall.handler.istio-system" if denied else "",
                    {},
                    attributes,
                    _uuid(),
                    "GET",
                    PEERS[chain[depth + 1]].service,
                    f"/api/v1/items/{rng.randrange(1000)}",
                    400,
                )
            )
        t += 50
        yield out


async def ingest_decisions(store: ConsoleStore, n: int, batch_size: int) -> tuple[float, float]:
    """Write ``n`` decisions in batches: (decisions per second, process CPU us per decision),
    generation excluded."""
    batches: list[list[Decision]] = [[]]
    for group in decisions(n, T0 + 3_600 * S):
        if len(batches[-1]) >= batch_size:
            batches.append([])
        batches[-1] += group
    spent = cpu = 0.0
    for batch in batches:
        t, c = time.perf_counter(), time.process_time()
        await store.write(Batch(decisions=batch), [])
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
    return n / spent, cpu / n * 1e6


async def fill(store: ConsoleStore, n: int, batch_size: int, ids: list[str] | None = None) -> float:
    """Write ``n`` hops in batches; hops per second (generation excluded)."""
    spent = 0.0
    batch: list[Hop] = []
    for group in hops(n):
        batch += group
        if ids is not None and rng.random() < 0.01:
            ids.append(group[0].transaction_id)
        if len(batch) >= batch_size:
            t = time.perf_counter()
            await store.write(Batch(hops=batch), [])
            spent += time.perf_counter() - t
            batch = []
    if batch:
        t = time.perf_counter()
        await store.write(Batch(hops=batch), [])
        spent += time.perf_counter() - t
    return n / spent


async def lookups(store: ConsoleStore, ids: list[str], n: int = 1000) -> tuple[float, float, int]:
    sample = [rng.choice(ids) for _ in range(n)]
    latencies = []
    found = 0
    for txn in sample:
        t = time.perf_counter()
        got = await store.transaction(txn)
        latencies.append(time.perf_counter() - t)
        found += got is not None and len(got.hops) == 6
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1e3, q[98] * 1e3, found


def rollups_for_an_hour() -> Iterator[list[EdgeRollup]]:
    """One list per 10-s bucket: every service calls two others, reported by both ends, with
    a 503 rollup on one edge in five."""
    edges = [(i, (i + k) % SERVICES) for i in range(SERVICES) for k in (1, 7)]
    for b in range(360):
        bucket = T0 + b * 10 * S
        out = []
        for i, (src, dst) in enumerate(edges):
            s, d = PEERS[src], PEERS[dst]
            codes = (200, 503) if i % 5 == 0 else (200,)
            for reporter in ("source", "destination"):
                for code in codes:
                    count = 50 if code == 200 else 2
                    h = stats.empty()
                    h[1], h[3] = count // 2, count - count // 2
                    out.append(
                        EdgeRollup(
                            bucket_us=bucket,
                            reporter=reporter,
                            source=Peer(s.namespace, s.workload, s.app, s.version),
                            destination=Peer(d.namespace, d.workload, d.app, d.version, d.service),
                            protocol="http",
                            response_code=code,
                            count=count,
                            errors=count if code >= 500 else 0,
                            denied=0,
                            duration_sum_us=count * 20_000,
                            histogram=tuple(h),
                        )
                    )
        yield out


async def graph(store: ConsoleStore) -> tuple[int, float, float, int]:
    rows = 0
    for bucket in rollups_for_an_hour():
        await store.write(Batch(), bucket)
        rows += len(bucket)
    since, until = T0, T0 + 3600 * S
    times = []
    for _ in range(5):
        t = time.perf_counter()
        merged = await store.edges(since, until, [], step_us=until - since)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    every = await store.edges(since, until, [])
    per_bucket = time.perf_counter() - t
    assert len(every) == rows, (len(every), rows)
    return rows, statistics.median(times) * 1e3, per_bucket * 1e3, len(merged)


async def run_backend(
    name: str, make: type[ConsoleStore] | object, url: str, total_hops: int
) -> list[list[str]]:
    rows = []
    store: ConsoleStore = make(url)  # type: ignore[operator]
    await store.open()
    try:
        rate = await fill(store, 60_000, 2_000)
        rows.append([name, "ingestion, 2,000-hop batches", f"{rate:,.0f} hops/s"])
        rate, cpu_us = await ingest_decisions(store, 30_000, 2_000)
        rows.append(
            [name, "decision ingestion, 2,000-decision batches",
             f"{rate:,.0f} decisions/s, {cpu_us:.1f} us CPU/decision (this process)"]
        )  # fmt: skip
        ids: list[str] = []
        t = time.perf_counter()
        fill_rate = await fill(store, total_hops - 60_000, 10_000, ids)
        rows.append(
            [name, f"fill to {total_hops:,} hops, 10,000-hop batches",
             f"{fill_rate:,.0f} hops/s ({time.perf_counter() - t:.0f} s)"]
        )  # fmt: skip
        p50, p99, found = await lookups(store, ids)
        rows.append(
            [name, f"transaction(id), {total_hops:,} hops stored", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"]
        )
        if found != 1000:
            raise RuntimeError(f"{name}: only {found} of 1000 lookups found their 6 hops")
        t = time.perf_counter()
        listed = await store.transactions(TransactionQuery(limit=100))
        rows.append([name, "transactions(), newest 100", f"{(time.perf_counter() - t) * 1e3:.1f} ms"])
        t = time.perf_counter()
        await store.transactions(TransactionQuery(service="svc42", status="error", limit=100))
        rows.append(
            [name, "transactions(service=, status=error), 100", f"{(time.perf_counter() - t) * 1e3:.1f} ms"]
        )
        assert len(listed) == 100
        n, merged_ms, every_ms, edges = await graph(store)
        rows.append([name, f"edges, 1 h x 100 services, merged ({edges} edges)", f"{merged_ms:.0f} ms"])
        rows.append([name, f"edges, 1 h x 100 services, all {n:,} rollups", f"{every_ms:.0f} ms"])
    finally:
        await store.close()
    return rows


def request_path_cost(n: int = 200_000) -> list[list[str]]:
    """What ``Writer.add_hop`` costs the request path (queueing and the rollup), per hop."""
    from mixerd.console.writer import Writer

    sample = [h for group in hops(n) for h in group]
    writer = Writer(None, max_queue=len(sample) + 1, batch_size=len(sample) + 1)  # type: ignore[arg-type]
    t = time.perf_counter()
    for h in sample:
        writer.add_hop(h)
    spent = time.perf_counter() - t
    cost = [
        ["writer", "add_hop on the request path (queue + 10-s rollup)", f"{spent / len(sample) * 1e6:.2f} us"]
    ]
    records = [d for group in decisions(n) for d in group]
    writer = Writer(None, max_queue=len(records) + 1, batch_size=len(records) + 1)  # type: ignore[arg-type]
    t = time.perf_counter()
    for d in records:
        writer.add_decision(d)
    spent = time.perf_counter() - t
    cost.append(
        ["writer", "add_decision on the request path (queue)", f"{spent / len(records) * 1e6:.2f} us"]
    )
    return cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=1_000_000, help="hops stored in SQLite for the lookups")
    parser.add_argument("--pg-hops", type=int, default=1_000_000, help="hops stored in PostgreSQL")
    parser.add_argument("--no-postgres", action="store_true")
    opts = parser.parse_args()
    rows: list[list[str]] = request_path_cost()
    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-console-"))
    try:
        rows += asyncio.run(run_backend("sqlite", SQLiteStore, str(tmp / "console.db"), opts.hops))
        size = sum(f.stat().st_size for f in tmp.iterdir())
        rows.append(["sqlite", "database size", f"{size / 2**20:,.0f} MiB"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not opts.no_postgres:
        from tests.support.postgres_server import start_postgres

        server = start_postgres(durable=True)
        try:
            database = server.create_database("bench")
            rows += asyncio.run(run_backend("postgresql", PostgresStore, server.url(database), opts.pg_hops))
            size = server.psql(f"SELECT pg_database_size('{database}')").strip()
            rows.append(["postgresql", "database size", f"{int(size) / 2**20:,.0f} MiB"])
        finally:
            server.destroy()
    print(table(rows, ("store", "case", "result")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
