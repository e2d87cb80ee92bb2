"""The embedded console store: one SQLite file in WAL mode.

One writer connection on a dedicated thread (every write, migration and prune runs there, one at a
time) and one read-only connection on a second thread, so the event loop never waits on SQLite and
readers never wait on the writer. Ids are stored as compact BLOBs (``_codec.pack_id``); raw records
go in ``hop_groups`` (the hops of one transaction id that one batch brings, in one row: see
``_codec.hop_groups``), ``decisions``, ``spans``, ``logs``; ``transactions`` holds one summary row per
correlation key, upserted with each batch, which also lists the rowids of the key's hop groups
(``group_rowids``: the hop groups need no index by key); ``edge_rollups`` holds 10-s RED rollups
keyed by a hash of the edge (``edge_keys``), added up on conflict, and ``edge_rollups_5m`` the same
per 5 minutes (what a graph over a long window reads). Errors of SQLite (locked, disk full, not a
database ...) become :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from mixerd.console.model import Batch, Decision, Hop, Peer
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

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger("mixerd.console")

T = TypeVar("T")

_HIST = ", ".join(f"{c} INTEGER NOT NULL" for c in codec.HISTOGRAM_COLUMNS)

# Each migration is applied once, in one transaction, in version order; never edit a released one.
_MIGRATIONS: Final[dict[int, str]] = {
    1: f"""
CREATE TABLE hops (
    txn BLOB, start_us INTEGER NOT NULL, duration_us INTEGER NOT NULL, reporter INTEGER NOT NULL,
    src_namespace TEXT NOT NULL, src_workload TEXT NOT NULL, src_app TEXT NOT NULL,
    src_version TEXT NOT NULL, src_service TEXT NOT NULL, src_principal TEXT NOT NULL,
    dst_namespace TEXT NOT NULL, dst_workload TEXT NOT NULL, dst_app TEXT NOT NULL,
    dst_version TEXT NOT NULL, dst_service TEXT NOT NULL, dst_principal TEXT NOT NULL,
    protocol TEXT NOT NULL, method TEXT NOT NULL, host TEXT NOT NULL, path TEXT NOT NULL,
    code INTEGER NOT NULL, flags TEXT NOT NULL, request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    request_id BLOB, trace_id BLOB, span_id BLOB, parent_span_id BLOB
);
CREATE INDEX hops_txn ON hops (txn) WHERE txn IS NOT NULL;
CREATE INDEX hops_start ON hops (start_us);

CREATE TABLE decisions (
    time_us INTEGER NOT NULL, frontend TEXT NOT NULL, verdict TEXT NOT NULL,
    status_code INTEGER NOT NULL, message TEXT NOT NULL, txn BLOB,
    src_namespace TEXT NOT NULL, src_workload TEXT NOT NULL, src_app TEXT NOT NULL,
    src_version TEXT NOT NULL, src_service TEXT NOT NULL, src_principal TEXT NOT NULL,
    dst_namespace TEXT NOT NULL, dst_workload TEXT NOT NULL, dst_app TEXT NOT NULL,
    dst_version TEXT NOT NULL, dst_service TEXT NOT NULL, dst_principal TEXT NOT NULL,
    rule TEXT NOT NULL, handler TEXT NOT NULL, quotas TEXT, attributes TEXT, request_id BLOB,
    method TEXT NOT NULL, host TEXT NOT NULL, path TEXT NOT NULL, duration_us INTEGER NOT NULL
);
CREATE INDEX decisions_time ON decisions (time_us);
CREATE INDEX decisions_verdict ON decisions (verdict, time_us) WHERE verdict <> 'allow';
CREATE INDEX decisions_rule ON decisions (rule, time_us) WHERE rule <> '';
CREATE INDEX decisions_txn ON decisions (txn) WHERE txn IS NOT NULL;

CREATE TABLE spans (
    trace_id BLOB, span_id BLOB, parent_span_id BLOB, name TEXT NOT NULL, service TEXT NOT NULL,
    start_us INTEGER NOT NULL, duration_us INTEGER NOT NULL, txn BLOB, kind TEXT NOT NULL,
    status TEXT NOT NULL, attributes TEXT
);
CREATE INDEX spans_trace ON spans (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX spans_txn ON spans (txn) WHERE txn IS NOT NULL;
CREATE INDEX spans_start ON spans (start_us);

CREATE TABLE logs (
    time_us INTEGER NOT NULL, service TEXT NOT NULL, severity TEXT NOT NULL, body TEXT NOT NULL,
    trace_id BLOB, span_id BLOB, txn BLOB, attributes TEXT
);
CREATE INDEX logs_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX logs_txn ON logs (txn) WHERE txn IS NOT NULL;
CREATE INDEX logs_time ON logs (time_us);

CREATE TABLE transactions (
    id BLOB PRIMARY KEY, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
    root_namespace TEXT NOT NULL, root_workload TEXT NOT NULL, root_app TEXT NOT NULL,
    root_version TEXT NOT NULL, root_service TEXT NOT NULL, root_principal TEXT NOT NULL,
    src_hops INTEGER NOT NULL, dst_hops INTEGER NOT NULL, unk_hops INTEGER NOT NULL,
    services TEXT NOT NULL, names TEXT NOT NULL, namespaces TEXT NOT NULL,
    error INTEGER NOT NULL, denied INTEGER NOT NULL
);
CREATE INDEX transactions_start ON transactions (start_us);
CREATE INDEX transactions_error ON transactions (start_us) WHERE error = 1;
CREATE INDEX transactions_denied ON transactions (start_us) WHERE denied = 1;

CREATE TABLE edge_keys (
    key INTEGER PRIMARY KEY, reporter TEXT NOT NULL,
    src_namespace TEXT NOT NULL, src_workload TEXT NOT NULL, src_app TEXT NOT NULL,
    src_version TEXT NOT NULL,
    dst_namespace TEXT NOT NULL, dst_workload TEXT NOT NULL, dst_app TEXT NOT NULL,
    dst_version TEXT NOT NULL, dst_service TEXT NOT NULL,
    protocol TEXT NOT NULL, code INTEGER NOT NULL, last_us INTEGER NOT NULL
);
CREATE TABLE edge_rollups (
    bucket_us INTEGER NOT NULL, key INTEGER NOT NULL, count INTEGER NOT NULL,
    errors INTEGER NOT NULL, denied INTEGER NOT NULL, duration_sum_us INTEGER NOT NULL, {_HIST},
    PRIMARY KEY (bucket_us, key)
) WITHOUT ROWID;
CREATE INDEX edge_rollups_key ON edge_rollups (key, bucket_us);
CREATE TABLE edge_rollups_5m (
    bucket_us INTEGER NOT NULL, key INTEGER NOT NULL, count INTEGER NOT NULL,
    errors INTEGER NOT NULL, denied INTEGER NOT NULL, duration_sum_us INTEGER NOT NULL, {_HIST},
    PRIMARY KEY (bucket_us, key)
) WITHOUT ROWID;
""",
    # hops grouped per transaction id and batch (see codec.hop_groups); the stored hops move over
    2: f"""
CREATE TABLE hop_groups (
    txn BLOB, start_us INTEGER NOT NULL, last_us INTEGER NOT NULL, hops INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX hop_groups_txn ON hop_groups (txn) WHERE txn IS NOT NULL;
CREATE INDEX hop_groups_last ON hop_groups (last_us, hops);
INSERT INTO hop_groups (txn, start_us, last_us, hops, body)
    SELECT txn, start_us, start_us, 1, mixerd_hop_group_body({", ".join(codec.HOP_COLUMNS)})
    FROM hops ORDER BY rowid;
DROP TABLE hops;
""",
    # A transaction's hop groups are found through its summary row, which lists their rowids, instead
    # of an index on hop_groups (txn): random keys inserted into a second large b-tree on every batch
    # made each commit dirty pages all over it, and the writer's cost grew with the database (from
    # ~7 to ~12 us a hop at 1M hops).
    3: """
ALTER TABLE transactions ADD COLUMN group_rowids TEXT NOT NULL DEFAULT '';
UPDATE transactions SET group_rowids = coalesce(
    (SELECT group_concat(g, ',')
     FROM (SELECT rowid AS g FROM hop_groups WHERE txn = transactions.id ORDER BY rowid)),
    '');
DROP INDEX hop_groups_txn;
""",
}
SCHEMA_VERSION: Final = max(_MIGRATIONS)

_PRUNE_CHUNK: Final = 5_000
"""Rows deleted per writer-thread job, so a big prune never holds up writes for long."""


def _qmarks(n: int) -> str:
    return ", ".join("?" * n)


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_qmarks(len(columns))})"


_INSERT_DECISION: Final = _insert("decisions", codec.DECISION_COLUMNS)
_INSERT_SPAN: Final = _insert("spans", codec.SPAN_COLUMNS)
_INSERT_LOG: Final = _insert("logs", codec.LOG_COLUMNS)

_MAX_PARAMS: Final = 999
"""Values bound to one statement at most: SQLite's smallest compiled-in limit, so any build takes it."""


@functools.lru_cache(maxsize=64)
def _rows_sql(head: str, width: int, n: int, tail: str) -> str:
    return f"{head} VALUES {', '.join([f'({_qmarks(width)})'] * n)}{tail}"


def _execute_rows(
    conn: sqlite3.Connection, head: str, width: int, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """``head VALUES (...), (...) ... tail`` over ``rows`` (each ``width`` values), as many rows per
    statement as ``_MAX_PARAMS`` allows: one statement run per ~50 rows instead of one per row (a
    sixth less of the writer's SQLite time for hop groups and summaries)."""
    per = max(1, _MAX_PARAMS // width)
    flat = itertools.chain.from_iterable
    for i in range(0, len(rows), per):
        part = rows[i : i + per]
        conn.execute(_rows_sql(head, width, len(part), tail), list(flat(part)))


_HOP_GROUP_HEAD: Final = f"INSERT INTO hop_groups (rowid, {', '.join(codec.HOP_GROUP_COLUMNS)})"
_GROUP_ROWIDS_MAX: Final = 65_536
"""Characters of a summary row's list of hop group rowids (``group_rowids``: decimal,
comma-separated, in the order written) past which later groups are no longer added: 5,000 groups or
more, when a transaction's detail shows its earliest ``MAX_RECORDS_PER_TRANSACTION`` hops anyway. Only a key
that recurs for hours (a constant header) reaches it; its later hops stay in the graph and the
rollups."""
_ROOT = ("root_namespace", "root_workload", "root_app", "root_version", "root_service", "root_principal")
_SET_TEXT_MAX: Final = 2048
"""Characters a stored set may reach by appending before it is rewritten without duplicates."""
_SUMMARY_HEAD: Final = f"INSERT INTO transactions ({', '.join(codec.SUMMARY_COLUMNS)}, group_rowids)"
_UPSERT_SUMMARY_TAIL: Final = (
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = CASE WHEN excluded.start_us < start_us THEN excluded.{c} ELSE {c} END" for c in _ROOT)
    + ", start_us = min(start_us, excluded.start_us), end_us = max(end_us, excluded.end_us)"
    + ", src_hops = src_hops + excluded.src_hops, dst_hops = dst_hops + excluded.dst_hops"
    + ", unk_hops = unk_hops + excluded.unk_hops"
    + "".join(
        # Sets merge in SQL: members already held (the same set again, or any whose encoded text
        # the stored one contains) change nothing; others are appended (the text may then hold a
        # member twice and out of order, which neither instr() nor reading minds); only a text
        # grown past _SET_TEXT_MAX is rewritten sorted and deduplicated by mixerd_union.
        f", {c} = CASE WHEN instr({c}, excluded.{c}) > 0 THEN {c} WHEN {c} = '' THEN excluded.{c}"
        f" WHEN length({c}) + length(excluded.{c}) <= {_SET_TEXT_MAX} THEN {c} || substr(excluded.{c}, 2)"
        f" ELSE mixerd_union({c}, excluded.{c}) END"
        for c in ("services", "names", "namespaces")
    )
    + ", error = max(error, excluded.error), denied = max(denied, excluded.denied)"
    + ", group_rowids = CASE WHEN excluded.group_rowids = '' THEN group_rowids"
    + " WHEN group_rowids = '' THEN excluded.group_rowids"
    + f" WHEN length(group_rowids) < {_GROUP_ROWIDS_MAX} THEN group_rowids || ',' || excluded.group_rowids"
    + " ELSE group_rowids END"
)
_UPSERT_EDGE_KEY: Final = (
    _insert("edge_keys", codec.EDGE_KEY_COLUMNS)
    + " ON CONFLICT (key) DO UPDATE SET last_us = max(last_us, excluded.last_us)"
)
_ADD_ROLLUP, _ADD_ROLLUP_5M = (
    _insert(table, codec.ROLLUP_COLUMNS)
    + " ON CONFLICT (bucket_us, key) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in codec.ROLLUP_COLUMNS[2:])
    for table in ("edge_rollups", "edge_rollups_5m")
)
_SUMS: Final = ", ".join(f"sum({c})" for c in codec.ROLLUP_COLUMNS[2:])
_LIMIT: Final = codec.MAX_RECORDS_PER_TRANSACTION


def _encode_set(values: Iterable[str]) -> str:
    """``{"a", "b"}`` -> ``"\\x1fa\\x1fb\\x1f"`` (sorted), so ``instr(col, '\\x1fa\\x1f')`` finds a member."""
    members = sorted(values)
    if not members:
        return ""
    joined = codec.SEP.join(members)
    if joined.count(codec.SEP) != len(members) - 1:  # a member holding the separator: drop it from it
        joined = codec.SEP.join(sorted({m.replace(codec.SEP, "") for m in members}))
    return codec.SEP + joined + codec.SEP


class _SetEncoder(dict[frozenset[str], str]):
    """``_encode_set`` with a memory, for one batch: transactions along the same path of calls
    have the same sets."""

    def __init__(self) -> None:
        super().__init__()
        self._paths: dict[int, tuple[str, str, str]] = {}
        """A summary's three sets encoded, by the identity of its ``path`` (the rows keep it alive)."""

    def __call__(self, values: set[str]) -> str:
        key = frozenset(values)
        found = self.get(key)
        if found is None:
            found = self[key] = _encode_set(key)
        return found

    def row(self, s: codec.SummaryRow) -> tuple[Any, ...]:
        """``s.values`` with its sets encoded once per path of calls."""
        path = s.path
        if path is None:
            return s.values(self)
        sets = self._paths.get(id(path))
        if sets is None:
            sets = self._paths[id(path)] = (self(s.services), self(s.names), self(s.namespaces))
        return s.values(self, sets)


def _like_prefix(service: str) -> str:
    """A LIKE pattern for the hosts whose first label is ``service``."""
    return service.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"


def _decode_set(text: str) -> tuple[str, ...]:
    return tuple(m for m in text.split(codec.SEP) if m)


def _union(a: str | None, b: str | None) -> str:
    if not a:
        return b or ""
    if not b or a == b:
        return a
    return _encode_set({*_decode_set(a), *_decode_set(b)})


class SQLiteStore:
    """A :class:`~mixerd.console.store.base.ConsoleStore` in one SQLite file (created with its
    directory when missing)."""

    def __init__(self, path: str | Path, *, cache_mib: int = 64) -> None:
        self.path = Path(path)
        self.url_for_display = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite://{path}"
        self._cache_mib = cache_mib
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._wexec: ThreadPoolExecutor | None = None
        self._rexec: ThreadPoolExecutor | None = None
        self._keys: dict[int, codec.EdgeKey] = {}
        """Edge keys by hash, read by the reader thread (content-addressed: never stale)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._wexec = ThreadPoolExecutor(1, thread_name_prefix="console-sqlite-writer")
        self._rexec = ThreadPoolExecutor(1, thread_name_prefix="console-sqlite-reader")
        try:
            self._writer = await self._run(self._wexec, self._open_writer)
            self._reader = await self._run(self._rexec, self._open_reader)
        except BaseException:
            await self.close()
            raise

    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create its directory: {exc}") from exc
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{self._cache_mib * 1024}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.create_function("mixerd_union", 2, _union, deterministic=True)
            conn.create_function("mixerd_hop_group_body", len(codec.HOP_COLUMNS), codec.hop_group_body)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_us INTEGER)"
            )
            current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise sqlite3.OperationalError(
                    f"its schema is version {current}, newer than this mixerd knows ({SCHEMA_VERSION})"
                )
            for version in sorted(v for v in _MIGRATIONS if v > current):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?)", (version, int(time.time() * 1_000_000))
                )
                log.info("console store %s: schema migrated to version %d", self.url_for_display, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _open_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA cache_size = -16384")
        return conn

    async def close(self) -> None:
        for attr, executor in (("_reader", self._rexec), ("_writer", self._wexec)):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None and executor is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(executor, conn.close)
                except sqlite3.Error as exc:
                    log.warning("console store %s: close: %s", self.url_for_display, exc)
        for executor in (self._rexec, self._wexec):
            if executor is not None:
                executor.shutdown(wait=False)
        self._rexec = self._wexec = None

    async def schema_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])

        return await self._read(read)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"console store {self.url_for_display}: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn, executor = self._writer, self._wexec
        if conn is None or executor is None:
            raise StoreUnavailable(f"console store {self.url_for_display} is not open")
        return await self._run(executor, functools.partial(fn, conn))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn, executor = self._reader, self._rexec
        if conn is None or executor is None:
            raise StoreUnavailable(f"console store {self.url_for_display} is not open")

        def in_snapshot(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(executor, functools.partial(in_snapshot, conn))

    # -- writes ------------------------------------------------------------------------------

    async def write(self, batch: Batch, rollups: Sequence[EdgeRollup]) -> None:
        if not len(batch) and not rollups:
            return
        try:
            await self._write(functools.partial(self._write_batch, batch, rollups))
        except (UnicodeEncodeError, OverflowError):
            # a value SQLite cannot take (a lone surrogate, an integer beyond 64 bits): the
            # transaction rolled back; store the batch with those values made storable
            clean = codec.sanitize_batch(batch), codec.sanitize_rollups(rollups)
            await self._write(functools.partial(self._write_batch, *clean))

    @staticmethod
    def _write_batch(batch: Batch, rollups: Sequence[EdgeRollup], conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = codec.PackCache()
            groups = codec.group_hops(batch.hops)
            hop_summaries: dict[bytes, codec.SummaryRow] = {}
            rowids: dict[bytes | None, str] = {}
            """Each transaction's hop group of this batch, by packed id: its rowid, as its summary
            row lists it."""
            if groups:
                group_rows = codec.hop_group_rows(groups, ids, hop_summaries)
                # rowids given, not left to SQLite, so the summaries can name them: after the
                # largest one (the writer lock is held), in order, so rows are still appended
                last = conn.execute("SELECT coalesce(max(rowid), 0) FROM hop_groups").fetchone()[0]
                numbered = [(last + i, *row) for i, row in enumerate(group_rows, 1)]
                rowids = {row[1]: str(row[0]) for row in numbered}
                _execute_rows(conn, _HOP_GROUP_HEAD, len(codec.HOP_GROUP_COLUMNS) + 1, numbered)
            if batch.decisions:
                conn.executemany(_INSERT_DECISION, codec.decision_rows(batch.decisions, ids))
            if batch.spans:
                conn.executemany(_INSERT_SPAN, [codec.span_row(s, ids) for s in batch.spans])
            if batch.logs:
                conn.executemany(_INSERT_LOG, [codec.log_row(g, ids) for g in batch.logs])
            summaries = codec.summarize(batch, ids, hop_summaries=hop_summaries)
            if summaries:
                encode = _SetEncoder()
                get = rowids.get
                _execute_rows(
                    conn,
                    _SUMMARY_HEAD,
                    len(codec.SUMMARY_COLUMNS) + 1,
                    [(*encode.row(s), get(s.id, "")) for s in summaries],
                    _UPSERT_SUMMARY_TAIL,
                )
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
                conn.executemany(_UPSERT_EDGE_KEY, [keys[k] for k in sorted(keys)])
                conn.executemany(_ADD_ROLLUP, rows)
                conn.executemany(_ADD_ROLLUP_5M, codec.coarse_rows(rows))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reads -------------------------------------------------------------------------------

    async def transactions(self, query: TransactionQuery) -> list[TransactionSummary]:
        where = ["start_us >= ?"]
        params: list[Any] = [query.since_us]
        if query.until_us:
            where.append("start_us < ?")
            params.append(query.until_us)
        if query.service:
            where.append("instr(names, ?) > 0")
            params.append(_encode_set([query.service]))
        if query.namespace:
            where.append("instr(namespaces, ?) > 0")
            params.append(_encode_set([query.namespace]))
        if query.status == "error":
            where.append("error = 1")
        elif query.status == "denied":
            where.append("denied = 1")
        elif query.status == "ok":
            where.append("error = 0 AND denied = 0")
        elif query.status:
            raise ValueError(f"unknown transaction status {query.status!r} (error, denied or ok)")
        if query.min_duration_us:
            where.append("end_us - start_us >= ?")
            params.append(query.min_duration_us)
        sql = (
            f"SELECT {', '.join(codec.SUMMARY_COLUMNS)} FROM transactions WHERE {' AND '.join(where)}"
            " ORDER BY start_us DESC LIMIT ?"
        )
        params.append(max(0, query.limit))

        def read(conn: sqlite3.Connection) -> list[TransactionSummary]:
            return [_summary(r) for r in conn.execute(sql, params)]

        return await self._read(read)

    async def transaction(self, transaction_id: str) -> TransactionRecords | None:
        key = codec.pack_id(transaction_id)
        if key is None:
            return None
        columns = {
            "decisions": ", ".join(codec.DECISION_COLUMNS),
            "spans": ", ".join(codec.SPAN_COLUMNS),
            "logs": ", ".join(codec.LOG_COLUMNS),
        }

        def read(conn: sqlite3.Connection) -> TransactionRecords | None:
            hops = _earliest_hops(conn, key, transaction_id)
            decisions = [
                codec.decision_from_row(r)
                for r in conn.execute(
                    f"SELECT {columns['decisions']} FROM decisions WHERE txn = ? ORDER BY time_us LIMIT {_LIMIT}",
                    (key,),
                )
            ]
            traces = {codec.pack_id(h.trace_id) for h in hops if h.trace_id}
            traces.update(
                r[0]
                for r in conn.execute("SELECT DISTINCT trace_id FROM spans WHERE txn = ?", (key,))
                if r[0]
            )
            trace_list = sorted(t for t in traces if t is not None)
            by_trace = f" OR trace_id IN ({_qmarks(len(trace_list))})" if trace_list else ""
            spans = [
                codec.span_from_row(r)
                for r in conn.execute(
                    f"SELECT {columns['spans']} FROM spans WHERE txn = ?{by_trace}"
                    f" ORDER BY start_us LIMIT {_LIMIT}",
                    (key, *trace_list),
                )
            ]
            logs = [
                codec.log_from_row(r)
                for r in conn.execute(
                    f"SELECT {columns['logs']} FROM logs WHERE txn = ?{by_trace} ORDER BY time_us LIMIT {_LIMIT}",
                    (key, *trace_list),
                )
            ]
            if not (hops or decisions or spans or logs):
                return None
            return TransactionRecords(transaction_id, hops, decisions, spans, logs)

        return await self._read(read)

    async def decisions(self, query: DecisionQuery) -> list[Decision]:
        where = ["time_us >= ?"]
        params: list[Any] = [query.since_us]
        if query.until_us:
            where.append("time_us < ?")
            params.append(query.until_us)
        if query.verdict is not None:
            where.append("verdict = ?")
            params.append(str(query.verdict))
            if query.verdict != "allow":
                where.append("verdict <> 'allow'")  # lets SQLite use the partial index
        if query.rule:
            where.append("rule = ? AND rule <> ''")
            params.append(query.rule)
        sql = (
            f"SELECT {', '.join(codec.DECISION_COLUMNS)} FROM decisions WHERE {' AND '.join(where)}"
            " ORDER BY time_us DESC LIMIT ?"
        )
        params.append(max(0, query.limit))

        def read(conn: sqlite3.Connection) -> list[Decision]:
            return [codec.decision_from_row(r) for r in conn.execute(sql, params)]

        return await self._read(read)

    def _edge_keys(self, conn: sqlite3.Connection, keys: Iterable[int]) -> dict[int, codec.EdgeKey]:
        """The edge keys of these hashes (reader thread), from the cache or the database."""
        missing = [k for k in set(keys) if k not in self._keys]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            for r in conn.execute(
                f"SELECT {', '.join(codec.EDGE_KEY_COLUMNS[:-1])} FROM edge_keys WHERE key IN ({_qmarks(len(chunk))})",
                chunk,
            ):
                self._keys[r[0]] = codec.EdgeKey.from_columns(r[1:])
        return self._keys

    async def edges(
        self, since_us: int, until_us: int, namespaces: Sequence[str], step_us: int = 0
    ) -> list[EdgeRollup]:
        wanted = set(namespaces)
        if step_us > 0:
            sql = (
                f"SELECT ? + ((bucket_us - ?) / ?) * ? AS b, key, {_SUMS} FROM edge_rollups"
                " WHERE bucket_us >= ? AND bucket_us < ? GROUP BY b, key"
            )
            params: tuple[int, ...] = (since_us, since_us, step_us, step_us, since_us, until_us)
        else:
            sql = (
                f"SELECT {', '.join(codec.ROLLUP_COLUMNS)} FROM edge_rollups"
                " WHERE bucket_us >= ? AND bucket_us < ?"
            )
            params = (since_us, until_us)

        def whole_window(conn: sqlite3.Connection) -> list[Any]:
            """One step over the window: 5-min rollups where they fit, 10-s ones at the ends."""
            parts = []
            for coarse, low, high in codec.window_parts(since_us, until_us):
                table = "edge_rollups_5m" if coarse else "edge_rollups"
                parts += conn.execute(
                    f"SELECT key, {_SUMS} FROM {table} WHERE bucket_us >= ? AND bucket_us < ? GROUP BY key",
                    (low, high),
                ).fetchall()
            return [(since_us, key, *sums) for key, sums in codec.add_up(parts).items()]

        def read(conn: sqlite3.Connection) -> list[EdgeRollup]:
            if step_us >= until_us - since_us > 0:
                rows = whole_window(conn)
            else:
                rows = conn.execute(sql, params).fetchall()
            keys = self._edge_keys(conn, (r[1] for r in rows))
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
                out.append(codec.rollup_from_row(r[0], edge, r[2:]))
            out.sort(key=lambda e: (e.bucket_us, e.reporter, e.source.workload, e.destination.workload))
            return out

        return await self._read(read)

    async def service_buckets(
        self, namespace: str, service: str, since_us: int, until_us: int, step_us: int
    ) -> list[ServiceBucket]:
        step = max(1, step_us)

        def read(conn: sqlite3.Connection) -> list[ServiceBucket]:
            keys = [
                r[0]
                for r in conn.execute(
                    "SELECT key FROM edge_keys WHERE dst_namespace = ?"
                    " AND (dst_service = ? OR dst_service LIKE ? ESCAPE '\\')",
                    (namespace, service, _like_prefix(service)),
                )
            ]
            edges = self._edge_keys(conn, keys)
            keys = [k for k in keys if codec.matches_service(edges[k].destination, service)]
            rows = []
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows += conn.execute(
                    f"SELECT ? + ((bucket_us - ?) / ?) * ? AS b, key, {_SUMS} FROM edge_rollups"
                    f" WHERE key IN ({_qmarks(len(chunk))}) AND bucket_us >= ? AND bucket_us < ?"
                    " GROUP BY b, key",
                    (since_us, since_us, step, step, *chunk, since_us, until_us),
                ).fetchall()
            return codec.merge_service_buckets((r[0], edges[r[1]], r[2:]) for r in rows)

        return await self._read(read)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, *, older_than_us: int, max_rows: int) -> int:
        removed = 0
        cutoffs: dict[str, int] = {}
        for table, time_column in (("hops", "last_us"), ("decisions", "time_us"), ("spans", "start_us"),
                                   ("logs", "time_us")):  # fmt: skip
            cutoff = older_than_us
            if max_rows > 0:
                size_cutoff = (
                    functools.partial(_hops_size_cutoff, max_rows)
                    if table == "hops"
                    else functools.partial(_size_cutoff, table, time_column, max_rows)
                )
                cutoff = max(cutoff, await self._write(size_cutoff))
            cutoffs[table] = cutoff
        # a transaction whose hops all go (it ended before the hops' cutoff) goes whole: its
        # decisions, spans and logs with it
        txn_cutoff = cutoffs["hops"]
        for table in ("decisions", "spans", "logs"):
            removed += await self._delete_chunks(
                f"DELETE FROM {table} WHERE rowid IN (SELECT {table}.rowid FROM transactions"
                f" JOIN {table} ON {table}.txn = transactions.id"
                " WHERE transactions.start_us < ? AND transactions.end_us < ? LIMIT ?)",
                (txn_cutoff, txn_cutoff),
            )
        await self._delete_chunks(
            "DELETE FROM transactions WHERE rowid IN"
            " (SELECT rowid FROM transactions WHERE start_us < ? AND end_us < ? LIMIT ?)",
            (txn_cutoff, txn_cutoff),
        )
        removed += await self._delete_hop_groups(cutoffs["hops"])
        for table, time_column in (("decisions", "time_us"), ("spans", "start_us"), ("logs", "time_us")):
            removed += await self._delete_chunks(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {time_column} < ? LIMIT ?)",
                (cutoffs[table],),
            )
        await self._delete_chunks(
            "DELETE FROM edge_rollups WHERE (bucket_us, key) IN"
            " (SELECT bucket_us, key FROM edge_rollups WHERE bucket_us < ? LIMIT ?)",
            (older_than_us,),
        )
        await self._delete_chunks(
            "DELETE FROM edge_rollups_5m WHERE (bucket_us, key) IN"
            " (SELECT bucket_us, key FROM edge_rollups_5m WHERE bucket_us < ? LIMIT ?)",
            (older_than_us - codec.COARSE_US,),
        )
        await self._delete_chunks(
            "DELETE FROM edge_keys WHERE key IN (SELECT key FROM edge_keys WHERE last_us < ? LIMIT ?)",
            (older_than_us - codec.COARSE_US,),
        )
        return removed

    async def _delete_hop_groups(self, cutoff: int) -> int:
        """Delete the hop groups whose hops all started before ``cutoff``; the hops they held."""

        def delete(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT rowid, hops FROM hop_groups WHERE last_us < ? LIMIT ?", (cutoff, _PRUNE_CHUNK)
                ).fetchall()
                conn.executemany("DELETE FROM hop_groups WHERE rowid = ?", [(r[0],) for r in rows])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return len(rows), sum(r[1] for r in rows)

        total = 0
        while True:
            groups, hops = await self._write(delete)
            total += hops
            if groups < _PRUNE_CHUNK:
                return total

    async def _delete_chunks(self, sql: str, params: tuple[Any, ...]) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, (*params, _PRUNE_CHUNK)).rowcount

        total = 0
        while True:
            n = await self._write(delete)
            total += n
            if n < _PRUNE_CHUNK:
                return total


def _earliest_hops(conn: sqlite3.Connection, key: bytes, transaction_id: str) -> list[Hop]:
    """The transaction's earliest ``MAX_RECORDS_PER_TRANSACTION`` hops, in start order. Groups
    come in order of their earliest hop; once the limit is reached, a later group can still hold
    an earlier hop only if it starts before the latest one kept."""
    hops: list[Hop] = []
    threshold: int | None = None
    listed = conn.execute("SELECT group_rowids FROM transactions WHERE id = ?", (key,)).fetchone()
    if listed is None or not listed[0]:
        return hops
    # a listed rowid whose group was pruned is gone; one reused since by another key's group
    # (after everything was pruned) is told apart by its key
    for start_us, body in conn.execute(
        "SELECT start_us, body FROM hop_groups WHERE rowid IN (SELECT value FROM json_each(?)) AND txn = ?"
        " ORDER BY start_us",
        (f"[{listed[0]}]", key),
    ):
        if threshold is not None and start_us > threshold:
            break
        try:
            hops += codec.hops_from_group(transaction_id, body)
        except codec.CorruptGroup as exc:
            # a damaged row: the transaction cannot be shown whole; say which and why
            raise sqlite3.DatabaseError(
                f"transaction {transaction_id!r}: a stored hop group is damaged: {exc}"
            ) from exc
        if len(hops) >= _LIMIT:
            hops.sort(key=_start)
            del hops[_LIMIT:]
            threshold = hops[-1].start_us
    hops.sort(key=_start)
    return hops


def _start(h: Hop) -> int:
    return h.start_us


def _hops_size_cutoff(max_rows: int, conn: sqlite3.Connection) -> int:
    """The time before which the hop groups hold the hops beyond the newest ``max_rows`` (0:
    none): walking the groups from the oldest, the latest start of the one that takes the count
    of hops past the excess. Both reads go through the index on (last_us, hops), and the walk stops
    there: in steady state the excess is what arrived since the previous prune."""
    total = conn.execute("SELECT coalesce(sum(hops), 0) FROM hop_groups").fetchone()[0]
    excess = total - max_rows
    if excess <= 0:
        return 0
    seen = 0
    for last_us, hops in conn.execute("SELECT last_us, hops FROM hop_groups ORDER BY last_us"):
        seen += hops
        if seen > excess:
            return int(last_us)
    return 0


def _size_cutoff(table: str, time_column: str, max_rows: int, conn: sqlite3.Connection) -> int:
    """The time before which ``table`` holds the rows beyond its newest ``max_rows`` (0: none)."""
    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    if count <= max_rows:
        return 0
    row = conn.execute(
        f"SELECT {time_column} FROM {table} ORDER BY {time_column} LIMIT 1 OFFSET ?", (count - max_rows,)
    ).fetchone()
    return int(row[0]) if row else 0


def _summary(r: Sequence[Any]) -> TransactionSummary:
    row = codec.SummaryRow(
        id=r[0],
        start_us=r[1],
        end_us=r[2],
        root=Peer(*r[3:9]),
        src_hops=r[9],
        dst_hops=r[10],
        unk_hops=r[11],
        services=set(_decode_set(r[12])),
        error=bool(r[15]),
        denied=bool(r[16]),
    )
    return row.to_summary()
