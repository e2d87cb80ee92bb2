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
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

from mixerd.adapter import Clock, Code, SystemClock
from mixerd.attribute import remember, untracked_view
from mixerd.config import HeaderAction
from mixerd.console.correlate import DEFAULT_ORDER, transaction_key
from mixerd.console.model import Decision, Frontend, Verdict, peer
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


_TEXTS: Final = (
    "source.namespace",
    "source.workload.name",
    "source.principal",
    "destination.namespace",
    "destination.workload.name",
    "destination.principal",
    "destination.service.host",
    "request.id",
    "request.method",
    "request.host",
    "request.path",
)
"""The text attributes a decision shows, in this order (see ``record``); not a string: ``""``."""

_MAX_MEMO: Final = 4096
"""Decision-cache entries whose referenced attribute names are remembered (cleared when full)."""


def _system_now_us() -> int:
    return time.time_ns() // 1000


class _Sent(Mapping[str, str]):
    """Request headers with the values an answer's header operations send upstream in place of
    (or besides) the caller's: read without copying the caller's headers."""

    __slots__ = ("_headers", "_sent")

    def __init__(self, sent: dict[str, str], headers: Mapping[str, str]) -> None:
        self._sent = sent
        self._headers = headers

    def get(self, key: str, default: Any = None) -> Any:
        value = self._sent.get(key)
        return self._headers.get(key, default) if value is None else value

    def __getitem__(self, key: str) -> str:
        value = self._sent.get(key)
        return self._headers[key] if value is None else value

    def __iter__(self) -> Iterator[str]:
        yield from self._sent
        for name in self._headers:
            if name not in self._sent:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


class DecisionRecorder:
    """Records decisions of one process into ``sink`` (the console writer)."""

    def __init__(self, sink: DecisionSink, clock: Clock, key_order: Sequence[str] = DEFAULT_ORDER) -> None:
        self._sink = sink
        self._clock = clock
        self._now_us = _system_now_us if type(clock) is SystemClock else self._clock_now_us
        self._order = tuple(key_order)
        self._minted = frozenset(self._order)
        self._names: dict[object, tuple[str, ...]] = {}
        """Referenced attribute names by decision-cache entry (hashed by identity)."""

    def _clock_now_us(self) -> int:
        delta = self._clock.now() - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def _key(self, headers: Mapping[str, str], outcome: CheckOutcome | None) -> str:
        directive = outcome.directive if outcome is not None else None
        if directive is not None and directive.request_header_operations:
            sent: dict[str, str] | None = None
            for op in directive.request_header_operations:
                name = op.name.lower()
                if name in self._minted and op.operation is not HeaderAction.REMOVE:
                    sent = sent if sent is not None else {}
                    sent.setdefault(name, op.value)
            if sent:
                headers = _Sent(sent, headers)
        return transaction_key(headers, self._order)

    def _referenced(self, outcome: CheckOutcome) -> tuple[str, ...]:
        """The names of the attributes the answer referenced, sorted; remembered per decision-cache
        entry when the answer came from one (its references are the entry's)."""
        references = outcome.references
        if not references:
            return ()
        entry = outcome.cached
        if entry is None:
            return tuple(sorted({name for (name, _key), _cond in references}))
        names = self._names.get(entry)
        if names is None:
            names = remember(
                self._names, entry, tuple(sorted({name for (name, _key), _cond in references})), _MAX_MEMO
            )
        return names

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
        references (what the console shows is not what the answer depends on), each attribute
        once (``_TEXTS`` and three maps)."""
        refs: tuple[str, ...] = ()
        rule = handler = ""
        if outcome is not None:
            if outcome.attributes is not None:
                bag = outcome.attributes
            refs = self._referenced(outcome)
            rule, handler = outcome.rule, outcome.handler
        get = untracked_view(bag).get
        sns, swl, sprin, dns, dwl, dprin, dsvc, rid, method, host, path = [
            "" if v is None else v if type(v) is str else _text(v) for v in map(get, _TEXTS)
        ]
        slabels, dlabels, headers = get("source.labels"), get("destination.labels"), get("request.headers")
        if headers is None or not (type(headers) is dict or isinstance(headers, Mapping)):
            headers = {}
        request_id = rid or _text(headers.get("x-request-id"))
        granted = dict(quotas) if quotas else {}
        self._sink.add_decision(
            Decision(
                self._now_us(),
                frontend,
                verdict_of(code, granted, asked),
                int(code),
                message,
                self._key(headers, outcome),
                peer(
                    (
                        sns,
                        swl,
                        _label(slabels, "app"),
                        _label(slabels, "version"),
                        "",
                        sprin,
                    )
                ),
                peer(
                    (
                        dns,
                        dwl,
                        _label(dlabels, "app"),
                        _label(dlabels, "version"),
                        dsvc,
                        dprin,
                    )
                ),
                rule,
                handler,
                granted,
                refs,
                request_id,
                method,
                host,
                path,
                int(duration_s * 1_000_000),
            )
        )
