"""The compiled-in templates: their varieties, fields and instance types.

Each template is described once, as data: its fields and the type each field must have. A field
type is one of

* a :class:`~mixerd.attribute.ValueType`: the expression must have exactly that type;
* :data:`ANY`: any type (Mixer's ``istio.policy.v1beta1.Value``);
* ``MapOf(ANY)``: a map of expressions of any type (metric dimensions, log variables ...);
* ``MapOf(ValueType.STRING)``: a map of string expressions;
* :class:`Message`: a nested message with fields of its own (authorization ``subject``/``action``).

Instances reach adapters as the frozen dataclasses below. Field names are Mixer's proto names in
snake_case; configs may spell them in camelCase too (``monitoredResourceType``).
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from mixerd.attribute import IPAddress, ValueType

__all__ = [
    "ANY",
    "TEMPLATES",
    "ApiKeyInstance",
    "AuthorizationAction",
    "AuthorizationInstance",
    "AuthorizationSubject",
    "CheckNothingInstance",
    "EdgeInstance",
    "FieldType",
    "KubernetesInstance",
    "ListEntryInstance",
    "LogEntryInstance",
    "MapOf",
    "Message",
    "MetricInstance",
    "QuotaInstance",
    "RemoteService",
    "ReportNothingInstance",
    "Template",
    "TraceSpanInstance",
    "Variety",
]


class Variety(enum.IntEnum):
    """When a template's instances are dispatched (Mixer's ``TemplateVariety``)."""

    CHECK = 0
    REPORT = 1
    QUOTA = 2
    ATTRIBUTE_GENERATOR = 3
    CHECK_WITH_OUTPUT = 4


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""A field that accepts an expression of any type."""


@dataclass(frozen=True, slots=True)
class MapOf:
    """A map field: string keys, each value an expression of ``value`` type."""

    value: ValueType | _Any


@dataclass(frozen=True, slots=True)
class Message:
    """A nested message field, built into ``cls`` from its own fields."""

    cls: type
    fields: Mapping[str, FieldType]


FieldType = ValueType | _Any | MapOf | Message

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


# --- instance types ----------------------------------------------------------------------------
# Every instance carries ``name``: the fully qualified name of the instance resource
# (``requestcount.instance.istio-system``).


@dataclass(frozen=True, slots=True)
class MetricInstance:
    name: str
    value: Any = None
    dimensions: Mapping[str, Any] = field(default_factory=_empty)
    monitored_resource_type: str = ""
    monitored_resource_dimensions: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class LogEntryInstance:
    name: str
    variables: Mapping[str, Any] = field(default_factory=_empty)
    timestamp: _dt.datetime | None = None
    severity: str = ""
    monitored_resource_type: str = ""
    monitored_resource_dimensions: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class TraceSpanInstance:
    name: str
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    span_name: str = ""
    start_time: _dt.datetime | None = None
    end_time: _dt.datetime | None = None
    span_tags: Mapping[str, Any] = field(default_factory=_empty)
    http_status_code: int = 0
    client_span: bool = False
    rewrite_client_span_id: bool = False
    source_name: str = ""
    source_ip: IPAddress | None = None
    destination_name: str = ""
    destination_ip: IPAddress | None = None
    request_size: int = 0
    request_total_size: int = 0
    response_size: int = 0
    response_total_size: int = 0
    api_protocol: str = ""


@dataclass(frozen=True, slots=True)
class EdgeInstance:
    name: str
    timestamp: _dt.datetime | None = None
    source_workload_namespace: str = ""
    source_workload_name: str = ""
    source_owner: str = ""
    source_uid: str = ""
    destination_workload_namespace: str = ""
    destination_workload_name: str = ""
    destination_owner: str = ""
    destination_uid: str = ""
    destination_service_namespace: str = ""
    destination_service_name: str = ""
    context_protocol: str = ""
    api_protocol: str = ""


@dataclass(frozen=True, slots=True)
class ReportNothingInstance:
    name: str


@dataclass(frozen=True, slots=True)
class ListEntryInstance:
    name: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class AuthorizationSubject:
    user: str = ""
    groups: str = ""
    properties: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class AuthorizationAction:
    namespace: str = ""
    service: str = ""
    method: str = ""
    path: str = ""
    properties: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class AuthorizationInstance:
    name: str
    subject: AuthorizationSubject = AuthorizationSubject()
    action: AuthorizationAction = AuthorizationAction()


@dataclass(frozen=True, slots=True)
class ApiKeyInstance:
    name: str
    api: str = ""
    api_version: str = ""
    api_operation: str = ""
    api_key: str = ""
    timestamp: _dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CheckNothingInstance:
    name: str


@dataclass(frozen=True, slots=True)
class QuotaInstance:
    name: str
    dimensions: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class KubernetesInstance:
    """Input of the ``kubernetes`` attribute generator (its output fields are in ``Template.outputs``)."""

    name: str
    source_uid: str = ""
    source_ip: IPAddress | None = None
    destination_uid: str = ""
    destination_ip: IPAddress | None = None
    destination_port: int = 0


# --- the catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteService:
    """How instances of a template travel to an out-of-process adapter (Mixer's generated
    ``Handle<Name>Service``): the gRPC method's path and its protobuf message classes."""

    path: str
    """``/<proto package>.Handle<Name>Service/Handle<Name>``."""
    request: type
    """``Handle<Name>Request``: ``instance`` (CHECK, QUOTA ...) or ``instances`` (REPORT), then
    ``adapter_config``, ``dedup_id`` and (QUOTA) ``quota_request``."""
    instance: type
    """``InstanceMsg``: the template's fields plus ``name``."""
    response: type
    """``CheckResult``, ``QuotaResult``, ``ReportResult`` or (CHECK_WITH_OUTPUT) a message with
    ``result`` and ``output``."""
    type_message: type | None = None
    """``Type``: the inferred types sent to ``InfrastructureBackend`` (absent in some descriptors)."""
    fingerprint: str = ""
    """SHA-256 of the descriptor it came from (a changed descriptor means new handlers)."""


@dataclass(frozen=True, slots=True)
class Template:
    """A template: name, variety, typed fields, the instance class and (generators and
    CHECK_WITH_OUTPUT templates) outputs. Templates defined by a ``template`` resource
    (:mod:`mixerd.templates.dynamic`) are described the same way, with ``remote`` set."""

    name: str
    variety: Variety
    instance_class: type
    fields: Mapping[str, FieldType]
    outputs: Mapping[str, ValueType] = field(default_factory=dict)
    description: str = ""
    remote: RemoteService | None = None
    """How instances reach an out-of-process adapter; ``None`` when mixerd knows no wire form."""
    whole_set: bool = False
    """The instance is the request's attribute set itself (a read-only ``Mapping``), handed over
    without building anything: the template has no fields and its instances take no params."""


S, INT, B, TS, IP = (
    ValueType.STRING,
    ValueType.INT64,
    ValueType.BOOL,
    ValueType.TIMESTAMP,
    ValueType.IP_ADDRESS,
)
_MAP_ANY: Final = MapOf(ANY)

_KUBERNETES_OUTPUTS: Final[Mapping[str, ValueType]] = {
    "source_pod_uid": S,
    "source_pod_ip": IP,
    "source_pod_name": S,
    "source_labels": ValueType.STRING_MAP,
    "source_namespace": S,
    "source_service_account_name": S,
    "source_host_ip": IP,
    "source_workload_uid": S,
    "source_workload_name": S,
    "source_workload_namespace": S,
    "source_owner": S,
    "destination_pod_uid": S,
    "destination_pod_ip": IP,
    "destination_pod_name": S,
    "destination_container_name": S,
    "destination_labels": ValueType.STRING_MAP,
    "destination_namespace": S,
    "destination_service_account_name": S,
    "destination_host_ip": IP,
    "destination_owner": S,
    "destination_workload_uid": S,
    "destination_workload_name": S,
    "destination_workload_namespace": S,
}

TEMPLATES: Final[Mapping[str, Template]] = MappingProxyType(
    {
        t.name: t
        for t in (
            Template(
                "metric",
                Variety.REPORT,
                MetricInstance,
                {
                    "value": ANY,
                    "dimensions": _MAP_ANY,
                    "monitored_resource_type": S,
                    "monitored_resource_dimensions": _MAP_ANY,
                },
                description="A measurement (a counter increment, a gauge value, an observation).",
            ),
            Template(
                "logentry",
                Variety.REPORT,
                LogEntryInstance,
                {
                    "variables": _MAP_ANY,
                    "timestamp": TS,
                    "severity": S,
                    "monitored_resource_type": S,
                    "monitored_resource_dimensions": _MAP_ANY,
                },
                description="One log line with named variables.",
            ),
            Template(
                "tracespan",
                Variety.REPORT,
                TraceSpanInstance,
                {
                    "trace_id": S,
                    "span_id": S,
                    "parent_span_id": S,
                    "span_name": S,
                    "start_time": TS,
                    "end_time": TS,
                    "span_tags": _MAP_ANY,
                    "http_status_code": INT,
                    "client_span": B,
                    "rewrite_client_span_id": B,
                    "source_name": S,
                    "source_ip": IP,
                    "destination_name": S,
                    "destination_ip": IP,
                    "request_size": INT,
                    "request_total_size": INT,
                    "response_size": INT,
                    "response_total_size": INT,
                    "api_protocol": S,
                },
                description="One span of a distributed trace.",
            ),
            Template(
                "edge",
                Variety.REPORT,
                EdgeInstance,
                {
                    "timestamp": TS,
                    "source_workload_namespace": S,
                    "source_workload_name": S,
                    "source_owner": S,
                    "source_uid": S,
                    "destination_workload_namespace": S,
                    "destination_workload_name": S,
                    "destination_owner": S,
                    "destination_uid": S,
                    "destination_service_namespace": S,
                    "destination_service_name": S,
                    "context_protocol": S,
                    "api_protocol": S,
                },
                description="A call from one workload to another (a service-graph edge).",
            ),
            Template("reportnothing", Variety.REPORT, ReportNothingInstance, {}, description="No data."),
            Template(
                "attributes",
                Variety.REPORT,
                Mapping,
                {},
                whole_set=True,
                description="The call's attribute set itself, read by the handler (the console's hops).",
            ),
            Template(
                "listentry",
                Variety.CHECK,
                ListEntryInstance,
                {"value": ANY},
                description="A value to look up in a list.",
            ),
            Template(
                "authorization",
                Variety.CHECK,
                AuthorizationInstance,
                {
                    "subject": Message(
                        AuthorizationSubject, {"user": S, "groups": S, "properties": _MAP_ANY}
                    ),
                    "action": Message(
                        AuthorizationAction,
                        {"namespace": S, "service": S, "method": S, "path": S, "properties": _MAP_ANY},
                    ),
                },
                description="Who (subject) wants to do what (action).",
            ),
            Template(
                "apikey",
                Variety.CHECK,
                ApiKeyInstance,
                {"api": S, "api_version": S, "api_operation": S, "api_key": S, "timestamp": TS},
                description="An API key presented for an API operation.",
            ),
            Template("checknothing", Variety.CHECK, CheckNothingInstance, {}, description="No data."),
            Template(
                "quota",
                Variety.QUOTA,
                QuotaInstance,
                {"dimensions": _MAP_ANY},
                description="A quota to allocate, keyed by its dimensions.",
            ),
            Template(
                "kubernetes",
                Variety.ATTRIBUTE_GENERATOR,
                KubernetesInstance,
                {
                    "source_uid": S,
                    "source_ip": IP,
                    "destination_uid": S,
                    "destination_ip": IP,
                    "destination_port": INT,
                },
                outputs=_KUBERNETES_OUTPUTS,
                description="Generates source/destination workload attributes from pod metadata.",
            ),
        )
    }
)
"""Every compiled-in template, by name."""
