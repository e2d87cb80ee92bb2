"""The JSON the console's API answers for transactions and decisions, built from store records.

Instants are RFC 3339 UTC strings with milliseconds and durations float milliseconds
(:mod:`mixerd.console.timefmt`). Peers are written as the proxies reported them: an empty string
or ``unknown`` where they did not know.

``GET /api/v1/transactions`` (:func:`transactions_json`)::

    {"transactions": [{"id", "start", "duration_ms",
                       "root": {"namespace", "workload", "service"},
                       "hops": int, "services": [str], "error": bool, "denied": bool}]}

``GET /api/v1/transactions/{id}`` (:func:`transaction_json`)::

    {"id", "start", "duration_ms",
     "hops": [HOP], "decisions": [DECISION + {"hop"}], "spans": [SPAN], "logs": [LOG]}

    HOP = {"start", "duration_ms", "depth", "parent",
           "source": {"namespace", "workload", "app", "version", "principal"},
           "destination": {"namespace", "workload", "app", "version", "service"},
           "request": {"method", "host", "path", "protocol", "id"},
           "response": {"code", "flags"},
           "reporters": ["source", "destination"],
           "timings": {"source": {"start", "duration_ms"}, "destination": {"start", "duration_ms"}},
           "error": bool, "denied": bool}

Hops are calls (:mod:`mixerd.console.calls`): in tree order (by start, a parent before its
children), ``parent`` the index of the parent hop or null, ``depth`` 0 for a root. A hop's own
``start``/``duration_ms`` are the caller's view when the caller's proxy reported it, else the
callee's; ``timings`` has each reporting proxy's own view (keyed by reporter, only those that
reported). ``response`` is what the caller got when its proxy reported it. ``error``: some record
of the call has a 5xx or no answer; ``denied``: refused by policy (response flag ``UAEX`` or ``RL``).
``timings``, ``error`` and ``denied`` are additions to the fields the issue lists.

The transaction's ``start`` and ``duration_ms`` span its hops; with no hops, its spans, decisions
and logs. ``start`` is null only for a transaction without any record.

``GET /api/v1/decisions`` (:func:`decisions_json`), and each Server-Sent Event of
``/api/v1/decisions/stream`` (:func:`decision_json`)::

    DECISION = {"time", "duration_ms", "frontend", "verdict",
                "status": {"code", "name", "message"},
                "rule", "handler", "quotas": {name: granted}, "attributes": [name],
                "transaction_id",
                "source": {"namespace", "workload", "app", "version", "principal"},
                "destination": {"namespace", "workload", "app", "version", "service"},
                "request": {"method", "host", "path", "id"}}

``frontend`` is ``mixer_check``, ``ext_authz_grpc``, ``ext_authz_http`` or ``ratelimit``;
``verdict`` ``allow``, ``deny`` or ``quota_exhausted``; ``status.code`` the gRPC code and
``status.name`` its name. In a transaction, a decision also has ``"hop"``: the index of the hop it
was made for (a call into the decision's destination, with the same request id when both have
one, whose callee-side interval holds the decision's time give or take the clock skew; the
nearest start), or null.

``SPAN = {"trace_id", "span_id", "parent_span_id", "name", "service", "kind", "status", "start",
"duration_ms", "attributes": {str: str}}``, by start.
``LOG = {"time", "service", "severity", "body", "trace_id", "span_id", "attributes": {str: str}}``,
by time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mixerd.console.calls import DEFAULT_SKEW_US, Call, reconstruct
from mixerd.console.correlate import request_id_key
from mixerd.console.model import Decision, Hop, LogRecord, Peer, Span
from mixerd.console.store.base import TransactionRecords, TransactionSummary
from mixerd.console.timefmt import ms, rfc3339

__all__ = [
    "GRPC_CODE_NAMES",
    "decision_json",
    "decisions_json",
    "hop_json",
    "log_json",
    "span_json",
    "transaction_json",
    "transaction_summary_json",
    "transactions_json",
]

Json = dict[str, Any]

GRPC_CODE_NAMES: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

_UNKNOWN = ("", "unknown")


def transactions_json(summaries: Sequence[TransactionSummary]) -> Json:
    """The list endpoint's answer, in the order given (the store's: newest first)."""
    return {"transactions": [transaction_summary_json(s) for s in summaries]}


def transaction_summary_json(summary: TransactionSummary) -> Json:
    return {
        "id": summary.id,
        "start": rfc3339(summary.start_us),
        "duration_ms": ms(summary.end_us - summary.start_us),
        "root": {
            "namespace": summary.root.namespace,
            "workload": summary.root.workload,
            "service": summary.root.service,
        },
        "hops": summary.hops,
        "services": list(summary.services),
        "error": summary.error,
        "denied": summary.denied,
    }


def transaction_json(records: TransactionRecords, *, skew_us: int = DEFAULT_SKEW_US) -> Json:
    """The detail endpoint's answer: the records' hops joined into calls and arranged in a tree
    (``skew_us``: the clock skew tolerated between proxies), with the decisions, spans and logs."""
    calls = reconstruct(records.hops, skew_us=skew_us)
    spans = sorted(records.spans, key=lambda s: (s.start_us, -s.duration_us, s.trace_id, s.span_id))
    logs = sorted(records.logs, key=lambda r: r.time_us)
    decisions = sorted(records.decisions, key=lambda d: d.time_us)

    if calls:
        start: int | None = min(c.start_us for c in calls)
        end = max(c.end_us for c in calls)
    else:
        instants = [(s.start_us, s.start_us + s.duration_us) for s in spans]
        instants += [(d.time_us, d.time_us + d.duration_us) for d in decisions]
        instants += [(r.time_us, r.time_us) for r in logs]
        start = min((a for a, _ in instants), default=None)
        end = max((b for _, b in instants), default=0)

    return {
        "id": records.id,
        "start": None if start is None else rfc3339(start),
        "duration_ms": 0.0 if start is None else ms(end - start),
        "hops": [hop_json(c) for c in calls],
        "decisions": [{**decision_json(d), "hop": _hop_of(d, calls, skew_us)} for d in decisions],
        "spans": [span_json(s) for s in spans],
        "logs": [log_json(r) for r in logs],
    }


def hop_json(call: Call) -> Json:
    """One call of a transaction (see the module's description)."""
    main = call.main
    return {
        "start": rfc3339(call.start_us),
        "duration_ms": ms(call.duration_us),
        "depth": call.depth,
        "parent": call.parent,
        "source": _source_json(call.source),
        "destination": _destination_json(call.destination),
        "request": {
            "method": _first(call, "method"),
            "host": _first(call, "host"),
            "path": _first(call, "path"),
            "protocol": _first(call, "protocol"),
            "id": call.request_id,
        },
        "response": {"code": main.response_code, "flags": main.response_flags},
        "reporters": list(call.reporters),
        "timings": {
            h.reporter.value: {"start": rfc3339(h.start_us), "duration_ms": ms(h.duration_us)}
            for h in call.records
        },
        "error": call.error,
        "denied": call.denied,
    }


def decisions_json(decisions: Sequence[Decision]) -> Json:
    """The decision feed's answer, in the order given (the store's: newest first)."""
    return {"decisions": [decision_json(d) for d in decisions]}


def decision_json(decision: Decision) -> Json:
    code = decision.status_code
    return {
        "time": rfc3339(decision.time_us),
        "duration_ms": ms(decision.duration_us),
        "frontend": decision.frontend.value,
        "verdict": decision.verdict.value,
        "status": {
            "code": code,
            "name": GRPC_CODE_NAMES[code] if 0 <= code < len(GRPC_CODE_NAMES) else "",
            "message": decision.message,
        },
        "rule": decision.rule,
        "handler": decision.handler,
        "quotas": dict(decision.quotas),
        "attributes": list(decision.attributes),
        "transaction_id": decision.transaction_id,
        "source": _source_json(decision.source),
        "destination": _destination_json(decision.destination),
        "request": {
            "method": decision.method,
            "host": decision.host,
            "path": decision.path,
            "id": decision.request_id,
        },
    }


def span_json(span: Span) -> Json:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "service": span.service,
        "kind": span.kind,
        "status": span.status,
        "start": rfc3339(span.start_us),
        "duration_ms": ms(span.duration_us),
        "attributes": dict(span.attributes),
    }


def log_json(record: LogRecord) -> Json:
    return {
        "time": rfc3339(record.time_us),
        "service": record.service,
        "severity": record.severity,
        "body": record.body,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "attributes": dict(record.attributes),
    }


def _source_json(peer: Peer) -> Json:
    return {
        "namespace": peer.namespace,
        "workload": peer.workload,
        "app": peer.app,
        "version": peer.version,
        "principal": peer.principal,
    }


def _destination_json(peer: Peer) -> Json:
    return {
        "namespace": peer.namespace,
        "workload": peer.workload,
        "app": peer.app,
        "version": peer.version,
        "service": peer.service,
    }


def _first(call: Call, name: str) -> str:
    """A request field as the caller's proxy logged it, else as the callee's."""
    for hop in call.records:
        value: str = getattr(hop, name)
        if value:
            return value
    return ""


def _same_workload(wanted: Peer, peer: Peer) -> bool:
    """``peer`` is the workload ``wanted`` names, as far as both are known (an unknown workload or
    namespace in ``wanted`` matches any)."""
    if wanted.workload not in _UNKNOWN and peer.workload != wanted.workload:
        return False
    return wanted.namespace in _UNKNOWN or peer.namespace in _UNKNOWN or peer.namespace == wanted.namespace


def _hop_of(decision: Decision, calls: Sequence[Call], skew_us: int) -> int | None:
    target = decision.destination
    rid = request_id_key(decision.request_id) if decision.request_id else ""
    best: tuple[int, int] | None = None
    for i, call in enumerate(calls):
        if not _same_workload(target, call.destination):
            continue
        if (
            rid
            and call.request_id
            and not any(h.request_id and request_id_key(h.request_id) == rid for h in call.records)
        ):
            continue
        inner: Hop = call.inner
        if not inner.start_us - skew_us <= decision.time_us <= inner.end_us + skew_us:
            continue
        distance = abs(decision.time_us - inner.start_us)
        if best is None or distance < best[0]:
            best = (distance, i)
    return None if best is None else best[1]
