"""The ``envoy.service.auth.v3.Authorization`` servicer (Envoy's ext_authz filter, gRPC mode).

Every call is decoded into a bag (:class:`~mixerd.api.ext_authz.request.CheckRequestBag`) and
checked by the shared :class:`~mixerd.api.ext_authz.authorize.Authorizer` (quotas, dispatch,
decision, metrics). Outcomes: an allow or a denial is a normal response; a check that could not be
evaluated (a failing handler, a deadline) is an ``error_response`` whose body only carries a
request id, the details being logged under that id; a malformed request is answered with gRPC
INVALID_ARGUMENT. None of them stops the server. With ``caller_identity`` (the listener verifies
client certificates) the certificate's SPIFFE ID is ``mixerd.caller.principal``.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from mixerd.api.caller import grpc_caller
from mixerd.api.ext_authz.authorize import Authorizer
from mixerd.api.ext_authz.request import BadRequest, CheckRequestBag
from mixerd.api.ext_authz.verdict import encode_grpc
from mixerd.runtime import Runtime

__all__ = ["ExtAuthzService"]


class ExtAuthzService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy's Authorization service over the runtime's dispatcher."""

    def __init__(self, runtime: Runtime, *, caller_identity: bool = False) -> None:
        self.runtime = runtime
        self.authorizer = Authorizer(runtime, "ext_authz")
        self.caller_identity = caller_identity

    def register(self, server: grpc.aio.Server) -> None:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, server)

    async def Check(self, request: Any, context: Any) -> Any:  # gRPC method name
        caller = grpc_caller(context) if self.caller_identity else None
        try:
            verdict = await self.authorizer.authorize(lambda: CheckRequestBag(request, caller=caller))
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        return encode_grpc(verdict)
