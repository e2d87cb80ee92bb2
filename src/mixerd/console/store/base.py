"""The store contract: every backend (SQLite, PostgreSQL) implements :class:`ConsoleStore`, and one
test suite (``tests/integration/test_console_store.py``) runs against each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mixerd.console.model import Batch, Decision, Hop, LogRecord, Peer, Span, Verdict

__all__ = [
    "ConsoleStore",
    "DecisionQuery",
    "EdgeRollup",
    "ServiceBucket",
    "StoreUnavailable",
    "TransactionQuery",
    "TransactionRecords",
    "TransactionSummary",
]


class StoreUnavailable(Exception):
    """The backing database cannot be reached or refused the operation; the message says which and
    carries no credentials. The API answers 503 with it; the writer keeps the batch queued."""


@dataclass(frozen=True, slots=True)
class TransactionQuery:
    service: str = ""
    """A destination service host or workload name that some hop of the transaction touched."""
    namespace: str = ""
    status: str = ""
    """``error``, ``denied``, ``ok`` or empty (any)."""
    min_duration_us: int = 0
    since_us: int = 0
    until_us: int = 0
    """0: no upper bound."""
    limit: int = 100


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    id: str
    start_us: int
    end_us: int
    root: Peer
    """Approximated at write time: the source of the earliest hop, or its destination when the
    source is unknown (outside the mesh). The detail endpoint rebuilds the exact tree."""
    hops: int
    """Calls, estimated as max(records reported by sources, records reported by destinations)."""
    services: tuple[str, ...]
    error: bool
    denied: bool


@dataclass(frozen=True, slots=True)
class TransactionRecords:
    id: str
    hops: list[Hop]
    decisions: list[Decision]
    spans: list[Span]
    logs: list[LogRecord]


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    since_us: int = 0
    until_us: int = 0
    verdict: Verdict | None = None
    rule: str = ""
    limit: int = 100


@dataclass(frozen=True, slots=True)
class EdgeRollup:
    """Hops of one edge, one reporter kind, one protocol and one response code in one time bucket."""

    bucket_us: int
    """Start of the bucket (a multiple of the rollup interval, 10 s)."""
    reporter: str
    source: Peer
    """namespace / workload / app / version (service and principal empty)."""
    destination: Peer
    """namespace / workload / app / version / service (principal empty)."""
    protocol: str
    response_code: int
    count: int
    errors: int
    denied: int
    duration_sum_us: int
    histogram: tuple[int, ...]
    """Counts per ``stats.BOUNDS_MS`` bucket plus +Inf."""


@dataclass(frozen=True, slots=True)
class ServiceBucket:
    """RED figures of one destination service version in one step (from destination-reported hops,
    or source-reported ones where no destination report exists)."""

    bucket_us: int
    version: str
    count: int
    errors: int
    histogram: tuple[int, ...] = field(default=())


class ConsoleStore(Protocol):
    """A console database. All methods raise :class:`StoreUnavailable` when the database cannot
    be used; none raises for data it was given by the writer."""

    url_for_display: str
    """The store's URL with any password removed."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema (a version table records which)."""

    async def close(self) -> None: ...

    async def write(self, batch: Batch, rollups: Sequence[EdgeRollup]) -> None:
        """Store raw records and add ``rollups`` to the stored rollups (counts add up, so several
        replicas may write the same bucket), in one database transaction."""

    async def transactions(self, query: TransactionQuery) -> list[TransactionSummary]:
        """Newest first."""

    async def transaction(self, transaction_id: str) -> TransactionRecords | None:
        """Every record with that correlation key (spans and logs also by a trace id that one of its
        hops carried), or None when nothing has it."""

    async def decisions(self, query: DecisionQuery) -> list[Decision]:
        """Newest first."""

    async def edges(
        self, since_us: int, until_us: int, namespaces: Sequence[str], step_us: int = 0
    ) -> list[EdgeRollup]:
        """Rollups of buckets that start in [since_us, until_us) whose source or destination
        namespace is in ``namespaces`` (all namespaces when empty). With ``step_us`` > 0 the rollups
        of one edge (reporter, source, destination, protocol, code) are merged per step, in the
        database, with ``bucket_us = since_us + k * step_us``: ``step_us = until_us - since_us``
        gives one rollup per edge and code for the whole window, which is what a graph needs (an
        hour of 100 services is ~10^5 stored 10-s rollups, too many to read one by one)."""

    async def service_buckets(
        self, namespace: str, service: str, since_us: int, until_us: int, step_us: int
    ) -> list[ServiceBucket]:
        """Rollups of one destination service (host, or its short name) merged per ``step_us``."""

    async def prune(self, *, older_than_us: int, max_rows: int) -> int:
        """Delete records older than ``older_than_us`` and then the oldest hops beyond ``max_rows``
        (with their transactions' other records when the whole transaction goes); the count removed.
        Decisions, spans and logs are each kept to ``max_rows`` the same way (decisions are recorded
        even when no hops are). ``max_rows`` <= 0: no size bound."""
