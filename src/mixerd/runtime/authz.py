"""Authorization policies compiled into closures, indexed by workload (pure).

:func:`compile_policies` turns the ``AuthorizationPolicy`` resources of a snapshot (and the
``ServiceRole``/``ServiceRoleBinding`` pairs of Istio 1.4, see :mod:`mixerd.runtime.rbac`) into a
:class:`PolicyIndex`. Each field of each rule becomes one predicate over the request, built once
per config; nothing of the YAML is looked at while a request is checked.

The workload a policy applies to is the one Istio's sidecar knows: the destination's namespace
(``destination.namespace``) and labels (``destination.labels``). A policy of the root namespace
(mixerd's default config namespace, ``istio-system``) applies to every namespace; a policy
without ``selector`` to every workload of its namespace; one with ``selector.matchLabels`` to the
workloads carrying all those labels. :meth:`PolicyIndex.applicable` answers from a small cache
keyed by the namespace and the values of the label keys that the namespace's selectors read, so
a check looks only at the policies that can apply.

Evaluation (Istio's order): a matching DENY policy denies; else, when any ALLOW policy applies to
the workload, one of them must match, or the request is denied; else it is allowed. AUDIT
policies that match are reported, never deny. An ALLOW policy without rules allows nothing, a
rule ``{}`` matches every request, a DENY policy without rules denies nothing.

Dry run (annotation ``istio.io/dry-run: "true"``, or a binding in PERMISSIVE mode): such policies
are evaluated on their own, in the same order, and their decision is reported as a dry-run
decision; the enforced policies alone decide the request.

Matching (Istio's): within a field the values are alternatives, ``notX`` excludes, fields of a
source / operation must all hold, the ``from`` entries and the ``to`` entries are alternatives,
``when`` conditions must all hold. ``*`` matches any non-empty value, ``abc*`` a prefix, ``*abc``
a suffix. Hosts match case-insensitively, with or without their port; paths are compared
without the query. A claim that is a list matches when one of its items does.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mixerd.attribute import MISSING, remember
from mixerd.config import Key, Resource
from mixerd.config.security import (
    AUTHORIZATION_POLICY,
    DRY_RUN_ANNOTATION,
    AuthorizationPolicySpec,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
)

__all__ = [
    "INPUTS",
    "MAPPING_CLASSES",
    "AuthzDecision",
    "CompiledPolicy",
    "PolicyIndex",
    "Reader",
    "Request",
    "Workload",
    "as_mapping",
    "compile_policies",
    "compile_policy",
    "compile_rule",
    "condition_predicate",
    "evaluate",
    "field_predicate",
    "labels_reader",
    "pattern_matcher",
    "request_headers",
]

_CACHE_SIZE: Final = 4096

Predicate = Callable[["Request"], bool]


Reader = Callable[["Request"], tuple[Any, ...]]
"""What a field compares: the request's values for it (several for a list claim or a host with a
port). Readers are interned (one object per attribute / header / claim path), so a request reads
each once (:meth:`Request.values`) however many policies compare it."""


class Request:
    """The request as policies read it: the attribute bag, and the verified JWT's claims."""

    __slots__ = ("auth", "bag", "claims", "headers", "memo", "token_memo")

    def __init__(
        self,
        bag: Mapping[str, Any],
        claims: Mapping[str, Any] | None = None,
        auth: Mapping[str, Any] | None = None,
        token_memo: dict[Any, tuple[Any, ...]] | None = None,
        headers: Any = MISSING,
    ) -> None:
        self.bag = bag
        self.headers = headers
        """``request.headers`` of ``bag`` when the caller has read it already (a mapping or
        None), else MISSING (read on first use, :func:`request_headers`)."""
        self.claims = claims
        self.auth = auth
        """The verified token's ``request.auth.*`` attributes (else they are read from the bag,
        as a Mixer v1 proxy sends them)."""
        self.memo: dict[Reader, tuple[Any, ...]] = {}
        self.token_memo = token_memo if claims is not None and auth is not None else None
        """A verified token's own memo (kept with the token while it is cached): what the
        policies of a workload read from the token's claims, found once per token and workload
        (:meth:`Workload.decide`). Used only with both ``claims`` and ``auth``."""

    def values(self, reader: Reader) -> tuple[Any, ...]:
        found = self.memo.get(reader)
        if found is None:
            found = self.memo[reader] = reader(self)
        return found

    def text(self, name: str) -> str:
        value = self.bag.get(name)
        if value.__class__ is str:
            return value
        if value is None or value is MISSING:
            return ""
        return value if isinstance(value, str) else str(value)


# --- value patterns ----------------------------------------------------------------------------


def pattern_matcher(patterns: Sequence[str], *, lower: bool = False) -> Callable[[str], bool]:
    """A test of a value against Istio patterns (``*``, ``abc*``, ``*abc``, exact)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    anything = False
    for p in patterns:
        p = p.lower() if lower else p
        if p == "*":
            anything = True
        elif p.endswith("*"):
            prefixes.append(p[:-1])
        elif p.startswith("*"):
            suffixes.append(p[1:])
        else:
            exact.add(p)
    pre = tuple(prefixes)
    suf = tuple(suffixes)

    def match(value: str) -> bool:
        if lower:
            value = value.lower()
        if value in exact:
            return True
        if not value:
            return False
        return anything or (bool(pre) and value.startswith(pre)) or (bool(suf) and value.endswith(suf))

    return match


Input = tuple[bool, str]
"""A raw value of the request a reader reads: ``(True, header name)`` or ``(False, attribute)``."""

INPUTS: Final[dict[Reader, tuple[Input, ...]]] = {}
"""The raw values each reader's result is a function of (for a token reader, without a token
mixerd verified). A reader not here (a map attribute's entry) cannot be keyed by raw values:
see :attr:`Workload.inputs`."""


def _reads(reader: Reader, *inputs: Input) -> Reader:
    INPUTS[reader] = inputs
    return reader


_TOKEN_READERS: Final[set[Reader]] = set()
"""Readers that, for a request with a token mixerd verified (``Request.claims`` and
``Request.auth`` set), read only that token: their values are a function of the token."""


def _token_reader(reader: Reader) -> Reader:
    _TOKEN_READERS.add(reader)
    return reader


_collecting: list[set[Reader]] = []
"""The readers of the policy being compiled (:func:`compile_policy`)."""


def _uses(reader: Reader) -> Reader:
    if _collecting:
        _collecting[-1].add(reader)
    return reader


def _field(
    values: Sequence[str],
    not_values: Sequence[str],
    read: Reader,
    lower: bool = False,
) -> Predicate | None:
    """A predicate for one field and its ``not`` form; None when neither is given. ``read``
    gives the request's values (several for a list claim or a host with a port)."""
    if not values and not not_values:
        return None
    _uses(read)
    yes = pattern_matcher(values, lower=lower) if values else None
    no = pattern_matcher(not_values, lower=lower) if not_values else None
    if no is None:
        assert yes is not None
        match = yes

        def check_yes(req: Request) -> bool:
            got = req.memo.get(read)
            if got is None:
                got = req.memo[read] = read(req)
            return any(match(v) for v in got)

        return check_yes

    def check(req: Request) -> bool:
        got = req.values(read)
        if yes is not None and not any(yes(v) for v in got):
            return False
        return not any(no(v) for v in got)

    return check


def _ip_field(blocks: Sequence[str], not_blocks: Sequence[str], attribute: str) -> Predicate | None:
    if not blocks and not not_blocks:
        return None
    yes = tuple(ipaddress.ip_network(b, strict=False) for b in blocks)
    no = tuple(ipaddress.ip_network(b, strict=False) for b in not_blocks)
    read = _uses(_ip_reader(attribute))

    def check(req: Request) -> bool:
        addr = _ip(req.values(read)[0])
        if addr is None:
            return not yes  # no address: only a not-form alone can hold
        if yes and not any(addr.version == n.version and addr in n for n in yes):
            return False
        return not any(addr.version == n.version and addr in n for n in no)

    return check


@functools.cache
def _ip_reader(attribute: str) -> Reader:
    def read(req: Request) -> tuple[Any, ...]:
        return (req.bag.get(attribute),)  # the bag's value (hashable); parsed when compared

    return _reads(read, (False, attribute))


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if value is MISSING or value is None:
        return None
    address = getattr(value, "address", None)
    if address is not None:
        return address  # type: ignore[no-any-return]
    try:
        if isinstance(value, bytes):
            return ipaddress.ip_address(value)
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


# --- request readers -------------------------------------------------------------------------------


@functools.cache
def labels_reader(attribute: str, key: str) -> Reader:
    """A value of a string-map attribute (``destination.labels[version]``)."""

    def read(req: Request) -> tuple[str, ...]:
        m = req.bag.get(attribute, MISSING)
        if isinstance(m, Mapping):
            value = m.get(key)
            return (value,) if isinstance(value, str) else ("",)
        return ("",)

    return read


@functools.cache
def _one(name: str) -> Reader:
    def read(req: Request) -> tuple[str, ...]:
        value = req.bag.get(name)
        if value.__class__ is str:
            return (value,)
        return (req.text(name),)

    return _reads(read, (False, name))


@functools.cache
def _auth_attribute(name: str) -> Reader:
    def read(req: Request) -> tuple[str, ...]:
        if req.auth is not None:
            value = req.auth.get(name)
            return (value if isinstance(value, str) else "",)
        return (req.text(name),)

    return _reads(_token_reader(read), (False, name))


@functools.cache
def _principal(name: str) -> Reader:
    def read(req: Request) -> tuple[str, ...]:
        return (req.text(name).removeprefix("spiffe://"),)

    return _reads(read, (False, name))


def _source_namespace(req: Request) -> tuple[str, ...]:
    ns = req.text("source.namespace")
    if not ns:
        principal = req.text("source.principal")
        _, found, rest = principal.partition("/ns/")
        if found:
            ns = rest.split("/", 1)[0]
    return (ns,)


_reads(_source_namespace, (False, "source.namespace"), (False, "source.principal"))


def _hosts(req: Request) -> tuple[str, ...]:
    host = req.bag.get("request.host")
    if host.__class__ is not str:
        host = req.text("request.host")
    if ":" not in host:
        return (host,)
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 or (host.startswith("[") and "]:" in host) else host
    return (host,) if bare == host else (host, bare)


def _path(req: Request) -> tuple[str, ...]:
    path = req.bag.get("request.url_path")
    if path.__class__ is not str:
        path = req.text("request.url_path")
    if not path:
        path = req.text("request.path").split("?", 1)[0].split("#", 1)[0]
    return (path,)


_reads(_hosts, (False, "request.host"))
_reads(_path, (False, "request.url_path"), (False, "request.path"))


@_token_reader
def _audiences(req: Request) -> tuple[str, ...]:
    if req.claims is not None:
        return _claim_values(req.claims.get("aud"))
    return tuple(a.strip() for a in req.text("request.auth.audiences").split(",")) or ("",)


_reads(_audiences, (False, "request.auth.audiences"))


def _claim_values(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("",)
    if isinstance(value, list):
        return tuple(_scalar(v) for v in value) or ("",)
    return (_scalar(value),)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


@functools.cache
def _claim(path: tuple[str, ...]) -> Reader:
    def read(req: Request) -> tuple[str, ...]:
        node: Any = req.claims
        if node is None:
            # The proxy's attributes (Mixer v1): request.auth.claims is a flat string map.
            flat = req.bag.get("request.auth.claims", MISSING)
            if isinstance(flat, Mapping):
                value = flat.get(".".join(path))
                return (value,) if isinstance(value, str) else ("",)
            return ("",)
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        return _claim_values(node)

    return _reads(_token_reader(read), (False, "request.auth.claims"))


@functools.cache
def _header(name: str) -> Reader:
    name = name.lower()

    def read(req: Request) -> tuple[str, ...]:
        headers = req.headers
        if headers is MISSING:
            headers = req.headers = request_headers(req.bag)
        if headers is None:
            return ("",)
        value = headers.get(name)
        return (value,) if value.__class__ is str or isinstance(value, str) else ("",)

    return _reads(read, (True, name))


MAPPING_CLASSES: Final[set[type]] = {dict}
"""Classes known to be mappings (found once per class by :func:`as_mapping`)."""
_OTHER_CLASSES: Final[set[type]] = set()


def as_mapping(value: Any) -> Mapping[str, Any] | None:
    """``value`` when it is a mapping, else None; whether a class is a mapping is found once
    per class, not by an abstract-class check per request."""
    if value is None:
        return None
    cls = value.__class__
    if cls in MAPPING_CLASSES:
        return value  # type: ignore[no-any-return]
    if cls in _OTHER_CLASSES:
        return None
    (MAPPING_CLASSES if issubclass(cls, Mapping) else _OTHER_CLASSES).add(cls)
    return as_mapping(value)


def request_headers(bag: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``request.headers`` of ``bag`` when it is a mapping, else None."""
    return as_mapping(bag.get("request.headers"))


_READERS: Final[Mapping[str, Reader]] = {
    "destination.name": _one("destination.workload.name"),
    "destination.namespace": _one("destination.namespace"),
    "destination.user": _principal("destination.principal"),
    "source.principal": _principal("source.principal"),
    "source.namespace": _source_namespace,
    "request.auth.principal": _auth_attribute("request.auth.principal"),
    "request.auth.presenter": _auth_attribute("request.auth.presenter"),
    "request.auth.audiences": _audiences,
    "destination.port": _one("destination.port"),
    "connection.sni": _one("connection.requested_server_name"),
}


def field_predicate(
    values: Sequence[str],
    not_values: Sequence[str],
    read: Reader,
    lower: bool = False,
) -> Predicate:
    """A predicate of one field (values and not-values over what ``read`` gives)."""
    pred = _field(values, not_values, read, lower)
    return _always if pred is None else pred


def condition_predicate(c: AuthzCondition) -> Predicate:
    """One ``when`` condition (or a ServiceRole constraint / binding property) as a predicate."""
    if c.attribute in ("source.ip", "destination.ip"):
        values = tuple(v for v in c.values)
        not_values = tuple(v for v in c.not_values)
        pred = _ip_field(values, not_values, c.attribute)
        assert pred is not None
        return pred
    if c.attribute == "request.headers":
        read = _header(c.index[0])
    elif c.attribute == "request.auth.claims":
        read = _claim(c.index)
    elif c.attribute == "destination.labels":
        read = labels_reader(c.attribute, c.index[0])
    else:
        read = _READERS[c.attribute]
    pred = _field(c.values, c.not_values, read)
    assert pred is not None
    return pred


def _all(preds: Sequence[Predicate]) -> Predicate:
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    ps = tuple(preds)
    return lambda req: all(p(req) for p in ps)


def _any(preds: Sequence[Predicate]) -> Predicate:
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    ps = tuple(preds)
    return lambda req: any(p(req) for p in ps)


def _always(req: Request) -> bool:
    return True


def _never(req: Request) -> bool:
    return False


def _source(s: AuthzSource) -> Predicate:
    preds = [
        _field(s.principals, s.not_principals, _READERS["source.principal"]),
        _field(s.request_principals, s.not_request_principals, _READERS["request.auth.principal"]),
        _field(s.namespaces, s.not_namespaces, _source_namespace),
        _ip_field(s.ip_blocks, s.not_ip_blocks, "source.ip"),
    ]
    return _all([p for p in preds if p is not None])


def _operation(o: AuthzOperation) -> Predicate:
    preds = [
        _field(o.hosts, o.not_hosts, _hosts, lower=True),
        _field(o.ports, o.not_ports, _READERS["destination.port"]),
        _field(o.methods, o.not_methods, _one("request.method")),
        _field(o.paths, o.not_paths, _path),
    ]
    return _all([p for p in preds if p is not None])


def compile_rule(rule: AuthzRule) -> Predicate:
    parts: list[Predicate] = []
    if rule.sources:
        parts.append(_any([_source(s) for s in rule.sources]))
    if rule.operations:
        parts.append(_any([_operation(o) for o in rule.operations]))
    parts.extend(condition_predicate(c) for c in rule.when)
    return _all(parts)


# --- policies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    name: str
    """``namespace/name``: what denials, metrics and the console show."""
    namespace: str
    action: str
    """``ALLOW``, ``DENY`` or ``AUDIT``."""
    selector: Mapping[str, str] | None
    matches: Predicate
    dry_run: bool = False
    applies: Callable[[Request], bool] | None = None
    """An extra applicability test beyond namespace and labels (ClusterRbacConfig's inclusion)."""
    readers: tuple[Reader, ...] | None = None
    """Everything :attr:`matches` reads; ``None`` when not known (no decision caching)."""


def compile_policy(key: Key, spec: AuthorizationPolicySpec, *, dry_run: bool = False) -> CompiledPolicy:
    _collecting.append(set())
    try:
        if spec.rules:
            matches = _any([compile_rule(r) for r in spec.rules])
        else:
            matches = _never  # ALLOW without rules allows nothing; DENY / AUDIT without rules match nothing
    finally:
        readers = _collecting.pop()
    return CompiledPolicy(
        f"{key.namespace}/{key.name}",
        key.namespace,
        spec.action,
        spec.selector,
        matches,
        dry_run,
        readers=tuple(sorted(readers, key=id)),
    )


def is_dry_run(r: Resource) -> bool:
    return r.annotations.get(DRY_RUN_ANNOTATION, "").strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class AuthzDecision:
    allowed: bool
    policy: str = ""
    """The deciding policy: the DENY that matched, the ALLOW that matched, or (denied because no
    ALLOW matched) the ALLOW policies of the workload, comma-separated. Empty without policies."""
    action: str = ""
    """``ALLOW`` or ``DENY`` (the deciding policy's action); empty when no policy applies."""
    audits: tuple[str, ...] = ()
    """AUDIT policies that matched."""

    @property
    def message(self) -> str:
        if self.allowed:
            return ""
        if self.action == "DENY":
            return f"denied by authorization policy {self.policy}"
        return f"no ALLOW authorization policy matched (policies: {self.policy})"


_NO_POLICY: Final = AuthzDecision(True)


def evaluate(policies: Sequence[CompiledPolicy], req: Request) -> AuthzDecision:
    """Istio's order over ``policies`` (all apply to the request's workload)."""
    if not policies:
        return _NO_POLICY
    audits: list[str] = []
    allows: list[CompiledPolicy] = []
    for p in policies:
        if p.applies is not None and not p.applies(req):
            continue
        if p.action == "DENY":
            if p.matches(req):
                return AuthzDecision(False, p.name, "DENY", tuple(audits))
        elif p.action == "ALLOW":
            allows.append(p)
        elif p.matches(req):
            audits.append(p.name)
    if not allows:
        return AuthzDecision(True, "", "", tuple(audits))
    for p in allows:
        if p.matches(req):
            return AuthzDecision(True, p.name, "ALLOW", tuple(audits))
    return AuthzDecision(False, ",".join(p.name for p in allows), "ALLOW", tuple(audits))


_DECISIONS_PER_WORKLOAD: Final = 4096


def _inputs(readers: Sequence[Reader]) -> tuple[Input, ...] | None:
    """What ``readers`` read of the request, in order without repeats; ``None`` when one of them
    is not in :data:`INPUTS`."""
    found: dict[Input, None] = {}
    for r in readers:
        got = INPUTS.get(r)
        if got is None:
            return None
        found.update(dict.fromkeys(got))
    return tuple(found)


class Workload:
    """The policies that apply to one workload, and its decisions by the values they read: a
    decision depends only on those values, so a request like an earlier one (same path, method,
    principal, claims ...) is decided by one dict lookup.

    With a token mixerd verified, what the policies read from the token (claims, principal,
    audiences) is found once per token (:attr:`Request.token_memo`); a request then reads only
    its own attributes."""

    __slots__ = (
        "bag_readers",
        "by_token",
        "decisions",
        "inputs",
        "policies",
        "readers",
        "token_inputs",
        "token_readers",
    )

    def __init__(self, policies: tuple[CompiledPolicy, ...]) -> None:
        self.policies = policies
        readers: set[Reader] | None = set()
        for p in policies:
            if p.readers is None or p.applies is not None or readers is None:
                readers = None
            else:
                readers.update(p.readers)
        self.readers = None if readers is None else tuple(sorted(readers, key=id))
        found = self.readers or ()
        self.token_readers = tuple(r for r in found if r in _TOKEN_READERS)
        self.bag_readers = tuple(r for r in found if r not in _TOKEN_READERS)
        self.inputs = None if readers is None else _inputs(self.bag_readers)
        """The raw request values the decisions are a function of, with the token's
        (:data:`INPUTS`); ``None`` when a reader's are not known."""
        self.token_inputs = None if readers is None else _inputs(self.token_readers)
        """What the token readers read without a token mixerd verified."""
        self.decisions: dict[tuple[Any, ...], AuthzDecision] = {}
        self.by_token: dict[tuple[Any, ...], AuthzDecision] = {}
        """Decisions keyed by (the token's values, the request's values)."""

    def decide(self, req: Request) -> AuthzDecision:
        if self.readers is None:
            return evaluate(self.policies, req)
        memo = req.token_memo
        if memo is None or not self.token_readers:
            key = tuple([r(req) for r in self.readers])
            decisions = self.decisions
        else:
            part = memo.get(self)
            if part is None:
                part = memo[self] = tuple([r(req) for r in self.token_readers])
            key = (part, tuple([r(req) for r in self.bag_readers]))
            decisions = self.by_token
        found = decisions.get(key)
        if found is None:
            found = evaluate(self.policies, req)
            remember(decisions, key, found, _DECISIONS_PER_WORKLOAD)
        return found


class PolicyIndex:
    """Policies by namespace, with the root namespace's applying everywhere; the policies of a
    workload are found once per (namespace, selected label values) and cached."""

    __slots__ = ("_by_ns", "_cache", "_keys", "_root", "empty")

    def __init__(self, policies: Iterable[CompiledPolicy], root_namespace: str) -> None:
        self._root = root_namespace
        by_ns: dict[str, list[CompiledPolicy]] = {}
        for p in sorted(policies, key=lambda p: p.name):
            by_ns.setdefault(p.namespace, []).append(p)
        self._by_ns = {ns: tuple(ps) for ns, ps in by_ns.items()}
        root = self._by_ns.get(root_namespace, ())
        self._keys: dict[str, tuple[str, ...]] = {}
        for ns, ps in self._by_ns.items():
            own = ps + root if ns != root_namespace else ps
            self._keys[ns] = tuple(sorted({k for p in own if p.selector for k in p.selector}))
        self._keys.setdefault("", tuple(sorted({k for p in root if p.selector for k in p.selector})))
        self._cache: OrderedDict[tuple[Any, ...], Workload] = OrderedDict()
        self.empty = not self._by_ns

    def applicable(self, namespace: str, labels: Mapping[str, str] | None) -> tuple[CompiledPolicy, ...]:
        return self.workload(namespace, labels).policies

    def label_keys(self, namespace: str) -> tuple[str, ...]:
        """The label keys the selectors of policies that may apply in ``namespace`` read."""
        return self._keys.get(namespace, self._keys[""])

    def workload(self, namespace: str, labels: Mapping[str, str] | None) -> Workload:
        keys = self._keys.get(namespace, self._keys[""])
        if labels is None:
            labels = {}
        key = (namespace, *(labels.get(k) for k in keys))
        found = self._cache.get(key)
        if found is not None:
            return found
        candidates = self._by_ns.get(self._root, ())
        if namespace != self._root:
            candidates = candidates + self._by_ns.get(namespace, ())
        found = Workload(
            tuple(
                p
                for p in candidates
                if p.selector is None or all(labels.get(k) == v for k, v in p.selector.items())
            )
        )
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.popitem(last=False)
        self._cache[key] = found
        return found


def compile_policies(security: Mapping[Key, Resource], root_namespace: str) -> list[CompiledPolicy]:
    """The AuthorizationPolicy resources of a snapshot's ``security`` map, compiled."""
    out: list[CompiledPolicy] = []
    for key, r in security.items():
        if key.kind == AUTHORIZATION_POLICY and isinstance(r.spec, AuthorizationPolicySpec):
            out.append(compile_policy(key, r.spec, dry_run=is_dry_run(r)))
    return out
