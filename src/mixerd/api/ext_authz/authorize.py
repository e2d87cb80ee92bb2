"""The one authorization path shared by the ext_authz front-ends (gRPC ``service`` and HTTP ``http``).

:meth:`Authorizer.authorize` takes a request's bag (through a decoder, so a malformed request is
handled here too) and returns a :class:`~mixerd.api.ext_authz.verdict.Verdict`:

1. pin the routing table in force (with it the config's quota plan);
2. the quotas the request is charged (:func:`~mixerd.api.ext_authz.quotas.quota_args`);
3. ``Dispatcher.check`` on that same table;
4. an outcome becomes a verdict (:func:`~mixerd.api.ext_authz.verdict.decide`); a check that
   could not be evaluated (``DispatchError``) becomes an error verdict carrying only a fixed
   phrase and a request id, the details being logged once under that id
   (:func:`mixerd.runtime.failure_answer`, shared by every front-end).

Each request is counted in ``mixerd_requests_total{api, method="Check", code}`` and timed (on the
runtime's clock) in ``mixerd_request_duration_seconds`` of the runtime's registry; a malformed
request (:class:`BadRequest`, raised to the front-end to answer on its wire) counts as
INVALID_ARGUMENT. The front-ends keep only their wire decoding and encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mixerd.adapter import Code, code_name
from mixerd.api.decisions import granted, recorder_of
from mixerd.api.ext_authz.quotas import quota_args
from mixerd.api.ext_authz.request import BadRequest
from mixerd.api.ext_authz.verdict import Verdict, decide, error_verdict
from mixerd.console.model import Frontend
from mixerd.runtime import CheckOutcome, DispatchError, Runtime, failure_answer

__all__ = ["Authorizer"]


class Authorizer:
    """Checks requests against the runtime for one front-end (``api`` labels its metrics)."""

    def __init__(self, runtime: Runtime, api: str) -> None:
        self.dispatcher = runtime.dispatcher
        self.clock = runtime.clock
        self.api = api
        self._requests = runtime.metrics.requests
        self._seconds = runtime.metrics.request_seconds.labels(api, "Check")
        self._counters: dict[int, Any] = {}
        self.recorder = recorder_of(runtime)
        self.frontend = Frontend.EXT_AUTHZ_HTTP if api == "http_authz" else Frontend.EXT_AUTHZ_GRPC

    def _count(self, code: int) -> None:
        c = self._counters.get(code)
        if c is None:
            c = self._counters[code] = self._requests.labels(self.api, "Check", code_name(code))
        c.inc()

    async def authorize(self, decode: Callable[[], Mapping[str, Any]]) -> Verdict:
        """The verdict on the request ``decode()`` turns into a bag.

        Raises :class:`BadRequest` (counted) when the request is malformed: from ``decode`` or
        from a bad ``mixerd.quotas`` extension.
        """
        start = self.clock.monotonic()
        dispatcher = self.dispatcher
        try:
            bag = decode()
            with dispatcher.pinned() as table:
                quotas = quota_args(bag, table.quota_plan)
                outcome: CheckOutcome | None = None
                try:
                    outcome = await dispatcher.check(bag, quotas=quotas, table=table)
                except DispatchError as exc:
                    message = failure_answer(exc, api=self.api, method="Check", attributes=bag)
                    verdict = error_verdict(exc.code, message)
                else:
                    verdict = decide(outcome, quotas)
        except BadRequest:
            self._count(Code.INVALID_ARGUMENT)
            raise
        self._count(verdict.code)
        elapsed = self.clock.monotonic() - start
        self._seconds.observe(elapsed)
        if self.recorder is not None:
            self.recorder.record(
                self.frontend,
                bag,
                code=verdict.code,
                message=verdict.message,
                outcome=outcome,
                quotas=granted(outcome) if outcome is not None else None,
                asked={name: args.amount for name, args in quotas.items()} if quotas else None,
                duration_s=elapsed,
            )
        return verdict
