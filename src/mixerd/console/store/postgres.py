"""The shared console store: PostgreSQL through asyncpg, for several mixerd replicas.

Every replica writes (raw records by COPY, summaries and rollups by upserts that add up, rows
locked in one order so replicas never deadlock) and any replica reads what all wrote. mixerd
creates and migrates the schema itself, under an advisory lock so replicas starting together
migrate once. Retention deletes by age in chunks (no partitions: one plain table per kind keeps
the schema and the migrations simple; daily partitions would make retention cheaper on very large
stores). A server that goes away makes calls raise :class:`StoreUnavailable` (its message has no
password); the connection pool reconnects by itself on a later call once the server is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from mixerd.adapter import redact_url
from mixerd.console.model import Batch, Decision, Peer
from mixerd.console.store import _codec as codec
from mixerd.console.store.base import (
    DecisionQuery,
    EdgeRollup,
    ServiceBucket,
    StoreUnavailable,
    TransactionQuery,
    TransactionRecords,
    TransactionSummary,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger("mixerd.console")

T = TypeVar("T")

_PEER_COLUMNS = """
    src_namespace text NOT NULL, src_workload text NOT NULL, src_app text NOT NULL,
    src_version text NOT NULL, src_service text NOT NULL, src_principal text NOT NULL,
    dst_namespace text NOT NULL, dst_workload text NOT NULL, dst_app text NOT NULL,
    dst_version text NOT NULL, dst_service text NOT NULL, dst_principal text NOT NULL"""
_HIST = ", ".join(f"{c} bigint NOT NULL" for c in codec.HISTOGRAM_COLUMNS)

# Each migration is applied once, in one transaction, in version order; never edit a released one.
_MIGRATIONS: Final[dict[int, str]] = {
    1: f"""
CREATE TABLE hops (
    txn bytea, start_us bigint NOT NULL, duration_us bigint NOT NULL, reporter smallint NOT NULL,
    {_PEER_COLUMNS},
    protocol text NOT NULL, method text NOT NULL, host text NOT NULL, path text NOT NULL,
    code integer NOT NULL, flags text NOT NULL, request_bytes bigint NOT NULL,
    response_bytes bigint NOT NULL,
    request_id bytea, trace_id bytea, span_id bytea, parent_span_id bytea
);
CREATE INDEX hops_txn ON hops (txn) WHERE txn IS NOT NULL;
CREATE INDEX hops_start ON hops (start_us);

CREATE TABLE decisions (
    time_us bigint NOT NULL, frontend text NOT NULL, verdict text NOT NULL,
    status_code integer NOT NULL, message text NOT NULL, txn bytea,
    {_PEER_COLUMNS},
    rule text NOT NULL, handler text NOT NULL, quotas text, attributes text, request_id bytea,
    method text NOT NULL, host text NOT NULL, path text NOT NULL, duration_us bigint NOT NULL
);
CREATE INDEX decisions_time ON decisions (time_us);
CREATE INDEX decisions_verdict ON decisions (verdict, time_us) WHERE verdict <> 'allow';
CREATE INDEX decisions_rule ON decisions (rule, time_us) WHERE rule <> '';
CREATE INDEX decisions_txn ON decisions (txn) WHERE txn IS NOT NULL;

CREATE TABLE spans (
    trace_id bytea, span_id bytea, parent_span_id bytea, name text NOT NULL, service text NOT NULL,
    start_us bigint NOT NULL, duration_us bigint NOT NULL, txn bytea, kind text NOT NULL,
    status text NOT NULL, attributes text
);
CREATE INDEX spans_trace ON spans (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX spans_txn ON spans (txn) WHERE txn IS NOT NULL;
CREATE INDEX spans_start ON spans (start_us);

CREATE TABLE logs (
    time_us bigint NOT NULL, service text NOT NULL, severity text NOT NULL, body text NOT NULL,
    trace_id bytea, span_id bytea, txn bytea, attributes text
);
CREATE INDEX logs_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX logs_txn ON logs (txn) WHERE txn IS NOT NULL;
CREATE INDEX logs_time ON logs (time_us);

CREATE TABLE transactions (
    id bytea PRIMARY KEY, start_us bigint NOT NULL, end_us bigint NOT NULL,
    root_namespace text NOT NULL, root_workload text NOT NULL, root_app text NOT NULL,
    root_version text NOT NULL, root_service text NOT NULL, root_principal text NOT NULL,
    src_hops integer NOT NULL, dst_hops integer NOT NULL, unk_hops integer NOT NULL,
    services text[] NOT NULL, names text[] NOT NULL, namespaces text[] NOT NULL,
    error boolean NOT NULL, denied boolean NOT NULL
);
CREATE INDEX transactions_start ON transactions (start_us);
CREATE INDEX transactions_error ON transactions (start_us) WHERE error;
CREATE INDEX transactions_denied ON transactions (start_us) WHERE denied;

CREATE TABLE edge_keys (
    key bigint PRIMARY KEY, reporter text NOT NULL,
    src_namespace text NOT NULL, src_workload text NOT NULL, src_app text NOT NULL,
    src_version text NOT NULL,
    dst_namespace text NOT NULL, dst_workload text NOT NULL, dst_app text NOT NULL,
    dst_version text NOT NULL, dst_service text NOT NULL,
    protocol text NOT NULL, code integer NOT NULL, last_us bigint NOT NULL
);
CREATE TABLE edge_rollups (
    bucket_us bigint NOT NULL, key bigint NOT NULL, count bigint NOT NULL, errors bigint NOT NULL,
    denied bigint NOT NULL, duration_sum_us bigint NOT NULL, {_HIST},
    PRIMARY KEY (bucket_us, key)
);
CREATE INDEX edge_rollups_key ON edge_rollups (key, bucket_us);
CREATE TABLE edge_rollups_5m (
    bucket_us bigint NOT NULL, key bigint NOT NULL, count bigint NOT NULL, errors bigint NOT NULL,
    denied bigint NOT NULL, duration_sum_us bigint NOT NULL, {_HIST},
    PRIMARY KEY (bucket_us, key)
);
""",
}
SCHEMA_VERSION: Final = max(_MIGRATIONS)

_MIGRATION_LOCK: Final = 0x6D69786572640001
"""pg_advisory_xact_lock key held while migrating ("mixerd" + 1)."""
_PRUNE_LOCK: Final = 0x6D69786572640002
"""pg_try_advisory_lock key: one replica prunes at a time, the others skip that round."""
_PRUNE_CHUNK: Final = 10_000
_LIMIT: Final = codec.MAX_RECORDS_PER_TRANSACTION

_UNAVAILABLE: Final = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_CONNECTION_LOST: Final = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
)
_BAD_VALUE: Final = (asyncpg.DataError, ValueError, OverflowError)
"""What PostgreSQL or asyncpg raise for a value a column cannot take (NUL in text, a lone
surrogate, an integer out of range): the write is redone with such values made storable."""


def _params(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


_ROOT = ("root_namespace", "root_workload", "root_app", "root_version", "root_service", "root_principal")
_UPSERT_SUMMARY: Final = (
    f"INSERT INTO transactions AS t ({', '.join(codec.SUMMARY_COLUMNS)})"
    f" VALUES ({_params(len(codec.SUMMARY_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{c} = CASE WHEN EXCLUDED.start_us < t.start_us THEN EXCLUDED.{c} ELSE t.{c} END" for c in _ROOT
    )
    + ", start_us = LEAST(t.start_us, EXCLUDED.start_us), end_us = GREATEST(t.end_us, EXCLUDED.end_us)"
    + ", src_hops = t.src_hops + EXCLUDED.src_hops, dst_hops = t.dst_hops + EXCLUDED.dst_hops"
    + ", unk_hops = t.unk_hops + EXCLUDED.unk_hops, "
    + ", ".join(
        f"{c} = CASE WHEN EXCLUDED.{c} <@ t.{c} THEN t.{c}"
        f" ELSE ARRAY(SELECT DISTINCT x FROM unnest(t.{c} || EXCLUDED.{c}) AS u(x) ORDER BY x) END"
        for c in ("services", "names", "namespaces")
    )
    + ", error = t.error OR EXCLUDED.error, denied = t.denied OR EXCLUDED.denied"
)
_UPSERT_EDGE_KEY: Final = (
    f"INSERT INTO edge_keys AS k ({', '.join(codec.EDGE_KEY_COLUMNS)})"
    f" VALUES ({_params(len(codec.EDGE_KEY_COLUMNS))})"
    " ON CONFLICT (key) DO UPDATE SET last_us = EXCLUDED.last_us WHERE k.last_us < EXCLUDED.last_us"
)
_ADD_ROLLUP, _ADD_ROLLUP_5M = (
    f"INSERT INTO {table} AS r ({', '.join(codec.ROLLUP_COLUMNS)})"
    f" VALUES ({_params(len(codec.ROLLUP_COLUMNS))}) ON CONFLICT (bucket_us, key) DO UPDATE SET "
    + ", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in codec.ROLLUP_COLUMNS[2:])
    for table in ("edge_rollups", "edge_rollups_5m")
)
_SUMS: Final = ", ".join(f"sum({c})::bigint" for c in codec.ROLLUP_COLUMNS[2:])
_TIMED: Final = (("hops", "start_us"), ("decisions", "time_us"), ("spans", "start_us"), ("logs", "time_us"))


def _deleted(status: str) -> int:
    """The row count of a ``DELETE n`` command status."""
    return int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0


class PostgresStore:
    """A :class:`~mixerd.console.store.base.ConsoleStore` in a PostgreSQL database
    (``postgresql://user:password@host:port/database``, or ``postgresql:///database?host=/socket/dir``).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        max_connections: int = 5,
    ) -> None:
        self._url = url
        self.url_for_display = redact_url(url)
        parts = urllib.parse.urlsplit(url)
        self._secrets = [
            s for s in (parts.password, *urllib.parse.parse_qs(parts.query).get("password", [])) if s
        ]
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._max_connections = max_connections
        self._pool: Any = None
        self._migrated = False
        self._migrate_lock = asyncio.Lock()
        self._keys: dict[int, codec.EdgeKey] = {}
        """Edge keys by hash (content-addressed: never stale)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the connection pool and the schema. Raises StoreUnavailable when the server
        cannot be reached; the store stays usable then: later calls connect (and migrate) once it
        is back."""
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=self._max_connections,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                    server_settings={"application_name": "mixerd-console"},
                )
            except _UNAVAILABLE as exc:
                raise self._unavailable(exc) from exc
        await self._call(lambda conn: asyncio.sleep(0))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=5.0)
        except (TimeoutError, *_UNAVAILABLE):
            pool.terminate()

    async def schema_version(self) -> int:
        async def read(conn: Any) -> int:
            return int(await conn.fetchval("SELECT max(version) FROM schema_version"))

        return await self._call(read, retry=True)

    # -- plumbing ----------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        what = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            what = f"timed out ({what})" if str(exc) else "timed out"
        elif isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            what = f"cannot reach the database: {what}"
        else:
            what = f"database error: {what}"
        for secret in self._secrets:  # never seen in asyncpg's messages, but make sure
            what = what.replace(secret, "***")
        return StoreUnavailable(f"console store {self.url_for_display}: {what}")

    async def _call(self, fn: Callable[[Any], Awaitable[T]], *, retry: bool = False) -> T:
        """Run ``fn`` with a pooled connection (the schema ensured first). A connection the server
        dropped (a restart) is retried once with a new one when ``retry``; every database or
        network failure becomes StoreUnavailable."""
        if self._pool is None:
            raise StoreUnavailable(f"console store {self.url_for_display} is not open")
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                    if not self._migrated:
                        await self._migrate(conn)
                    return await fn(conn)
            except _CONNECTION_LOST as exc:
                if attempt + 1 == attempts:
                    raise self._unavailable(exc) from exc
            except _BAD_VALUE:
                raise
            except _UNAVAILABLE as exc:
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _migrate(self, conn: Any) -> None:
        async with self._migrate_lock:
            if self._migrated:
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version integer PRIMARY KEY, applied_us bigint NOT NULL)"
                )
                current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                if current > SCHEMA_VERSION:
                    raise StoreUnavailable(
                        f"console store {self.url_for_display}: its schema is version {current},"
                        f" newer than this mixerd knows ({SCHEMA_VERSION})"
                    )
                for version in sorted(v for v in _MIGRATIONS if v > current):
                    await conn.execute(_MIGRATIONS[version])
                    await conn.execute(
                        "INSERT INTO schema_version VALUES ($1, $2)", version, int(time.time() * 1_000_000)
                    )
                    log.info("console store %s: schema migrated to version %d", self.url_for_display, version)
            self._migrated = True

    # -- writes ------------------------------------------------------------------------------

    async def write(self, batch: Batch, rollups: Sequence[EdgeRollup]) -> None:
        if not len(batch) and not rollups:
            return
        try:
            await self._call(lambda conn: self._write_batch(conn, batch, rollups))
        except _BAD_VALUE:
            clean = codec.sanitize_batch(batch), codec.sanitize_rollups(rollups)
            try:
                await self._call(lambda conn: self._write_batch(conn, *clean))
            except _BAD_VALUE as exc:  # not a value problem after all
                raise self._unavailable(exc) from exc

    @staticmethod
    async def _write_batch(conn: Any, batch: Batch, rollups: Sequence[EdgeRollup]) -> None:
        async with conn.transaction():
            ids = codec.PackCache()
            raw: tuple[tuple[str, Sequence[str], list[tuple[Any, ...]]], ...] = (
                ("hops", codec.HOP_COLUMNS, [codec.hop_row(h, ids) for h in batch.hops]),
                ("decisions", codec.DECISION_COLUMNS, codec.decision_rows(batch.decisions, ids)),
                ("spans", codec.SPAN_COLUMNS, [codec.span_row(s, ids) for s in batch.spans]),
                ("logs", codec.LOG_COLUMNS, [codec.log_row(g, ids) for g in batch.logs]),
            )
            for table, columns, records in raw:
                if records:
                    await conn.copy_records_to_table(table, records=records, columns=list(columns))
            # upserts lock rows: always in the same order (by table, then key), so replicas
            # writing the same transactions and buckets wait for each other instead of deadlocking
            summaries = codec.summarize(batch, ids)
            if summaries:
                await conn.executemany(_UPSERT_SUMMARY, [s.values(sorted) for s in summaries])
            if rollups:
                keys: dict[int, tuple[Any, ...]] = {}
                rows = []
                for r in rollups:
                    key, edge = codec.edge_key(r)
                    last = keys.get(key)
                    if last is None or last[-1] < r.bucket_us:
                        keys[key] = (key, *edge.columns(), r.bucket_us)
                    rows.append(
                        (r.bucket_us, key, r.count, r.errors, r.denied, r.duration_sum_us, *r.histogram)
                    )
                await conn.executemany(_UPSERT_EDGE_KEY, [keys[k] for k in sorted(keys)])
                rows.sort(key=lambda row: (row[0], row[1]))
                await conn.executemany(_ADD_ROLLUP, rows)
                await conn.executemany(_ADD_ROLLUP_5M, codec.coarse_rows(rows))

    # -- reads -------------------------------------------------------------------------------

    async def transactions(self, query: TransactionQuery) -> list[TransactionSummary]:
        where = ["start_us >= $1"]
        params: list[Any] = [query.since_us]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.until_us:
            where.append(f"start_us < {param(query.until_us)}")
        if query.service:
            where.append(f"{param(query.service)} = ANY(names)")
        if query.namespace:
            where.append(f"{param(query.namespace)} = ANY(namespaces)")
        if query.status == "error":
            where.append("error")
        elif query.status == "denied":
            where.append("denied")
        elif query.status == "ok":
            where.append("NOT error AND NOT denied")
        elif query.status:
            raise ValueError(f"unknown transaction status {query.status!r} (error, denied or ok)")
        if query.min_duration_us:
            where.append(f"end_us - start_us >= {param(query.min_duration_us)}")
        sql = (
            f"SELECT {', '.join(codec.SUMMARY_COLUMNS)} FROM transactions WHERE {' AND '.join(where)}"
            f" ORDER BY start_us DESC LIMIT {param(max(0, query.limit))}"
        )

        async def read(conn: Any) -> list[TransactionSummary]:
            return [_summary(r) for r in await conn.fetch(sql, *params)]

        return await self._call(read, retry=True)

    async def transaction(self, transaction_id: str) -> TransactionRecords | None:
        key = codec.pack_id(transaction_id)
        if key is None:
            return None

        async def read(conn: Any) -> TransactionRecords | None:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                hops = [
                    codec.hop_from_row(r)
                    for r in await conn.fetch(
                        f"SELECT {', '.join(codec.HOP_COLUMNS)} FROM hops WHERE txn = $1"
                        f" ORDER BY start_us LIMIT {_LIMIT}",
                        key,
                    )
                ]
                decisions = [
                    codec.decision_from_row(r)
                    for r in await conn.fetch(
                        f"SELECT {', '.join(codec.DECISION_COLUMNS)} FROM decisions WHERE txn = $1"
                        f" ORDER BY time_us LIMIT {_LIMIT}",
                        key,
                    )
                ]
                traces = {codec.pack_id(h.trace_id) for h in hops if h.trace_id}
                traces.update(
                    r[0]
                    for r in await conn.fetch("SELECT DISTINCT trace_id FROM spans WHERE txn = $1", key)
                    if r[0]
                )
                trace_list = sorted(t for t in traces if t is not None)
                spans = [
                    codec.span_from_row(r)
                    for r in await conn.fetch(
                        f"SELECT {', '.join(codec.SPAN_COLUMNS)} FROM spans"
                        f" WHERE txn = $1 OR trace_id = ANY($2::bytea[]) ORDER BY start_us LIMIT {_LIMIT}",
                        key,
                        trace_list,
                    )
                ]
                logs = [
                    codec.log_from_row(r)
                    for r in await conn.fetch(
                        f"SELECT {', '.join(codec.LOG_COLUMNS)} FROM logs"
                        f" WHERE txn = $1 OR trace_id = ANY($2::bytea[]) ORDER BY time_us LIMIT {_LIMIT}",
                        key,
                        trace_list,
                    )
                ]
            if not (hops or decisions or spans or logs):
                return None
            return TransactionRecords(transaction_id, hops, decisions, spans, logs)

        return await self._call(read, retry=True)

    async def decisions(self, query: DecisionQuery) -> list[Decision]:
        where = ["time_us >= $1"]
        params: list[Any] = [query.since_us]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.until_us:
            where.append(f"time_us < {param(query.until_us)}")
        if query.verdict is not None:
            where.append(f"verdict = {param(str(query.verdict))}")
            if query.verdict != "allow":
                where.append("verdict <> 'allow'")
        if query.rule:
            where.append(f"rule = {param(query.rule)} AND rule <> ''")
        sql = (
            f"SELECT {', '.join(codec.DECISION_COLUMNS)} FROM decisions WHERE {' AND '.join(where)}"
            f" ORDER BY time_us DESC LIMIT {param(max(0, query.limit))}"
        )

        async def read(conn: Any) -> list[Decision]:
            return [codec.decision_from_row(r) for r in await conn.fetch(sql, *params)]

        return await self._call(read, retry=True)

    async def _edge_keys(self, conn: Any, keys: Iterable[int]) -> dict[int, codec.EdgeKey]:
        missing = [k for k in set(keys) if k not in self._keys]
        if missing:
            for r in await conn.fetch(
                f"SELECT {', '.join(codec.EDGE_KEY_COLUMNS[:-1])} FROM edge_keys WHERE key = ANY($1::bigint[])",
                missing,
            ):
                self._keys[r[0]] = codec.EdgeKey.from_columns(tuple(r)[1:])
        return self._keys

    async def edges(
        self, since_us: int, until_us: int, namespaces: Sequence[str], step_us: int = 0
    ) -> list[EdgeRollup]:
        wanted = set(namespaces)
        if step_us > 0:
            sql = (
                f"SELECT $1::bigint + ((bucket_us - $1) / $2::bigint) * $2 AS b, key, {_SUMS} FROM edge_rollups"
                " WHERE bucket_us >= $1 AND bucket_us < $3 GROUP BY b, key"
            )
            params: tuple[int, ...] = (since_us, step_us, until_us)
        else:
            sql = f"SELECT {', '.join(codec.ROLLUP_COLUMNS)} FROM edge_rollups WHERE bucket_us >= $1 AND bucket_us < $2"
            params = (since_us, until_us)

        async def whole_window(conn: Any) -> list[Any]:
            """One step over the window: 5-min rollups where they fit, 10-s ones at the ends."""
            parts = []
            for coarse, low, high in codec.window_parts(since_us, until_us):
                table = "edge_rollups_5m" if coarse else "edge_rollups"
                parts += await conn.fetch(
                    f"SELECT key, {_SUMS} FROM {table} WHERE bucket_us >= $1 AND bucket_us < $2 GROUP BY key",
                    low,
                    high,
                )
            return [(since_us, key, *sums) for key, sums in codec.add_up(parts).items()]

        async def read(conn: Any) -> list[EdgeRollup]:
            if step_us >= until_us - since_us > 0:
                rows = await whole_window(conn)
            else:
                rows = await conn.fetch(sql, *params)
            keys = await self._edge_keys(conn, (r[1] for r in rows))
            out = []
            for r in rows:
                edge = keys.get(r[1])
                if edge is None:
                    continue  # its key was pruned meanwhile
                if (
                    wanted
                    and edge.source.namespace not in wanted
                    and edge.destination.namespace not in wanted
                ):
                    continue
                out.append(codec.rollup_from_row(r[0], edge, tuple(r)[2:]))
            out.sort(key=lambda e: (e.bucket_us, e.reporter, e.source.workload, e.destination.workload))
            return out

        return await self._call(read, retry=True)

    async def service_buckets(
        self, namespace: str, service: str, since_us: int, until_us: int, step_us: int
    ) -> list[ServiceBucket]:
        step = max(1, step_us)

        async def read(conn: Any) -> list[ServiceBucket]:
            keys = [
                r[0]
                for r in await conn.fetch(
                    "SELECT key FROM edge_keys WHERE dst_namespace = $1"
                    " AND (dst_service = $2 OR split_part(dst_service, '.', 1) = $2)",
                    namespace,
                    service,
                )
            ]
            edges = await self._edge_keys(conn, keys)
            keys = [k for k in keys if codec.matches_service(edges[k].destination, service)]
            rows = await conn.fetch(
                f"SELECT $1::bigint + ((bucket_us - $1) / $2::bigint) * $2 AS b, key, {_SUMS} FROM edge_rollups"
                " WHERE key = ANY($4::bigint[]) AND bucket_us >= $1 AND bucket_us < $3 GROUP BY b, key",
                since_us,
                step,
                until_us,
                keys,
            )
            return codec.merge_service_buckets((r[0], edges[r[1]], tuple(r)[2:]) for r in rows)

        return await self._call(read, retry=True)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, *, older_than_us: int, max_rows: int) -> int:
        return await self._call(lambda conn: self._prune(conn, older_than_us, max_rows), retry=True)

    @staticmethod
    async def _prune(conn: Any, older_than_us: int, max_rows: int) -> int:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _PRUNE_LOCK):
            return 0  # another replica is pruning
        try:
            cutoffs: dict[str, int] = {}
            for table, column in _TIMED:
                cutoff = older_than_us
                if max_rows > 0:
                    count = await conn.fetchval(f"SELECT count(*) FROM {table}")
                    if count > max_rows:
                        at = await conn.fetchval(
                            f"SELECT {column} FROM {table} ORDER BY {column} OFFSET $1 LIMIT 1",
                            count - max_rows,
                        )
                        cutoff = max(cutoff, at or 0)
                cutoffs[table] = cutoff

            async def chunks(sql: str, *args: Any) -> int:
                total = 0
                while True:
                    n = _deleted(await conn.execute(sql, *args, _PRUNE_CHUNK))
                    total += n
                    if n < _PRUNE_CHUNK:
                        return total

            removed = 0
            # a transaction whose hops all go (it ended before the hops' cutoff) goes whole: its
            # decisions, spans and logs with it
            txn_cutoff = cutoffs["hops"]
            for table in ("decisions", "spans", "logs"):
                removed += await chunks(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT x.ctid FROM transactions t"
                    f" JOIN {table} x ON x.txn = t.id WHERE t.start_us < $1 AND t.end_us < $1 LIMIT $2))",
                    txn_cutoff,
                )
            await chunks(
                "DELETE FROM transactions WHERE ctid = ANY(ARRAY(SELECT ctid FROM transactions"
                " WHERE start_us < $1 AND end_us < $1 LIMIT $2))",
                txn_cutoff,
            )
            for table, column in _TIMED:
                removed += await chunks(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table}"
                    f" WHERE {column} < $1 LIMIT $2))",
                    cutoffs[table],
                )
            await chunks(
                "DELETE FROM edge_rollups WHERE ctid = ANY(ARRAY(SELECT ctid FROM edge_rollups"
                " WHERE bucket_us < $1 LIMIT $2))",
                older_than_us,
            )
            await chunks(
                "DELETE FROM edge_rollups_5m WHERE ctid = ANY(ARRAY(SELECT ctid FROM edge_rollups_5m"
                " WHERE bucket_us < $1 LIMIT $2))",
                older_than_us - codec.COARSE_US,
            )
            await chunks(
                "DELETE FROM edge_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM edge_keys WHERE last_us < $1 LIMIT $2))",
                older_than_us - codec.COARSE_US,
            )
            return removed
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _PRUNE_LOCK)


def _summary(r: Any) -> TransactionSummary:
    row = codec.SummaryRow(
        id=bytes(r[0]),
        start_us=r[1],
        end_us=r[2],
        root=Peer(*tuple(r)[3:9]),
        src_hops=r[9],
        dst_hops=r[10],
        unk_hops=r[11],
        services=set(r[12]),
        error=r[15],
        denied=r[16],
    )
    return row.to_summary()
