"""The ``istio.mixer.v1.Mixer`` servicer: Check and Report over gRPC.

Error mapping (Mixer's): a too-large ``global_word_count`` -> INTERNAL ("inconsistent global
dictionary versions used ..."); a malformed message (bad dictionary index, the same attribute in
two typed maps, a bad IP length ...) -> INVALID_ARGUMENT naming the field; a failed dispatch (a
handler error, an instance that cannot be built, a failed attribute generator) -> INTERNAL with
the reason; Report problems -> UNKNOWN with the joined messages (only when reports are dispatched
synchronously; the server queues them and answers at once). None of them stops the server.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from mixerd._proto.mixer.v1 import check_pb2, mixer_pb2_grpc, report_pb2
from mixerd.adapter import QuotaArgs
from mixerd.api.mixer_v1.decode import ProtoBag, decode_report
from mixerd.api.mixer_v1.encode import encode_precondition, encode_quota_result, encode_referenced
from mixerd.api.mixer_v1.wire import BadRequest, DictionaryMismatch, check_dictionary
from mixerd.attribute import sorted_references
from mixerd.runtime import Dispatcher, DispatchError
from mixerd.runtime.reporting import ReportPipeline

__all__ = ["MixerService"]

_log = logging.getLogger(__name__)
_EMPTY_REPORT = report_pb2.ReportResponse()
_MAX_REPORT_ERRORS = 5
_RESPONSE_CACHE_SIZE = 4096


class MixerService(mixer_pb2_grpc.MixerServicer):  # type: ignore[misc]
    """Mixer's API over the dispatcher."""

    def __init__(self, dispatcher: Dispatcher, *, queue_reports: bool = True, **queue: Any) -> None:
        self.dispatcher = dispatcher
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
        self._responses: dict[Any, Any] = {}
        """Encoded responses by (result, directive, references, whole maps, word count)."""

    def register(self, server: grpc.aio.Server) -> None:
        mixer_pb2_grpc.add_MixerServicer_to_server(self, server)

    async def _abort(self, context: Any, method: str, code: grpc.StatusCode, message: str) -> None:
        self._requests.labels("mixer", method, code.name).inc()
        await context.abort(code, message)

    async def Check(self, request: Any, context: Any) -> Any:
        start = self.clock.monotonic()
        gwc = request.global_word_count
        try:
            check_dictionary(gwc)
            bag = ProtoBag(request.attributes, global_word_count=gwc, track=True)
        except DictionaryMismatch as exc:
            await self._abort(context, "Check", grpc.StatusCode.INTERNAL, str(exc))
            raise AssertionError("unreachable") from None
        except BadRequest as exc:
            await self._abort(context, "Check", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        quotas = None
        if request.quotas:
            dedup = request.deduplication_id
            quotas = {
                name: QuotaArgs(q.amount, q.best_effort, dedup + name) for name, q in request.quotas.items()
            }
        try:
            outcome = await self.dispatcher.check(bag, quotas=quotas, tracker=bag.tracker)
        except DispatchError as exc:
            _log.warning("check failed: %s", exc)
            await self._abort(
                context, "Check", grpc.StatusCode.INTERNAL, f"performing check operation failed: {exc}"
            )
            raise AssertionError("unreachable") from None
        whole_maps = bag.tracker.whole_maps
        r = outcome.result
        key = None
        if not outcome.quotas:
            # The same answer to the same question encodes to the same response: reuse it (a
            # proxy asks the same few questions over and over). Responses are never mutated.
            key = (r, outcome.directive, outcome.references, frozenset(whole_maps), gwc)
            cached = self._responses.get(key)
            if cached is not None:
                self._check_ok.inc()
                self._check_seconds.observe(self.clock.monotonic() - start)
                return cached
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
        if key is not None:
            if len(self._responses) >= _RESPONSE_CACHE_SIZE:
                self._responses.clear()
            self._responses[key] = response
        self._check_ok.inc()
        self._check_seconds.observe(self.clock.monotonic() - start)
        return response

    async def Report(self, request: Any, context: Any) -> Any:
        start = self.clock.monotonic()
        try:
            bags = decode_report(request)
        except DictionaryMismatch as exc:
            await self._abort(context, "Report", grpc.StatusCode.INTERNAL, str(exc))
            raise AssertionError("unreachable") from None
        except BadRequest as exc:
            await self._abort(context, "Report", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
                await self._abort(context, "Report", grpc.StatusCode.UNKNOWN, shown)
        self._report_ok.inc()
        self._report_seconds.observe(self.clock.monotonic() - start)
        return _EMPTY_REPORT
