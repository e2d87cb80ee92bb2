"""Out-of-process handlers: mixerd as the client of Mixer 1.4's gRPC adapter model.

A :class:`RemoteHandler` stands for one handler whose adapter runs in another process. It
behaves like any handler (``handle_<template>`` methods, ``close()``), and each call is one gRPC
call to the adapter's generated service, as Mixer made it:

* CHECK and CHECK_WITH_OUTPUT: ``Handle<T>(instance, adapter_config, dedup_id)`` -> ``CheckResult``
  (or ``{result, output}``);
* REPORT: ``Handle<T>(instances, adapter_config, dedup_id)`` -> ``ReportResult``, one call per
  batch the runtime dispatches;
* QUOTA: ``Handle<T>(instance, adapter_config, dedup_id, quota_request)`` -> ``QuotaResult``, the
  dedup id being the Check's.

``adapter_config`` is the handler's params encoded with the adapter's config message in an Any.
A session-based adapter is first asked ``InfrastructureBackend.Validate`` and ``CreateSession``
(with the params and the instances' inferred types); later calls carry an Any whose type URL is
``google.protobuf.Any.type_url`` and whose value is the session id, as the handler services'
documentation describes, and ``CloseSession`` is called when the handler is retired. When the
adapter answers a call with an error other than UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED (a
restarted adapter no longer knows the session), the next call creates a new session.

One channel per address, shared by every handler using it (gRPC reconnects on its own with
backoff). A failing call raises :class:`RemoteCallError`: the runtime counts it against the
handler (``mixerd_dispatch_errors_total``) and answers as for any failing handler; it is logged
once per 10 s per handler with the count.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from google.protobuf import any_pb2

from mixerd._proto.mixer.adapter.model.v1beta1 import (
    infrastructure_backend_pb2 as ib,
)
from mixerd._proto.mixer.adapter.model.v1beta1 import (
    infrastructure_backend_pb2_grpc as ib_grpc,
)
from mixerd.adapter.env import Clock, SystemClock
from mixerd.adapter.ratelog import RateLimitedWarning
from mixerd.adapter.results import CheckResult, Code, QuotaArgs, QuotaResult, Status
from mixerd.config.remote import RemoteAdapter, encode_adapter_config
from mixerd.templates import RemoteService, Template, Variety
from mixerd.templates.dynamic import decode_output, encode_instance, remote_service

__all__ = ["DEFAULT_TIMEOUT", "SESSION_TYPE_URL", "RemoteCallError", "RemoteHandler", "inferred_types"]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a call may take when the handler's ``connection.timeout`` is not set (a Check is also
bounded by the runtime's check deadline)."""

SESSION_TYPE_URL: Final = "google.protobuf.Any.type_url"
"""The type URL of the ``adapter_config`` that carries a session id."""


_TRANSIENT: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class RemoteCallError(Exception):
    """A call to an out-of-process adapter failed (unreachable, timed out, or it answered an error)."""


class _Channels:
    """One gRPC channel per address, shared and reference-counted."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[grpc.aio.Channel, int]] = {}

    def acquire(self, address: str) -> grpc.aio.Channel:
        found = self._channels.get(address)
        if found is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = (channel, 1)
            return channel
        self._channels[address] = (found[0], found[1] + 1)
        return found[0]

    async def release(self, address: str) -> None:
        found = self._channels.get(address)
        if found is None:
            return
        if found[1] > 1:
            self._channels[address] = (found[0], found[1] - 1)
            return
        del self._channels[address]
        await found[0].close()


_CHANNELS: Final = _Channels()


def inferred_types(remote: RemoteService, types: Mapping[str, Any]) -> Any:
    """The template's ``Type`` message for one instance's inferred types (``{field path: ValueType}``)
    packed in an Any, or ``None`` when the descriptor has no ``Type`` message."""
    if remote.type_message is None:
        return None
    msg = remote.type_message()
    desc = msg.DESCRIPTOR
    for path, vt in types.items():
        head, _, key = path.partition(".")
        fd = desc.fields_by_name.get(head)
        if fd is None:
            continue
        if not key and fd.enum_type is not None and not fd.is_repeated:
            setattr(msg, head, int(vt))
        elif (
            key
            and fd.message_type is not None
            and fd.message_type.GetOptions().map_entry
            and fd.message_type.fields_by_name["value"].enum_type is not None
        ):
            getattr(msg, head)[key] = int(vt)
    out = any_pb2.Any()
    out.Pack(msg)
    return out


class RemoteHandler:
    """A handler of an out-of-process adapter (see the module docs)."""

    def __init__(
        self,
        name: str,
        adapter: RemoteAdapter,
        address: str,
        params: Mapping[str, Any],
        templates: Mapping[str, Template],
        instance_types: Mapping[str, tuple[str, Mapping[str, Any]]],
        *,
        timeout: _dt.timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``templates``: the templates of the instances routed here, by name;
        ``instance_types``: instance FQN -> (template name, inferred types)."""
        self.name = name
        self.adapter = adapter
        self.address = address
        self.timeout = (
            DEFAULT_TIMEOUT if timeout is None or timeout <= _dt.timedelta(0) else timeout.total_seconds()
        )
        self._config = encode_adapter_config(adapter, params)
        self._templates = dict(templates)
        self._instance_types = dict(instance_types)
        self._services: dict[str, RemoteService] = {}
        for t_name, t in templates.items():
            remote = remote_service(t)
            if remote is None:
                raise ValueError(
                    f"template '{t_name}' has no out-of-process form in mixerd; it cannot be sent "
                    f"to adapter '{adapter.name}'"
                )
            self._services[t_name] = remote
        self._channel = _CHANNELS.acquire(address)
        self._calls: dict[str, Any] = {}
        self._dedup = itertools.count(secrets.randbits(62))
        self._session_id: str | None = None
        self._session_lock = asyncio.Lock()
        self._closed = False
        self._warning = RateLimitedWarning(clock or SystemClock())

    # -- what the runtime calls --------------------------------------------------------------

    def methods(self) -> dict[str, Any]:
        """Template name -> the coroutine function handling its instances."""
        out: dict[str, Any] = {}
        for t_name, t in self._templates.items():
            if t.variety in (Variety.CHECK, Variety.CHECK_WITH_OUTPUT):
                out[t_name] = self._checker(t_name)
            elif t.variety is Variety.QUOTA:
                out[t_name] = self._quota(t_name)
            elif t.variety is Variety.REPORT:
                out[t_name] = self._reporter(t_name)
        return out

    def _checker(self, t_name: str) -> Any:
        async def handle(instance: Any) -> CheckResult:
            return await self.check(t_name, instance)

        return handle

    def _quota(self, t_name: str) -> Any:
        async def handle(instance: Any, args: QuotaArgs) -> QuotaResult:
            return await self.quota(t_name, instance, args)

        return handle

    def _reporter(self, t_name: str) -> Any:
        async def handle(instances: Sequence[Any]) -> None:
            await self.report(t_name, instances)

        return handle

    async def check(self, t_name: str, instance: Any) -> CheckResult:
        template, remote = self._templates[t_name], self._services[t_name]
        req = remote.request()
        req.instance.CopyFrom(encode_instance(template, remote, instance))
        resp = await self._invoke(remote, req, str(next(self._dedup)))
        if template.variety is Variety.CHECK_WITH_OUTPUT:
            result, output = resp.result, decode_output(template, resp.output)
        else:
            result, output = resp, None
        return CheckResult(
            Status(result.status.code, result.status.message),
            result.valid_duration.ToTimedelta(),
            result.valid_use_count,
            output,
        )

    async def quota(self, t_name: str, instance: Any, args: QuotaArgs) -> QuotaResult:
        template, remote = self._templates[t_name], self._services[t_name]
        req = remote.request()
        req.instance.CopyFrom(encode_instance(template, remote, instance))
        wanted = req.quota_request.quotas[instance.name]
        wanted.amount = args.amount
        wanted.best_effort = args.best_effort
        dedup = args.dedup_id or str(next(self._dedup))
        resp = await self._invoke(remote, req, dedup)
        if instance.name not in resp.quotas:
            raise RemoteCallError(
                f"adapter at {self.address} did not answer quota '{instance.name}' "
                f"(answered: {', '.join(sorted(resp.quotas)) or 'none'})"
            )
        got = resp.quotas[instance.name]
        return QuotaResult(
            status=Status(got.status.code, got.status.message),
            valid_duration=got.valid_duration.ToTimedelta(),
            amount=got.granted_amount,
        )

    async def report(self, t_name: str, instances: Sequence[Any]) -> None:
        template, remote = self._templates[t_name], self._services[t_name]
        req = remote.request()
        req.instances.extend(encode_instance(template, remote, i) for i in instances)
        await self._invoke(remote, req, str(next(self._dedup)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._session_id is not None:
                stub = ib_grpc.InfrastructureBackendStub(self._channel)
                await stub.CloseSession(
                    ib.CloseSessionRequest(session_id=self._session_id), timeout=self.timeout
                )
        except grpc.aio.AioRpcError as exc:
            _log.warning(
                "handler %s: CloseSession at %s failed: %s", self.name, self.address, exc.code().name
            )
        finally:
            await _CHANNELS.release(self.address)

    # -- calls -------------------------------------------------------------------------------

    async def _invoke(self, remote: RemoteService, req: Any, dedup_id: str) -> Any:
        try:
            config = await self._adapter_config()
            if config is not None:  # field by field: a template resource's Any is a class of its own
                req.adapter_config.type_url = config.type_url
                req.adapter_config.value = config.value
            req.dedup_id = dedup_id
            call = self._calls.get(remote.path)
            if call is None:
                call = self._calls[remote.path] = self._channel.unary_unary(
                    remote.path,
                    request_serializer=_serialize,
                    response_deserializer=remote.response.FromString,  # type: ignore[attr-defined]
                )
            return await call(req, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if self.adapter.session_based and exc.code() not in _TRANSIENT:
                # The adapter answered, but not with a result: it may have lost the session (a
                # restart). The next call creates a new one.
                self._session_id = None
            raise self._failed(f"{remote.path}: {exc.code().name}: {exc.details() or ''}") from None
        except RemoteCallError as exc:
            raise self._failed(str(exc)) from None

    def _failed(self, what: str) -> RemoteCallError:
        self._warning.add(1, f"out-of-process handler {self.name} at {self.address} failed (latest: {what})")
        return RemoteCallError(f"out-of-process adapter at {self.address}: {what}")

    async def _adapter_config(self) -> Any:
        if not self.adapter.session_based:
            return self._config
        if self._session_id is None:
            async with self._session_lock:
                if self._session_id is None:
                    self._session_id = await self._create_session()
        return any_pb2.Any(type_url=SESSION_TYPE_URL, value=self._session_id.encode())

    async def _create_session(self) -> str:
        stub = ib_grpc.InfrastructureBackendStub(self._channel)
        types: dict[str, Any] = {}
        for fqn, (t_name, t_types) in sorted(self._instance_types.items()):
            t = self._templates.get(t_name)
            if t is not None:
                packed = inferred_types(self._services[t_name], t_types)
                if packed is not None:
                    types[fqn] = packed
        timeout = self.timeout
        valid = await stub.Validate(
            ib.ValidateRequest(adapter_config=self._config, inferred_types=types), timeout=timeout
        )
        if valid.status.code != Code.OK:
            raise RemoteCallError(f"Validate refused the handler config: {valid.status.message}")
        created = await stub.CreateSession(
            ib.CreateSessionRequest(adapter_config=self._config, inferred_types=types), timeout=timeout
        )
        if created.status.code != Code.OK or not created.session_id:
            raise RemoteCallError(f"CreateSession failed: {created.status.message or 'no session id'}")
        return str(created.session_id)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
