"""The ``envoy.service.ratelimit.v3.RateLimitService`` servicer (``ShouldRateLimit``).

Each descriptor is one quota allocation (mapping: :mod:`mixerd.api.ratelimit.convert`),
dispatched in order through ``Dispatcher.quota``.

Switches (constructor arguments; the server reads them from settings):

``shadow`` (``MIXERD_RATELIMIT_SHADOW``, default false)
    Global shadow mode: every decision is made, charged and counted, and every descriptor is
    answered OK.
``shadow_domains`` (``MIXERD_RATELIMIT_SHADOW_DOMAINS``, comma separated)
    Shadow mode for these domains only. A descriptor entry ``shadow=true`` shadows one descriptor.
``failure_mode`` (``MIXERD_RATELIMIT_FAILURE_MODE``: ``allow`` (default) or ``error``)
    What a handler failure (an exception, a deadline, an instance that cannot be built, a status
    other than OK, RESOURCE_EXHAUSTED or PERMISSION_DENIED) does. ``allow``: that descriptor is
    answered OK, the failure is logged (at most once per 10 s per domain, with a count) and
    counted in ``mixerd_ratelimit_errors_total``. ``error``: the call fails with gRPC UNAVAILABLE
    and only a fixed phrase and a request id (``handler failure (request id ...)``; the details
    are logged once under that id), so Envoy applies its own ``failure_mode_deny`` (allow by
    default; either way Envoy flags the request ``RLSE`` only when it denies). mixerd itself
    never denies because of a handler error: Envoy's ``failure_mode_deny`` stays the one knob
    that does. (A quota rule marked fail-closed whose match or instance cannot be evaluated is
    not a handler error: the dispatcher denies it with PERMISSION_DENIED, answered OVER_LIMIT.)

Metrics (in the runtime's registry, from the dispatcher): ``mixerd_requests_total{api="ratelimit"}``,
``mixerd_request_duration_seconds{api="ratelimit"}``,
``mixerd_ratelimit_decisions_total{domain, quota, code, shadow}`` (``code`` is the decision as
made: OK, OVER_LIMIT or ERROR; ``shadow="true"`` when it was not enforced) and
``mixerd_ratelimit_errors_total{domain}``. Quota label values are taken from descriptors, so at
most 1000 distinct (domain, quota) pairs are labelled; later ones are counted under
``quota="_other_"``.

The unit of ``current_limit`` needs the quota's window, which memquota reports only with a
grant; the service remembers the last window seen per (domain, descriptor) (bounded, 10000
entries) so an OVER_LIMIT answer still carries it.

Time (latency, the spacing of warnings) comes from the runtime's clock (``Dispatcher.clock``).

With ``caller_identity`` (the listener verifies client certificates) the SPIFFE ID of the
connection's certificate is every allocation's ``mixerd.caller.principal``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

import grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from mixerd.adapter import Code, QuotaArgs, RateLimitedWarning
from mixerd.api.caller import grpc_caller
from mixerd.api.decisions import DecisionRecorder
from mixerd.api.ratelimit.convert import (
    Allocation,
    BadRequest,
    Decision,
    decide,
    decode_request,
    encode_response,
    result_window,
)
from mixerd.attribute import logsafe
from mixerd.console.model import Frontend as DecisionFrontend
from mixerd.runtime import Dispatcher, DispatchError, failure_answer

__all__ = ["FailureMode", "RateLimitService"]

_log = logging.getLogger(__name__)

_MAX_LABELLED: Final = 1000
_OTHER: Final = "_other_"
_MAX_WINDOWS: Final = 10_000
_ONE: Final = QuotaArgs(1, False, "")
"""The arguments of most allocations (one hit, all or nothing, no deduplication id)."""


class FailureMode(enum.Enum):
    ALLOW = "allow"
    ERROR = "error"


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """Envoy's rate limit service over the dispatcher's quotas."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        shadow: bool = False,
        shadow_domains: Iterable[str] = (),
        failure_mode: FailureMode | str = FailureMode.ALLOW,
        caller_identity: bool = False,
        recorder: DecisionRecorder | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.recorder = recorder
        """Where each descriptor's decision goes for the console (None: not recorded)."""
        self.caller_identity = caller_identity
        self.shadow = shadow
        self.shadow_domains = frozenset(d for d in shadow_domains if d)
        self.failure_mode = FailureMode(failure_mode)
        self.clock = dispatcher.clock
        m = dispatcher.metrics
        self._requests = m.requests
        self._ok = m.requests.labels("ratelimit", "ShouldRateLimit", "OK")
        self._seconds = m.request_seconds.labels("ratelimit", "ShouldRateLimit")
        self._decisions = m.counter(
            "mixerd_ratelimit_decisions",
            "Rate limit decisions per descriptor: code is OK, OVER_LIMIT or ERROR as decided; shadow "
            "decisions were answered OK.",
            ["domain", "quota", "code", "shadow"],
        )
        self._errors = m.counter(
            "mixerd_ratelimit_errors", "Rate limit descriptors whose quota handler failed.", ["domain"]
        )
        self._labelled: set[tuple[str, str]] = set()
        self._decision_children: dict[tuple[str, str, str, bool], Any] = {}
        self._windows: OrderedDict[tuple[str, str], _dt.timedelta] = OrderedDict()
        self._warnings: dict[str | None, RateLimitedWarning] = {}
        """Failure warnings per domain (domains come from requests: at most ``_MAX_LABELLED``
        have their own, the others share the one under ``None``)."""

    def register(self, server: grpc.aio.Server) -> None:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(self, server)

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        start = self.clock.monotonic()
        decisions: list[Decision] = []
        try:
            allocations = decode_request(
                request, caller=grpc_caller(context) if self.caller_identity else None
            )
        except BadRequest as exc:
            self._requests.labels("ratelimit", "ShouldRateLimit", "INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        for a in allocations:
            d, failure = await self._allocate(a)
            if failure is not None and self.failure_mode is FailureMode.ERROR:
                self._requests.labels("ratelimit", "ShouldRateLimit", "UNAVAILABLE").inc()
                message = failure_answer(failure, api="ratelimit", method="ShouldRateLimit", attributes=a.bag)
                await context.abort(grpc.StatusCode.UNAVAILABLE, message)
            decisions.append(d)
        response = encode_response(decisions)
        self._ok.inc()
        self._seconds.observe(self.clock.monotonic() - start)
        return response

    async def _allocate(self, a: Allocation) -> tuple[Decision, DispatchError | None]:
        """The decision on one descriptor, and what failed if the handler did."""
        start = self.clock.monotonic() if self.recorder is not None else 0.0
        shadow = self.shadow or a.shadow or a.domain in self.shadow_domains
        failure: DispatchError | None = None
        args = _ONE if a.amount == 1 else QuotaArgs(a.amount, False, "")
        try:
            result = await self.dispatcher.quota(a.bag, a.quota, args)
        except DispatchError as exc:
            failure = exc
            decision = Decision(a.quota, shadow=shadow, error=str(exc))
        else:
            wkey = (a.domain, a.key)
            window = result_window(result)
            if window is not None:
                self._remember_window(wkey, window)
            decision = decide(a, result, shadow=shadow, window=self._windows.get(wkey))
            if decision.error:
                failure = DispatchError(f"quota handler answered {decision.error}", Code.UNAVAILABLE)
        if decision.error:
            self._errors.labels(a.domain).inc()
            if self.failure_mode is FailureMode.ALLOW:
                self._warn(a, decision.error)
        key = (a.domain, a.quota, decision.code_name, shadow)
        child = self._decision_children.get(key)
        if child is None:
            quota = self._quota_label(a.domain, a.quota)
            child = self._decisions.labels(a.domain, quota, decision.code_name, "true" if shadow else "false")
            if quota != _OTHER:
                self._decision_children[key] = child
        child.inc()
        if self.recorder is not None:
            self._record(a, decision, start)
        return decision, failure

    def _record(self, a: Allocation, decision: Decision, start: float) -> None:
        assert self.recorder is not None
        if decision.error:
            code, message = Code.UNAVAILABLE, "quota handler failed"
        elif decision.over_limit:
            code, message = Code.RESOURCE_EXHAUSTED, "over limit"
        else:
            code, message = Code.OK, ""
        if decision.shadow and code != Code.OK:
            message += " (shadow: answered OK)"
        self.recorder.record(
            DecisionFrontend.RATELIMIT,
            a.bag,
            code=code,
            message=message,
            quotas={a.quota: 0 if decision.over_limit else a.amount},
            asked={a.quota: a.amount},
            duration_s=self.clock.monotonic() - start,
        )

    def _remember_window(self, key: tuple[str, str], window: _dt.timedelta) -> None:
        windows = self._windows
        if windows.get(key) == window:
            return
        windows[key] = window
        windows.move_to_end(key)
        if len(windows) > _MAX_WINDOWS:
            windows.popitem(last=False)

    def _quota_label(self, domain: str, quota: str) -> str:
        pair = (domain, quota)
        if pair in self._labelled:
            return quota
        if len(self._labelled) < _MAX_LABELLED:
            self._labelled.add(pair)
            return quota
        return _OTHER

    def _warn(self, a: Allocation, error: str) -> None:
        """Log a failure answered OK: at most once per 10 s per domain, with the count."""
        key: str | None = a.domain
        warning = self._warnings.get(key)
        if warning is None:
            if len(self._warnings) >= _MAX_LABELLED:
                key = None
                warning = self._warnings.get(None)
            if warning is None:
                warning = self._warnings[key] = RateLimitedWarning(self.clock, logger=_log)
        warning.add(
            1,
            f"rate limit domain {logsafe(a.domain)} quota {logsafe(a.quota)} ({logsafe(a.key)}) failed, "
            f"answering OK (latest: {logsafe(error)}); failures",
        )
