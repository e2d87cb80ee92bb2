"""Serving a mixerd adapter out of process, over Mixer 1.4's gRPC adapter model.

:class:`AdapterServer` exposes one adapter (an :class:`~mixerd.adapter.Info`, as registered in
``mixerd.adapters``) as ``InfrastructureBackend`` plus the ``Handle<T>Service`` of each of its
templates that has an out-of-process form (``metric``, ``listentry``, ``quota``). What mixerd's
:mod:`~mixerd.adapter.grpc_client` (or Mixer) sends it:

* ``Validate`` / ``CreateSession``: the handler params (an Any of ``google.protobuf.Struct``) and
  the inferred types of its instances are given to the adapter's :class:`~mixerd.adapter.Builder`;
  ``Validate`` answers its problems, ``CreateSession`` builds the handler and keeps it under a new
  session id until ``CloseSession``.
* ``Handle<T>``: the session's handler answers (``adapter_config`` carrying the session id), or,
  without a session, a handler built for that config and those instances (kept for later calls).

Handler problems never reach callers in detail: a failing handler answers INTERNAL with the
exception's type, and the detail is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Final

import grpc
from google.protobuf import any_pb2, json_format, struct_pb2

from mixerd._proto.mixer.adapter.model.v1beta1 import check_pb2, quota_pb2, report_pb2
from mixerd._proto.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2 as ib
from mixerd._proto.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2_grpc as ib_grpc
from mixerd.adapter.env import Env, SystemClock
from mixerd.adapter.grpc_client import SESSION_TYPE_URL
from mixerd.adapter.results import CheckResult, Code, QuotaArgs, QuotaResult
from mixerd.adapter.sdk import Info, InstanceInfo, handler_method
from mixerd.attribute import ValueType
from mixerd.templates import TEMPLATES, RemoteService, Template, Variety
from mixerd.templates.dynamic import decode_instance, remote_service

__all__ = ["AdapterServer"]

_log = logging.getLogger(__name__)
_STRUCT_URL: Final = "type.googleapis.com/google.protobuf.Struct"


class _BuildFailed(Exception):
    """The adapter refused the config or failed to build a handler."""


class AdapterServer:
    """One adapter served over gRPC (see the module docs)."""

    def __init__(self, info: Info) -> None:
        self.info = info
        self.templates: dict[str, tuple[Template, RemoteService]] = {}
        for name in info.templates:
            t = TEMPLATES.get(name)
            remote = remote_service(t) if t is not None else None
            if t is not None and remote is not None:
                self.templates[name] = (t, remote)
        if not self.templates:
            raise ValueError(
                f"adapter '{info.name}' handles none of the templates mixerd can serve out of process "
                "(metric, listentry, quota)"
            )
        self._sessions: dict[str, tuple[Any, Env]] = {}
        self._by_config: dict[tuple[bytes, tuple[str, ...]], tuple[Any, Env]] = {}
        self._lock = asyncio.Lock()

    @property
    def skipped(self) -> tuple[str, ...]:
        """The adapter's templates that are not served (no out-of-process form)."""
        return tuple(t for t in self.info.templates if t not in self.templates)

    def add_to(self, server: grpc.aio.Server) -> None:
        ib_grpc.add_InfrastructureBackendServicer_to_server(_Backend(self), server)
        for name, (_, remote) in self.templates.items():
            _, service, method = remote.path.split("/")
            handler = grpc.unary_unary_rpc_method_handler(
                self._handle_fn(name),
                request_deserializer=remote.request.FromString,  # type: ignore[attr-defined]
                response_serializer=lambda m: m.SerializeToString(),
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {method: handler}),)
            )

    async def close(self) -> None:
        entries = list(self._sessions.values()) + list(self._by_config.values())
        self._sessions.clear()
        self._by_config.clear()
        for handler, env in entries:
            await _close(handler, env)

    # -- handlers ----------------------------------------------------------------------------

    def _builder_inputs(
        self, adapter_config: any_pb2.Any, types: Mapping[str, any_pb2.Any]
    ) -> tuple[dict[str, Any], dict[str, InstanceInfo]]:
        params: dict[str, Any] = {}
        if adapter_config.type_url:
            if adapter_config.type_url != _STRUCT_URL:
                raise _BuildFailed(
                    f"adapter_config is a {adapter_config.type_url}; mixerd's adapters take their params "
                    "as a google.protobuf.Struct"
                )
            struct = struct_pb2.Struct.FromString(adapter_config.value)
            params = json_format.MessageToDict(struct)
        infos: dict[str, InstanceInfo] = {}
        for name, packed in types.items():
            template, inferred = self._inferred(packed)
            infos[name] = InstanceInfo(name, template, inferred)
        return params, infos

    def _inferred(self, packed: any_pb2.Any) -> tuple[str, dict[str, ValueType]]:
        for name, (_, remote) in self.templates.items():
            if remote.type_message is None:
                continue
            full = remote.type_message.DESCRIPTOR.full_name  # type: ignore[attr-defined]
            if packed.type_url.rsplit("/", 1)[-1] == full:
                msg = remote.type_message.FromString(packed.value)  # type: ignore[attr-defined]
                out: dict[str, ValueType] = {}
                for fd, value in msg.ListFields():
                    if fd.message_type is not None:  # map<string, ValueType>
                        out.update({f"{fd.name}.{k}": ValueType(v) for k, v in value.items()})
                    else:
                        out[fd.name] = ValueType(value)
                return name, out
        raise _BuildFailed(f"inferred types of an unknown template ({packed.type_url})")

    def _build(self, params: dict[str, Any], infos: dict[str, InstanceInfo], label: str) -> tuple[Any, Env]:
        try:
            builder = self.info.builder(params, infos)
            problems = builder.validate()
        except Exception as exc:
            raise _BuildFailed(f"validating the config failed: {type(exc).__name__}") from exc
        if problems:
            raise _BuildFailed("; ".join(f"params.{p}" if p.path else str(p) for p in problems))
        env = Env(f"{self.info.name}/{label}", clock=SystemClock())
        try:
            return builder.build(env), env
        except Exception as exc:
            _log.exception("building a %s handler failed", self.info.name)
            raise _BuildFailed(f"building the handler failed: {type(exc).__name__}") from exc

    async def validate(self, req: Any) -> dict[str, Any]:
        try:
            params, infos = self._builder_inputs(req.adapter_config, req.inferred_types)
            builder = self.info.builder(params, infos)
            problems = builder.validate()
        except _BuildFailed as exc:
            return _status(Code.INVALID_ARGUMENT, str(exc))
        if problems:
            return _status(Code.INVALID_ARGUMENT, "; ".join(str(p) for p in problems))
        return _status(Code.OK)

    async def create_session(self, req: Any) -> tuple[str, dict[str, Any]]:
        try:
            params, infos = self._builder_inputs(req.adapter_config, req.inferred_types)
            sid = secrets.token_hex(8)
            self._sessions[sid] = self._build(params, infos, sid)
        except _BuildFailed as exc:
            return "", _status(Code.INVALID_ARGUMENT, str(exc))
        return sid, _status(Code.OK)

    async def close_session(self, sid: str) -> dict[str, Any]:
        entry = self._sessions.pop(sid, None)
        if entry is None:
            return _status(Code.NOT_FOUND, "no such session")
        await _close(*entry)
        return _status(Code.OK)

    async def _handler_for(self, adapter_config: any_pb2.Any, template: str, names: tuple[str, ...]) -> Any:
        if adapter_config.type_url == SESSION_TYPE_URL:
            entry = self._sessions.get(adapter_config.value.decode(errors="replace"))
            if entry is None:
                raise _BuildFailed("unknown session id")
            return entry[0]
        key = (hashlib.sha256(adapter_config.SerializeToString()).digest(), names)
        async with self._lock:
            entry = self._by_config.get(key)
            if entry is None:
                params, _ = self._builder_inputs(adapter_config, {})
                infos = {n: InstanceInfo(n, template) for n in names}
                entry = self._by_config[key] = self._build(params, infos, "config")
        return entry[0]

    def _handle_fn(self, t_name: str) -> Any:
        template = self.templates[t_name][0]
        method = handler_method(t_name)

        async def handle(req: Any, context: grpc.aio.ServicerContext) -> Any:
            if template.variety is Variety.REPORT:
                instances = [decode_instance(template, m) for m in req.instances]
            else:
                instances = [decode_instance(template, req.instance)]
            names = tuple(sorted({i.name for i in instances}))
            try:
                handler = await self._handler_for(req.adapter_config, t_name, names)
            except _BuildFailed as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                raise AssertionError("unreachable") from None
            fn = getattr(handler, method, None)
            if fn is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the handler has no {method}")
                raise AssertionError("unreachable")
            try:
                if template.variety is Variety.REPORT:
                    await _maybe_await(fn(instances))
                    return report_pb2.ReportResult()
                if template.variety is Variety.QUOTA:
                    (inst,) = instances
                    asked = req.quota_request.quotas.get(inst.name)
                    args = QuotaArgs(
                        asked.amount if asked else 1, bool(asked and asked.best_effort), req.dedup_id
                    )
                    qr: QuotaResult = await _maybe_await(fn(inst, args))
                    out = quota_pb2.QuotaResult()
                    got = out.quotas[inst.name]
                    got.granted_amount = qr.amount
                    got.valid_duration.FromTimedelta(qr.valid_duration)
                    got.status.code, got.status.message = qr.status.code, qr.status.message
                    return out
                cr: CheckResult = await _maybe_await(fn(instances[0]))
                result = check_pb2.CheckResult(valid_use_count=cr.valid_use_count)
                result.status.code, result.status.message = cr.status.code, cr.status.message
                result.valid_duration.FromTimedelta(cr.valid_duration)
                return result
            except Exception as exc:
                _log.exception("%s handler of %s failed", t_name, self.info.name)
                await context.abort(grpc.StatusCode.INTERNAL, f"handler failed: {type(exc).__name__}")
                raise AssertionError("unreachable") from None

        return handle


class _Backend(ib_grpc.InfrastructureBackendServicer):  # type: ignore[misc]
    def __init__(self, server: AdapterServer) -> None:
        self.server = server

    async def Validate(self, request: Any, context: Any) -> Any:
        return ib.ValidateResponse(status=await self.server.validate(request))

    async def CreateSession(self, request: Any, context: Any) -> Any:
        sid, status = await self.server.create_session(request)
        return ib.CreateSessionResponse(session_id=sid, status=status)

    async def CloseSession(self, request: Any, context: Any) -> Any:
        return ib.CloseSessionResponse(status=await self.server.close_session(request.session_id))


def _status(code: int, message: str = "") -> dict[str, Any]:
    """A ``google.rpc.Status`` (as the generated messages take it)."""
    return {"code": int(code), "message": message}


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _close(handler: Any, env: Env) -> None:
    close = getattr(handler, "close", None)
    try:
        if close is not None:
            await _maybe_await(close())
    finally:
        await env.aclose()
