"""Policy decisions for the console: every front-end that answers a Check or a rate-limit call
hands its answer to a :class:`DecisionRecorder`, which turns it into a
:class:`~mixerd.console.model.Decision` and gives it to the console's writer without waiting.

Recording is off the hot path's critical work: no config is needed (the runtime records every
decision), the bag is read only for the attributes a decision shows, and the writer call is O(1).
A front-end built without a recorder records nothing (``--console-decisions=false``).

The transaction key is read as the console adapter reads it for hops (the same header order), with
one addition: when the answer's request header operations set a header of the key order (the
default config's ``transaction-id`` rule mints ``x-transaction-id``), the value sent upstream is
the key, so the first hop's decision joins the transaction its hops are recorded under.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from mixerd.adapter import Clock, Code
from mixerd.attribute import untracked_view
from mixerd.config import HeaderAction
from mixerd.console.correlate import DEFAULT_ORDER, transaction_key
from mixerd.console.model import Decision, Frontend, Peer, Verdict, peer
from mixerd.runtime import CheckOutcome, Runtime

__all__ = ["DECISIONS", "DecisionRecorder", "DecisionSink", "granted", "recorder_of", "verdict_of"]

DECISIONS: Final = "decisions"
"""The name of the recorder among the runtime's services (absent: decisions are not recorded)."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class DecisionSink(Protocol):
    def add_decision(self, decision: Decision) -> None: ...


def recorder_of(runtime: Runtime) -> DecisionRecorder | None:
    """The runtime's decision recorder, or None when decisions are not recorded."""
    recorder = runtime.services.get(DECISIONS)
    return recorder if isinstance(recorder, DecisionRecorder) else None


def granted(outcome: CheckOutcome) -> dict[str, int]:
    """Quota name -> amount granted, from a Check's outcome."""
    return {name: q.result.amount for name, q in outcome.quotas.items()}


def verdict_of(code: int, quotas: Mapping[str, int], asked: Mapping[str, int] | None = None) -> Verdict:
    """Allow, deny or quota exhausted, from an answer's status code and its quota grants (an OK
    answer whose quota granted less than asked is a quota refusal, as the proxy enforces it)."""
    if code == Code.RESOURCE_EXHAUSTED:
        return Verdict.QUOTA_EXHAUSTED
    if code != Code.OK:
        return Verdict.DENY
    if asked:
        for name, amount in asked.items():
            if amount > 0 and quotas.get(name, 0) < amount:
                return Verdict.QUOTA_EXHAUSTED
    return Verdict.ALLOW


def _text(value: Any) -> str:
    return value if type(value) is str or isinstance(value, str) else ""


def _label(labels: Any, key: str) -> str:
    if labels is None:
        return ""
    value = labels.get(key) if type(labels) is dict or isinstance(labels, Mapping) else None
    return value if type(value) is str or isinstance(value, str) else ""


def _peer(
    bag: Mapping[str, Any], namespace: str, workload: str, labels: str, principal: str, service: str
) -> Peer:
    """The peer the attributes name (interned: a mesh has few distinct ones)."""
    get = bag.get
    names = get(labels)
    return peer(
        (
            _text(get(namespace)),
            _text(get(workload)),
            _label(names, "app"),
            _label(names, "version"),
            _text(get(service)) if service else "",
            _text(get(principal)),
        )
    )


_SOURCE: Final = ("source.namespace", "source.workload.name", "source.labels", "source.principal", "")
_DESTINATION: Final = (
    "destination.namespace",
    "destination.workload.name",
    "destination.labels",
    "destination.principal",
    "destination.service.host",
)


class DecisionRecorder:
    """Records decisions of one process into ``sink`` (the console writer)."""

    def __init__(self, sink: DecisionSink, clock: Clock, key_order: Sequence[str] = DEFAULT_ORDER) -> None:
        self._sink = sink
        self._clock = clock
        self._order = tuple(key_order)
        self._minted = frozenset(self._order)

    def _key(self, headers: Mapping[str, str], outcome: CheckOutcome | None) -> str:
        directive = outcome.directive if outcome is not None else None
        if directive is not None:
            sent: dict[str, str] | None = None
            for op in directive.request_header_operations:
                name = op.name.lower()
                if name in self._minted and op.operation is not HeaderAction.REMOVE:
                    sent = sent if sent is not None else {}
                    sent.setdefault(name, op.value)
            if sent:
                headers = {**headers, **sent}
        return transaction_key(headers, self._order)

    def record(
        self,
        frontend: Frontend,
        bag: Mapping[str, Any],
        *,
        code: int,
        message: str,
        outcome: CheckOutcome | None = None,
        quotas: Mapping[str, int] | None = None,
        asked: Mapping[str, int] | None = None,
        duration_s: float = 0.0,
    ) -> None:
        """Record one answered call: ``code``/``message`` as the caller got them, ``quotas`` the
        amounts granted (``asked`` the amounts requested), ``outcome`` the runtime's answer when
        the check ran (its deciding rule and handler, referenced attributes and header operations).
        Never raises for what a request carried.

        The decision shows the request as the rules saw it: when the check ran, its outcome's
        attributes (``bag`` plus what attribute generators such as kubernetesenv added, so the
        source and destination workloads are named), else ``bag``. It is read without recording
        references: what the console shows is not what the answer depends on."""
        if outcome is not None and outcome.attributes is not None:
            bag = outcome.attributes
        bag = untracked_view(bag)
        now = self._clock.now()
        granted = dict(quotas or {})
        refs: tuple[str, ...] = ()
        rule = handler = ""
        if outcome is not None:
            if outcome.references:
                refs = tuple(sorted({name for (name, _key), _cond in outcome.references}))
            rule, handler = outcome.rule, outcome.handler
        delta = now - _EPOCH
        get = bag.get
        headers = get("request.headers")
        if headers is None or not (type(headers) is dict or isinstance(headers, Mapping)):
            headers = {}
        request_id = _text(get("request.id"))
        if not request_id:
            request_id = _text(headers.get("x-request-id"))
        self._sink.add_decision(
            Decision(
                (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,
                frontend,
                verdict_of(code, granted, asked),
                int(code),
                message,
                self._key(headers, outcome),
                _peer(bag, *_SOURCE),
                _peer(bag, *_DESTINATION),
                rule,
                handler,
                granted,
                refs,
                request_id,
                _text(get("request.method")),
                _text(get("request.host")),
                _text(get("request.path")),
                int(duration_s * 1_000_000),
            )
        )
