"""What the SQL backends share: records <-> rows, compact ids, the per-batch transaction summaries,
content-addressed edge keys, and making odd values storable. Nothing here touches a database."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from operator import itemgetter
from typing import Any, Final, TypeVar

from mixerd.console import stats
from mixerd.console.model import (
    Batch,
    Decision,
    Frontend,
    Hop,
    LogRecord,
    Peer,
    Reporter,
    Span,
    Verdict,
)
from mixerd.console.store.base import EdgeRollup, ServiceBucket, TransactionSummary

__all__ = [
    "DECISION_COLUMNS",
    "EDGE_KEY_COLUMNS",
    "HISTOGRAM_COLUMNS",
    "HOP_COLUMNS",
    "HOP_GROUP_COLUMNS",
    "HOP_GROUP_FIELDS",
    "HOP_GROUP_FORMAT",
    "LOG_COLUMNS",
    "MAX_RECORDS_PER_TRANSACTION",
    "ROLLUP_COLUMNS",
    "SEP",
    "SPAN_COLUMNS",
    "SUMMARY_COLUMNS",
    "CorruptGroup",
    "EdgeKey",
    "PackCache",
    "SummaryRow",
    "decision_from_row",
    "decision_row",
    "decision_rows",
    "edge_key",
    "group_hops",
    "hop_from_row",
    "hop_group_body",
    "hop_group_rows",
    "hop_groups",
    "hop_row",
    "hops_from_group",
    "log_from_row",
    "log_row",
    "merge_service_buckets",
    "pack_id",
    "sanitize_batch",
    "sanitize_rollups",
    "span_from_row",
    "span_row",
    "summarize",
    "unpack_id",
]

MAX_RECORDS_PER_TRANSACTION: Final = 10_000
"""``transaction(id)`` answers at most this many records of each kind (the earliest ones): a key that
a client reuses for hours must not make one API call read millions of rows."""

SEP: Final = "\x1f"
"""Separates the members of a set stored in one SQLite text column (``\\x1fa\\x1fb\\x1f``)."""

# ---------------------------------------------------------------------------------------------
# ids: lower-case hex (trace and span ids, hex transaction ids) and canonical lower-case UUIDs
# (Envoy's x-request-id) are stored as their bytes; anything else as UTF-8. One tag byte says
# which, so every string comes back exactly as it was given.

_HEX: Final = b"\x01"
_UUID: Final = b"\x02"
_TEXT: Final = b"\x00"


def pack_id(value: str) -> bytes | None:
    """The stored form of an id; None for an empty one."""
    if not value:
        return None
    n = len(value)
    if n % 2 == 0 and n <= 128:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if raw.hex() == value:
                return _HEX + raw
    if n == 36 and value[8] == "-" and value[13] == "-" and value[18] == "-" and value[23] == "-":
        compact = value.replace("-", "")
        try:
            raw = bytes.fromhex(compact)
        except ValueError:
            pass
        else:
            if len(raw) == 16 and raw.hex() == compact:
                return _UUID + raw
    return _TEXT + value.encode("utf-8", "surrogatepass")


class PackCache(dict[str, bytes | None]):
    """``pack_id`` with a memory, for one batch: a transaction id recurs in each of its hops (and
    is often its trace id too), a request id in both reports of a call."""

    def __missing__(self, key: str) -> bytes | None:
        value = self[key] = pack_id(key)
        return value


def unpack_id(stored: bytes | None) -> str:
    if not stored:
        return ""
    stored = bytes(stored)
    tag, raw = stored[:1], stored[1:]
    if tag == _HEX:
        return raw.hex()
    if tag == _UUID:
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return raw.decode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# records <-> rows. Column lists are in table order; both backends use the same tuples.

_PEER = ("namespace", "workload", "app", "version", "service", "principal")


def _peer_columns(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{name}" for name in _PEER)


HOP_COLUMNS: Final = (
    "txn", "start_us", "duration_us", "reporter",
    *_peer_columns("src"), *_peer_columns("dst"),
    "protocol", "method", "host", "path", "code", "flags", "request_bytes", "response_bytes",
    "request_id", "trace_id", "span_id", "parent_span_id",
)  # fmt: skip

DECISION_COLUMNS: Final = (
    "time_us", "frontend", "verdict", "status_code", "message", "txn",
    *_peer_columns("src"), *_peer_columns("dst"),
    "rule", "handler", "quotas", "attributes", "request_id", "method", "host", "path", "duration_us",
)  # fmt: skip

SPAN_COLUMNS: Final = (
    "trace_id", "span_id", "parent_span_id", "name", "service", "start_us", "duration_us", "txn",
    "kind", "status", "attributes",
)  # fmt: skip

LOG_COLUMNS: Final = (
    "time_us", "service", "severity", "body", "trace_id", "span_id", "txn", "attributes",
)  # fmt: skip

HISTOGRAM_COLUMNS: Final = tuple(f"h{i}" for i in range(len(stats.BOUNDS_MS) + 1))

EDGE_KEY_COLUMNS: Final = (
    "key", "reporter",
    "src_namespace", "src_workload", "src_app", "src_version",
    "dst_namespace", "dst_workload", "dst_app", "dst_version", "dst_service",
    "protocol", "code", "last_us",
)  # fmt: skip

ROLLUP_COLUMNS: Final = (
    "bucket_us", "key", "count", "errors", "denied", "duration_sum_us", *HISTOGRAM_COLUMNS,
)  # fmt: skip

SUMMARY_COLUMNS: Final = (
    "id", "start_us", "end_us",
    "root_namespace", "root_workload", "root_app", "root_version", "root_service", "root_principal",
    "src_hops", "dst_hops", "unk_hops", "services", "names", "namespaces", "error", "denied",
)  # fmt: skip

_REPORTER_CODE: Final = {Reporter.UNKNOWN: 0, Reporter.SOURCE: 1, Reporter.DESTINATION: 2}
_REPORTER_OF_CODE: Final = {v: k for k, v in _REPORTER_CODE.items()}


def _peer_values(p: Peer) -> tuple[str, str, str, str, str, str]:
    return (p.namespace, p.workload, p.app, p.version, p.service, p.principal)


def _peer(row: Sequence[Any], i: int) -> Peer:
    return Peer(row[i], row[i + 1], row[i + 2], row[i + 3], row[i + 4], row[i + 5])


def _json(value: Mapping[str, Any] | Sequence[str]) -> str | None:
    # ensure_ascii: the text is plain ASCII whatever the values hold (lone surrogates, NUL), so it
    # stores anywhere and json.loads gives back exactly what was given.
    return json.dumps(value, separators=(",", ":")) if value else None


def hop_row(h: Hop, ids: PackCache | None = None) -> tuple[Any, ...]:
    ids = PackCache() if ids is None else ids
    s, d = h.source, h.destination
    return (
        ids[h.transaction_id], h.start_us, h.duration_us, _REPORTER_CODE.get(h.reporter, 0),
        s.namespace, s.workload, s.app, s.version, s.service, s.principal,
        d.namespace, d.workload, d.app, d.version, d.service, d.principal,
        h.protocol, h.method, h.host, h.path, h.response_code, h.response_flags,
        h.request_bytes, h.response_bytes,
        ids[h.request_id], ids[h.trace_id], ids[h.span_id], ids[h.parent_span_id],
    )  # fmt: skip


def hop_from_row(r: Sequence[Any]) -> Hop:
    return Hop(
        start_us=r[1],
        duration_us=r[2],
        reporter=_REPORTER_OF_CODE.get(r[3], Reporter.UNKNOWN),
        source=_peer(r, 4),
        destination=_peer(r, 10),
        transaction_id=unpack_id(r[0]),
        protocol=r[16],
        method=r[17],
        host=r[18],
        path=r[19],
        response_code=r[20],
        response_flags=r[21],
        request_bytes=r[22],
        response_bytes=r[23],
        request_id=unpack_id(r[24]),
        trace_id=unpack_id(r[25]),
        span_id=unpack_id(r[26]),
        parent_span_id=unpack_id(r[27]),
    )


# ---------------------------------------------------------------------------------------------
# hop groups (SQLite): the hops of one transaction id that one batch brings, in one row. A call's
# two reports and a transaction's calls arrive close together, so a row holds several hops: one
# index entry and one bound row for them all, which is most of what storing a hop cost.
#
# The body is ``[HOP_GROUP_FORMAT, peers, hops]`` pickled (protocol 5): ``peers`` is each distinct
# peer once (its six fields, in a list of lists) pickled on its own, so the groups of a batch
# with the same peers share those bytes instead of pickling the same strings again; each hop is a
# list of ``HOP_GROUP_FIELDS`` with its source and destination as indexes into ``peers``, an id
# repeated in a group stored once (pickle references it). Only lists, strings, bytes and integers.
# Pickle because it is ten times quicker to write than JSON (about 0.5 us a hop instead of 4),
# smaller, and keeps every string and integer exactly (lone surrogates, NUL, beyond 64 bits); its
# protocols are stable. (``marshal`` writes a little faster, but is documented as unsafe on
# damaged input, and a stored row may be damaged.) It is read back by an unpickler that refuses
# every global (no class, no function), so a row, whoever wrote it, can only give lists, strings,
# bytes and numbers: nothing is called or constructed; then every value's type and every index is
# checked before it becomes a hop, and a body that does not fit is refused whole
# (:class:`CorruptGroup`). Format 1 (the peers' lists in the body itself) is still read.

HOP_GROUP_FORMAT: Final = 2
HOP_GROUP_FIELDS: Final = (
    "start_us", "duration_us", "reporter", "source", "destination", "protocol", "method", "host",
    "path", "code", "flags", "request_bytes", "response_bytes", "request_id", "trace_id", "span_id",
    "parent_span_id",
)  # fmt: skip
HOP_GROUP_COLUMNS: Final = ("txn", "start_us", "last_us", "hops", "body")
"""``start_us`` / ``last_us``: the earliest / latest start among the row's hops; ``hops``: how many."""

_HOP_GROUP_TYPES: Final = (
    int, int, int, int, int, str, str, str, str, int, str, int, int, str, str, str, str,
)  # fmt: skip
"""The type of each of ``HOP_GROUP_FIELDS`` as stored."""


class CorruptGroup(ValueError):
    """A stored hop group's body is not one this version wrote (damaged, or not a hop group)."""


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a hop group may not name {module}.{name}")


def group_hops(hops: Iterable[Hop]) -> dict[str, list[Hop]]:
    """``hops`` by transaction id (``""``: none), in order of first appearance, each list in order."""
    groups: dict[str, list[Hop]] = {}
    for h in hops:
        members = groups.get(h.transaction_id)
        if members is None:
            groups[h.transaction_id] = [h]
        else:
            members.append(h)
    return groups


def hop_groups(hops: Sequence[Hop], ids: PackCache | None = None) -> list[tuple[Any, ...]]:
    """``hops`` as ``HOP_GROUP_COLUMNS`` rows: one per transaction id (the hops without one
    together, ``txn`` NULL), in the order of their first hop, each keeping its hops' order."""
    return hop_group_rows(group_hops(hops), PackCache() if ids is None else ids)


def hop_group_rows(
    groups: Mapping[str, Sequence[Hop]],
    ids: PackCache,
    summaries: dict[bytes, SummaryRow] | None = None,
) -> list[tuple[Any, ...]]:
    """``hop_groups`` from ``group_hops``'s grouping (the hops in it must stay alive meanwhile).

    With ``summaries``, the same pass also puts each transaction's partial summary there (by
    packed id), as :func:`summarize` makes it from the hops: give that map to ``summarize``
    (``hop_summaries``) for the rest of the batch."""
    reporter_code = _REPORTER_CODE.get
    encoded_peers: dict[tuple[int, ...], bytes] = {}
    """A group's peers pickled, by their identities in order (the adapter interns peers, and the
    groups keep them alive): the transactions along one path of calls share it."""
    dumps = pickle.dumps
    names = _NameCache()
    call_of = itemgetter(3, 4)
    """A hop record's source and destination (indexes into its group's peers)."""
    paths: dict[tuple[tuple[int, ...], frozenset[tuple[int, int]]], _Names] = {}
    """What a transaction's set of calls adds to its summary, by the identities of the group's
    peers in order and its calls as pairs of their indexes: the transactions along one path of
    calls share it (and its sets, encoded once: ``SummaryRow.path``)."""
    rows = []
    for txn, members in groups.items():
        index: dict[int, int] = {}
        objects: list[Peer] = []
        records: list[list[Any]] = []
        root = members[0]
        first = last = root.start_us
        end = first + root.duration_us
        counts = [0, 0, 0]
        """Hops by reporter code (unknown, source, destination)."""
        error = denied = False
        shared: dict[str, str] = {}
        share = shared.setdefault
        """One object per distinct id string in the group: pickle writes a repeated object as a
        two-byte reference (the trace id recurs in every hop, a call's request and span ids in
        both its reports): a fifth less body to write and store."""
        for h in members:
            s, d = h.source, h.destination
            si = index.get(id(s))
            if si is None:
                si = index[id(s)] = len(objects)
                objects.append(s)
            di = index.get(id(d))
            if di is None:
                di = index[id(d)] = len(objects)
                objects.append(d)
            start, duration = h.start_us, h.duration_us
            if start < first:
                first, root = start, h
            elif start > last:
                last = start
            if start + duration > end:
                end = start + duration
            rc = reporter_code(h.reporter, 0)
            counts[rc] += 1
            code, flags = h.response_code, h.response_flags
            if code >= 500 or (code == 0 and flags):  # Hop.error
                error = True
            if flags and not denied and h.denied:
                denied = True
            records.append([
                start, duration, rc, si, di, h.protocol, h.method, h.host,
                h.path, code, flags, h.request_bytes, h.response_bytes,
                share(h.request_id, h.request_id), share(h.trace_id, h.trace_id),
                share(h.span_id, h.span_id), h.parent_span_id,
            ])  # fmt: skip
        peer_ids = tuple(index)
        peers = encoded_peers.get(peer_ids)
        if peers is None:
            peers = encoded_peers[peer_ids] = dumps([list(_peer_values(p)) for p in objects], 5)
        body = dumps([HOP_GROUP_FORMAT, peers, records], 5)
        key = ids[txn]
        rows.append((key, first, last, len(members), body))
        if summaries is not None and key is not None:
            path = (peer_ids, frozenset(map(call_of, records)))
            found = paths.get(path)
            if found is None:
                services: set[str] = set()
                named: set[str] = set()
                namespaces: set[str] = set()
                for si, di in path[1]:
                    call = names[_names_key(objects[si], objects[di])]
                    services.update(call[0])
                    named.update(call[1])
                    namespaces.update(call[2])
                found = paths[path] = (tuple(services), tuple(named), tuple(namespaces))
            summaries[key] = SummaryRow(
                key, first, end, _root_of(root.source, root.destination), counts[1], counts[2], counts[0],
                set(found[0]), set(found[1]), set(found[2]), error, denied, found,
            )  # fmt: skip
    return rows


def hops_from_group(transaction_id: str, body: bytes) -> list[Hop]:
    """The hops of a ``hop_groups`` row (none from a format this version does not know);
    :class:`CorruptGroup` when the body is not one a mixerd wrote (damaged)."""
    try:
        value = _DataOnly(io.BytesIO(body)).load()
    except Exception as exc:  # any damage: truncated, not a pickle, naming a global ...
        raise CorruptGroup(f"unreadable body ({type(exc).__name__}: {exc})") from exc
    if type(value) is not list or not value or type(value[0]) is not int:
        raise CorruptGroup("not a hop group")
    if value[0] > HOP_GROUP_FORMAT:
        return []  # written by a newer mixerd
    if value[0] not in (1, HOP_GROUP_FORMAT) or len(value) != 3:
        raise CorruptGroup(f"not a hop group of format {value[0]}")
    peer_list, records = value[1], value[2]
    if value[0] == HOP_GROUP_FORMAT:
        if type(peer_list) is not bytes:
            raise CorruptGroup("its peers are not bytes")
        try:
            peer_list = _DataOnly(io.BytesIO(peer_list)).load()
        except Exception as exc:
            raise CorruptGroup(f"unreadable peers ({type(exc).__name__}: {exc})") from exc
    if type(peer_list) is not list or type(records) is not list:
        raise CorruptGroup("its peers or hops are not a list")
    peers = []
    for p in peer_list:
        if type(p) is not list or tuple(map(type, p)) != _PEER_TYPES:
            raise CorruptGroup("a peer is not six strings")
        peers.append(Peer(*p))
    n = len(peers)
    of_code = _REPORTER_OF_CODE.get
    unknown = Reporter.UNKNOWN
    hops = []
    for r in records:
        if type(r) is not list or tuple(map(type, r)) != _HOP_GROUP_TYPES:
            raise CorruptGroup("a hop does not have the fields of its format")
        si, di = r[3], r[4]
        if not (0 <= si < n and 0 <= di < n):
            raise CorruptGroup("a hop names a peer the group does not hold")
        hops.append(Hop(r[0], r[1], of_code(r[2], unknown), peers[si], peers[di], transaction_id, *r[5:]))
    return hops


_PEER_TYPES: Final = (str,) * len(_PEER)


def hop_group_body(*row: Any) -> bytes:
    """The body of a group of one hop from its ``HOP_COLUMNS`` row (the SQLite schema 2 migration)."""
    body: bytes = hop_groups([hop_from_row(row)])[0][4]
    return body


def decision_row(d: Decision, ids: PackCache | None = None) -> tuple[Any, ...]:
    """One decision as a ``DECISION_COLUMNS`` row (:func:`decision_rows` for a batch)."""
    return decision_rows([d], PackCache() if ids is None else ids)[0]


def decision_rows(decisions: Iterable[Decision], ids: PackCache) -> list[tuple[Any, ...]]:
    """``decisions`` as ``DECISION_COLUMNS`` rows. What repeats from one decision to the next is
    encoded once per batch: a peer's columns (by identity: peers are interned and the decisions
    keep them alive meanwhile), a list of referenced attributes (by value: the JSON text, the
    costliest part of a row; answers from one decision-cache entry share the tuple)."""
    peers: dict[int, tuple[str, str, str, str, str, str]] = {}
    names: dict[tuple[str, ...], str | None] = {}
    rows = []
    for d in decisions:
        s, t = d.source, d.destination
        sv = peers.get(id(s))
        if sv is None:
            sv = peers[id(s)] = _peer_values(s)
        dv = peers.get(id(t))
        if dv is None:
            dv = peers[id(t)] = _peer_values(t)
        attributes = d.attributes
        if attributes:
            encoded = names.get(attributes)
            if encoded is None:
                encoded = names[attributes] = _json(list(attributes))
        else:
            encoded = None
        quotas = d.quotas
        rows.append((
            d.time_us, d.frontend.value, d.verdict.value, d.status_code, d.message, ids[d.transaction_id],
            *sv, *dv, d.rule, d.handler, _json(dict(quotas)) if quotas else None, encoded,
            ids[d.request_id], d.method, d.host, d.path, d.duration_us,
        ))  # fmt: skip
    return rows


_E = TypeVar("_E", Frontend, Verdict)


def _enum(kind: type[_E], value: str, default: _E) -> _E:
    try:
        return kind(value)
    except ValueError:  # written by a newer mixerd
        return default


def decision_from_row(r: Sequence[Any]) -> Decision:
    return Decision(
        time_us=r[0],
        frontend=_enum(Frontend, r[1], Frontend.MIXER_CHECK),
        verdict=_enum(Verdict, r[2], Verdict.DENY),
        status_code=r[3],
        message=r[4],
        transaction_id=unpack_id(r[5]),
        source=_peer(r, 6),
        destination=_peer(r, 12),
        rule=r[18],
        handler=r[19],
        quotas=json.loads(r[20]) if r[20] else {},
        attributes=tuple(json.loads(r[21])) if r[21] else (),
        request_id=unpack_id(r[22]),
        method=r[23],
        host=r[24],
        path=r[25],
        duration_us=r[26],
    )


def span_row(s: Span, ids: PackCache | None = None) -> tuple[Any, ...]:
    ids = PackCache() if ids is None else ids
    return (
        ids[s.trace_id], ids[s.span_id], ids[s.parent_span_id], s.name, s.service,
        s.start_us, s.duration_us, ids[s.transaction_id], s.kind, s.status, _json(dict(s.attributes)),
    )  # fmt: skip


def span_from_row(r: Sequence[Any]) -> Span:
    return Span(
        trace_id=unpack_id(r[0]),
        span_id=unpack_id(r[1]),
        parent_span_id=unpack_id(r[2]),
        name=r[3],
        service=r[4],
        start_us=r[5],
        duration_us=r[6],
        transaction_id=unpack_id(r[7]),
        kind=r[8],
        status=r[9],
        attributes=json.loads(r[10]) if r[10] else {},
    )


def log_row(g: LogRecord, ids: PackCache | None = None) -> tuple[Any, ...]:
    ids = PackCache() if ids is None else ids
    return (
        g.time_us, g.service, g.severity, g.body, ids[g.trace_id], ids[g.span_id],
        ids[g.transaction_id], _json(dict(g.attributes)),
    )  # fmt: skip


def log_from_row(r: Sequence[Any]) -> LogRecord:
    return LogRecord(
        time_us=r[0],
        service=r[1],
        severity=r[2],
        body=r[3],
        trace_id=unpack_id(r[4]),
        span_id=unpack_id(r[5]),
        transaction_id=unpack_id(r[6]),
        attributes=json.loads(r[7]) if r[7] else {},
    )


# ---------------------------------------------------------------------------------------------
# transaction summaries: one partial row per transaction id of a batch, which the backends add
# to the stored row (earliest start wins the root, counts add up, sets are merged).


@dataclass(slots=True)
class SummaryRow:
    id: bytes
    start_us: int
    end_us: int
    root: Peer
    src_hops: int = 0
    dst_hops: int = 0
    unk_hops: int = 0
    services: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    error: bool = False
    denied: bool = False
    path: _Names | None = field(default=None, compare=False, repr=False)
    """The names of the path of calls the three sets hold exactly, when nothing else was added
    to them (rows of one batch with the same ``path`` object have equal sets): a writer may encode
    them once per path."""

    def values(self, encode_set: Any, sets: Sequence[Any] | None = None) -> tuple[Any, ...]:
        """The row in ``SUMMARY_COLUMNS`` order, sets encoded with ``encode_set`` (or given
        encoded, as ``services, names, namespaces``)."""
        r = self.root
        services, names, namespaces = (
            (encode_set(self.services), encode_set(self.names), encode_set(self.namespaces))
            if sets is None
            else sets
        )
        return (
            self.id, self.start_us, self.end_us,
            r.namespace, r.workload, r.app, r.version, r.service, r.principal,
            self.src_hops, self.dst_hops, self.unk_hops, services, names, namespaces,
            self.error, self.denied,
        )  # fmt: skip

    def to_summary(self) -> TransactionSummary:
        return TransactionSummary(
            id=unpack_id(self.id),
            start_us=self.start_us,
            end_us=self.end_us,
            root=self.root,
            hops=max(self.src_hops, self.dst_hops) + self.unk_hops,
            services=tuple(sorted(self.services)),
            error=self.error,
            denied=self.denied,
        )


_UNKNOWN: Final = ("", "unknown")


def _known(p: Peer) -> bool:
    """Anything is known about the peer (``unknown`` is what the stock config's attribute
    bindings write for a peer outside the mesh: it says nothing)."""
    return (
        p.workload not in _UNKNOWN
        or p.namespace not in _UNKNOWN
        or p.app not in _UNKNOWN
        or p.principal not in _UNKNOWN
    )


def _root_of(source: Peer, destination: Peer) -> Peer:
    """The transaction's root seen from its earliest record: the caller, or the callee when the
    caller is outside the mesh (nothing known about it)."""
    return source if _known(source) or not _known(destination) else destination


def _short(host: str) -> str:
    return host.partition(".")[0]


_Names = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


_NamesKey = tuple[str, str, str, str, str, str, str]


def _names_key(source: Peer, destination: Peer) -> _NamesKey:
    # plain strings: hashing and comparing them is C work, a Peer's is Python work
    return (
        source.namespace, source.workload, source.app,
        destination.namespace, destination.workload, destination.app, destination.service,
    )  # fmt: skip


class _NameCache(dict[_NamesKey, _Names]):
    """What a call adds to its transaction's ``services``, ``names`` (what the service filter
    matches) and ``namespaces``, by ``_names_key``."""

    def __missing__(self, key: _NamesKey) -> _Names:
        src_ns, src_workload, src_app, dst_ns, dst_workload, dst_app, dst_service = key
        service = dst_service or dst_workload
        names = (dst_service, _short(dst_service), dst_workload, dst_app, src_workload, src_app)
        value = self[key] = (
            (service,) if service else (),
            tuple(n for n in names if n),
            tuple(n for n in (src_ns, dst_ns) if n),
        )
        return value


def _add_names(row: SummaryRow, names: _Names) -> None:
    row.path = None
    row.services.update(names[0])
    row.names.update(names[1])
    row.namespaces.update(names[2])


def summarize(
    batch: Batch,
    ids: PackCache | None = None,
    groups: Mapping[str, Sequence[Hop]] | None = None,
    hop_summaries: dict[bytes, SummaryRow] | None = None,
) -> list[SummaryRow]:
    """One partial summary per transaction id that the batch's hops and decisions carry, sorted by
    id (so concurrent writers lock rows in the same order). Spans and logs do not make summaries.
    ``groups``: the batch's hops as :func:`group_hops` gives them, when the caller has them;
    ``hop_summaries``: the hops' summaries as :func:`hop_group_rows` made them (the map is
    completed in place)."""
    ids = PackCache() if ids is None else ids
    names = _NameCache()
    rows: dict[bytes, SummaryRow] = {} if hop_summaries is None else hop_summaries
    source_reporter, destination_reporter = Reporter.SOURCE, Reporter.DESTINATION
    hop_groups = {} if hop_summaries is not None else group_hops(batch.hops) if groups is None else groups
    for txn, members in hop_groups.items():
        key = ids[txn]
        if key is None:
            continue
        root = members[0]
        start = root.start_us
        end = start + root.duration_us
        src = dst = unk = 0
        error = denied = False
        pairs: dict[tuple[int, int], _Names] = {}
        """The calls' names by their peers' identity (interned peers: one names lookup per call)."""
        for h in members:
            t = h.start_us
            if t < start:
                start, root = t, h
            t += h.duration_us
            if t > end:
                end = t
            reporter = h.reporter
            if reporter is source_reporter:
                src += 1
            elif reporter is destination_reporter:
                dst += 1
            else:
                unk += 1
            pair = (id(h.source), id(h.destination))
            if pair not in pairs:
                pairs[pair] = names[_names_key(h.source, h.destination)]
            if h.response_code >= 500 or (h.response_flags and h.error):
                error = True
            if h.response_flags and h.denied:
                denied = True
        summary = rows[key] = SummaryRow(
            key,
            start,
            end,
            _root_of(root.source, root.destination),
            src,
            dst,
            unk,
            error=error,
            denied=denied,
        )
        for found in pairs.values():
            _add_names(summary, found)
    for d in batch.decisions:
        key = ids[d.transaction_id]
        if key is None:
            continue
        end = d.time_us + d.duration_us
        row = rows.get(key)
        if row is None:
            row = rows[key] = SummaryRow(key, d.time_us, end, _root_of(d.source, d.destination))
        else:
            if d.time_us < row.start_us:
                row.start_us = d.time_us
                row.root = _root_of(d.source, d.destination)
            if end > row.end_us:
                row.end_us = end
        _add_names(row, names[_names_key(d.source, d.destination)])
        if d.verdict is not Verdict.ALLOW:
            row.denied = True
    return [rows[k] for k in sorted(rows)]


# ---------------------------------------------------------------------------------------------
# edges: a rollup's identity (reporter, both ends, protocol, code) is stored once in edge_keys under
# a 64-bit hash of its content, and the rollup rows carry only that number. Content-addressed keys
# need no lookup before a write and no coordination between replicas, and may be cached forever.


@dataclass(frozen=True, slots=True)
class EdgeKey:
    reporter: str
    source: Peer
    destination: Peer
    protocol: str
    response_code: int

    def columns(self) -> tuple[Any, ...]:
        """``EDGE_KEY_COLUMNS`` between ``key`` and ``last_us``."""
        s, d = self.source, self.destination
        return (
            self.reporter, s.namespace, s.workload, s.app, s.version,
            d.namespace, d.workload, d.app, d.version, d.service, self.protocol, self.response_code,
        )  # fmt: skip

    @staticmethod
    def from_columns(r: Sequence[Any]) -> EdgeKey:
        """From the 12 columns ``columns()`` gives, in that order."""
        return EdgeKey(r[0], Peer(r[1], r[2], r[3], r[4]), Peer(r[5], r[6], r[7], r[8], r[9]), r[10], r[11])


def edge_key(r: EdgeRollup) -> tuple[int, EdgeKey]:
    s, d = r.source, r.destination
    key = EdgeKey(
        r.reporter,
        Peer(s.namespace, s.workload, s.app, s.version),
        Peer(d.namespace, d.workload, d.app, d.version, d.service),
        r.protocol,
        r.response_code,
    )
    text = SEP.join(str(c) for c in key.columns())
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True), key


COARSE_US: Final = 300_000_000
"""The second rollup table's buckets: 5 minutes. Every rollup is added to both tables, so a
graph over an hour reads 12 coarse buckets (and the 10-s buckets at its unaligned ends) instead of
360 fine ones."""


def coarse_rows(rows: Iterable[Sequence[int]]) -> list[tuple[int, ...]]:
    """Rollup rows (``ROLLUP_COLUMNS``) added up per 5-min bucket and key, sorted by both."""
    acc: dict[tuple[int, int], list[int]] = {}
    for r in rows:
        k = (r[0] - r[0] % COARSE_US, r[1])
        a = acc.get(k)
        if a is None:
            acc[k] = list(r[2:])
        else:
            for i, v in enumerate(r[2:]):
                a[i] += v
    return [(bucket, key, *values) for (bucket, key), values in sorted(acc.items())]


def window_parts(since_us: int, until_us: int) -> list[tuple[bool, int, int]]:
    """``[since_us, until_us)`` as ``(coarse, low, high)`` ranges of bucket starts: the 5-min
    buckets wholly inside it, and 10-s buckets at either end."""
    low = -(-since_us // COARSE_US) * COARSE_US
    high = until_us - until_us % COARSE_US
    if low >= high:
        return [(False, since_us, until_us)]
    parts = [(True, low, high)]
    if since_us < low:
        parts.insert(0, (False, since_us, low))
    if high < until_us:
        parts.append((False, high, until_us))
    return parts


def add_up(rows: Iterable[Sequence[Any]]) -> dict[int, list[int]]:
    """``(key, count, errors, ...)`` rows added up per key."""
    out: dict[int, list[int]] = {}
    for r in rows:
        a = out.get(r[0])
        if a is None:
            out[r[0]] = [int(v) for v in r[1:]]
        else:
            for i, v in enumerate(r[1:]):
                a[i] += int(v)
    return out


def rollup_from_row(bucket_us: int, key: EdgeKey, r: Sequence[Any]) -> EdgeRollup:
    """From ``count, errors, denied, duration_sum_us, h0..`` (numbers of any numeric type)."""
    n = len(HISTOGRAM_COLUMNS)
    return EdgeRollup(
        bucket_us=bucket_us,
        reporter=key.reporter,
        source=key.source,
        destination=key.destination,
        protocol=key.protocol,
        response_code=key.response_code,
        count=int(r[0]),
        errors=int(r[1]),
        denied=int(r[2]),
        duration_sum_us=int(r[3]),
        histogram=tuple(int(x) for x in r[4 : 4 + n]),
    )


def matches_service(destination: Peer, service: str) -> bool:
    host = destination.service
    return bool(host) and (host == service or _short(host) == service)


_REPORTER_PREFERENCE: Final = ("destination", "unknown", "source")


def merge_service_buckets(rows: Iterable[tuple[int, EdgeKey, Sequence[Any]]]) -> list[ServiceBucket]:
    """``(bucket_us, key, (count, errors, denied, duration_sum, h0..))`` of one service's edges into
    one ServiceBucket per bucket and version: counted from destination-reported rollups, else
    reporter-less ones, else source-reported ones (a call reported by both ends counts once)."""
    acc: dict[tuple[int, str], dict[str, list[int]]] = {}
    n = len(HISTOGRAM_COLUMNS)
    for bucket, key, r in rows:
        per_reporter = acc.setdefault((bucket, key.destination.version), {})
        sums = per_reporter.setdefault(key.reporter, [0] * (2 + n))
        sums[0] += int(r[0])
        sums[1] += int(r[1])
        for i in range(n):
            sums[2 + i] += int(r[4 + i])
    out = []
    for (bucket, version), per_reporter in sorted(acc.items()):
        chosen = next(
            (per_reporter[k] for k in _REPORTER_PREFERENCE if k in per_reporter),
            next(iter(per_reporter.values())),
        )
        out.append(ServiceBucket(bucket, version, chosen[0], chosen[1], tuple(chosen[2:])))
    return out


# ---------------------------------------------------------------------------------------------
# odd values: a database refuses some strings (PostgreSQL: NUL; both: lone surrogates, which have no
# UTF-8) and integers beyond its column types. The backends first write a batch as it is, and only
# when the database refuses a value write it again through these.

INT64_MAX: Final = 2**63 - 1
INT32_MAX: Final = 2**31 - 1
_INT32_FIELDS: Final = frozenset({"response_code", "status_code"})


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean_str(s: str) -> str:
    if not s.isascii():
        s = _SURROGATE.sub("\ufffd", s)
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


def _clean(value: Any, name: str = "") -> Any:
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        bound = INT32_MAX if name in _INT32_FIELDS else INT64_MAX
        return max(-bound - 1, min(bound, value))
    if isinstance(value, float):  # not in the records, but never let one through unchecked
        return int(value) if math.isfinite(value) else 0
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _clean(getattr(value, f.name), f.name) for f in fields(value)}
        return replace(value, **changes)
    if isinstance(value, Mapping):
        return {_clean_str(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value


def sanitize_batch(batch: Batch) -> Batch:
    """A copy of ``batch`` that any database stores: text without NUL or lone surrogates (both
    become U+FFFD) and integers clamped to the column types."""
    return Batch(
        hops=[_clean(h) for h in batch.hops],
        decisions=[_clean(d) for d in batch.decisions],
        spans=[_clean(s) for s in batch.spans],
        logs=[_clean(g) for g in batch.logs],
    )


def sanitize_rollups(rollups: Sequence[EdgeRollup]) -> list[EdgeRollup]:
    return [_clean(r) for r in rollups]
