"""The ``envoy.service.auth.v3.Authorization`` servicer (Envoy's ext_authz filter, gRPC mode).

Every call becomes one ``Dispatcher.check`` with the quotas the request is charged (see
:mod:`mixerd.api.ext_authz.quotas`). Outcomes: an allow or a denial is a normal response; a
check that could not be evaluated (a failing handler, a deadline) is an ``error_response``
whose body only carries a request id, the details being logged under that id; a malformed
request is answered with gRPC INVALID_ARGUMENT. None of them stops the server.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from mixerd.adapter import Code, code_name
from mixerd.api.ext_authz.quotas import QuotaPlan, quota_args
from mixerd.api.ext_authz.request import BadRequest, CheckRequestBag
from mixerd.api.ext_authz.verdict import decide, encode_grpc, error_verdict
from mixerd.config import QuotaSpecBindingSpec, QuotaSpecSpec, Snapshot
from mixerd.runtime import DispatchError, Runtime, metrics

__all__ = ["ExtAuthzService", "QuotaPlanCache", "error_request_id"]

_log = logging.getLogger(__name__)


_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_request_id(attrs: Mapping[str, Any]) -> str:
    """The id under which a failed check is logged: ``x-request-id`` when sent (and made of
    letters, digits and ``._:-`` only), else a new one."""
    rid = attrs.get("request.id")
    if isinstance(rid, str) and _REQUEST_ID.fullmatch(rid) is not None:
        return rid
    return uuid.uuid4().hex[:16]


def _specs_of(
    snapshot: Snapshot | None,
) -> tuple[dict[tuple[str, str], QuotaSpecSpec], list[QuotaSpecBindingSpec]]:
    if snapshot is None:
        return {}, []
    specs = {(key.namespace, key.name): spec for key, spec in snapshot.quota_specs.items()}
    return specs, list(snapshot.quota_spec_bindings.values())


class QuotaPlanCache:
    """The :class:`QuotaPlan` of the runtime's config snapshot, rebuilt when the snapshot changes."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._snapshot: Snapshot | None = None
        self._plan = QuotaPlan(default_namespace=runtime.default_namespace)

    def get(self) -> QuotaPlan:
        snap = self._runtime.snapshot
        if snap is not self._snapshot:
            specs, bindings = _specs_of(snap)
            self._plan = QuotaPlan.build(specs, bindings, default_namespace=self._runtime.default_namespace)
            self._snapshot = snap
        return self._plan


class ExtAuthzService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy's Authorization service over the runtime's dispatcher."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.plans = QuotaPlanCache(runtime)
        self._seconds = metrics.REQUEST_SECONDS.labels("ext_authz", "Check")
        self._counters: dict[int, Any] = {}

    def register(self, server: grpc.aio.Server) -> None:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, server)

    def _count(self, code: int) -> None:
        c = self._counters.get(code)
        if c is None:
            c = self._counters[code] = metrics.REQUESTS.labels("ext_authz", "Check", code_name(code))
        c.inc()

    async def Check(self, request: Any, context: Any) -> Any:  # gRPC method name
        start = time.perf_counter()
        try:
            bag = CheckRequestBag(request)
            quotas = quota_args(bag, self.plans.get())
        except BadRequest as exc:
            self._count(Code.INVALID_ARGUMENT)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        try:
            outcome = await self.runtime.dispatcher.check(bag, quotas=quotas)
        except DispatchError as exc:
            rid = error_request_id(bag)
            _log.error("ext_authz check failed (request id %s): %s", rid, exc)
            verdict = error_verdict(exc.code, rid)
        else:
            verdict = decide(outcome, quotas)
        self._count(verdict.code)
        self._seconds.observe(time.perf_counter() - start)
        return encode_grpc(verdict)
