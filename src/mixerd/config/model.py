"""The configuration resource model: keys, parsed specs, resources and problems.

Everything here is a frozen value. A :class:`Resource` is one configuration document after
parsing: its :class:`Key`, a typed spec (:class:`RuleSpec`, :class:`InstanceSpec`,
:class:`HandlerSpec` ...), where it came from (:class:`Source`) and the problems found while
parsing it (:class:`Issue`, paths from the document root such as ``spec.actions[0].handler``).
Parsing is best effort: a resource with issues still carries the spec as far as it could be
read, so that validation can report every problem of the resource at once.

Kinds (group ``config.istio.io``, version ``v1alpha2``):

* generic Mixer kinds: ``attributemanifest``, ``rule``, ``instance``, ``handler``, ``adapter``,
  ``template``;
* legacy per-adapter and per-template kinds (:data:`LEGACY_KINDS`): ``kind: prometheus`` is a
  handler of the ``prometheus`` adapter, ``kind: metric`` an instance of the ``metric``
  template; their ``spec`` is the params themselves. The key keeps the legacy kind, so the
  fully qualified name of such a handler is ``handler.prometheus.istio-system``;
* proxy-side kinds that mixerd's Envoy front-ends use: ``QuotaSpec``, ``QuotaSpecBinding``;
* any other kind, such as the name of an adapter installed as a plugin (``kind: myadapter``),
  is read like a legacy kind (:class:`PluginKindSpec`); building the snapshot decides, from the
  adapters and templates available, whether it is a handler, an instance or an unknown kind.
* Istio's security kinds (other groups, :mod:`mixerd.config.security`): ``RequestAuthentication``,
  ``AuthorizationPolicy``, ``ServiceRole``, ``ServiceRoleBinding``, ``ClusterRbacConfig``.

Handler and instance ``params`` stay plain YAML data (dicts, lists, scalars) because adapters
read them as such; treat them as read-only.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

import re2

from mixerd.attribute import ValueType
from mixerd.config.security import (
    AuthorizationPolicySpec,
    RbacConfigSpec,
    RequestAuthenticationSpec,
    ServiceRoleBindingSpec,
    ServiceRoleSpec,
)

__all__ = [
    "ADAPTER",
    "API_VERSION",
    "ATTRIBUTE_MANIFEST",
    "FAIL_CLOSED_ANNOTATION",
    "GENERIC_KINDS",
    "HANDLER",
    "INSTANCE",
    "LANG_ANNOTATION",
    "LEGACY_KINDS",
    "QUOTA_SPEC",
    "QUOTA_SPEC_BINDING",
    "RULE",
    "TEMPLATE",
    "Action",
    "AdapterSpec",
    "AttributeInfo",
    "AttributeManifestSpec",
    "Connection",
    "HandlerSpec",
    "HeaderAction",
    "HeaderOperationTemplate",
    "IgnoredResource",
    "InstanceSpec",
    "Issue",
    "IstioService",
    "Key",
    "Language",
    "LegacyKind",
    "PluginKindSpec",
    "QuotaCharge",
    "QuotaRule",
    "QuotaSpecBindingSpec",
    "QuotaSpecReference",
    "QuotaSpecSpec",
    "Resource",
    "ResourceError",
    "RuleSpec",
    "Severity",
    "Source",
    "Spec",
    "StringMatch",
    "TemplateSpec",
]

API_VERSION: Final = "config.istio.io/v1alpha2"
"""The apiVersion of every Mixer resource."""

ATTRIBUTE_MANIFEST: Final = "attributemanifest"
RULE: Final = "rule"
INSTANCE: Final = "instance"
HANDLER: Final = "handler"
ADAPTER: Final = "adapter"
TEMPLATE: Final = "template"
QUOTA_SPEC: Final = "QuotaSpec"
QUOTA_SPEC_BINDING: Final = "QuotaSpecBinding"

GENERIC_KINDS: Final = frozenset({ATTRIBUTE_MANIFEST, RULE, INSTANCE, HANDLER, ADAPTER, TEMPLATE})

LANG_ANNOTATION: Final = "policy.istio.io/lang"
"""Metadata annotation that selects a resource's expression dialect (``CEXL`` by default)."""

FAIL_CLOSED_ANNOTATION: Final = "mixerd.io/fail-closed"
"""Rule metadata annotation, ``"true"`` or ``"false"``: whether a Check is denied when the rule's
match, or an instance it sends to a check or quota handler, cannot be evaluated (instead of
Mixer's "the rule does not apply"). Absent: the server's ``--fail-closed`` setting decides. An
annotation, not a spec field, so the same rule still loads in Istio's Mixer, whose ``Rule``
schema rejects unknown fields."""


@dataclass(frozen=True, slots=True)
class LegacyKind:
    """What a legacy kind stands for: a handler of ``target`` adapter or an instance of ``target``."""

    role: Literal["handler", "instance"]
    target: str


_LEGACY_ADAPTERS: Final = (
    "bypass",
    "circonus",
    "cloudwatch",
    "denier",
    "dogstatsd",
    "fluentd",
    "kubernetesenv",
    "listchecker",
    "memquota",
    "noop",
    "opa",
    "prometheus",
    "rbac",
    "redisquota",
    "signalfx",
    "solarwinds",
    "stackdriver",
    "statsd",
    "stdio",
    "zipkin",
)
_LEGACY_TEMPLATES: Final = (
    "apikey",
    "authorization",
    "checknothing",
    "edge",
    "kubernetes",
    "listentry",
    "logentry",
    "metric",
    "quota",
    "reportnothing",
    "tracespan",
)

LEGACY_KINDS: Final[Mapping[str, LegacyKind]] = MappingProxyType(
    {
        **{name: LegacyKind("handler", name) for name in _LEGACY_ADAPTERS},
        **{name: LegacyKind("instance", name) for name in _LEGACY_TEMPLATES},
    }
)
"""Mixer's per-adapter and per-template kinds (CRDs shipped up to Istio 1.1). The adapter of
``kind: listchecker`` is named ``listchecker``, as in Mixer; the runtime may alias it."""


# --- keys, sources, problems -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Key:
    """Identifies a resource. ``str(key)`` is ``kind/name.namespace`` (used in messages)."""

    kind: str
    namespace: str
    name: str

    @property
    def fqn(self) -> str:
        """Mixer's fully qualified name ``name.kind.namespace`` (``requestcount.instance.istio-system``)."""
        return f"{self.name}.{self.kind}.{self.namespace}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}.{self.namespace}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was read from: a file (``""`` if none) and the document's index and line."""

    file: str = ""
    index: int = 0
    """0-based index of the document in its file."""
    line: int | None = None
    """1-based line where the document starts, when known."""

    def __str__(self) -> str:
        where = self.file or "<memory>"
        if self.line is not None:
            return f"{where}:{self.line} (document {self.index + 1})"
        return f"{where} (document {self.index + 1})"


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem found while parsing one document; ``path`` starts at the document root."""

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class ResourceError:
    """A problem of a resource (or of a file, when no resource could be read).

    ``str()`` gives ``kind/name.namespace: field.path: message``, for example
    ``rule/promhttp.istio-system: spec.match: unknown attribute 'reqest.size'``; for a file
    problem the first part is the file name.
    """

    key_or_file: Key | str
    """The resource's key, or a file / document description when no resource could be read."""
    path: str
    message: str
    severity: Severity = Severity.ERROR
    source: Source | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.path:
            return f"{self.key_or_file}: {self.path}: {self.message}"
        return f"{self.key_or_file}: {self.message}"


@dataclass(frozen=True, slots=True)
class IgnoredResource:
    """A document that is not Mixer configuration (a DestinationRule, a Deployment ...)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    reason: str
    source: Source | None = None

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}.{self.namespace} ({self.api_version}): {self.reason}"


# --- specs -----------------------------------------------------------------------------------


class Language(enum.Enum):
    """Expression dialect of a rule or instance (annotation ``policy.istio.io/lang``)."""

    CEXL = "CEXL"
    CEL = "CEL"
    COMPAT = "COMPAT"


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    value_type: ValueType
    description: str = ""


@dataclass(frozen=True, slots=True)
class AttributeManifestSpec:
    revision: str = ""
    name: str = ""
    attributes: Mapping[str, AttributeInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    """Send ``instances`` to ``handler``; both are names as written (resolved by the snapshot)."""

    handler: str
    instances: tuple[str, ...] = ()
    name: str = ""


class HeaderAction(enum.IntEnum):
    """What a header operation does, with the numbers of Istio's ``Rule.HeaderOperationTemplate.Operation``
    and of the Mixer v1 wire's ``HeaderOperation.Operation`` (the same three values). The one type of
    this concept: config, snapshot, routing table, dispatcher and every wire encoder carry it."""

    REPLACE = 0
    REMOVE = 1
    APPEND = 2


@dataclass(frozen=True, slots=True)
class HeaderOperationTemplate:
    """A header operation of a rule; ``values`` are expressions that must give STRING."""

    name: str
    values: tuple[str, ...] = ()
    operation: HeaderAction = HeaderAction.REPLACE


@dataclass(frozen=True, slots=True)
class RuleSpec:
    match: str = ""
    actions: tuple[Action, ...] = ()
    request_header_operations: tuple[HeaderOperationTemplate, ...] = ()
    response_header_operations: tuple[HeaderOperationTemplate, ...] = ()
    sampling: Mapping[str, Any] | None = None
    """As written; checked and compiled by the snapshot (:mod:`mixerd.config.sampling`)."""


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """``compiled_template`` names a built-in template; ``template`` an out-of-process one."""

    compiled_template: str = ""
    template: str = ""
    params: Mapping[str, Any] | None = None
    attribute_bindings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach an out-of-process adapter."""

    address: str = ""
    timeout: _dt.timedelta | None = None
    authentication: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """``compiled_adapter`` names a built-in adapter; ``adapter`` an out-of-process one."""

    compiled_adapter: str = ""
    adapter: str = ""
    params: Mapping[str, Any] | None = None
    connection: Connection | None = None


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """An out-of-process adapter's info: its templates, its config message (``config``: a base64
    FileDescriptorSet with a message ``Params``) and whether it keeps sessions (see
    :mod:`mixerd.config.remote`)."""

    name: str = ""
    description: str = ""
    templates: tuple[str, ...] = ()
    config: str = ""
    session_based: bool = False


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template of an out-of-process adapter: its base64 FileDescriptorSet (see
    :mod:`mixerd.templates.dynamic`)."""

    descriptor: str = ""


@dataclass(frozen=True, slots=True)
class StringMatch:
    """One of ``exact``, ``prefix`` or ``regex`` (a full match, as the proxy's ``std::regex_match``)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def matches(self, value: str) -> bool:
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        if self.regex is not None:
            return _compiled(self.regex).fullmatch(value) is not None
        return False


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    # RE2: linear time whatever the pattern (QuotaSpec regexes come from config, and are matched
    # against request attributes).
    return re2.compile(pattern)


class QuotaCharge(NamedTuple):
    """``(quota, charge)``: charge ``charge`` units of the quota named ``quota`` (default 1)."""

    quota: str
    charge: int = 1


@dataclass(frozen=True, slots=True)
class QuotaRule:
    """``match`` is a list of clauses (OR); each clause maps attribute -> StringMatch (AND).
    An empty ``match`` matches every request."""

    match: tuple[Mapping[str, StringMatch], ...] = ()
    quotas: tuple[QuotaCharge, ...] = ()


@dataclass(frozen=True, slots=True)
class QuotaSpecSpec:
    rules: tuple[QuotaRule, ...] = ()


@dataclass(frozen=True, slots=True)
class IstioService:
    name: str = ""
    namespace: str = ""
    domain: str = ""
    service: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuotaSpecReference:
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class QuotaSpecBindingSpec:
    """Binds QuotaSpecs to services. Missing namespaces were filled with the binding's own."""

    services: tuple[IstioService, ...] = ()
    quota_specs: tuple[QuotaSpecReference, ...] = ()


@dataclass(frozen=True, slots=True)
class PluginKindSpec:
    """The spec of a resource whose kind is none of Mixer's own: ``kind: <adapter>`` (a handler,
    ``spec`` = the params) or ``kind: <template>`` (an instance, ``spec`` = the params with
    ``attributeBindings``), decided when the snapshot is built, once the adapters are known."""

    params: Mapping[str, Any] | None = None
    attribute_bindings: Mapping[str, str] = field(default_factory=dict)


Spec = (
    AttributeManifestSpec
    | RuleSpec
    | InstanceSpec
    | HandlerSpec
    | AdapterSpec
    | TemplateSpec
    | QuotaSpecSpec
    | QuotaSpecBindingSpec
    | PluginKindSpec
    | AuthorizationPolicySpec
    | RequestAuthenticationSpec
    | ServiceRoleSpec
    | ServiceRoleBindingSpec
    | RbacConfigSpec
)

_OWN_KINDS: Final = GENERIC_KINDS | {QUOTA_SPEC, QUOTA_SPEC_BINDING}
"""The kinds that are not a per-adapter or per-template shorthand."""


@dataclass(frozen=True, slots=True)
class Resource:
    """One parsed configuration document."""

    key: Key
    spec: Spec
    source: Source | None = None
    api_version: str = API_VERSION
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    issues: tuple[Issue, ...] = ()
    """Problems found while parsing; a resource with issues is reported and dropped."""

    @property
    def legacy(self) -> bool:
        """True for a per-adapter / per-template kind (``kind: prometheus``, or a plugin's)."""
        return self.key.kind not in _OWN_KINDS

    @property
    def language(self) -> str:
        """The raw ``policy.istio.io/lang`` annotation (``""`` when absent)."""
        return self.annotations.get(LANG_ANNOTATION, "")

    @property
    def fail_closed(self) -> str | None:
        """The raw ``mixerd.io/fail-closed`` annotation (``None`` when absent)."""
        return self.annotations.get(FAIL_CLOSED_ANNOTATION)
