"""The ``istio.mixer.v1.Mixer`` servicer: Check and Report over gRPC.

Error mapping (Mixer's): a too-large ``global_word_count`` -> INTERNAL ("inconsistent global
dictionary versions used ..."); a malformed message (bad dictionary index, the same attribute in
two typed maps, a bad IP length ...) or an attribute sent in another typed map than its manifest
type's (``request.headers`` as a string: see :class:`~mixerd.api.mixer_v1.decode.WireTypes`) ->
INVALID_ARGUMENT naming the field; a failed dispatch (a
handler error, an instance that cannot be built, a failed attribute generator) -> INTERNAL;
Report problems -> UNKNOWN (only when reports are dispatched synchronously; the server queues
them and answers at once). None of them stops the server. **Changed from Mixer**, which put the
reason in the status message: a failed dispatch or report answers only a fixed phrase and a
request id (``handler failure (request id 7f3a09c2e1b4d5a6)``), and the reason (adapters'
exception text, which can name hosts, paths or secrets) is logged once under that id
(:func:`mixerd.runtime.failure_answer`).

Bounded work per request: the servicer receives the raw request bytes and parses them itself, so
bytes that are not a protobuf answer INVALID_ARGUMENT (grpc's own deserializer would log a
traceback and answer UNKNOWN); :class:`~mixerd.api.mixer_v1.wire.RequestLimits` are checked
before decoding (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for the total size, naming the flag);
a large Report is decoded in slices of a few milliseconds, letting other tasks run between them.
Rejected requests are logged as one line per kind at most every 10 s, with the count.

With ``caller_identity`` (the listener verifies client certificates) the SPIFFE ID of the
connection's certificate is ``mixerd.caller.principal`` (:mod:`mixerd.api.caller`) of a Check, its
quotas and every attribute set of a Report. It is not among a Check's referenced attributes:
the proxy's check cache cannot key on what it did not send, and the caller's identity is the
same for every request of its cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from mixerd._proto.mixer.v1 import check_pb2, mixer_pb2_grpc, report_pb2
from mixerd.adapter import Code, QuotaArgs, RateLimitedWarning
from mixerd.api.caller import CALLER_PRINCIPAL, grpc_caller
from mixerd.api.decisions import DecisionRecorder, granted
from mixerd.api.mixer_v1.decode import ProtoBag, WireTypes, check_limits, decode_report_steps
from mixerd.api.mixer_v1.encode import (
    check_response_bytes,
    encode_precondition,
    encode_quota_result,
    encode_referenced,
    precondition_parts,
)
from mixerd.api.mixer_v1.wire import (
    BadRequest,
    DictionaryMismatch,
    LimitExceeded,
    RequestLimits,
    check_dictionary,
)
from mixerd.attribute import OverlayBag, logsafe, remember, sorted_references
from mixerd.console.model import Frontend
from mixerd.runtime import CheckOutcome, Dispatcher, DispatchError, failure_answer, log_failure
from mixerd.runtime.reporting import ReportPipeline

__all__ = ["MixerService"]

_log = logging.getLogger(__name__)
_EMPTY_REPORT = report_pb2.ReportResponse()
_CheckRequest: Final = check_pb2.CheckRequest
_MAX_REPORT_ERRORS = 5
_RESPONSE_CACHE_SIZE = 4096
_SERVICE: Final = "istio.mixer.v1.Mixer"
_LOGGED_DETAIL: Final = 200
"""Characters of a rejection's reason that are logged (it may quote what the caller sent)."""


class MixerService(mixer_pb2_grpc.MixerServicer):  # type: ignore[misc]
    """Mixer's API over the dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        queue_reports: bool = True,
        limits: RequestLimits | None = None,
        caller_identity: bool = False,
        recorder: DecisionRecorder | None = None,
        **queue: Any,
    ) -> None:
        self.dispatcher = dispatcher
        self.recorder = recorder
        """Where each Check's decision goes for the console (None: not recorded)."""
        self.limits = RequestLimits() if limits is None else limits
        """What one request may ask the server to decode."""
        self.caller_identity = caller_identity
        """Read the client certificate's SPIFFE ID into ``mixerd.caller.principal`` (the
        listener verifies client certificates)."""
        self.reports = ReportPipeline(dispatcher, api="mixer", **queue) if queue_reports else None
        """With ``queue_reports`` Report answers as soon as the request is decoded and queued
        (``queue`` are :class:`ReportPipeline` options); otherwise it waits for the dispatch and
        returns its problems as UNKNOWN (Mixer's behaviour)."""
        self.clock = dispatcher.clock
        m = dispatcher.metrics
        self._requests = m.requests
        self._check_ok = m.requests.labels("mixer", "Check", "OK")
        self._report_ok = m.requests.labels("mixer", "Report", "OK")
        self._check_seconds = m.request_seconds.labels("mixer", "Check")
        self._report_seconds = m.request_seconds.labels("mixer", "Report")
        self._encoded: dict[Any, tuple[bytes, bytes]] = {}
        """A Check answer's encoded precondition around its validity (:func:`precondition_parts`),
        by (decision-cache entry, directive, word count) or (status, directive, references, whole
        maps, word count)."""
        self._rejections: dict[tuple[str, str], RateLimitedWarning] = {}
        self._types = WireTypes({})
        """The typed maps of the manifest in force (rebuilt when the config's manifest changes)."""

    def register(self, server: grpc.aio.Server) -> None:
        """Register Check and Report taking the raw request bytes (parsed by the servicer, so a
        message that does not parse is INVALID_ARGUMENT, not grpc's UNKNOWN and traceback)."""
        handlers = {
            "Check": grpc.unary_unary_rpc_method_handler(self.check_wire),  # answers bytes
            "Report": grpc.unary_unary_rpc_method_handler(
                self.Report, response_serializer=report_pb2.ReportResponse.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
        server.add_registered_method_handlers(_SERVICE, handlers)

    async def _abort(self, context: Any, method: str, code: grpc.StatusCode, message: str) -> None:
        self._requests.labels("mixer", method, code.name).inc()
        await context.abort(code, message)

    async def _reject(self, context: Any, method: str, code: grpc.StatusCode, message: str) -> None:
        """Answer a request the caller got wrong; log it, at most once per 10 s per kind."""
        warning = self._rejections.get((method, code.name))
        if warning is None:
            warning = self._rejections[(method, code.name)] = RateLimitedWarning(self.clock)
        warning.add(
            1, f"rejected Mixer {method} requests ({code.name}; the last: {logsafe(message, _LOGGED_DETAIL)})"
        )
        await self._abort(context, method, code, message)

    def _wire_types(self) -> WireTypes:
        """The typed maps of the manifest of the routing table in force."""
        manifest = self.dispatcher.table.manifest
        types = self._types
        if types.manifest is not manifest:
            types = self._types = WireTypes(manifest)
        return types

    def flush_warnings(self) -> None:
        """Log the rejections counted since each kind's last log line."""
        for (method, code), warning in self._rejections.items():
            warning.flush(f"rejected Mixer {method} requests ({code})")

    async def aclose(self) -> None:
        """Dispatch the queued reports (bounded by the pipeline's flush timeout); log what was
        rejected since the last log line."""
        if self.reports is not None:
            await self.reports.aclose()
        self.flush_warnings()

    async def Check(self, request: Any, context: Any) -> Any:
        """Check; ``request`` is a ``CheckRequest`` or its serialized bytes. The answer as a
        ``CheckResponse`` (the gRPC method sends :meth:`check_wire`'s bytes)."""
        return check_pb2.CheckResponse.FromString(await self.check_wire(request, context))

    async def check_wire(self, request: Any, context: Any) -> bytes:
        """Check, answering the serialized ``CheckResponse``; ``request`` is a ``CheckRequest``
        or its serialized bytes."""
        start = self.clock.monotonic()
        try:
            if type(request) is bytes:
                request = _CheckRequest.FromString(request)
            gwc = request.global_word_count
            check_dictionary(gwc)
            attributes = request.attributes
            check_limits(attributes, self.limits)
            bag = ProtoBag(attributes, global_word_count=gwc, track=True, types=self._wire_types())
        except DecodeError as exc:
            await self._reject(
                context, "Check", grpc.StatusCode.INVALID_ARGUMENT, f"malformed CheckRequest: {exc}"
            )
            raise AssertionError("unreachable") from None
        except DictionaryMismatch as exc:
            await self._abort(context, "Check", grpc.StatusCode.INTERNAL, str(exc))
            raise AssertionError("unreachable") from None
        except BadRequest as exc:
            await self._reject(context, "Check", _code(exc), str(exc))
            raise AssertionError("unreachable") from None
        quotas = None
        if request.quotas:
            dedup = request.deduplication_id
            quotas = {
                name: QuotaArgs(q.amount, q.best_effort, dedup + name) for name, q in request.quotas.items()
            }
        checked: Any = bag
        if self.caller_identity:
            principal = grpc_caller(context)
            if principal is not None:
                # a layer over the bag: read without being recorded as a referenced attribute
                checked = OverlayBag(bag)
                checked.set(CALLER_PRINCIPAL, principal)
        try:
            outcome = await self.dispatcher.check(checked, quotas=quotas, tracker=bag.tracker)
        except DispatchError as exc:
            # The caller gets a fixed phrase and a request id; the detail is logged under that id.
            message = failure_answer(exc, api="mixer", method="Check", attributes=bag)
            if self.recorder is not None:
                self._record(checked, Code.INTERNAL, message, None, quotas, start)
            await self._abort(context, "Check", grpc.StatusCode.INTERNAL, message)
            raise AssertionError("unreachable") from None
        r = outcome.result
        if self.recorder is not None:
            self._record(checked, r.status.code, r.status.message, outcome, quotas, start)
        if outcome.quotas:
            response = self._with_quotas(outcome, bag.tracker.whole_maps, gwc)
        else:
            # The same answer to the same question encodes to the same bytes but for the validity
            # (a cached answer's counts down): encode the rest once (a proxy asks the same few
            # questions over and over). An answer of the decision cache is keyed on its entry.
            entry = outcome.cached
            key: Any = (
                (entry, outcome.directive, gwc)
                if entry is not None
                else (r.status, outcome.directive, outcome.references, frozenset(bag.tracker.whole_maps), gwc)
            )
            parts = self._encoded.get(key)
            if parts is None:
                parts = precondition_parts(
                    status_code=r.status.code,
                    message=r.status.message,
                    referenced=encode_referenced(
                        sorted_references(outcome.references or ()), bag.tracker.whole_maps, gwc
                    ),
                    route_directive=outcome.directive,
                )
                remember(self._encoded, key, parts, _RESPONSE_CACHE_SIZE)
            response = check_response_bytes(parts, r.valid_duration, r.valid_use_count)
        self._check_ok.inc()
        self._check_seconds.observe(self.clock.monotonic() - start)
        return response

    @staticmethod
    def _with_quotas(outcome: CheckOutcome, whole_maps: Collection[str], gwc: int) -> bytes:
        """A Check answer with quota results (granted amounts differ from call to call)."""
        r = outcome.result
        response = check_pb2.CheckResponse(
            precondition=encode_precondition(
                status_code=r.status.code,
                message=r.status.message,
                valid_duration=r.valid_duration,
                valid_use_count=r.valid_use_count,
                referenced=encode_referenced(sorted_references(outcome.references or ()), whole_maps, gwc),
                route_directive=outcome.directive,
            )
        )
        for name, q in outcome.quotas.items():
            qr = q.result
            response.quotas[name].CopyFrom(
                encode_quota_result(
                    status_code=qr.status.code,
                    message=qr.status.message,
                    valid_duration=qr.valid_duration,
                    granted_amount=qr.amount,
                    referenced=encode_referenced(sorted_references(q.references or ()), whole_maps, gwc),
                )
            )
        return bytes(response.SerializeToString())

    def _record(
        self,
        checked: Mapping[str, Any],
        code: int,
        message: str,
        outcome: CheckOutcome | None,
        quotas: Mapping[str, QuotaArgs] | None,
        start: float,
    ) -> None:
        assert self.recorder is not None
        self.recorder.record(  # reads the bag without recording references
            Frontend.MIXER_CHECK,
            checked,
            code=code,
            message=message,
            outcome=outcome,
            quotas=granted(outcome) if outcome is not None else None,
            asked={name: q.amount for name, q in quotas.items()} if quotas else None,
            duration_s=self.clock.monotonic() - start,
        )

    async def Report(self, request: Any, context: Any) -> Any:
        """Report; ``request`` is a ``ReportRequest`` or its serialized bytes."""
        start = self.clock.monotonic()
        try:
            if type(request) is bytes:
                request = report_pb2.ReportRequest.FromString(request)
            caller = grpc_caller(context) if self.caller_identity else None
            steps = decode_report_steps(
                request,
                self.limits,
                self._wire_types(),
                caller=caller,
                wanted=self.dispatcher.report_attributes(),
            )
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    bags = done.value
                    break
                await asyncio.sleep(0)  # a large report: let other tasks (/healthz ...) run
        except DecodeError as exc:
            await self._reject(
                context, "Report", grpc.StatusCode.INVALID_ARGUMENT, f"malformed ReportRequest: {exc}"
            )
            raise AssertionError("unreachable") from None
        except DictionaryMismatch as exc:
            await self._abort(context, "Report", grpc.StatusCode.INTERNAL, str(exc))
            raise AssertionError("unreachable") from None
        except BadRequest as exc:
            await self._reject(context, "Report", _code(exc), str(exc))
            raise AssertionError("unreachable") from None
        if bags and self.reports is not None:
            await self.reports.submit(bags)
        elif bags:
            errors = await self.dispatcher.report(bags)
            if errors:
                shown = "; ".join(errors[:_MAX_REPORT_ERRORS])
                more = len(errors) - _MAX_REPORT_ERRORS
                if more > 0:
                    shown += f"; and {more} more"
                message = log_failure("mixer", "Report", shown, public="report dispatch failure")
                await self._abort(context, "Report", grpc.StatusCode.UNKNOWN, message)
        self._report_ok.inc()
        self._report_seconds.observe(self.clock.monotonic() - start)
        return _EMPTY_REPORT


def _code(exc: BadRequest) -> grpc.StatusCode:
    if isinstance(exc, LimitExceeded) and exc.resource:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT
