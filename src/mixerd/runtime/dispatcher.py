"""The dispatcher: runs Check, Quota and Report through the routing table now in force.

Semantics (Mixer's, see mixer-reference §1.5):

* The request namespace comes from ``context.reporter.kind`` (default ``inbound``): inbound uses
  ``destination.namespace``, outbound ``source.namespace``; no namespace means the default table.
* Attribute generators run first, on every Check and every Report attribute set; what they produce
  never replaces an attribute the caller sent.
* A rule whose match condition fails to evaluate (e.g. a missing attribute) is treated as not
  matching. An instance that cannot be built fails the Check (``DispatchError``); in a Report it
  is counted as an error and the other instances are still dispatched.
* **Fail-closed** (mixerd's, off by default): an instance group of a check or quota rule marked
  ``fail_closed`` in the routing table (annotation ``mixerd.io/fail-closed``, else the server's
  ``--fail-closed``) whose match or instance fails to evaluate denies the Check with
  PERMISSION_DENIED ``rule <fqn> could not be evaluated (fail-closed)`` (the quota: nothing
  granted, the same status), without calling the remaining handlers. Report rules, attribute
  generators and header operations are never affected: their evaluation errors never deny.
* Every evaluation error of a rule's match or instance is counted in
  ``mixerd_rule_evaluation_errors_total{rule, part="match"|"instance"}`` and logged as one warning
  per rule at most every 10 s, with the count. Nothing of this runs when evaluation succeeds.
* Check: every matching instance goes to its handler; synchronous handler methods run inline,
  asynchronous ones concurrently under a deadline. The first non-OK status (in routing order)
  decides; its message lists ``<handler>:<message>`` of every non-OK answer. Validity is the
  minimum over all answers; with no answer at all it is 1 minute / 10000 uses. After an OK
  check the header operations of matching rules are evaluated into a route directive. When the
  deciding (first non-OK) answer carries a :class:`~mixerd.adapter.DirectHttpResponse`, the
  route directive is that response instead (:func:`direct_response_directive`).
* Quota: every instance whose short name equals the requested quota name (case-insensitive) is
  dispatched, once per rule and handler routing it, and the first answer (in routing order) is
  returned; when an answer is not OK the status is the first such code with the message
  ``<handler>:<message>, ...`` of every non-OK answer, as for checks. A quota whose rule does not
  match is granted; a quota nobody configured is granted too, with a warning (Mixer's behaviour).
* Report: a rule with ``sampling`` (:mod:`mixerd.runtime.sampling`) is decided once per
  attribute set, after its match holds, for all its report actions together; instances are
  buffered per destination over all attribute sets of the request, then each destination is
  called once with its batch.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

from mixerd.adapter import (
    CheckResult,
    Clock,
    Code,
    DirectHttpResponse,
    QuotaArgs,
    QuotaResult,
    RateLimitedWarning,
    Status,
    SystemClock,
)
from mixerd.attribute import (
    MISSING,
    FrozenReferences,
    OverlayBag,
    PartialAttributes,
    ReferenceTracker,
    TrackingBag,
    logsafe,
    merge_reads,
    remember,
    untracked_view,
)
from mixerd.config import HeaderAction
from mixerd.lang import EvaluationError
from mixerd.runtime.checkcache import DEFAULT_CACHE_ENTRIES, CachedCheck, CheckCache
from mixerd.runtime.failures import (
    ATTRIBUTE_GENERATION_FAILURE,
    HANDLER_DEADLINE,
    INSTANCE_FAILURE,
    DispatchError,
)
from mixerd.runtime.metrics import RuntimeMetrics
from mixerd.runtime.routing import Destination, InstanceGroup, NamespaceTable, RoutingTable
from mixerd.runtime.sampling import RuleSampler
from mixerd.runtime.security import Pending, SecurityVerdict
from mixerd.templates import InstanceBuildError, Variety

__all__ = [
    "DEFAULT_VALID_DURATION",
    "DEFAULT_VALID_USE_COUNT",
    "CheckOutcome",
    "DispatchError",
    "Dispatcher",
    "HeaderOperation",
    "QuotaOutcome",
    "RouteDirective",
    "direct_response_directive",
    "request_namespace",
]

_log = logging.getLogger(__name__)

DEFAULT_VALID_DURATION: Final = _dt.timedelta(minutes=1)
DEFAULT_VALID_USE_COUNT: Final = 10000
_UNCONFIGURED_QUOTA_VALIDITY: Final = _dt.timedelta(minutes=1)
_MAX_WARNED_QUOTAS: Final = 1000
_QUOTA_WARNING_BURST: Final = 10


@dataclass(frozen=True, slots=True)
class HeaderOperation:
    """One header change for the proxy (a rule's operation with its value evaluated)."""

    name: str
    value: str = ""
    operation: HeaderAction = HeaderAction.REPLACE


@dataclass(frozen=True, slots=True)
class RouteDirective:
    """Header changes after an OK check, and optionally a response the proxy should send itself."""

    request_header_operations: tuple[HeaderOperation, ...] = ()
    response_header_operations: tuple[HeaderOperation, ...] = ()
    direct_response_code: int = 0
    direct_response_body: str = ""


@dataclass(frozen=True, slots=True)
class QuotaOutcome:
    result: QuotaResult
    references: FrozenReferences | None = None
    reason: str = ""
    """The first denying handler's own message, without the ``<handler>:`` prefix (what a
    front-end may show an end user)."""


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    result: CheckResult
    directive: RouteDirective | None = None
    references: FrozenReferences | None = None
    """The referenced attributes (``mixerd.attribute.sorted_references`` gives Reference objects)."""
    quotas: Mapping[str, QuotaOutcome] = field(default_factory=dict)
    reason: str = ""
    """The first denying handler's own message, without Mixer's ``<handler>:`` prefix: what a
    front-end may show an end user (the handler names stay internal)."""
    rule: str = ""
    """The rule whose action gave the denial (or could not be evaluated, fail-closed); empty when
    the Check passed. For the console's decision records, not for callers."""
    handler: str = ""
    """The handler that gave the denial; empty when the Check passed or failed closed."""
    attributes: Mapping[str, Any] | None = None
    """The attributes the rules saw: the request's plus those the attribute generators added
    (kubernetesenv's workloads and labels). For the console's decision records, not for callers."""
    deny_headers: tuple[HeaderOperation, ...] = ()
    """Response headers of a denial by the security gate: ``WWW-Authenticate`` of a 401,
    ``x-mixerd-authz-policy`` of a 403 (:mod:`mixerd.runtime.security`)."""
    cached: CachedCheck | None = None
    """The decision-cache entry that gave this answer, when one did and the references are
    exactly the entry's (the header operations read nothing else): everything of the outcome
    but the validity left and the route directive is then the entry's, so a front-end may key
    what it derives from them (an encoded answer) on the entry."""


REPORT_SLICE: Final = 64
"""A Report batch yields to the event loop after every this many attribute sets: building a
set's instances costs tens of microseconds, so a batch of a thousand would otherwise hold every
other request (Checks included) for tens of milliseconds."""

_NAMESPACE_ATTRIBUTES: Final = frozenset(
    {"context.reporter.kind", "source.namespace", "destination.namespace"}
)
"""What :func:`request_namespace` reads."""


def request_namespace(bag: Mapping[str, Any]) -> str:
    """The namespace whose config applies to a request (see module docstring)."""
    kind = bag.get("context.reporter.kind", MISSING)
    if kind == "outbound":
        ns = bag.get("source.namespace", MISSING)
    else:
        ns = bag.get("destination.namespace", MISSING)
    return "" if ns is MISSING else str(ns)


_HTTP_STATUS_OF_CODE: Final = (
    200,
    408,
    500,
    400,
    504,
    404,
    409,
    403,
    429,
    412,
    409,
    400,
    501,
    500,
    503,
    500,
    401,
)
"""Mixer's HTTP status for each gRPC code (``status.HTTPStatusFromCode``), indexed by code."""


def direct_response_directive(status: Status) -> RouteDirective | None:
    """The route directive of a failed check whose status carries a :class:`DirectHttpResponse`
    (None without one): its code (else the HTTP status Mixer gives the gRPC code), its body, and
    its headers as REPLACE response-header operations; ``Set-Cookie`` is split on ``,`` into
    APPEND operations, one per cookie (Mixer's ``session.handleDirectResponse``)."""
    direct = status.direct_response
    if direct is None:
        return None
    code = direct.code
    if not code:
        c = status.code
        code = _HTTP_STATUS_OF_CODE[c] if 0 <= c < len(_HTTP_STATUS_OF_CODE) else 500
    ops: list[HeaderOperation] = []
    for name, value in direct.headers:
        if name.lower() == "set-cookie":
            ops.extend(HeaderOperation(name, cookie, HeaderAction.APPEND) for cookie in value.split(","))
        else:
            ops.append(HeaderOperation(name, value, HeaderAction.REPLACE))
    return RouteDirective((), tuple(ops), code, direct.body)


_OK_DEFAULT: Final = CheckResult(Status(), DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT)

FAIL_CLOSED_REASON: Final = "the request could not be evaluated (fail-closed)"
"""What front-ends may show an end user for a fail-closed denial (the rule's name stays in the
status message, mixerd's logs and Mixer API answers)."""


class _FailClosed(Exception):
    """A fail-closed instance group could not be evaluated: the Check (or quota) is denied."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.status = Status(Code.PERMISSION_DENIED, f"rule {rule} could not be evaluated (fail-closed)")


class _RuleErrors:
    """One rule's evaluation-error counters and warning, made on the rule's first error."""

    __slots__ = ("instance", "match", "warning")

    def __init__(self, rule: str, metrics: RuntimeMetrics, clock: Clock) -> None:
        self.match = metrics.rule_evaluation_errors.labels(rule, "match")
        self.instance = metrics.rule_evaluation_errors.labels(rule, "instance")
        self.warning = RateLimitedWarning(clock, logger=_log)


class Dispatcher:
    """Holds the routing table in force and runs requests through it.

    Every call pins the table in force when it starts (:meth:`pinned`) and uses it to the end,
    however long its handlers take: a config swap never mixes two tables in one request, and the
    controller's drain waits for the requests still using a retired table.
    """

    def __init__(
        self,
        table: RoutingTable,
        *,
        check_deadline: float = 1.0,
        report_deadline: float = 10.0,
        max_warned_quotas: int = _MAX_WARNED_QUOTAS,
        metrics: RuntimeMetrics | None = None,
        clock: Clock | None = None,
        check_cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self.metrics = metrics or RuntimeMetrics()
        """Where requests are counted: the runtime's; front-ends built on this dispatcher use it."""
        self.clock: Clock = clock or SystemClock()
        """The runtime's clock, for the front-ends built on this dispatcher."""
        self.check_deadline = check_deadline
        self.report_deadline = report_deadline
        self.check_cache_entries = check_cache_entries
        """Entries of each routing table's decision cache; 0: no cache."""
        self._cache_hits = self.metrics.check_cache.labels("hit")
        self._cache_misses = self.metrics.check_cache.labels("miss")
        self._evaluation_errors = 0
        """Rule evaluation errors so far: a Check during which one happened is not cached."""
        self._table = self._with_cache(table)
        self._warned_quotas: OrderedDict[str, None] = OrderedDict()
        self._max_warned_quotas = max_warned_quotas
        self.suppressed_quota_warnings = 0
        """Requests for an unconfigured quota not logged because its name was warned about."""
        self._quota_warning = RateLimitedWarning(self.clock, burst=_QUOTA_WARNING_BURST, logger=_log)
        """Names come from requests: at most ``_QUOTA_WARNING_BURST`` new names get a line per
        10 s, the others are counted in the next line."""
        self._rule_errors: dict[str, _RuleErrors] = {}
        self._generation_warning = RateLimitedWarning(self.clock, logger=_log)
        self._report_reads: tuple[RoutingTable | None, frozenset[str] | None] = (None, frozenset())

    # -- table management -------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._table

    def swap(self, table: RoutingTable) -> RoutingTable:
        """Put ``table`` in force; return the previous one (still pinned by in-flight requests).

        The new table comes with an empty decision cache: no answer of an earlier config is
        ever given under this one."""
        old, self._table = self._table, self._with_cache(table)
        return old

    def _with_cache(self, table: RoutingTable) -> RoutingTable:
        if self.check_cache_entries > 0 and table.check_cache is None:
            table.check_cache = CheckCache(self.clock, self.check_cache_entries)
        return table

    def report_attributes(self, table: RoutingTable | None = None) -> frozenset[str] | None:
        """Every attribute name a Report dispatched with ``table`` (default: the table in force)
        may read: its report and attribute-generator rules' conditions, instances and samplers,
        and what picks the request's namespace (of a string map only some entries of, those
        entries' names, :mod:`mixerd.attribute.entries`). A front-end decodes only these
        (:class:`~mixerd.attribute.PartialAttributes`); :meth:`report` completes a set decoded
        for another table when that one reads more. None: any name may be read (a handler is
        given whole attribute sets and does not say what it reads), so decode everything."""
        t = self._table if table is None else table
        cached = self._report_reads
        if cached[0] is t:
            return cached[1]
        read = t.attributes_read(Variety.ATTRIBUTE_GENERATOR, Variety.REPORT)
        reads = None if read is None else merge_reads(read | _NAMESPACE_ATTRIBUTES)
        self._report_reads = (t, reads)
        return reads

    @contextmanager
    def pinned(self, table: RoutingTable | None = None) -> Iterator[RoutingTable]:
        """Count a request as using ``table`` (default: the table in force) while the block runs."""
        t = self._table if table is None else table
        t.in_flight += 1
        try:
            yield t
        finally:
            t.in_flight -= 1

    # -- calling handlers ------------------------------------------------------------------------

    @staticmethod
    def _handler_failed(d: Destination, exc: BaseException) -> DispatchError:
        """Count a failed handler call; the error to raise or collect. Not logged here: the
        front-end logs it once, under the request id it gives the caller (Check, Quota), or the
        report pipeline counts and logs it (Report)."""
        d.dispatch_errors.inc()
        return DispatchError(f"handler {d.name} failed: {type(exc).__name__}: {exc}", handler=d.name)

    def _call(self, d: Destination, *args: Any) -> Any:
        """Call ``d``'s handler method: its answer, or an awaitable one for an asynchronous method.

        Raises :class:`DispatchError` (counted and logged) when the call itself raises.
        """
        try:
            return d.method(*args)
        except Exception as exc:
            raise self._handler_failed(d, exc) from None

    async def _await_all(
        self, pending: Sequence[tuple[Destination, Awaitable[Any]]], deadline: float
    ) -> list[tuple[Destination, Any]]:
        """Await the asynchronous answers concurrently under one deadline, in the given order.

        A call that failed or did not answer in time is counted in ``mixerd_dispatch_errors``
        and its answer is the :class:`DispatchError` describing it (the caller raises it or
        collects it).
        """
        tasks = [asyncio.ensure_future(aw) for _, aw in pending]
        _, not_done = await asyncio.wait(tasks, timeout=deadline)
        for task in not_done:
            task.cancel()
        out: list[tuple[Destination, Any]] = []
        for (d, _), task in zip(pending, tasks, strict=True):
            if task in not_done:
                d.dispatch_errors.inc()
                err = DispatchError(
                    f"handler {d.name} did not answer within {deadline:g}s",
                    Code.DEADLINE_EXCEEDED,
                    handler=d.name,
                    public=HANDLER_DEADLINE,
                )
                out.append((d, err))
            elif task.cancelled():
                out.append((d, self._handler_failed(d, asyncio.CancelledError())))
            elif (exc := task.exception()) is not None:
                out.append((d, self._handler_failed(d, exc)))
            else:
                out.append((d, task.result()))
        return out

    async def _answer(self, d: Destination, *args: Any) -> Any:
        """One handler call, awaited under the check deadline; raises :class:`DispatchError`."""
        r = self._call(d, *args)
        if d.is_async:
            ((_, r),) = await self._await_all(((d, r),), self.check_deadline)
            if isinstance(r, DispatchError):
                raise r
        return r

    # -- check ---------------------------------------------------------------------------------

    async def check(
        self,
        bag: Mapping[str, Any],
        *,
        quotas: Mapping[str, QuotaArgs] | None = None,
        tracker: ReferenceTracker | None = None,
        table: RoutingTable | None = None,
    ) -> CheckOutcome:
        """Run a Check (and, when it passes, the requested quotas) against ``bag``.

        ``tracker``, when given, is the reference tracker of ``bag``: the outcome then carries
        the referenced attributes of the precondition and of each quota. ``table``, when given,
        is a table the caller pinned (``with dispatcher.pinned() as t``) to derive the quotas
        from (its quota plan): the Check then runs on that same table.
        """
        t = self._table if table is None else table
        t.in_flight += 1  # pinned (see :meth:`pinned`), without a context manager's cost
        try:
            # Not with quotas (always charged), nor under authentication / authorization
            # policies: their answer also depends on time (a token's expiry) and they add to the
            # request (claims, headers); they keep caches of their own (verified tokens,
            # decisions by the values the policies read).
            cache = t.check_cache if not quotas and t.security is None else None
            request = bag
            context: Any = ()
            if cache is not None:
                if tracker is None:  # what the answer depends on is the cache's key
                    tracker = ReferenceTracker()
                    bag = request = TrackingBag(bag, tracker)
                # A front-end's own layer over the tracked request (the caller's identity) is
                # read unrecorded: all of it is part of the key.
                context = frozenset(bag.added.items()) if isinstance(bag, OverlayBag) else ()
                hit = cache.lookup(untracked_view(bag), context)
                if hit is not None:
                    self._cache_hits.inc()
                    return self._cached(t, bag, tracker, *hit)
                self._cache_misses.inc()
            errors_before = self._evaluation_errors
            bag = await self._preprocess(t, bag, fail=True)
            gate: SecurityVerdict | None = None
            if t.security is not None:
                answer = t.security.decide(bag)
                gate = await answer.resolve() if isinstance(answer, Pending) else answer
            if gate is not None:
                if gate.bag is not None:  # else the rules see the bag the gate was given
                    bag = gate.bag
                if gate.code != Code.OK:
                    return _gate_denial(gate, bag, tracker)
            after_preprocess = tracker.snapshot() if tracker is not None and quotas else None
            ns = request_namespace(bag)
            nt = t.lookup(Variety.CHECK, ns)
            result, reason, rule, handler = (
                await self._check(nt, bag) if nt.destinations else (_OK_DEFAULT, "", "", "")
            )
            if (
                cache is not None
                and tracker is not None
                and self._evaluation_errors == errors_before
                and reason != FAIL_CLOSED_REASON
            ):
                cache.store(
                    untracked_view(request),
                    result,
                    reason=reason,
                    rule=rule,
                    handler=handler,
                    references=tracker.frozen(),
                    whole_maps=frozenset(tracker.whole_maps),
                    whole_values=frozenset(tracker.whole_values),
                    generated=bag.added if bag is not request and isinstance(bag, OverlayBag) else {},
                    context=context,
                    namespace=ns,
                )
            directive = None
            if result.status.code == Code.OK:
                if nt.directives:
                    directive = self._directives(nt, _with_outputs(bag, result.output))
            elif result.status.direct_response is not None:
                directive = direct_response_directive(result.status)
            if gate is not None:
                if gate.request_headers and result.status.code == Code.OK:
                    directive = _with_gate_headers(directive, gate.request_headers)
                if gate.policy and not rule:  # allowed; a dry-run policy would have denied
                    rule, handler = gate.policy, gate.handler
            references = tracker.frozen() if tracker is not None else None
            quota_out: dict[str, QuotaOutcome] = {}
            if quotas and result.status.code == Code.OK:
                qt = t.lookup(Variety.QUOTA, ns)
                for name, args in quotas.items():
                    if tracker is not None and after_preprocess is not None:
                        tracker.restore(after_preprocess)
                    quota_reason = ""
                    try:
                        qr, quota_reason = await self._quota(qt, bag, name, args)
                    except DispatchError as exc:
                        # Not an error of the Check: the quota is answered "nothing granted".
                        _log.warning(
                            "quota %s failed, granting nothing: %s", logsafe(name), logsafe(str(exc))
                        )
                        qr = QuotaResult()
                    quota_out[name] = QuotaOutcome(
                        qr, tracker.frozen() if tracker is not None else None, quota_reason
                    )
            return CheckOutcome(
                result,
                directive,
                references,
                reason=reason,
                quotas=quota_out,
                rule=rule,
                handler=handler,
                attributes=bag,
            )
        finally:
            t.in_flight -= 1

    def _cached(
        self,
        t: RoutingTable,
        bag: Mapping[str, Any],
        tracker: ReferenceTracker,
        entry: CachedCheck,
        result: CheckResult,
    ) -> CheckOutcome:
        """The outcome of a Check answered from the cache: the stored precondition, with this
        request's header operations evaluated over it (they read per-request values)."""
        references = entry.references
        tracker.restore(dict(references))
        tracker.whole_maps = set(entry.whole_maps)
        if entry.generated:
            overlay = OverlayBag(bag)
            overlay.merge(entry.generated)
            bag = overlay
        directive = None
        if result.status.code == Code.OK:
            nt = t.lookup(Variety.CHECK, entry.namespace)  # the namespace is a function of the key
            if nt.directives:
                directive = self._directives(nt, _with_outputs(bag, result.output))
        elif result.status.direct_response is not None:
            directive = direct_response_directive(result.status)
        # The header operations may read attributes the entry's answer did not.
        same = len(tracker) == len(references)
        return CheckOutcome(
            result,
            directive,
            references if same else tracker.frozen(),
            reason=entry.reason,
            rule=entry.rule,
            handler=entry.handler,
            attributes=bag,
            cached=entry if same else None,
        )

    async def _check(self, nt: NamespaceTable, bag: Mapping[str, Any]) -> tuple[CheckResult, str, str, str]:
        """The combined answer, the first denial's own message, and the rule and handler that gave
        it (empty when everything allowed)."""
        answers: list[tuple[Destination, InstanceGroup, int, Any]] = []
        pending: list[tuple[Destination, Awaitable[Any]]] = []
        pending_rules: list[tuple[InstanceGroup, int]] = []
        try:
            for d in nt.destinations:
                for g, i, inst in self._instances(d, bag, _raise_build_error):
                    d.dispatches.inc()
                    r = self._call(d, inst)
                    if d.is_async:
                        pending.append((d, r))
                        pending_rules.append((g, i))
                    else:
                        answers.append((d, g, i, r))
        except _FailClosed as denied:
            _close_unstarted(pending)
            result = CheckResult(denied.status, DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT)
            return result, FAIL_CLOSED_REASON, denied.rule, ""
        if pending:
            done = await self._await_all(pending, self.check_deadline)
            for (d, r), (group, i) in zip(done, pending_rules, strict=True):
                if isinstance(r, DispatchError):
                    raise r
                answers.append((d, group, i, r))
        if not answers:
            return _OK_DEFAULT, "", "", ""
        code: int = Code.OK
        direct: DirectHttpResponse | None = None
        reason = deciding_rule = deciding_handler = ""
        messages: list[str] = []
        duration: _dt.timedelta | None = None
        uses: int | None = None
        outputs: dict[str, Any] = {}
        for d, group, i, r in answers:
            rule_name = group.rule_of(i)
            if not isinstance(r, CheckResult):
                raise DispatchError(
                    f"handler {d.name} returned {type(r).__name__}, not a CheckResult", handler=d.name
                )
            if r.status.code != Code.OK:
                if code == Code.OK:
                    code = r.status.code
                    reason = r.status.message
                    direct = r.status.direct_response
                    deciding_rule, deciding_handler = rule_name, d.name
                messages.append(f"{d.name}:{r.status.message}")
            if duration is None or r.valid_duration < duration:
                duration = r.valid_duration
            if uses is None or r.valid_use_count < uses:
                uses = r.valid_use_count
            if r.output and group.action_name:  # CHECK_WITH_OUTPUT: <action>.output.<field>
                prefix = f"{group.action_name}.output."
                outputs.update({prefix + k: v for k, v in r.output.items()})
        assert duration is not None and uses is not None
        result = CheckResult(Status(code, ", ".join(messages), direct), duration, uses, outputs or None)
        return result, reason, deciding_rule, deciding_handler

    # -- quota ---------------------------------------------------------------------------------

    async def quota(self, bag: Mapping[str, Any], name: str, args: QuotaArgs) -> QuotaResult:
        """Allocate one quota outside a Check (used by the rate-limit front-end)."""
        t = self._table
        t.in_flight += 1  # what pinned() does, without a generator per call
        try:
            if t.has_generators:
                bag = await self._preprocess(t, bag, fail=True)
            result, _ = await self._quota(t.lookup(Variety.QUOTA, request_namespace(bag)), bag, name, args)
            return result
        finally:
            t.in_flight -= 1

    async def _quota(
        self, nt: NamespaceTable, bag: Mapping[str, Any], name: str, args: QuotaArgs
    ) -> tuple[QuotaResult, str]:
        """The result and the first denial's own message (see :attr:`QuotaOutcome.reason`).

        Every instance named ``name`` goes to its handler (one instance routed by two rules,
        or to two handlers, is dispatched each time); the first answer in routing order is the
        result. When some answer is not OK, the result's status is the first such code with
        ``<handler>:<message>`` of every non-OK answer (Mixer's ``session.go``)."""
        hits = nt.quota_index.get(name.lower())
        if not hits:
            self._warn_unconfigured(name)
            return QuotaResult(valid_duration=_UNCONFIGURED_QUOTA_VALIDITY, amount=args.amount), ""
        calls: list[tuple[Destination, Any]] = []
        try:
            for d in hits:
                for _, _, inst in self._instances(d, bag, _raise_build_error):
                    d.dispatches.inc()
                    calls.append((d, self._call(d, inst, args)))
        except _FailClosed as denied:
            _close_unstarted(calls)
            return QuotaResult(status=denied.status, amount=0), FAIL_CLOSED_REASON
        if not calls:
            return QuotaResult(valid_duration=_UNCONFIGURED_QUOTA_VALIDITY, amount=args.amount), ""
        pending = [(d, r) for d, r in calls if d.is_async]
        if len(pending) == 1 and len(calls) == 1:
            d, r = pending[0]
            calls = [(d, await self._await_one(d, r, self.check_deadline))]
        elif pending:
            done = iter(await self._await_all(pending, self.check_deadline))
            calls = [next(done) if d.is_async else (d, r) for d, r in calls]
        first: QuotaResult | None = None
        code: int = Code.OK
        reason = ""
        messages: list[str] = []
        for d, r in calls:
            if isinstance(r, DispatchError):
                raise r
            if not isinstance(r, QuotaResult):
                raise DispatchError(
                    f"handler {d.name} returned {type(r).__name__}, not a QuotaResult", handler=d.name
                )
            if first is None:
                first = r
            if r.status.code != Code.OK:
                if code == Code.OK:
                    code, reason = r.status.code, r.status.message
                messages.append(f"{d.name}:{r.status.message}")
        assert first is not None
        if code != Code.OK:
            return replace(first, status=Status(code, ", ".join(messages))), reason
        return first, ""

    async def _await_one(self, d: Destination, call: Awaitable[Any], deadline: float) -> Any:
        """One asynchronous answer under ``deadline``, awaited in the caller's task (no task of
        its own, as :meth:`_await_all` makes for several); its answer, or the
        :class:`DispatchError` that :meth:`_await_all` would give."""
        try:
            async with asyncio.timeout(deadline) as within:
                return await call
        except TimeoutError as exc:
            if not within.expired():
                return self._handler_failed(d, exc)  # the handler's own timeout
            d.dispatch_errors.inc()
            return DispatchError(
                f"handler {d.name} did not answer within {deadline:g}s",
                Code.DEADLINE_EXCEEDED,
                handler=d.name,
                public=HANDLER_DEADLINE,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the request itself is cancelled
            return self._handler_failed(d, asyncio.CancelledError())
        except Exception as exc:
            return self._handler_failed(d, exc)

    def _warn_unconfigured(self, name: str) -> None:
        """Warn once per quota name; names come from requests, so at most ``max_warned_quotas``
        are remembered (least recently requested forgotten first)."""
        self.metrics.unconfigured_quotas.inc()
        warned = self._warned_quotas
        if name in warned:
            warned.move_to_end(name)
            self.suppressed_quota_warnings += 1
            return
        warned[name] = None
        if len(warned) > self._max_warned_quotas:
            warned.popitem(last=False)
        self._quota_warning.add(
            1, f"Requested quota '{logsafe(name)}' is not configured; granting it. Unconfigured quota names"
        )

    # -- evaluation errors ---------------------------------------------------------------------

    def _rule_failed(self, rule: str, part: str, exc: Exception, fail_closed: bool) -> None:
        """Count and (rate-limited) log an evaluation error of ``rule``'s ``part`` (``match`` or
        ``instance``); raise :class:`_FailClosed` when the group fails closed."""
        self._evaluation_errors += 1
        errors = self._rule_errors.get(rule)
        if errors is None:
            errors = self._rule_errors[rule] = _RuleErrors(rule, self.metrics, self.clock)
        (errors.match if part == "match" else errors.instance).inc()
        outcome = "; the check was denied (fail-closed)" if fail_closed else ""
        errors.warning.add(
            1, f"evaluation errors of rule {rule} (latest: {part}: {logsafe(str(exc))}{outcome})"
        )
        if fail_closed:
            raise _FailClosed(rule)

    def _match_failed(self, g: InstanceGroup, exc: EvaluationError) -> None:
        """Count and log a failed match of ``g`` (raise :class:`_FailClosed` if it fails closed)."""
        if g.rules:  # the match of every rule of a merged group failed
            for rule in g.all_rules[1:]:
                self._rule_failed(rule, "match", exc, False)
        self._rule_failed(g.rule, "match", exc, g.fail_closed)

    def _instances(
        self,
        d: Destination,
        bag: Mapping[str, Any],
        build_failed: Callable[[Destination, InstanceBuildError], None],
        memo: dict[str, Any] | None = None,
        sampled: dict[RuleSampler, bool] | None = None,
    ) -> Iterator[tuple[InstanceGroup, int, Any]]:
        """The instances ``bag`` gives ``d``: (group, builder index, instance) for every builder of
        every group whose match condition holds. An evaluation error is counted and logged
        (:meth:`_rule_failed`); in a fail-closed group it raises :class:`_FailClosed`, else a
        group whose match fails is skipped and an instance that cannot be built goes to
        ``build_failed`` (which raises or records it) and is skipped. ``sampled`` (Report: one
        per attribute set) holds the sampling decisions of the rules seen so far."""
        for g in d.groups:
            cond = g.condition
            if cond is not None:
                try:
                    if not cond.evaluate(bag):
                        continue
                except EvaluationError as exc:
                    self._match_failed(g, exc)
                    continue
            sampler = g.sampler
            if sampler is not None and sampled is not None and not sampler.decide(bag, sampled):
                continue
            for i, b in enumerate(g.builders):
                try:
                    inst = b.build(bag, memo)
                except InstanceBuildError as exc:
                    self._rule_failed(g.rule_of(i), "instance", exc, g.fail_closed)
                    build_failed(d, exc)
                    continue
                yield g, i, inst

    def _directives(self, nt: NamespaceTable, bag: Mapping[str, Any]) -> RouteDirective | None:
        req: list[HeaderOperation] = []
        resp: list[HeaderOperation] = []
        for dg in nt.directives:
            cond = dg.condition
            if cond is not None:
                try:
                    if not cond.evaluate(bag):
                        continue
                except EvaluationError as exc:
                    self._rule_failed(dg.rule, "match", exc, False)  # header operations never deny
                    continue
            for ops, out in ((dg.request_ops, req), (dg.response_ops, resp)):
                for op in ops:
                    if op.operation is HeaderAction.REMOVE:
                        out.append(HeaderOperation(op.name, "", HeaderAction.REMOVE))
                        continue
                    for expr in op.values:
                        try:
                            value = expr.evaluate(bag)
                        except EvaluationError:
                            continue
                        if value:
                            out.append(HeaderOperation(op.name, str(value), op.operation))
        if not req and not resp:
            return None
        return RouteDirective(tuple(req), tuple(resp))

    # -- report --------------------------------------------------------------------------------

    async def report(self, bags: Sequence[Mapping[str, Any]]) -> list[str]:
        """Dispatch the report instances of every attribute set; return the problems (empty if none)."""
        errors: list[str] = []
        self.metrics.report_attribute_sets.inc(len(bags))
        with self.pinned() as t:
            if not t.has(Variety.REPORT):
                return errors
            buffers: dict[Destination, list[Any]] = {}
            has_generators = t.has_generators
            generated: dict[Any, Mapping[str, Any]] = {}
            reads = self.report_attributes(t)
            for n, bag in enumerate(bags, 1):
                if not n % REPORT_SLICE:
                    await asyncio.sleep(0)  # a big batch lets other requests run in between
                if type(bag) is PartialAttributes and (
                    reads is None or (bag.decoded_for is not reads and not bag.covers(reads))
                ):
                    bag.complete()  # decoded for an earlier config, which read less
                if has_generators:
                    try:
                        bag = await self._preprocess(t, bag, fail=False, generated=generated)
                    except DispatchError as exc:
                        errors.append(str(exc))
                memo: dict[str, Any] = {}
                sampled: dict[RuleSampler, bool] = {}
                nt = t.lookup(Variety.REPORT, request_namespace(bag))
                # What _instances does, in line: this loop runs for every attribute set.
                for d in nt.destinations:
                    buf = buffers.get(d)
                    for g in d.groups:
                        cond = g.condition
                        if cond is not None:
                            try:
                                if not cond.evaluate(bag):
                                    continue
                            except EvaluationError as exc:
                                self._match_failed(g, exc)
                                continue
                        sampler = g.sampler
                        if sampler is not None and not sampler.decide(bag, sampled):
                            continue
                        # no enumerate (an object per group and set): a failed builder's place
                        # is found when it fails, after the latest failure's (builders are pure
                        # functions of the set, run in order; one may appear twice in a group)
                        failed = -1
                        for b in g.builders:
                            try:
                                inst = b.build(bag, memo)
                            except InstanceBuildError as exc:
                                failed = g.builders.index(b, failed + 1)
                                self._rule_failed(g.rule_of(failed), "instance", exc, g.fail_closed)
                                errors.append(str(exc))
                                continue
                            if buf is None:
                                buf = buffers[d] = [inst]
                            else:
                                buf.append(inst)
            pending: list[tuple[Destination, Awaitable[Any]]] = []
            for d, instances in buffers.items():
                d.dispatches.inc(len(instances))
                try:
                    r = self._call(d, instances)
                except DispatchError as exc:
                    errors.append(str(exc))
                    continue
                if d.is_async:
                    pending.append((d, r))
            if pending:
                for _, r in await self._await_all(pending, self.report_deadline):
                    if isinstance(r, DispatchError):
                        errors.append(str(r))
        return errors

    # -- attribute generation ------------------------------------------------------------------

    async def _preprocess(
        self,
        t: RoutingTable,
        bag: Mapping[str, Any],
        *,
        fail: bool,
        generated: dict[Any, Mapping[str, Any]] | None = None,
    ) -> Mapping[str, Any]:
        """Run the attribute generators over ``bag``; return the bag with their attributes.

        ``generated`` (reports) remembers, for the length of one request, what each generator
        produced for each distinct instance: a sidecar's batch repeats the same source and
        destination over and over, and a generator's answer depends only on its instance.
        """
        if not t.has_generators:
            return bag
        nt = t.lookup(Variety.ATTRIBUTE_GENERATOR, request_namespace(bag))
        if not nt.destinations:
            return bag

        def failed(message: str, handler: str) -> None:
            message = f"preprocessing attributes failed: {message}"
            if fail:
                raise DispatchError(message, handler=handler, public=ATTRIBUTE_GENERATION_FAILURE)
            # Once per attribute set of a Report: rate-limited, with the count.
            self._generation_warning.add(
                1, f"reports dispatched without generated attributes (latest: {logsafe(message)})"
            )

        def build_failed(d: Destination, exc: InstanceBuildError) -> None:
            d.dispatch_errors.inc()
            failed(f"{d.name}: {type(exc).__name__}: {exc}", d.name)

        # A plain dict (reports) stays a plain dict: lookups in it cost no Python call. Its
        # generated attributes are collected and merged once, at the end.
        overlay = None if type(bag) is dict or type(bag) is PartialAttributes else OverlayBag(bag)
        found: list[Mapping[str, Any]] = []
        for d in nt.destinations:
            for g, i, inst in self._instances(d, bag, build_failed):
                mapper = g.mappers[i] if g.mappers else None
                key: Any = None
                if generated is not None:
                    key = (d, mapper, inst)
                    try:
                        mapped = generated.get(key)
                    except TypeError:  # an instance with map fields is not hashable
                        key = mapped = None
                    if mapped is not None:
                        found.append(mapped)
                        continue
                try:
                    outputs = await self._answer(d, inst)
                except DispatchError as exc:
                    failed(str(exc), d.name)
                    continue
                # Bindings apply even when the generator found nothing: their
                # ``$out.x | default`` fallbacks still produce attributes (Mixer's behaviour).
                mapped = mapper.map(outputs or {}) if mapper is not None else {}
                if key is not None and generated is not None:
                    generated[key] = mapped
                found.append(mapped)
        if overlay is not None:
            for mapped in found:
                overlay.merge(mapped)
            return overlay
        # The request's own attributes win, then the first generator's (as OverlayBag.merge).
        out: dict[str, Any] = {}
        for mapped in reversed(found):
            out.update(mapped)
        out.update(bag)
        return out


def _gate_denial(
    gate: SecurityVerdict, bag: Mapping[str, Any], tracker: ReferenceTracker | None
) -> CheckOutcome:
    result = CheckResult(Status(gate.code, gate.message), DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT)
    return CheckOutcome(
        result,
        None,
        tracker.frozen() if tracker is not None else None,
        reason=gate.message,
        rule=gate.policy,
        handler=gate.handler,
        attributes=bag,
        deny_headers=tuple(HeaderOperation(name, value, action) for name, value, action in gate.deny_headers),
    )


_GATE_DIRECTIVES: dict[int, tuple[tuple[tuple[str, str, HeaderAction], ...], RouteDirective]] = {}


def _with_gate_headers(
    directive: RouteDirective | None, ops: tuple[tuple[str, str, HeaderAction], ...]
) -> RouteDirective:
    """The authenticated request's upstream headers (claims, payload, token removal) before the
    rules' own request header operations. A verified token's operations are one cached tuple,
    so its directive is made once (while it stays in the small cache)."""
    hit = _GATE_DIRECTIVES.get(id(ops))
    if hit is None or hit[0] is not ops:
        gate_ops = tuple(HeaderOperation(name, value, action) for name, value, action in ops)
        hit = remember(_GATE_DIRECTIVES, id(ops), (ops, RouteDirective(gate_ops)), 4096)
    if directive is None:
        return hit[1]
    gate_ops = hit[1].request_header_operations
    return RouteDirective(
        gate_ops + directive.request_header_operations,
        directive.response_header_operations,
        directive.direct_response_code,
        directive.direct_response_body,
    )


def _close_unstarted(calls: Sequence[tuple[Destination, Any]]) -> None:
    """Close the coroutines of asynchronous calls that were made but never awaited."""
    for d, aw in calls:
        if not d.is_async:
            continue
        close = getattr(aw, "close", None)
        if close is not None:
            close()


def _with_outputs(bag: Mapping[str, Any], outputs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``bag`` plus the Check's action outputs (``<action>.output.<field>``), for header operations."""
    if not outputs:
        return bag
    overlay = OverlayBag(bag)
    overlay.merge(outputs)
    return overlay


def _raise_build_error(d: Destination, exc: InstanceBuildError) -> None:
    raise DispatchError(str(exc), handler=d.name, public=INSTANCE_FAILURE) from None
