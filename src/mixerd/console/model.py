"""The records the console keeps. Times are integer microseconds since the Unix epoch (UTC), and
durations integer microseconds: exact, cheap to index, and the same in SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mixerd.attribute import remember

__all__ = [
    "Batch",
    "Decision",
    "Frontend",
    "Hop",
    "LogRecord",
    "Peer",
    "Reporter",
    "Span",
    "Verdict",
    "peer",
]


class Reporter(StrEnum):
    """Which proxy reported a hop: the caller's (``source``, outbound) or the callee's
    (``destination``, inbound); ``unknown`` when the record does not say."""

    SOURCE = "source"
    DESTINATION = "destination"
    UNKNOWN = "unknown"


class Frontend(StrEnum):
    """The API a policy decision was asked through."""

    MIXER_CHECK = "mixer_check"
    EXT_AUTHZ_GRPC = "ext_authz_grpc"
    EXT_AUTHZ_HTTP = "ext_authz_http"
    RATELIMIT = "ratelimit"


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    QUOTA_EXHAUSTED = "quota_exhausted"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a call, as far as the reporting proxy knew it; empty strings where it did not."""

    namespace: str = ""
    workload: str = ""
    app: str = ""
    version: str = ""
    service: str = ""
    """The destination service's host (``reviews.default.svc.cluster.local``); empty for a source."""
    principal: str = ""


_PeerKey = tuple[str, str, str, str, str, str]
_PEERS: dict[_PeerKey, Peer] = {}
"""Interned peers: a mesh has few distinct ones, and every hop and decision names two. Bounded by
``_MAX_PEERS`` (cleared when full: a cache, not a registry)."""
_MAX_PEERS = 10_000


def peer(key: _PeerKey) -> Peer:
    """The peer with these fields (namespace, workload, app, version, service, principal), one
    shared instance per distinct key: a frozen dataclass costs ~1.5 us to make, a lookup ~0.1, and
    the stores recognise a repeated peer by identity."""
    found = _PEERS.get(key)
    if found is None:
        found = remember(_PEERS, key, Peer(*key), _MAX_PEERS)
    return found


@dataclass(slots=True)
class Hop:
    """One proxy's record of one call (a Mixer Report's attribute set or an access-log entry).
    The caller's and the callee's proxies each report the same call; the store keeps both and the
    reconstruction joins them.

    Treat it as immutable. It is not a frozen dataclass only because one is made for every reported
    call, and a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``:
    about 3 us per hop instead of 0.3."""

    start_us: int
    duration_us: int
    reporter: Reporter
    source: Peer
    destination: Peer
    transaction_id: str
    """The correlation key (see ``correlate.transaction_key``); empty when the hop carried none."""
    protocol: str = ""
    method: str = ""
    host: str = ""
    path: str = ""
    response_code: int = 0
    response_flags: str = ""
    request_bytes: int = 0
    response_bytes: int = 0
    request_id: str = ""
    trace_id: str = ""
    """Lower-case hex (32 digits for W3C/B3-128, 16 for B3-64), empty when absent."""
    span_id: str = ""
    parent_span_id: str = ""

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def error(self) -> bool:
        """A 5xx answer, or no answer at all (code 0) with response flags set."""
        return self.response_code >= 500 or (self.response_code == 0 and bool(self.response_flags))

    @property
    def denied(self) -> bool:
        """Refused by policy before reaching the destination: Envoy's ``UAEX`` (external
        authorization denied) or ``RL`` (rate limited) response flag."""
        flags = set(self.response_flags.split(",")) if self.response_flags else set()
        return bool(flags & {"UAEX", "RL"})


@dataclass(slots=True)
class Decision:
    """One policy decision: a Check (Mixer or ext_authz) or a rate-limit call.

    Treat it as immutable. Like :class:`Hop` it is not frozen because one is made for every
    answered call (a frozen dataclass's ``__init__`` costs ten times a plain one's)."""

    time_us: int
    frontend: Frontend
    verdict: Verdict
    status_code: int
    """The gRPC status code of the answer (0 OK, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED ...)."""
    message: str
    transaction_id: str
    source: Peer
    destination: Peer
    rule: str = ""
    """The deciding rule (``name.rule.namespace``); empty for an allow that no rule denied."""
    handler: str = ""
    quotas: Mapping[str, int] = field(default_factory=dict)
    """Quota name -> amount granted."""
    attributes: tuple[str, ...] = ()
    """The attributes the decision referenced (their names, sorted)."""
    request_id: str = ""
    method: str = ""
    host: str = ""
    path: str = ""
    duration_us: int = 0


@dataclass(frozen=True, slots=True)
class Span:
    """An application span received over OTLP."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_us: int
    duration_us: int
    transaction_id: str
    """The transaction-id attribute when the span had one, else empty (joined by trace id)."""
    kind: str = ""
    status: str = ""
    """``ok``, ``error`` or empty (unset)."""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """An application log record received over OTLP."""

    time_us: int
    service: str
    severity: str
    body: str
    trace_id: str
    span_id: str
    transaction_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """What one store write carries."""

    hops: list[Hop] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.hops) + len(self.decisions) + len(self.spans) + len(self.logs)
