"""Reading configuration documents (YAML or JSON) into :class:`~mixerd.config.model.Resource` values.

* Multi-document YAML and JSON files (a single object, a list of objects or a ``kind: List``).
* Mixer kinds need ``apiVersion: config.istio.io/v1alpha2`` (a missing apiVersion is accepted).
  Documents of other groups (a ``networking.istio.io`` DestinationRule, a Deployment ...) and the
  proxy-side ``HTTPAPISpec``/``HTTPAPISpecBinding`` are returned as
  :class:`~mixerd.config.model.IgnoredResource` with a reason, not as errors.
* Field names may be camelCase or snake_case (``compiledTemplate`` / ``compiled_template``);
  unknown fields are problems, as in Mixer (which rejects unknown fields when it converts specs).
* A document without ``metadata.namespace`` is put in ``default_namespace`` (by default
  ``istio-system``, Mixer's config default namespace, i.e. global config).
* A YAML syntax error fails the whole file: :class:`ParseResult` then has ``ok=False``, no
  resources, and one error naming the file and line.

Problems inside a document that has a kind and a name are kept on the resource
(:attr:`Resource.issues`) so that the snapshot can report them together with semantic problems;
problems that leave no resource (no kind, no name, not a mapping) are :class:`ResourceError` values
of the :class:`ParseResult`.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import re2
import yaml

from mixerd.attribute import ValueType, parse_duration
from mixerd.config.model import (
    ADAPTER,
    API_VERSION,
    ATTRIBUTE_MANIFEST,
    HANDLER,
    INSTANCE,
    LEGACY_KINDS,
    QUOTA_SPEC,
    QUOTA_SPEC_BINDING,
    RULE,
    TEMPLATE,
    Action,
    AdapterSpec,
    AttributeInfo,
    AttributeManifestSpec,
    Connection,
    HandlerSpec,
    HeaderAction,
    HeaderOperationTemplate,
    IgnoredResource,
    InstanceSpec,
    Issue,
    IstioService,
    Key,
    PluginKindSpec,
    QuotaCharge,
    QuotaRule,
    QuotaSpecBindingSpec,
    QuotaSpecReference,
    QuotaSpecSpec,
    Resource,
    ResourceError,
    RuleSpec,
    Source,
    Spec,
    StringMatch,
    TemplateSpec,
)
from mixerd.config.parse_security import (
    parse_authorization_policy,
    parse_rbac_config,
    parse_request_authentication,
    parse_service_role,
    parse_service_role_binding,
)
from mixerd.config.security import (
    AUTHORIZATION_POLICY,
    CLUSTER_RBAC_CONFIG,
    RBAC_CONFIG,
    REQUEST_AUTHENTICATION,
    SECURITY_KINDS,
    SERVICE_ROLE,
    SERVICE_ROLE_BINDING,
)

__all__ = [
    "CONFIG_SUFFIXES",
    "DEFAULT_NAMESPACE",
    "ParseResult",
    "config_files",
    "load_paths",
    "parse_bytes",
    "parse_document",
    "parse_documents",
    "parse_file",
    "parse_json",
    "parse_text",
]

DEFAULT_NAMESPACE: Final = "istio-system"
CONFIG_SUFFIXES: Final = (".yaml", ".yml", ".json")

_MIXER_GROUP: Final = "config.istio.io/"
_Loader: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
_SECURITY_VERSIONS: Final = {
    "security.istio.io/": ("security.istio.io/v1beta1", "security.istio.io/v1"),
    "rbac.istio.io/": ("rbac.istio.io/v1alpha1",),
}
"""API groups of the security kinds and the versions read (``v1`` has ``v1beta1``'s schema)."""
_IGNORED_CONFIG_KINDS: Final = {
    "HTTPAPISpec": "proxy-side API description (produces api.* attributes in Envoy); mixerd does not use it",
    "HTTPAPISpecBinding": "proxy-side API description binding; mixerd does not use it",
}


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What came out of one or more files."""

    resources: tuple[Resource, ...] = ()
    ignored: tuple[IgnoredResource, ...] = ()
    errors: tuple[ResourceError, ...] = ()
    """Problems that left no resource: unreadable files, YAML syntax errors, documents without kind."""
    ok: bool = True
    """False when a file could not be read or is not valid YAML/JSON (it then yields no resources)."""

    def __add__(self, other: ParseResult) -> ParseResult:
        return ParseResult(
            self.resources + other.resources,
            self.ignored + other.ignored,
            self.errors + other.errors,
            self.ok and other.ok,
        )


# --- entry points ------------------------------------------------------------------------------


def config_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand ``paths``: files as given, directories recursively (``*.yaml``, ``*.yml``, ``*.json``).

    Names starting with ``.`` are skipped inside directories, so a Kubernetes ConfigMap mount
    (``..data`` symlinks and timestamped ``..2024_...`` folders) is read once, through its
    top-level symlinks. Missing paths are returned as given (reading them reports the problem).
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: list[Path] = []
            for root, dirs, files in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if not name.startswith(".") and name.lower().endswith(CONFIG_SUFFIXES):
                        found.append(Path(root) / name)
            out.extend(sorted(found))
        else:
            out.append(path)
    return out


def load_paths(paths: Sequence[Path | str], *, default_namespace: str = DEFAULT_NAMESPACE) -> ParseResult:
    """Parse every config file under ``paths`` (what ``mixerd validate`` reads)."""
    result = ParseResult()
    for file in config_files(paths):
        result = result + parse_file(file, default_namespace=default_namespace)
    return result


def parse_file(path: Path | str, *, default_namespace: str = DEFAULT_NAMESPACE) -> ParseResult:
    """Parse one file; JSON for ``*.json``, YAML otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return ParseResult(errors=(ResourceError(str(path), "", f"cannot read file: {reason}"),), ok=False)
    return parse_bytes(data, file=str(path), default_namespace=default_namespace)


def parse_bytes(data: bytes, *, file: str = "", default_namespace: str = DEFAULT_NAMESPACE) -> ParseResult:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseResult(errors=(ResourceError(file or "<input>", "", f"not UTF-8 text: {exc}"),), ok=False)
    if file.lower().endswith(".json"):
        return parse_json(text, file=file, default_namespace=default_namespace)
    return parse_text(text, file=file, default_namespace=default_namespace)


def parse_json(text: str, *, file: str = "", default_namespace: str = DEFAULT_NAMESPACE) -> ParseResult:
    where = file or "<input>"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        err = ResourceError(where, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}")
        return ParseResult(errors=(err,), ok=False)
    docs = data if isinstance(data, list) else [data]
    return parse_documents(
        ((doc, Source(file, i, None)) for i, doc in enumerate(docs)), default_namespace=default_namespace
    )


def parse_text(text: str, *, file: str = "", default_namespace: str = DEFAULT_NAMESPACE) -> ParseResult:
    """Parse multi-document YAML text. A syntax error anywhere fails the whole text."""
    where = file or "<input>"
    docs: list[tuple[Any, Source]] = []
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else None
            docs.append((loader.construct_document(node), Source(file, index, line)))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        path = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return ParseResult(errors=(ResourceError(where, path, f"invalid YAML: {problem}"),), ok=False)
    except yaml.YAMLError as exc:
        return ParseResult(errors=(ResourceError(where, "", f"invalid YAML: {exc}"),), ok=False)
    finally:
        loader.dispose()
    return parse_documents(docs, default_namespace=default_namespace)


def parse_documents(
    docs: Iterable[tuple[Any, Source | None]], *, default_namespace: str = DEFAULT_NAMESPACE
) -> ParseResult:
    """Parse already-loaded documents (e.g. objects from the Kubernetes API)."""
    resources: list[Resource] = []
    ignored: list[IgnoredResource] = []
    errors: list[ResourceError] = []
    for doc, source in docs:
        for item in _expand(doc, source, errors):
            out = parse_document(item, source=source, default_namespace=default_namespace)
            if isinstance(out, Resource):
                resources.append(out)
            elif isinstance(out, IgnoredResource):
                ignored.append(out)
            elif isinstance(out, ResourceError):
                errors.append(out)
    return ParseResult(tuple(resources), tuple(ignored), tuple(errors))


def _expand(doc: Any, source: Source | None, errors: list[ResourceError]) -> Iterator[Any]:
    if isinstance(doc, Mapping) and doc.get("kind") == "List" and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            errors.append(_doc_error(source, "items", "expected a list of resources"))
            return
        yield from items
    else:
        yield doc


def _doc_error(source: Source | None, path: str, message: str) -> ResourceError:
    return ResourceError(str(source) if source else "<document>", path, message, source=source)


def parse_document(
    doc: Any, *, source: Source | None = None, default_namespace: str = DEFAULT_NAMESPACE
) -> Resource | IgnoredResource | ResourceError | None:
    """Parse one document. ``None`` for an empty document."""
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        return _doc_error(source, "", f"expected a resource (a map), got {type(doc).__name__}")
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    name = meta.get("name")
    namespace = meta.get("namespace") or default_namespace
    if not isinstance(kind, str) or not kind:
        return _doc_error(source, "kind", "missing (every resource needs apiVersion, kind and metadata.name)")
    if api_version is not None and not isinstance(api_version, str):
        return _doc_error(source, "apiVersion", f"expected a string, got {type(api_version).__name__}")
    api_version = api_version or API_VERSION
    security_group = next((g for g in _SECURITY_VERSIONS if api_version.startswith(g)), None)
    if security_group is not None and kind not in SECURITY_KINDS:
        return IgnoredResource(
            api_version,
            kind,
            str(namespace),
            str(name or ""),
            "mixerd reads RequestAuthentication, AuthorizationPolicy, ServiceRole, ServiceRoleBinding and "
            "ClusterRbacConfig of this group; this kind is not used",
            source,
        )
    if security_group is None and not api_version.startswith(_MIXER_GROUP):
        return IgnoredResource(
            api_version,
            kind,
            str(namespace),
            str(name or ""),
            "not a Mixer resource (other API group)",
            source,
        )
    if kind in _IGNORED_CONFIG_KINDS:
        return IgnoredResource(
            api_version, kind, str(namespace), str(name or ""), _IGNORED_CONFIG_KINDS[kind], source
        )
    if not isinstance(name, str) or not name:
        return _doc_error(source, "metadata.name", f"missing (a {kind} needs a name)")
    if not isinstance(namespace, str):
        return _doc_error(source, "metadata.namespace", "expected a string")
    key = Key(kind, namespace, name)
    issues: list[Issue] = []
    if kind in SECURITY_KINDS:
        versions = _SECURITY_VERSIONS[SECURITY_KINDS[kind].split("/")[0] + "/"]
        if api_version not in versions:
            issues.append(
                Issue("apiVersion", f"unsupported version '{api_version}' (expected {' or '.join(versions)})")
            )
    elif api_version != API_VERSION:
        issues.append(Issue("apiVersion", f"unsupported version '{api_version}' (expected {API_VERSION})"))
    labels = _string_map(meta.get("labels"), "metadata.labels", issues)
    annotations = _string_map(meta.get("annotations"), "metadata.annotations", issues)
    raw_spec = doc.get("spec")
    spec = _parse_spec(key, raw_spec, issues)
    if spec is None:
        known = sorted({*_PARSERS, *LEGACY_KINDS})
        hint = ""
        lowered = {k.lower(): k for k in known}
        if kind.lower() in lowered:
            hint = f" (did you mean '{lowered[kind.lower()]}'?)"
        return ResourceError(key, "kind", f"unknown kind '{kind}'{hint}", source=source)
    return Resource(key, spec, source, api_version, labels, annotations, tuple(issues))


def _string_map(value: Any, path: str, issues: list[Issue]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        issues.append(Issue(path, "expected a map of strings"))
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


# --- field reading -----------------------------------------------------------------------------

_SNAKE_RE: Final = re.compile(r"_([a-z0-9])")


def _camel(name: str) -> str:
    return _SNAKE_RE.sub(lambda m: m.group(1).upper(), name)


class _Fields:
    """Reads fields of one map (camelCase or snake_case), recording issues with paths."""

    __slots__ = ("data", "issues", "path", "seen")

    def __init__(self, data: Any, path: str, issues: list[Issue]) -> None:
        self.path = path
        self.issues = issues
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            issues.append(Issue(path, f"expected a map, got {type(data).__name__}"))
            data = {}
        self.data: Mapping[Any, Any] = data

    def sub(self, data: Any, path: str) -> _Fields:
        """The fields of a nested map at ``path``, reporting into the same issues."""
        return _Fields(data, path, self.issues)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, name: str) -> tuple[str, Any]:
        """``(path, value)`` of field ``name`` (snake_case); value ``None`` when absent."""
        camel = _camel(name)
        present = [k for k in dict.fromkeys((camel, name)) if k in self.data]
        for k in present:
            self.seen.add(k)
        if len(present) > 1:
            self.issues.append(Issue(self.at(camel), f"given twice, as '{camel}' and '{name}'"))
        if not present:
            return self.at(camel), None
        return self.at(present[0]), self.data[present[0]]

    def text(self, name: str, *, required: bool = False) -> str:
        path, value = self.raw(name)
        if value is None:
            if required:
                self.issues.append(Issue(path, "missing"))
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
        self.issues.append(Issue(path, f"expected a string, got {type(value).__name__}"))
        return ""

    def flag(self, name: str) -> bool:
        path, value = self.raw(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.issues.append(Issue(path, f"expected true or false, got {value!r}"))
            return False
        return value

    def items(self, name: str, *, required: str = "") -> list[tuple[str, Any]]:
        """``[(path, item)]`` of a list field. ``required``: the issue to record when the list is
        absent or empty."""
        path, value = self.raw(name)
        if value is None or value == []:
            if required:
                self.issues.append(Issue(path, required))
            return []
        if not isinstance(value, list):
            self.issues.append(Issue(path, f"expected a list, got {type(value).__name__}"))
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def strings(self, name: str) -> tuple[str, ...]:
        out: list[str] = []
        for path, item in self.items(name):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.issues.append(Issue(path, f"expected a non-empty string, got {item!r}"))
        return tuple(out)

    def mapping(self, name: str) -> Mapping[str, Any] | None:
        path, value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.issues.append(Issue(path, f"expected a map, got {type(value).__name__}"))
            return None
        return {str(k): v for k, v in value.items()}

    def string_map(self, name: str) -> dict[str, str]:
        path, value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.issues.append(Issue(path, f"expected a map of strings, got {type(value).__name__}"))
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                self.issues.append(Issue(f"{path}.{k}", f"expected a string, got {v!r}"))
                continue
            out[str(k)] = str(v)
        return out

    def done(self, *ignored: str) -> None:
        """Report fields nobody read (``ignored`` are accepted and skipped)."""
        allowed = self.seen | set(ignored) | {_camel(n) for n in ignored}
        for k in self.data:
            if str(k) not in allowed:
                self.issues.append(Issue(self.at(str(k)), "unknown field"))


def _params(value: Any, path: str, issues: list[Issue]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        issues.append(Issue(path, f"expected a map, got {type(value).__name__}"))
        return None
    return {str(k): copy.deepcopy(v) for k, v in value.items()}


# --- per kind ----------------------------------------------------------------------------------


def _instance_params(raw: Any, issues: list[Issue]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """A shorthand instance's ``spec``: its params, and the ``attributeBindings`` taken out of them."""
    params = _params(raw, "spec", issues)
    bindings: dict[str, str] = {}
    if params is not None:
        for spelled in ("attributeBindings", "attribute_bindings"):
            if spelled in params:
                value = params.pop(spelled)
                bindings.update(_Fields({spelled: value}, "spec", issues).string_map(spelled))
    return params, bindings


_PLUGIN_KIND: Final = re.compile(r"[a-z][a-z0-9_-]*")
"""What a kind naming a plugin adapter or template may look like."""


def _parse_spec(key: Key, raw: Any, issues: list[Issue]) -> Spec | None:
    legacy = LEGACY_KINDS.get(key.kind)
    if legacy is not None:
        if legacy.role == "handler":
            return HandlerSpec(compiled_adapter=legacy.target, params=_params(raw, "spec", issues))
        params, bindings = _instance_params(raw, issues)
        return InstanceSpec(compiled_template=legacy.target, params=params, attribute_bindings=bindings)
    parser = _PARSERS.get(key.kind)
    if parser is not None:
        return parser(_Fields(raw, "spec", issues), key)
    known = {k.lower() for k in (*_PARSERS, *LEGACY_KINDS)}
    if _PLUGIN_KIND.fullmatch(key.kind) is None or key.kind.lower() in known:
        return None
    # Perhaps an adapter or a template added as a plugin: the snapshot decides.
    params, bindings = _instance_params(raw, issues)
    return PluginKindSpec(params, bindings)


def _manifest(f: _Fields, key: Key) -> AttributeManifestSpec:
    revision = f.text("revision")
    name = f.text("name")
    attrs: dict[str, AttributeInfo] = {}
    for attr, info in (f.mapping("attributes") or {}).items():
        a = _Fields(info, f.at(f"attributes.{attr}"), f.issues)
        vpath, vraw = a.raw("value_type")
        description = a.text("description")
        a.done()
        if vraw is None:
            f.issues.append(Issue(vpath, "missing"))
            continue
        try:
            attrs[attr] = AttributeInfo(ValueType.parse(vraw), description)
        except (ValueError, TypeError) as exc:
            f.issues.append(Issue(vpath, str(exc)))
    f.done()
    return AttributeManifestSpec(revision, name, attrs)


def _rule(f: _Fields, key: Key) -> RuleSpec:
    match = f.text("match")
    actions: list[Action] = []
    for path, item in f.items("actions"):
        a = _Fields(item, path, f.issues)
        handler = a.text("handler", required=True)
        instances = a.strings("instances")
        name = a.text("name")
        a.done()
        actions.append(Action(handler, instances, name))
    request_ops = _header_ops(f, "request_header_operations")
    response_ops = _header_ops(f, "response_header_operations")
    sampling = f.mapping("sampling")
    f.done()
    return RuleSpec(match, tuple(actions), request_ops, response_ops, sampling)


def _header_ops(f: _Fields, name: str) -> tuple[HeaderOperationTemplate, ...]:
    ops: list[HeaderOperationTemplate] = []
    for path, item in f.items(name):
        h = _Fields(item, path, f.issues)
        header = h.text("name", required=True)
        values = _expressions(h, "values")
        opath, raw_op = h.raw("operation")
        h.done()
        operation = HeaderAction.REPLACE
        if raw_op is not None:
            try:
                operation = (
                    HeaderAction(raw_op)
                    if isinstance(raw_op, int) and not isinstance(raw_op, bool)
                    else HeaderAction[str(raw_op).upper()]
                )
            except (KeyError, ValueError):
                valid = ", ".join(o.name for o in HeaderAction)
                f.issues.append(Issue(opath, f"unknown operation {raw_op!r} (expected one of {valid})"))
        ops.append(HeaderOperationTemplate(header, values, operation))
    return tuple(ops)


def _expressions(f: _Fields, name: str) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in f.items(name):
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            f.issues.append(Issue(path, f"expected an expression string, got {type(item).__name__}"))
    return tuple(out)


def _instance(f: _Fields, key: Key) -> InstanceSpec:
    compiled = f.text("compiled_template")
    template = f.text("template")
    ppath, raw_params = f.raw("params")
    params = _params(raw_params, ppath, f.issues)
    bindings = f.string_map("attribute_bindings")
    f.raw("name")  # the proto's name field: accepted, metadata.name is what counts
    f.done()
    if not compiled and not template:
        f.issues.append(Issue(f.at("compiledTemplate"), "missing (an instance needs compiledTemplate)"))
    return InstanceSpec(compiled, template, params, bindings)


def _handler(f: _Fields, key: Key) -> HandlerSpec:
    compiled = f.text("compiled_adapter")
    adapter = f.text("adapter")
    ppath, raw_params = f.raw("params")
    params = _params(raw_params, ppath, f.issues)
    connection: Connection | None = None
    cpath, raw_conn = f.raw("connection")
    if raw_conn is not None:
        c = _Fields(raw_conn, cpath, f.issues)
        address = c.text("address")
        tpath, raw_timeout = c.raw("timeout")
        timeout = None
        if raw_timeout is not None:
            try:
                timeout = parse_duration(str(raw_timeout))
            except ValueError as exc:
                f.issues.append(Issue(tpath, str(exc)))
        auth = c.mapping("authentication")
        c.done()
        connection = Connection(address, timeout, auth)
    f.raw("name")
    f.done()
    if not compiled and not adapter:
        f.issues.append(Issue(f.at("compiledAdapter"), "missing (a handler needs compiledAdapter)"))
    return HandlerSpec(compiled, adapter, params, connection)


def _adapter(f: _Fields, key: Key) -> AdapterSpec:
    spec = AdapterSpec(
        name=f.text("name"),
        description=f.text("description"),
        templates=f.strings("templates"),
        config=f.text("config"),
        session_based=f.flag("session_based"),
    )
    f.done()
    return spec


def _template(f: _Fields, key: Key) -> TemplateSpec:
    spec = TemplateSpec(descriptor=f.text("descriptor"))
    f.done()
    return spec


def _quota_spec(f: _Fields, key: Key) -> QuotaSpecSpec:
    rules: list[QuotaRule] = []
    for rpath, raw_rule in f.items("rules"):
        r = _Fields(raw_rule, rpath, f.issues)
        clauses: list[dict[str, StringMatch]] = []
        for mpath, raw_match in r.items("match"):
            m = _Fields(raw_match, mpath, f.issues)
            clause: dict[str, StringMatch] = {}
            for attr, raw_sm in (m.mapping("clause") or {}).items():
                clause[attr] = _string_match(raw_sm, m.at(f"clause.{attr}"), f.issues)
            m.done()
            clauses.append(clause)
        quotas: list[QuotaCharge] = []
        for qpath, raw_q in r.items("quotas", required="at least one quota must be specified"):
            q = _Fields(raw_q, qpath, f.issues)
            quota = q.text("quota", required=True)
            cpath, raw_charge = q.raw("charge")
            q.done()
            charge = 1
            if raw_charge is not None:
                if isinstance(raw_charge, bool) or not isinstance(raw_charge, int) or raw_charge < 1:
                    f.issues.append(Issue(cpath, f"expected a positive integer, got {raw_charge!r}"))
                else:
                    charge = raw_charge
            quotas.append(QuotaCharge(quota, charge))
        r.done()
        rules.append(QuotaRule(tuple(clauses), tuple(quotas)))
    f.done()
    return QuotaSpecSpec(tuple(rules))


def _string_match(raw: Any, path: str, issues: list[Issue]) -> StringMatch:
    s = _Fields(raw, path, issues)
    _, exact = s.raw("exact")
    _, prefix = s.raw("prefix")
    regex_path, regex = s.raw("regex")
    s.done()
    given = {k: v for k, v in (("exact", exact), ("prefix", prefix), ("regex", regex)) if v is not None}
    if len(given) != 1:
        issues.append(Issue(path, "expected exactly one of exact, prefix or regex"))
    for k, v in given.items():
        if not isinstance(v, str):
            issues.append(Issue(f"{path}.{k}", f"expected a string, got {v!r}"))
            return StringMatch()
    if regex is not None:
        try:
            re2.compile(regex)
        except re2.error as exc:
            issues.append(Issue(regex_path, f"invalid regular expression (RE2 syntax): {exc}"))
            return StringMatch()
    if exact is not None:
        return StringMatch(exact=exact)
    if prefix is not None:
        return StringMatch(prefix=prefix)
    if regex is not None:
        return StringMatch(regex=regex)
    return StringMatch()


def _quota_spec_binding(f: _Fields, key: Key) -> QuotaSpecBindingSpec:
    # Istio's validation (ValidateQuotaSpecBinding) refuses a binding without services or specs:
    # it would charge nothing.
    services: list[IstioService] = []
    for spath, raw in f.items("services", required="at least one service must be specified"):
        s = _Fields(raw, spath, f.issues)
        services.append(
            IstioService(
                name=s.text("name"),
                namespace=s.text("namespace") or key.namespace,
                domain=s.text("domain"),
                service=s.text("service"),
                labels=s.string_map("labels"),
            )
        )
        s.done()
    refs: list[QuotaSpecReference] = []
    for qpath, raw in f.items("quota_specs", required="at least one spec must be specified"):
        q = _Fields(raw, qpath, f.issues)
        refs.append(QuotaSpecReference(q.text("name", required=True), q.text("namespace") or key.namespace))
        q.done()
    f.done()
    return QuotaSpecBindingSpec(tuple(services), tuple(refs))


_PARSERS: Final[Mapping[str, Callable[[_Fields, Key], Spec]]] = {
    ATTRIBUTE_MANIFEST: _manifest,
    RULE: _rule,
    INSTANCE: _instance,
    HANDLER: _handler,
    ADAPTER: _adapter,
    TEMPLATE: _template,
    QUOTA_SPEC: _quota_spec,
    QUOTA_SPEC_BINDING: _quota_spec_binding,
    AUTHORIZATION_POLICY: parse_authorization_policy,
    REQUEST_AUTHENTICATION: parse_request_authentication,
    SERVICE_ROLE: parse_service_role,
    SERVICE_ROLE_BINDING: parse_service_role_binding,
    CLUSTER_RBAC_CONFIG: parse_rbac_config,
    RBAC_CONFIG: parse_rbac_config,
}
