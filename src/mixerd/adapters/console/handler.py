"""The console builder and handler: logentry variables -> :class:`~mixerd.console.model.Hop`."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, Params
from mixerd.attribute import parse_duration
from mixerd.console.correlate import DEFAULT_ORDER, REQUEST_ID, parse_order, trace_ids, transaction_key
from mixerd.console.model import Hop, Peer, Reporter

__all__ = ["ConsoleBuilder", "ConsoleHandler", "HopSink", "hop_from_variables"]


@runtime_checkable
class HopSink(Protocol):
    """What the handler needs of the console writer."""

    def add_hop(self, hop: Hop) -> None: ...


_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_REPORTERS: Final = {
    "source": Reporter.SOURCE,
    "outbound": Reporter.SOURCE,
    "destination": Reporter.DESTINATION,
    "inbound": Reporter.DESTINATION,
}


def _text(v: Mapping[str, Any], name: str) -> str:
    value = v.get(name)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(v: Mapping[str, Any], name: str) -> int:
    value = v.get(name)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _micros(d: _dt.timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _duration_us(value: Any) -> int:
    if isinstance(value, _dt.timedelta):
        return max(0, _micros(value))
    if isinstance(value, str) and value:
        try:
            return max(0, _micros(parse_duration(value)))
        except ValueError:
            return 0
    return 0


def _time_us(value: Any, fallback: _dt.datetime) -> int:
    t = value if isinstance(value, _dt.datetime) else fallback
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return _micros(t - _EPOCH)


def hop_from_variables(
    variables: Mapping[str, Any],
    timestamp: _dt.datetime | None,
    now: _dt.datetime,
    key_order: Sequence[str] = DEFAULT_ORDER,
) -> Hop:
    """The hop a console instance describes (see the package docstring for the names)."""
    v = variables
    headers = v.get("requestHeaders")
    if not isinstance(headers, Mapping):
        headers = {}
    request_id = _text(v, "requestId")
    if request_id and REQUEST_ID not in headers:
        # A proxy that did not log the header (Envoy's access log logs only the headers it is
        # told to) still knows the request id: it is the x-request-id header.
        headers = {**headers, REQUEST_ID: request_id}
    trace_id, span_id, parent_span_id = trace_ids(headers)
    return Hop(
        start_us=_time_us(timestamp, now),
        duration_us=_duration_us(v.get("latency")),
        reporter=_REPORTERS.get(_text(v, "reporter").lower(), Reporter.UNKNOWN),
        source=Peer(
            namespace=_text(v, "sourceNamespace"),
            workload=_text(v, "sourceWorkload"),
            app=_text(v, "sourceApp"),
            version=_text(v, "sourceVersion"),
            principal=_text(v, "sourcePrincipal"),
        ),
        destination=Peer(
            namespace=_text(v, "destinationNamespace"),
            workload=_text(v, "destinationWorkload"),
            app=_text(v, "destinationApp"),
            version=_text(v, "destinationVersion"),
            service=_text(v, "destinationServiceHost"),
            principal=_text(v, "destinationPrincipal"),
        ),
        transaction_id=_text(v, "transactionId") or transaction_key(headers, key_order),
        protocol=_text(v, "protocol"),
        method=_text(v, "method"),
        host=_text(v, "httpAuthority"),
        path=_text(v, "url"),
        response_code=_int(v, "responseCode"),
        response_flags="" if _text(v, "responseFlags") == "-" else _text(v, "responseFlags"),
        request_bytes=_int(v, "requestSize"),
        response_bytes=_int(v, "responseSize"),
        request_id=request_id,
        trace_id=_text(v, "traceId").lower() or trace_id,
        span_id=_text(v, "spanId").lower() or span_id,
        parent_span_id=parent_span_id,
    )


class ConsoleHandler(Handler):
    def __init__(self, env: Env, key_order: Sequence[str]) -> None:
        self._env = env
        self._key_order = tuple(key_order)
        sink = env.shared("console")
        self._sink: HopSink | None = sink if isinstance(sink, HopSink) else None

    def handle_logentry(self, instances: Sequence[Any]) -> None:
        if self._sink is None:
            self._env.dropped(len(instances), "console_off")
            return
        now = self._env.clock.now()
        add = self._sink.add_hop
        order = self._key_order
        for inst in instances:
            add(hop_from_variables(inst.variables, inst.timestamp, now, order))


class ConsoleBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        p = Params(config)
        self.key_order: tuple[str, ...] = DEFAULT_ORDER
        if p.has("transactionHeaders"):
            try:
                self.key_order = parse_order(",".join(p.str_list("transactionHeaders")))
            except ValueError as exc:
                p.error("transactionHeaders", str(exc))
        self.errors = p.errors + p.unknown_fields()

    def validate(self) -> list[ConfigError]:
        return self.errors

    def build(self, env: Env) -> ConsoleHandler:
        return ConsoleHandler(env, self.key_order)
