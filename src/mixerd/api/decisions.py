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
from mixerd.console.model import Decision, Frontend, Peer, Verdict
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


def _text(bag: Mapping[str, Any], name: str) -> str:
    value = bag.get(name)
    return value if isinstance(value, str) else ""


def _label(labels: Any, key: str) -> str:
    value = labels.get(key) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else ""


_SIDES: Final = {
    side: (f"{side}.namespace", f"{side}.workload.name", f"{side}.labels", f"{side}.principal")
    for side in ("source", "destination")
}


def _peer(bag: Mapping[str, Any], side: str) -> Peer:
    namespace, workload, labels_name, principal = _SIDES[side]
    labels = bag.get(labels_name)
    return Peer(
        namespace=_text(bag, namespace),
        workload=_text(bag, workload),
        app=_label(labels, "app"),
        version=_label(labels, "version"),
        service=_text(bag, "destination.service.host") if side == "destination" else "",
        principal=_text(bag, principal),
    )


class DecisionRecorder:
    """Records decisions of one process into ``sink`` (the console writer)."""

    def __init__(self, sink: DecisionSink, clock: Clock, key_order: Sequence[str] = DEFAULT_ORDER) -> None:
        self._sink = sink
        self._clock = clock
        self._order = tuple(key_order)
        self._minted = frozenset(self._order)

    def _key(self, bag: Mapping[str, Any], outcome: CheckOutcome | None) -> str:
        headers = bag.get("request.headers")
        if not isinstance(headers, Mapping):
            headers = {}
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
        self._sink.add_decision(
            Decision(
                time_us=(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,
                frontend=frontend,
                verdict=verdict_of(code, granted, asked),
                status_code=int(code),
                message=message,
                transaction_id=self._key(bag, outcome),
                source=_peer(bag, "source"),
                destination=_peer(bag, "destination"),
                rule=rule,
                handler=handler,
                quotas=granted,
                attributes=refs,
                request_id=_text(bag, "request.id") or _header(bag, "x-request-id"),
                method=_text(bag, "request.method"),
                host=_text(bag, "request.host"),
                path=_text(bag, "request.path"),
                duration_us=int(duration_s * 1_000_000),
            )
        )


def _header(bag: Mapping[str, Any], name: str) -> str:
    headers = bag.get("request.headers")
    if isinstance(headers, Mapping):
        value = headers.get(name)
        return value if isinstance(value, str) else ""
    return ""
