"""Validation: resources -> an immutable :class:`Snapshot` of compiled, resolved configuration.

:func:`build_snapshot` does what Mixer's ``ephemeral.BuildSnapshot`` does, reporting every
problem of a resource at once (:class:`~mixerd.config.model.ResourceError`, ``str()`` like
``rule/promhttp.istio-system: spec.match: unknown attribute 'reqest.size'``). A bad resource is
dropped and the rest still takes effect:

* attribute manifests are merged (later manifests win on conflicts, with a warning); an attribute
  with a bad ``valueType`` is left out, the rest of its manifest is kept;
* an instance is compiled with :func:`mixerd.templates.compile_instance` against the merged
  manifest (plus :func:`~mixerd.templates.compile_output_mapper` for attribute generators); an
  instance with any problem is dropped alone;
* a handler whose adapter is unknown to the :class:`AdapterCatalog`, or whose params the adapter
  rejects (validated with the instances the rules send it), is dropped;
* a rule's ``match`` must type-check to BOOL and its header-operation values to STRING; a rule with
  such a problem (or a malformed spec, or an unsupported dialect) is dropped;
* action by action, references are resolved (:mod:`mixerd.config.resolve`); an instance that is
  missing, dropped, listed twice or of a template the handler's adapter does not support is left
  out of the action (with an error on the rule); an action whose handler is missing or dropped, or
  with no valid instances left, is dropped; a rule with no actions and no header operations left
  is dropped;
* out-of-process templates (``template`` resources) become templates of their own
  (:mod:`mixerd.templates.dynamic`); out-of-process adapters (``adapter`` resources) are known by
  name (:mod:`mixerd.config.remote`); a handler with ``adapter:`` needs ``connection.address`` and
  an ``adapter`` resource of that name, or names one of mixerd's own adapters (served by
  ``mixerd adapter serve``); its params must encode with the adapter's config descriptor.
  ``template``/``adapter`` resources naming compiled-in templates/adapters are ignored, with a
  warning;
* the annotation ``policy.istio.io/lang`` (``CEXL``, the default, ``CEL`` or ``COMPAT``) picks
  the expression dialect of every expression of a rule or instance; another value is an error;
* ``sampling`` on a rule is read into a :class:`~mixerd.config.sampling.SamplingConfig` (its
  ``attributeExpression`` compiled); a bad value is an error with its field path and drops the
  rule. Sampling applies to report actions only: a sampled rule with other actions gets a warning;
* the annotation ``mixerd.io/fail-closed`` (``"true"``/``"false"``) on a rule is read into
  :attr:`CompiledRule.fail_closed`; any other value is a warning and reads as ``"true"``.

Duplicate keys (the same kind/name/namespace twice): the last one wins, with a warning.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

from mixerd.attribute import ValueType
from mixerd.config.model import (
    ADAPTER,
    ATTRIBUTE_MANIFEST,
    FAIL_CLOSED_ANNOTATION,
    HANDLER,
    INSTANCE,
    LANG_ANNOTATION,
    LEGACY_KINDS,
    QUOTA_SPEC,
    QUOTA_SPEC_BINDING,
    RULE,
    TEMPLATE,
    AdapterSpec,
    AttributeManifestSpec,
    Connection,
    HandlerSpec,
    HeaderAction,
    HeaderOperationTemplate,
    IgnoredResource,
    InstanceSpec,
    Key,
    Language,
    PluginKindSpec,
    QuotaSpecBindingSpec,
    QuotaSpecSpec,
    Resource,
    ResourceError,
    RuleSpec,
    Severity,
    TemplateSpec,
)
from mixerd.config.parse import DEFAULT_NAMESPACE
from mixerd.config.remote import (
    RemoteAdapter,
    builtin_remote_adapter,
    encode_adapter_config,
    remote_adapter,
)
from mixerd.config.resolve import resolve
from mixerd.config.sampling import SamplingConfig, compile_sampling
from mixerd.config.security import (
    AUTHORIZATION_POLICY,
    CLUSTER_RBAC_CONFIG,
    RBAC_CONFIG,
    REQUEST_AUTHENTICATION,
    SERVICE_ROLE,
    SERVICE_ROLE_BINDING,
    AuthorizationPolicySpec,
    RbacConfigSpec,
    RequestAuthenticationSpec,
    ServiceRoleBindingSpec,
    ServiceRoleSpec,
)
from mixerd.config.store import duplicate_warning
from mixerd.config.unbuilt import missing_adapter_message
from mixerd.lang import CompileError, Expression, compile
from mixerd.templates import (
    TEMPLATES,
    InstanceBuilder,
    OutputMapper,
    Template,
    TemplateError,
    Variety,
    compile_instance,
    compile_output_mapper,
)
from mixerd.templates.dynamic import DescriptorError, remote_service, template_from_descriptor

__all__ = [
    "AdapterCatalog",
    "CompiledHeaderOperation",
    "CompiledInstance",
    "CompiledRule",
    "HandlerConfig",
    "InstanceTypes",
    "ResolvedAction",
    "Snapshot",
    "StaticAdapterCatalog",
    "build_snapshot",
    "canonical_json",
]

_log = logging.getLogger(__name__)

InstanceTypes = Mapping[str, tuple[str, Mapping[str, ValueType]]]
"""Instances sent to a handler: instance FQN -> (template name, inferred type of each field)."""


class AdapterCatalog(Protocol):
    """What the config layer needs to know about adapters (the runtime backs it by the registry)."""

    def templates_of(self, adapter_name: str, /) -> tuple[str, ...] | None:
        """Templates the adapter supports, or ``None`` if no adapter has that name."""

    def validate_params(
        self, adapter_name: str, params: Mapping[str, Any], instances: InstanceTypes, /
    ) -> list[tuple[str, str]]:
        """Every problem of ``params`` as ``(path relative to params, message)``; empty if good.

        ``instances`` are the instances the rules send to the handler (FQN -> (template, types)).
        """


@dataclass(frozen=True, slots=True)
class StaticAdapterCatalog:
    """An :class:`AdapterCatalog` from a table (for tests and embedding).

    ``validator`` (optional) is called as ``validator(adapter, params, instances)``.
    """

    adapters: Mapping[str, tuple[str, ...]]
    validator: Callable[[str, Mapping[str, Any], InstanceTypes], list[tuple[str, str]]] | None = None

    def templates_of(self, adapter_name: str, /) -> tuple[str, ...] | None:
        return self.adapters.get(adapter_name)

    def validate_params(
        self, adapter_name: str, params: Mapping[str, Any], instances: InstanceTypes, /
    ) -> list[tuple[str, str]]:
        return [] if self.validator is None else self.validator(adapter_name, params, instances)


# --- compiled configuration --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class CompiledInstance:
    key: Key
    template: str
    builder: InstanceBuilder
    output_mapper: OutputMapper | None
    """For attribute generators with ``attributeBindings``: maps outputs to attributes."""
    params: Mapping[str, Any]
    attribute_bindings: Mapping[str, str]
    params_json: str
    """Canonical JSON of params and bindings (for handler signatures)."""

    @property
    def fqn(self) -> str:
        return self.key.fqn

    @property
    def variety(self) -> Variety:
        return self.builder.template.variety

    @property
    def types(self) -> Mapping[str, ValueType]:
        return self.builder.types


@dataclass(frozen=True, slots=True, eq=False)
class HandlerConfig:
    key: Key
    adapter: str
    params: Mapping[str, Any]
    connection: Connection | None
    params_json: str
    """Canonical JSON of params (for handler signatures)."""
    templates: tuple[str, ...]
    """Templates the adapter supports."""
    instances: tuple[str, ...] = ()
    """FQNs of the instances the rules send to this handler, sorted. The params were validated
    against them; a handler no rule uses (empty) has not been validated by its adapter."""
    remote: RemoteAdapter | None = None
    """Set for an out-of-process adapter (``adapter:`` with ``connection.address``)."""

    @property
    def fqn(self) -> str:
        return self.key.fqn


@dataclass(frozen=True, slots=True)
class ResolvedAction:
    handler_fqn: str
    instance_fqns: tuple[str, ...]
    """In the rule's order."""
    name: str = ""
    """The action's name (a handle for CHECK_WITH_OUTPUT outputs)."""


@dataclass(frozen=True, slots=True, eq=False)
class CompiledHeaderOperation:
    name: str
    operation: HeaderAction
    values: tuple[Expression, ...]
    value_texts: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    key: Key
    namespace: str
    match_text: str
    match: Expression | None
    """``None`` when the rule always applies (match ``""`` or ``"true"``)."""
    actions: tuple[ResolvedAction, ...]
    request_header_operations: tuple[CompiledHeaderOperation, ...] = ()
    response_header_operations: tuple[CompiledHeaderOperation, ...] = ()
    sampling: SamplingConfig | None = None
    """Which matching requests the rule's report actions see (``None``: all of them)."""
    fail_closed: bool | None = None
    """The rule's ``mixerd.io/fail-closed`` annotation; ``None`` when absent (the server's
    setting decides)."""

    @property
    def fqn(self) -> str:
        return self.key.fqn


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """A fully resolved configuration. Immutable; ``id`` increases with every build."""

    id: int
    default_namespace: str
    manifest: Mapping[str, ValueType]
    instances: Mapping[str, CompiledInstance]
    handlers: Mapping[str, HandlerConfig]
    rules: tuple[CompiledRule, ...]
    quota_specs: Mapping[Key, QuotaSpecSpec]
    quota_spec_bindings: Mapping[Key, QuotaSpecBindingSpec]
    errors: tuple[ResourceError, ...] = ()
    warnings: tuple[ResourceError, ...] = ()
    ignored: tuple[IgnoredResource, ...] = ()
    resources: Mapping[Key, Resource] = field(default_factory=dict)
    """The resources the snapshot was built from (after resolving duplicates)."""
    security: Mapping[Key, Resource] = field(default_factory=dict)
    """The valid security resources (RequestAuthentication, AuthorizationPolicy, ServiceRole,
    ServiceRoleBinding, ClusterRbacConfig), compiled by the runtime (:mod:`mixerd.runtime.authz`)."""


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): equal configs give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=repr)
    return str(value)


_ids: Final = itertools.count(1)


# --- building ----------------------------------------------------------------------------------


def build_snapshot(
    resources: Iterable[Resource] | Mapping[Key, Resource],
    *,
    adapters: AdapterCatalog,
    default_namespace: str = DEFAULT_NAMESPACE,
    base_manifest: Mapping[str, ValueType] | None = None,
    problems: Iterable[ResourceError] = (),
    ignored: Iterable[IgnoredResource] = (),
    snapshot_id: int | None = None,
) -> Snapshot:
    """Validate and compile ``resources`` into a :class:`Snapshot`.

    ``base_manifest`` (optional) holds attributes known before any ``attributemanifest`` resource
    (for example :func:`mixerd.attribute.stock_manifest`); ``problems`` are load problems (files
    that did not parse, duplicates found by a store) to carry into the snapshot's errors/warnings.
    """
    builder = _Builder(adapters, default_namespace)
    builder.take(resources.values() if isinstance(resources, Mapping) else resources)
    for p in problems:
        (builder.warnings if p.severity is Severity.WARNING else builder.load_errors).append(p)
    return builder.build(base_manifest, tuple(ignored), next(_ids) if snapshot_id is None else snapshot_id)


class _Builder:
    def __init__(self, adapters: AdapterCatalog, default_namespace: str) -> None:
        self.adapters = adapters
        self.default_namespace = default_namespace
        self.resources: dict[Key, Resource] = {}
        self.order: dict[Key, int] = {}
        self.errors: dict[Key, list[ResourceError]] = {}
        self.load_errors: list[ResourceError] = []
        self.warnings: list[ResourceError] = []
        self.manifest: dict[str, ValueType] = {}
        self.instances: dict[str, CompiledInstance] = {}
        self.bad_instances: set[str] = set()
        self.handlers: dict[str, HandlerConfig] = {}
        self.bad_handlers: set[str] = set()
        self.match_cache: dict[tuple[str, str], Expression | CompileError] = {}
        self.plugin_kinds: dict[str, type] = {}
        """Kinds named after a plugin adapter (-> HandlerSpec) or a template (-> InstanceSpec)."""
        self.templates: dict[str, Template] = {}
        """Templates defined by ``template`` resources, by name."""
        self.remote_adapters: dict[str, RemoteAdapter] = {}

    # -- bookkeeping -----------------------------------------------------------------------------

    def take(self, resources: Iterable[Resource]) -> None:
        for r in resources:
            previous = self.resources.pop(r.key, None)
            if previous is not None:
                self.warnings.append(duplicate_warning(previous, r))
            self.resources[r.key] = r
        self.order = {k: i for i, k in enumerate(self.resources)}

    def error(self, r: Resource, path: str, message: str) -> None:
        self.errors.setdefault(r.key, []).append(ResourceError(r.key, path, message, source=r.source))

    def warn(self, r: Resource, path: str, message: str) -> None:
        self.warnings.append(ResourceError(r.key, path, message, Severity.WARNING, r.source))

    def crashed(self, r: Resource, exc: Exception) -> None:
        """Report an unexpected exception while compiling ``r`` (a bug) as an error of ``r``."""
        _log.error("compiling %s failed unexpectedly", r.key, exc_info=exc)
        self.error(r, "spec", f"internal error while compiling this resource: {type(exc).__name__}: {exc}")

    def has_errors(self, r: Resource) -> bool:
        return bool(self.errors.get(r.key))

    def of_kind(self, spec_type: type[_S], *kinds: str) -> list[tuple[Resource, _S]]:
        """Resources of ``kinds`` with their spec (a resource whose spec has the wrong type is
        reported once, by :meth:`check_specs`, and skipped)."""
        return [
            (r, r.spec)
            for r in self.resources.values()
            if r.key.kind in kinds and isinstance(r.spec, spec_type)
        ]

    def plugin_kind_resources(self) -> None:
        """Turn each ``kind: <name>`` resource (:class:`PluginKindSpec`) into a handler of the
        adapter of that name, or an instance of the template of that name."""
        for key, r in list(self.resources.items()):
            spec = r.spec
            if not isinstance(spec, PluginKindSpec):
                continue
            kind = key.kind
            if self.adapters.templates_of(kind) is not None:
                if spec.attribute_bindings:
                    self.error(
                        r, "spec.attributeBindings", f"a handler (kind {kind}) has no attributeBindings"
                    )
                new: HandlerSpec | InstanceSpec = HandlerSpec(compiled_adapter=kind, params=spec.params)
                self.plugin_kinds[kind] = HandlerSpec
            elif kind in TEMPLATES:
                new = InstanceSpec(
                    compiled_template=kind, params=spec.params, attribute_bindings=spec.attribute_bindings
                )
                self.plugin_kinds[kind] = InstanceSpec
            else:
                continue  # reported by check_specs
            self.resources[key] = replace(r, spec=new)

    def check_specs(self) -> None:
        for r in self.resources.values():
            want = _SPEC_TYPES.get(r.key.kind) or self.plugin_kinds.get(r.key.kind)
            if want is None:
                hint = " (no adapter or template of that name)" if isinstance(r.spec, PluginKindSpec) else ""
                self.error(r, "kind", f"unknown kind '{r.key.kind}'{hint}")
            elif not isinstance(r.spec, want):
                self.error(r, "spec", f"a {r.key.kind} needs a {want.__name__}, got {type(r.spec).__name__}")

    def report_issues(self, r: Resource) -> None:
        for issue in r.issues:
            self.error(r, issue.path, issue.message)

    def check_language(self, r: Resource) -> bool:
        """False (and an error) when the ``policy.istio.io/lang`` annotation names no dialect."""
        value = r.language.strip()
        if value in _DIALECTS:
            return True
        self.error(
            r,
            f'metadata.annotations["{LANG_ANNOTATION}"]',
            f"unknown expression language '{value}' (expected CEXL, CEL or COMPAT)",
        )
        return False

    @staticmethod
    def dialect(r: Resource) -> str:
        """The :func:`mixerd.lang.compile` dialect of ``r``'s expressions (checked first)."""
        return _DIALECTS.get(r.language.strip(), "cexl")

    # -- the passes ------------------------------------------------------------------------------

    def build(
        self, base_manifest: Mapping[str, ValueType] | None, ignored: tuple[IgnoredResource, ...], sid: int
    ) -> Snapshot:
        self.plugin_kind_resources()
        self.check_specs()
        self.manifests(base_manifest)
        self.out_of_process()
        plugin_instances = [k for k, t in self.plugin_kinds.items() if t is InstanceSpec]
        plugin_handlers = [k for k, t in self.plugin_kinds.items() if t is HandlerSpec]
        for r, instance in self.of_kind(InstanceSpec, INSTANCE, *_LEGACY_INSTANCE_KINDS, *plugin_instances):
            try:
                self.instance(r, instance)
            except Exception as exc:  # a compiler bug drops this instance, not the whole snapshot
                self.crashed(r, exc)
                self.instances.pop(r.key.fqn, None)
                self.bad_instances.add(r.key.fqn)
        for r, handler in self.of_kind(HandlerSpec, HANDLER, *_LEGACY_HANDLER_KINDS, *plugin_handlers):
            self.handler(r, handler)
        pending: list[_PendingRule] = []
        for r, rule in self.of_kind(RuleSpec, RULE):
            try:
                p = self.rule(r, rule)
            except Exception as exc:  # a compiler bug drops this rule, not the whole snapshot
                self.crashed(r, exc)
                continue
            if p is not None:
                pending.append(p)
        routed = self.routes(pending)
        self.validate_handlers(routed)
        rules = self.finish_rules(pending)
        self.unused(routed)
        quota_specs, bindings = self.quota_config(rules)
        security = self.security_config()

        errors = sorted(
            (e for errs in self.errors.values() for e in errs),
            key=lambda e: self.order.get(e.key_or_file, -1) if isinstance(e.key_or_file, Key) else -1,
        )
        return Snapshot(
            id=sid,
            default_namespace=self.default_namespace,
            manifest=MappingProxyType(dict(self.manifest)),
            instances=MappingProxyType(dict(self.instances)),
            handlers=MappingProxyType(dict(self.handlers)),
            rules=tuple(rules),
            quota_specs=MappingProxyType(quota_specs),
            quota_spec_bindings=MappingProxyType(bindings),
            errors=tuple(self.load_errors) + tuple(errors),
            warnings=tuple(self.warnings),
            ignored=ignored,
            resources=MappingProxyType(dict(self.resources)),
            security=MappingProxyType(security),
        )

    def manifests(self, base: Mapping[str, ValueType] | None) -> None:
        base = base or {}
        self.manifest = dict(base)
        declared: dict[str, Resource] = {}
        for r, spec in self.of_kind(AttributeManifestSpec, ATTRIBUTE_MANIFEST):
            self.report_issues(r)
            for name, info in spec.attributes.items():
                earlier = declared.get(name)
                if earlier is not None and self.manifest.get(name) != info.value_type:
                    self.warn(
                        r,
                        f"spec.attributes.{name}.valueType",
                        f"attribute '{name}' is {info.value_type.name} here but "
                        f"{self.manifest[name].name} in {earlier.key}; using {info.value_type.name}",
                    )
                elif earlier is None and name in base and base[name] != info.value_type:
                    self.warn(
                        r,
                        f"spec.attributes.{name}.valueType",
                        f"attribute '{name}' is {base[name].name} in the built-in vocabulary (the type "
                        f"mixerd's Envoy front-ends give it); using {info.value_type.name}, rules that read "
                        "it will fail to evaluate on requests from those front-ends",
                    )
                self.manifest[name] = info.value_type
                declared[name] = r

    def out_of_process(self) -> None:
        """``template`` and ``adapter`` resources (before the instances and handlers using them)."""
        for r, t in self.of_kind(TemplateSpec, TEMPLATE):
            self.report_issues(r)
            name = r.key.name
            if name in TEMPLATES:
                self.warn(r, "", f"'{name}' is a template built into mixerd; this descriptor is ignored")
                continue
            if name in self.templates:
                self.error(r, "metadata.name", f"template '{name}' is defined in another namespace too")
                continue
            try:
                self.templates[name] = template_from_descriptor(name, t.descriptor)
            except DescriptorError as exc:
                self.error(r, "spec.descriptor", str(exc))
        for r, a in self.of_kind(AdapterSpec, ADAPTER):
            self.report_issues(r)
            name = r.key.name
            if self.adapters.templates_of(name) is not None:
                self.warn(
                    r, "", f"'{name}' is an adapter built into mixerd; this adapter resource is ignored"
                )
                continue
            for i, t_name in enumerate(a.templates):
                if t_name not in TEMPLATES and t_name not in self.templates:
                    self.warn(
                        r,
                        f"spec.templates[{i}]",
                        f"unknown template '{t_name}' (no template resource of that name, and not built "
                        "into mixerd): no instance can be of it",
                    )
            try:
                self.remote_adapters[name] = remote_adapter(name, a.templates, a.session_based, a.config)
            except DescriptorError as exc:
                self.error(r, "spec.config", str(exc))

    def template_of(self, name: str) -> Template | None:
        return self.templates.get(name) or TEMPLATES.get(name)

    def instance(self, r: Resource, spec: InstanceSpec) -> None:
        self.report_issues(r)
        dialect_ok = self.check_language(r)
        legacy = r.legacy
        template = spec.compiled_template
        described: Template | str = template
        if not template and spec.template:
            found = self.template_of(spec.template)
            if found is None:
                self.error(
                    r,
                    "spec.template",
                    f"unknown template '{spec.template}' (no template resource of that name, and no "
                    "template built into mixerd)",
                )
            else:
                template, described = found.name, found
        if template and dialect_ok:
            try:
                builder = compile_instance(
                    r.key.fqn, described, spec.params, self.manifest, dialect=self.dialect(r)
                )
            except TemplateError as exc:
                for fe in exc.errors:
                    self.error(r, _instance_path(fe.path, legacy), _quote_attribute(fe.message))
                builder = None
            mapper: OutputMapper | None = None
            known = TEMPLATES.get(template)
            if spec.attribute_bindings and known is not None:
                if known.variety is not Variety.ATTRIBUTE_GENERATOR:
                    self.error(
                        r,
                        _instance_path("attributeBindings", legacy),
                        f"template '{template}' produces no outputs (only attribute generators such as "
                        "'kubernetes' take attributeBindings)",
                    )
                else:
                    try:
                        mapper = compile_output_mapper(template, spec.attribute_bindings, self.manifest)
                    except TemplateError as exc:
                        for fe in exc.errors:
                            self.error(r, _instance_path(fe.path, legacy), _quote_attribute(fe.message))
            if builder is not None and not self.has_errors(r):
                params = dict(spec.params or {})
                bindings = dict(spec.attribute_bindings)
                self.instances[r.key.fqn] = CompiledInstance(
                    r.key,
                    template,
                    builder,
                    mapper,
                    MappingProxyType(params),
                    MappingProxyType(bindings),
                    canonical_json({"params": params, "attributeBindings": bindings}),
                )
                return
        self.bad_instances.add(r.key.fqn)

    def handler(self, r: Resource, spec: HandlerSpec) -> None:
        self.report_issues(r)
        templates: tuple[str, ...] | None = None
        if spec.compiled_adapter:
            templates = self.adapters.templates_of(spec.compiled_adapter)
            if templates is None:
                path = "kind" if r.legacy else "spec.compiledAdapter"
                name = spec.compiled_adapter
                self.error(r, path, missing_adapter_message(name, f"unknown adapter '{name}'"))
        remote: RemoteAdapter | None = None
        if spec.adapter and not spec.compiled_adapter:  # compiledAdapter wins, as in Mixer
            remote = self.remote_handler(r, spec)
            if remote is not None:
                templates = remote.templates
        if templates is None or self.has_errors(r):
            self.bad_handlers.add(r.key.fqn)
            return
        params = dict(spec.params or {})
        self.handlers[r.key.fqn] = HandlerConfig(
            r.key,
            spec.compiled_adapter or spec.adapter,
            MappingProxyType(params),
            spec.connection,
            canonical_json(params),
            tuple(templates),
            remote=remote,
        )

    def remote_handler(self, r: Resource, spec: HandlerSpec) -> RemoteAdapter | None:
        """The out-of-process adapter of a handler with ``adapter:`` (errors reported)."""
        name = spec.adapter
        if spec.connection is None or not spec.connection.address:
            self.error(
                r,
                "spec.connection.address",
                f"missing: adapter '{name}' is out of process (a handler with `adapter:`), mixerd "
                "needs the address of its gRPC server",
            )
            return None
        if spec.connection.authentication:
            self.error(
                r,
                "spec.connection.authentication",
                "not supported: mixerd connects to out-of-process adapters in plaintext; reach a "
                "TLS adapter through a local proxy (e.g. an Envoy sidecar) instead",
            )
            return None
        remote = self.remote_adapters.get(name)
        if remote is None:
            builtin = self.adapters.templates_of(name)
            if builtin is None:
                self.error(
                    r,
                    "spec.adapter",
                    f"no adapter resource named '{name}' (an out-of-process adapter is declared with a "
                    "`kind: adapter` resource listing its templates and config descriptor)",
                )
                return None
            remote = builtin_remote_adapter(name, builtin)
        try:
            encode_adapter_config(remote, spec.params or {})
        except ValueError as exc:
            self.error(r, "spec.params", str(exc))
            return None
        for t in remote.templates:
            found = self.template_of(t)
            if found is not None and remote_service(found) is None:
                self.warn(
                    r,
                    "spec.adapter",
                    f"template '{t}' has no out-of-process form in mixerd (the compiled-in templates "
                    "metric, listentry and quota have, and any template resource); its instances "
                    "cannot be sent to this handler",
                )
        return remote

    def fail_closed(self, r: Resource) -> bool | None:
        """The rule's ``mixerd.io/fail-closed`` annotation. A value other than true or false is
        reported and read as true: a typo must not make a rule meant to fail closed fail open
        (nor drop it, which would drop its denials too)."""
        raw = r.fail_closed
        if raw is None:
            return None
        value = raw.strip().lower()
        if value == "true":
            return True
        if value == "false":
            return False
        self.warn(
            r,
            f"metadata.annotations.{FAIL_CLOSED_ANNOTATION}",
            f'expected "true" or "false", got {raw!r}; read as "true" (fail closed)',
        )
        return True

    def rule(self, r: Resource, spec: RuleSpec) -> _PendingRule | None:
        self.report_issues(r)
        dialect_ok = self.check_language(r)
        match: Expression | None = None
        if dialect_ok:
            match = self.compile_match(r, spec.match)
        sampling, sampling_issues = compile_sampling(
            spec.sampling, lambda text: compile(text, self.manifest), error_text=_compile_message
        )
        for issue in sampling_issues:
            self.error(r, issue.path, issue.message)
        rnd = sampling.random if sampling is not None else None
        if rnd is not None and rnd.numerator == 0 and rnd.expression is None:
            self.warn(
                r,
                "spec.sampling.random.percentSampled.numerator",
                "0 (the default) and no attributeExpression: the rule's report actions never run",
            )
        fatal = self.has_errors(r)  # the spec itself or its match; action problems are not fatal
        actions: list[tuple[int, ResolvedAction]] = []
        ns = r.key.namespace
        for i, action in enumerate(spec.actions):
            apath = f"spec.actions[{i}]"
            res = resolve(action.handler, HANDLER, ns, _Union(self.handlers, self.bad_handlers))
            handler: HandlerConfig | None = None
            if res.fqn is None:
                self.error(
                    r, f"{apath}.handler", f"handler '{action.handler}' not found ({res.describe_failure()})"
                )
            elif res.fqn in self.bad_handlers:
                self.error(
                    r, f"{apath}.handler", f"handler '{res.fqn}' is invalid and was dropped (see its errors)"
                )
            else:
                handler = self.handlers[res.fqn]
            chosen: list[str] = []
            seen: set[str] = set()
            for j, name in enumerate(action.instances):
                ipath = f"{apath}.instances[{j}]"
                ires = resolve(name, INSTANCE, ns, _Union(self.instances, self.bad_instances))
                fqn = ires.fqn
                if fqn is None:
                    self.error(r, ipath, f"instance '{name}' not found ({ires.describe_failure()})")
                elif fqn in seen:
                    self.error(r, ipath, f"instance '{fqn}' is listed twice in this action")
                elif fqn in self.bad_instances:
                    self.error(r, ipath, f"instance '{fqn}' is invalid and was dropped (see its errors)")
                elif handler is not None and self.instances[fqn].template not in handler.templates:
                    supported = ", ".join(handler.templates) or "none"
                    self.error(
                        r,
                        ipath,
                        f"instance '{fqn}' is of template '{self.instances[fqn].template}', which adapter "
                        f"'{handler.adapter}' of handler '{handler.fqn}' does not support "
                        f"(it supports: {supported})",
                    )
                else:
                    chosen.append(fqn)
                if fqn is not None:
                    seen.add(fqn)
            if handler is None:
                continue
            if not chosen:
                why = "no valid instances" if action.instances else "no instances"
                self.error(r, apath, f"{why}; the action is dropped")
                continue
            actions.append((i, ResolvedAction(handler.fqn, tuple(chosen), action.name)))
        if not dialect_ok:
            return None
        request_ops = self.header_ops(r, spec, spec.request_header_operations, "requestHeaderOperations")
        response_ops = self.header_ops(r, spec, spec.response_header_operations, "responseHeaderOperations")
        if fatal or request_ops is None or response_ops is None:
            return None
        return _PendingRule(r, spec, match, actions, request_ops, response_ops, self.fail_closed(r), sampling)

    def compile_match(self, r: Resource, text: str) -> Expression | None:
        """The compiled match (``None`` = always); a problem is reported as an error."""
        stripped = text.strip()
        if stripped in ("", "true"):
            return None
        key = (self.dialect(r), stripped)
        cached = self.match_cache.get(key)
        if cached is None:
            try:
                cached = compile(stripped, self.manifest, dialect=key[0])
            except CompileError as exc:
                cached = exc
            self.match_cache[key] = cached
        if isinstance(cached, CompileError):
            self.error(r, "spec.match", _compile_message(cached))
            return None
        if cached.result_type is not ValueType.BOOL:
            self.error(
                r, "spec.match", f"expression type is {cached.result_type.name}, a rule match needs BOOL"
            )
        return cached

    def header_ops(
        self, r: Resource, spec: RuleSpec, ops: tuple[HeaderOperationTemplate, ...], field_name: str
    ) -> tuple[CompiledHeaderOperation, ...] | None:
        """Compiled operations, or ``None`` if any is bad (the rule is then dropped)."""
        out: list[CompiledHeaderOperation] = []
        ok = True
        outputs = [f"{a.name}.output." for a in spec.actions if a.name]
        manifest = self.output_manifest(r, spec)
        for i, op in enumerate(ops):
            path = f"spec.{field_name}[{i}]"
            if not op.name:
                ok = False  # already reported by the parser ("missing")
            if op.operation is HeaderAction.REMOVE:
                if op.values:
                    self.warn(r, f"{path}.values", "ignored: a REMOVE operation takes no values")
                out.append(CompiledHeaderOperation(op.name, op.operation, (), ()))
                continue
            if not op.values:
                self.error(r, f"{path}.values", f"missing (a {op.operation.name} operation needs a value)")
                ok = False
            values: list[Expression] = []
            for j, text in enumerate(op.values):
                vpath = f"{path}.values[{j}]"
                try:
                    expr = compile(text, manifest, dialect=self.dialect(r))
                except CompileError as exc:
                    message = _compile_message(exc)
                    if any(o in text for o in outputs):
                        message += (
                            " (action outputs '<action>.output.<field>' exist only for actions with an "
                            "instance of a CHECK_WITH_OUTPUT template, defined by a template resource)"
                        )
                    self.error(r, vpath, message)
                    ok = False
                    continue
                if expr.result_type is not ValueType.STRING:
                    self.error(
                        r, vpath, f"expression type is {expr.result_type.name}, a header value needs STRING"
                    )
                    ok = False
                    continue
                values.append(expr)
            out.append(CompiledHeaderOperation(op.name, op.operation, tuple(values), op.values))
        return tuple(out) if ok else None

    def output_manifest(self, r: Resource, spec: RuleSpec) -> Mapping[str, ValueType]:
        """The manifest plus ``<action name>.output.<field>`` for every named action with an
        instance of a CHECK_WITH_OUTPUT template (what header operations may read)."""
        extra: dict[str, ValueType] = {}
        for action in spec.actions:
            if not action.name:
                continue
            for name in action.instances:
                res = resolve(name, INSTANCE, r.key.namespace, self.instances)
                inst = self.instances.get(res.fqn) if res.fqn is not None else None
                if inst is not None and inst.variety is Variety.CHECK_WITH_OUTPUT:
                    template = inst.builder.template
                    for field_name, vt in template.outputs.items():
                        extra[f"{action.name}.output.{field_name}"] = vt
        return {**self.manifest, **extra} if extra else self.manifest

    def routes(self, pending: list[_PendingRule]) -> dict[str, set[str]]:
        routed: dict[str, set[str]] = {}
        for p in pending:
            for _, action in p.actions:
                routed.setdefault(action.handler_fqn, set()).update(action.instance_fqns)
        return routed

    def validate_handlers(self, routed: dict[str, set[str]]) -> None:
        for fqn, instance_fqns in routed.items():
            h = self.handlers[fqn]
            r = self.resources[h.key]
            types: InstanceTypes = {
                i: (self.instances[i].template, self.instances[i].types) for i in sorted(instance_fqns)
            }
            try:
                problems = (
                    []  # validated when the handler was read: its params encode with the descriptor
                    if h.remote is not None and h.adapter in self.remote_adapters
                    else self.adapters.validate_params(h.adapter, h.params, types)
                )
            except Exception as exc:  # an adapter's validator must not break the whole snapshot
                problems = [("", f"adapter '{h.adapter}' failed to validate its params: {exc!r}")]
            if problems:
                base = "spec" if r.legacy else "spec.params"
                for path, message in problems:
                    self.error(r, f"{base}.{path}" if path else base, message)
                del self.handlers[fqn]
                self.bad_handlers.add(fqn)
            else:
                self.handlers[fqn] = HandlerConfig(
                    h.key,
                    h.adapter,
                    h.params,
                    h.connection,
                    h.params_json,
                    h.templates,
                    tuple(sorted(instance_fqns)),
                    h.remote,
                )

    def finish_rules(self, pending: list[_PendingRule]) -> list[CompiledRule]:
        rules: list[CompiledRule] = []
        for p in pending:
            r, spec = p.resource, p.spec
            actions: list[ResolvedAction] = []
            for i, action in p.actions:
                if action.handler_fqn in self.bad_handlers:
                    self.error(
                        r,
                        f"spec.actions[{i}].handler",
                        f"handler '{action.handler_fqn}' is invalid and was dropped (see its errors)",
                    )
                    continue
                actions.append(action)
            if not actions and not p.request_ops and not p.response_ops:
                self.error(
                    r, "spec.actions", "no valid actions and no header operations; the rule is dropped"
                )
                continue
            rules.append(
                CompiledRule(
                    r.key,
                    r.key.namespace,
                    spec.match,
                    p.match,
                    tuple(actions),
                    p.request_ops,
                    p.response_ops,
                    p.sampling,
                    p.fail_closed,
                )
            )
            if p.sampling is not None:
                self.sampling_scope(r, actions, p)
        return rules

    def sampling_scope(self, r: Resource, actions: list[ResolvedAction], p: _PendingRule) -> None:
        """Warn when a sampled rule does more than report: sampling never skips a check, a quota,
        an attribute generator or a header operation (a denial must not depend on chance)."""
        others = sorted(
            {
                f"{self.instances[i].template} actions"
                for a in actions
                for i in a.instance_fqns
                if i in self.instances and TEMPLATES[self.instances[i].template].variety is not Variety.REPORT
            }
        )
        if p.request_ops or p.response_ops:
            others.append("header operations")
        if others:
            self.warn(
                r,
                "spec.sampling",
                f"sampling applies to report actions only; this rule's {' and '.join(others)} "
                "run on every matching request",
            )

    def unused(self, routed: dict[str, set[str]]) -> None:
        used_instances = {i for instances in routed.values() for i in instances}
        for fqn, h in self.handlers.items():
            if fqn not in routed:
                self.warn(
                    self.resources[h.key],
                    "",
                    "not used by any rule in effect (its params were not validated by the adapter)",
                )
        for fqn, inst in self.instances.items():
            if fqn not in used_instances:
                self.warn(self.resources[inst.key], "", "not used by any rule in effect")

    def quota_config(
        self, rules: list[CompiledRule]
    ) -> tuple[dict[Key, QuotaSpecSpec], dict[Key, QuotaSpecBindingSpec]]:
        specs: dict[Key, QuotaSpecSpec] = {}
        bindings: dict[Key, QuotaSpecBindingSpec] = {}
        routed_quotas = {
            self.instances[i].key.name.lower()
            for rule in rules
            for action in rule.actions
            for i in action.instance_fqns
            if self.instances[i].template == "quota"
        }
        for r, spec in self.of_kind(QuotaSpecSpec, QUOTA_SPEC):
            self.report_issues(r)
            for i, rule in enumerate(spec.rules):
                for j, charge in enumerate(rule.quotas):
                    if charge.quota and charge.quota.lower() not in routed_quotas:
                        self.warn(
                            r,
                            f"spec.rules[{i}].quotas[{j}].quota",
                            f"no rule sends a quota instance named '{charge.quota}' to a handler; "
                            "such a quota is granted without any check",
                        )
            if not self.has_errors(r):
                specs[r.key] = spec
        for r, spec_b in self.of_kind(QuotaSpecBindingSpec, QUOTA_SPEC_BINDING):
            self.report_issues(r)
            for i, ref in enumerate(spec_b.quota_specs):
                target = Key(QUOTA_SPEC, ref.namespace, ref.name)
                if ref.name and target not in self.resources:
                    self.warn(
                        r,
                        f"spec.quotaSpecs[{i}]",
                        f"QuotaSpec '{ref.name}' not found in namespace '{ref.namespace}'",
                    )
            if not self.has_errors(r):
                bindings[r.key] = spec_b
        return specs, bindings

    def security_config(self) -> dict[Key, Resource]:
        """The security resources without problems; a ServiceRoleBinding naming a ServiceRole
        that is not there is kept (it grants nothing) with a warning, and more than one mesh
        switch (ClusterRbacConfig) is a warning too (the first by name is used)."""
        out: dict[Key, Resource] = {}
        for r in self.resources.values():
            if r.key.kind not in _SECURITY_KINDS:
                continue
            self.report_issues(r)
            if self.has_errors(r):
                continue
            out[r.key] = r
            spec = r.spec
            if isinstance(spec, ServiceRoleBindingSpec) and spec.role_ref is not None:
                target = Key(SERVICE_ROLE, r.key.namespace, spec.role_ref.name)
                if target not in self.resources:
                    self.warn(
                        r,
                        "spec.roleRef.name",
                        f"ServiceRole '{spec.role_ref.name}' not found in namespace '{r.key.namespace}'; "
                        "this binding grants nothing",
                    )
        switches = sorted(k for k in out if k.kind in (CLUSTER_RBAC_CONFIG, RBAC_CONFIG))
        for extra in switches[1:]:
            self.warn(self.resources[extra], "", f"more than one mesh RBAC switch; {switches[0]} is used")
        return out


@dataclass(slots=True)
class _PendingRule:
    resource: Resource
    spec: RuleSpec
    match: Expression | None
    actions: list[tuple[int, ResolvedAction]]
    request_ops: tuple[CompiledHeaderOperation, ...]
    response_ops: tuple[CompiledHeaderOperation, ...]
    fail_closed: bool | None = None
    sampling: SamplingConfig | None = None


class _Union:
    """Membership in either of two collections (valid and dropped resources)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Mapping[str, Any], b: set[str]) -> None:
        self.a = a
        self.b = b

    def __contains__(self, item: object) -> bool:
        return item in self.a or item in self.b


_LEGACY_HANDLER_KINDS: Final = tuple(k for k, v in LEGACY_KINDS.items() if v.role == "handler")
_LEGACY_INSTANCE_KINDS: Final = tuple(k for k, v in LEGACY_KINDS.items() if v.role == "instance")
_SPEC_TYPES: Final[Mapping[str, type]] = {
    ATTRIBUTE_MANIFEST: AttributeManifestSpec,
    RULE: RuleSpec,
    INSTANCE: InstanceSpec,
    HANDLER: HandlerSpec,
    ADAPTER: AdapterSpec,
    TEMPLATE: TemplateSpec,
    QUOTA_SPEC: QuotaSpecSpec,
    QUOTA_SPEC_BINDING: QuotaSpecBindingSpec,
    AUTHORIZATION_POLICY: AuthorizationPolicySpec,
    REQUEST_AUTHENTICATION: RequestAuthenticationSpec,
    SERVICE_ROLE: ServiceRoleSpec,
    SERVICE_ROLE_BINDING: ServiceRoleBindingSpec,
    CLUSTER_RBAC_CONFIG: RbacConfigSpec,
    RBAC_CONFIG: RbacConfigSpec,
    **{k: HandlerSpec for k in _LEGACY_HANDLER_KINDS},
    **{k: InstanceSpec for k in _LEGACY_INSTANCE_KINDS},
}
_SECURITY_KINDS: Final = frozenset(
    {
        AUTHORIZATION_POLICY,
        REQUEST_AUTHENTICATION,
        SERVICE_ROLE,
        SERVICE_ROLE_BINDING,
        CLUSTER_RBAC_CONFIG,
        RBAC_CONFIG,
    }
)
_S = TypeVar("_S")


def _instance_path(path: str, legacy: bool) -> str:
    """Map a path relative to an instance spec (``params.value``) to the document (``spec...``)."""
    if path == "template":
        return "kind" if legacy else "spec.compiledTemplate"
    if legacy:
        if path == "params":
            return "spec"
        if path.startswith("params."):
            return "spec." + path.removeprefix("params.")
    return f"spec.{path}" if path else "spec"


_DIALECTS: Final = {
    "": "cexl",
    Language.CEXL.value: "cexl",
    Language.CEL.value: "cel",
    Language.COMPAT.value: "compat",
}
"""``policy.istio.io/lang`` values (as Mixer reads them, exactly) and their compiler dialects."""

_UNKNOWN_ATTRIBUTE: Final = re.compile(r"unknown attribute ([^'\s]\S*)")


_AT_POSITION: Final = re.compile(r" at position \d+$")


def _quote_attribute(message: str) -> str:
    """``unknown attribute x.y at position 3`` (Mixer's words plus an offset) ->
    ``unknown attribute 'x.y'``: the field path already says which expression it is."""
    message = _AT_POSITION.sub("", message)
    return _UNKNOWN_ATTRIBUTE.sub(lambda m: f"unknown attribute '{m.group(1)}'", message)


def _compile_message(exc: CompileError) -> str:
    return _quote_attribute(exc.reason)
