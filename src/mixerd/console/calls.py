"""Calls: one transaction's proxy records joined into calls, and the calls arranged in a tree.

**Joining** (:func:`join_hops`). The caller's proxy reports a call as ``source`` (outbound) and the
callee's as ``destination`` (inbound). An outbound record ``c`` and an inbound record ``s`` may be
one call when

- they have the same source and the same destination (namespace and workload; ``unknown`` and empty
  are the same thing),
- their request ids are equal once normalized (:func:`~mixerd.console.correlate.request_id_key`),
  when both have one, and so are their trace ids,
- ``s`` lies within ``c`` give or take ``skew_us`` (the proxies' clocks differ):
  ``c.start - skew <= s.start`` and ``s.end <= c.end + skew``.

Among the possible pairs, those whose response codes agree go first (an Envoy retry logs one
outbound record with the last attempt's code and one inbound record per attempt), then the nearest
starts; each record joins at most one pair. Unpaired records are calls of their own: an outbound one
left the mesh, failed before reaching the callee or was an attempt the callee did not log; an
inbound one came from outside the mesh, or its caller did not report. Records whose reporter is
unknown are never paired.

**The tree** (:func:`build_tree`). A call's *outer* interval is its outbound record's (the caller's
view), else its only record's; its *inner* interval is its inbound record's (the callee's view),
else its only record's. The parent of a call ``C`` made by workload ``W``:

1. exactly, by trace context: a call into ``W`` that carries ``C``'s parent span id as its span id
   (B3 carries a parent span id; W3C ``traceparent`` alone does not, so this needs B3 headers or
   B3 alongside ``traceparent``). Several such calls (Envoy retries keep the span): the tightest
   that contains ``C``, else the nearest start;
2. otherwise by time: the call into ``W`` whose inner interval contains ``C``'s outer one, give or
   take ``skew_us``; the tightest (shortest) first, then the latest start.

A call without a parent is a root (depth 0): its caller is unknown (outside the mesh), received no
call in the transaction, or did the work outside every inbound call (async work). Concurrent
identical calls without request ids or span ids are ambiguous; the rules above then pick one
consistent answer, not necessarily the true one.

The result is ordered by start, a longer call before a shorter one starting at the same time, and a
parent always before its children even when clock skew puts a child's start a little earlier.
``parent`` is an index into that list.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mixerd.console.correlate import request_id_key
from mixerd.console.model import Hop, Peer, Reporter

__all__ = ["DEFAULT_SKEW_US", "Call", "build_tree", "join_hops", "reconstruct"]

DEFAULT_SKEW_US = 5_000
"""The clock skew tolerated between two proxies, 5 ms."""

_UNKNOWN = ("", "unknown")

_Ident = tuple[str, str]
"""(namespace, workload)"""


@dataclass(frozen=True, slots=True)
class Call:
    """One call from a source workload to a destination: the outbound record (``client``, reported
    by the caller's proxy), the inbound one (``server``, by the callee's), or both; or a single
    record whose reporter is unknown (``other``)."""

    client: Hop | None = None
    server: Hop | None = None
    other: Hop | None = None
    parent: int | None = None
    """Index of the parent call in the list this call is in; None for a root."""
    depth: int = 0

    def __post_init__(self) -> None:
        if self.other is not None and (self.client is not None or self.server is not None):
            raise ValueError("a record of unknown reporter is never paired")
        if self.client is None and self.server is None and self.other is None:
            raise ValueError("a call needs a record")

    @property
    def records(self) -> tuple[Hop, ...]:
        """The call's records, the outbound one first."""
        return tuple(h for h in (self.client, self.server, self.other) if h is not None)

    @property
    def main(self) -> Hop:
        """The record whose timing and answer are the call's: the caller's view when there is one."""
        hop = self.client or self.server or self.other
        assert hop is not None
        return hop

    @property
    def start_us(self) -> int:
        return self.main.start_us

    @property
    def duration_us(self) -> int:
        return self.main.duration_us

    @property
    def end_us(self) -> int:
        return self.main.end_us

    @property
    def inner(self) -> Hop:
        """The callee's view: the inbound record, else the only one."""
        return self.server or self.main

    @property
    def reporters(self) -> tuple[str, ...]:
        """``source``, ``destination`` (in that order) or ``unknown``: who reported the call."""
        return tuple(h.reporter.value for h in self.records)

    @property
    def source(self) -> Peer:
        """The caller, as its own proxy saw it, completed from the callee's record."""
        if self.client is not None and self.server is not None:
            return _merge(self.client.source, self.server.source)
        return self.main.source

    @property
    def destination(self) -> Peer:
        """The callee, as its own proxy saw it, completed from the caller's record."""
        if self.client is not None and self.server is not None:
            return _merge(self.server.destination, self.client.destination)
        return self.main.destination

    @property
    def request_id(self) -> str:
        return next((h.request_id for h in self.records if h.request_id), "")

    @property
    def span_ids(self) -> frozenset[str]:
        return frozenset(h.span_id for h in self.records if h.span_id)

    @property
    def parent_span_id(self) -> str:
        return next((h.parent_span_id for h in self.records if h.parent_span_id), "")

    @property
    def error(self) -> bool:
        return any(h.error for h in self.records)

    @property
    def denied(self) -> bool:
        return any(h.denied for h in self.records)


def reconstruct(hops: Iterable[Hop], *, skew_us: int = DEFAULT_SKEW_US) -> list[Call]:
    """The calls of one transaction's records, in tree order (:func:`join_hops` then
    :func:`build_tree`)."""
    return build_tree(join_hops(hops, skew_us=skew_us), skew_us=skew_us)


def join_hops(hops: Iterable[Hop], *, skew_us: int = DEFAULT_SKEW_US) -> list[Call]:
    """The records of one transaction paired into calls, ordered by start (no parents yet). The
    result does not depend on the order of ``hops``."""
    ordered = sorted(hops, key=_record_order)
    clients = [h for h in ordered if h.reporter == Reporter.SOURCE]
    servers = [h for h in ordered if h.reporter == Reporter.DESTINATION]
    others = [h for h in ordered if h.reporter not in (Reporter.SOURCE, Reporter.DESTINATION)]

    by_edge: dict[tuple[_Ident, _Ident], list[int]] = defaultdict(list)
    for j, s in enumerate(servers):  # ordered by start already
        by_edge[_edge(s)].append(j)
    starts = {edge: [servers[j].start_us for j in js] for edge, js in by_edge.items()}

    candidates: list[tuple[bool, int, int, int]] = []
    for i, c in enumerate(clients):
        edge = _edge(c)
        js = by_edge.get(edge)
        if not js:
            continue
        lo = bisect.bisect_left(starts[edge], c.start_us - skew_us)
        hi = bisect.bisect_right(starts[edge], c.end_us + skew_us)
        for j in js[lo:hi]:
            s = servers[j]
            if s.end_us <= c.end_us + skew_us and _same_ids(c, s):
                candidates.append((c.response_code != s.response_code, abs(s.start_us - c.start_us), i, j))
    candidates.sort()

    client_of: dict[int, int] = {}
    server_taken: set[int] = set()
    for _, _, i, j in candidates:
        if i not in client_of and j not in server_taken:
            client_of[i] = j
            server_taken.add(j)

    calls = [
        Call(client=c, server=servers[client_of[i]] if i in client_of else None)
        for i, c in enumerate(clients)
    ]
    calls += [Call(server=s) for j, s in enumerate(servers) if j not in server_taken]
    calls += [Call(other=h) for h in others]
    calls.sort(key=_call_order)
    return calls


def build_tree(calls: Sequence[Call], *, skew_us: int = DEFAULT_SKEW_US) -> list[Call]:
    """``calls`` (of one transaction, as :func:`join_hops` gives them) with ``parent`` and ``depth``
    set, reordered so that a parent comes before its children (see the module's description)."""
    n = len(calls)
    into: dict[_Ident, list[int]] = defaultdict(list)
    by_span: dict[tuple[_Ident, str], list[int]] = defaultdict(list)
    for k, call in enumerate(calls):
        callee = _ident(call.destination)
        if callee is None:
            continue
        into[callee].append(k)
        for span in call.span_ids:
            by_span[callee, span].append(k)
    for ks in into.values():
        ks.sort(key=lambda k: calls[k].inner.start_us)
    inner_starts = {w: [calls[k].inner.start_us for k in ks] for w, ks in into.items()}
    longest = {w: max(calls[k].inner.duration_us for k in ks) for w, ks in into.items()}

    parent: list[int | None] = [None] * n

    def creates_cycle(child: int, candidate: int) -> bool:
        k: int | None = candidate
        while k is not None:
            if k == child:
                return True
            k = parent[k]
        return False

    def contains(p: int, c: int) -> bool:
        inner, outer = calls[p].inner, calls[c]
        return inner.start_us - skew_us <= outer.start_us and outer.end_us <= inner.end_us + skew_us

    def tightness(p: int) -> tuple[int, int, int]:
        inner = calls[p].inner
        return (inner.duration_us, -inner.start_us, p)

    # Longer calls first: a call that may contain another gets its own parent before it.
    for c in sorted(range(n), key=lambda k: (-calls[k].duration_us, k)):
        caller = _ident(calls[c].source)
        if caller is None:
            continue
        chosen: int | None = None
        span = calls[c].parent_span_id
        if span:
            linked = [p for p in by_span.get((caller, span), ()) if p != c and not creates_cycle(c, p)]
            if linked:
                inside = [p for p in linked if contains(p, c)]
                if inside:
                    chosen = min(inside, key=tightness)
                else:
                    chosen = min(linked, key=lambda p: (abs(calls[p].inner.start_us - calls[c].start_us), p))
        if chosen is None and caller in into:
            ks, starts = into[caller], inner_starts[caller]
            lo = bisect.bisect_left(starts, calls[c].end_us - skew_us - longest[caller])
            hi = bisect.bisect_right(starts, calls[c].start_us + skew_us)
            containing = [p for p in ks[lo:hi] if p != c and contains(p, c) and not creates_cycle(c, p)]
            if containing:
                chosen = min(containing, key=tightness)
        parent[c] = chosen

    depth: list[int] = [-1] * n
    anchor: list[int] = [0] * n
    """The start a call is ordered by: its own, but never before its parent's."""

    def place(k: int) -> None:
        chain = []
        j: int | None = k
        while j is not None and depth[j] < 0:
            chain.append(j)
            j = parent[j]
        for j in reversed(chain):
            p = parent[j]
            if p is None:
                depth[j], anchor[j] = 0, calls[j].start_us
            else:
                depth[j], anchor[j] = depth[p] + 1, max(calls[j].start_us, anchor[p])

    for k in range(n):
        place(k)
    order = sorted(range(n), key=lambda k: (anchor[k], depth[k], k))
    position = {k: i for i, k in enumerate(order)}
    placed = []
    for k in order:
        p = parent[k]
        placed.append(replace(calls[k], parent=None if p is None else position[p], depth=depth[k]))
    return placed


def _ident(peer: Peer) -> _Ident | None:
    if peer.workload in _UNKNOWN:
        return None
    return (peer.namespace, peer.workload)


def _norm(peer: Peer) -> _Ident:
    return (
        "" if peer.namespace in _UNKNOWN else peer.namespace,
        "" if peer.workload in _UNKNOWN else peer.workload,
    )


def _edge(hop: Hop) -> tuple[_Ident, _Ident]:
    return (_norm(hop.source), _norm(hop.destination))


def _same_ids(c: Hop, s: Hop) -> bool:
    if c.request_id and s.request_id and request_id_key(c.request_id) != request_id_key(s.request_id):
        return False
    return not (c.trace_id and s.trace_id and c.trace_id != s.trace_id)


def _pick(preferred: str, fallback: str) -> str:
    return fallback if preferred in _UNKNOWN and fallback not in _UNKNOWN else preferred


def _merge(preferred: Peer, fallback: Peer) -> Peer:
    return Peer(
        namespace=_pick(preferred.namespace, fallback.namespace),
        workload=_pick(preferred.workload, fallback.workload),
        app=_pick(preferred.app, fallback.app),
        version=_pick(preferred.version, fallback.version),
        service=_pick(preferred.service, fallback.service),
        principal=_pick(preferred.principal, fallback.principal),
    )


def _peer_key(p: Peer) -> tuple[str, ...]:
    return (p.namespace, p.workload, p.app, p.version, p.service, p.principal)


def _record_order(h: Hop) -> tuple[object, ...]:
    """Start order, the longer first; the rest only makes the order total (input order never counts)."""
    return (
        h.start_us,
        -h.duration_us,
        h.reporter.value,
        _peer_key(h.source),
        _peer_key(h.destination),
        h.request_id,
        h.trace_id,
        h.span_id,
        h.parent_span_id,
        h.protocol,
        h.method,
        h.host,
        h.path,
        h.response_code,
        h.response_flags,
        h.request_bytes,
        h.response_bytes,
        h.transaction_id,
    )


def _call_order(call: Call) -> tuple[object, ...]:
    return (
        call.start_us,
        -call.duration_us,
        *(_record_order(h) for h in call.records),
    )
