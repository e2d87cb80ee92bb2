"""The security gate of a Check: JWT authentication, then authorization policies.

Built once per config (:func:`build_security`) next to the routing table, and run by the
dispatcher on every Check after the attribute generators (so kubernetesenv's workload labels are
known) and before the rules; every front-end that checks (ext_authz gRPC and HTTP, the Mixer v1
Check) goes through it. A config without security resources has no gate at all.

1. **Authentication**: the RequestAuthentication rules of the destination workload
   (:mod:`mixerd.runtime.authn`). A valid token gives Istio's ``request.auth.*`` attributes,
   which the policies read from the token and the rules, their instances, header operations and
   quotas see when the config mentions them (:func:`rules_read_auth`), and its header operations
   for the upstream. A verified token is cached (:class:`~mixerd.runtime.authn.TokenCache`) with
   what the policies of each workload read from it. An invalid token answers UNAUTHENTICATED (HTTP 401 with
   ``WWW-Authenticate``). With Istio 1.4 sidecars (Mixer v1 Check) the proxy has verified the
   token already and sends ``request.auth.*`` itself; a token mixerd verifies replaces them.
2. **Authorization**: the enforced policies of the workload (:mod:`mixerd.runtime.authz`); a
   denial answers PERMISSION_DENIED (HTTP 403) naming the policy, in the body and in the header
   ``x-mixerd-authz-policy``. Dry-run policies are evaluated on their own: their decision is
   counted, logged (rate-limited) and recorded in the console, the request goes on.

Every decision of a workload with policies is counted in
``mixerd_authz_decisions_total{policy, action="allow"|"deny"|"audit", dry_run="true"|"false"}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mixerd.adapter import Clock, Code, RateLimitedWarning
from mixerd.attribute import MISSING, OverlayBag, logsafe, remember
from mixerd.config import HeaderAction, Key, Resource, Snapshot
from mixerd.config.security import REQUEST_AUTHENTICATION, RequestAuthenticationSpec
from mixerd.runtime.authn import (
    Authenticated,
    AuthnError,
    CompiledJwtRule,
    KeyProvider,
    StaticKeys,
    TokenCache,
    UnknownKeyError,
    auth_attributes,
    find_token,
    parse_jwks,
    token_locations,
    unverified_issuer,
    upstream_headers,
    verify_token,
)
from mixerd.runtime.authz import (
    MAPPING_CLASSES,
    AuthzDecision,
    CompiledPolicy,
    PolicyIndex,
    Request,
    Workload,
    as_mapping,
    compile_policies,
)
from mixerd.runtime.jwks import JwksFetcher
from mixerd.runtime.rbac import compile_rbac

__all__ = [
    "POLICY_HEADER",
    "Pending",
    "SecurityTable",
    "SecurityVerdict",
    "build_security",
    "rules_read_auth",
]

POLICY_HEADER: Final = "x-mixerd-authz-policy"
"""Response header of a 403 from an authorization policy: the policy's ``namespace/name``."""

HeaderOp = tuple[str, str, HeaderAction]


@dataclass(slots=True)
class SecurityVerdict:
    """The gate's answer (read-only; not frozen only because one is made per request and a
    frozen dataclass costs more to build)."""

    bag: Mapping[str, Any] | None = field(repr=False)  # it holds the token
    """The request's attributes, with ``request.auth.*`` of a verified token (when the config's
    rules read them); ``None`` when they are the attributes the gate was given (the verdict is
    then shared by requests alike)."""
    code: int = Code.OK
    message: str = ""
    policy: str = ""
    """The deciding policy (or, allowed, a dry-run policy that would have denied)."""
    handler: str = ""
    """``authn``, ``authz``, or ``authz (dry run: would deny)`` for the console's records."""
    deny_headers: tuple[HeaderOp, ...] = ()
    request_headers: tuple[HeaderOp, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class _AuthnPolicy:
    """A RequestAuthentication as the workload index sees it."""

    name: str
    namespace: str
    selector: Mapping[str, str] | None
    rules: tuple[CompiledJwtRule, ...]
    action: str = "AUTHN"
    dry_run: bool = False
    applies: None = None
    readers: None = None


@dataclass(frozen=True, slots=True, eq=False)
class _Verified:
    """A verified token as the gate uses it (cached per token and the header it came in)."""

    auth: Authenticated
    rule: CompiledJwtRule
    attributes: Mapping[str, Any]
    request_headers: tuple[HeaderOp, ...]
    memo: dict[Any, tuple[Any, ...]] = field(default_factory=dict)
    """What the policies of each workload read from this token (:class:`Request`)."""


class _AuthBag(OverlayBag):
    """The request's bag with the ``request.auth.*`` attributes of a verified token (which replace
    any the caller sent)."""

    __slots__ = ()

    def __init__(self, parent: Mapping[str, Any], attributes: Mapping[str, Any]) -> None:
        super().__init__(parent)
        self._local = dict(attributes)


@dataclass(slots=True)
class _Known:
    """The gate's finding for one request key of a workload (:attr:`_Scope.known`)."""

    found: _Verified | None
    decision: AuthzDecision | None
    until: float
    """When it stops holding: the verified token's expiry in the token cache (no end without a
    token)."""
    counters: tuple[Any, ...]
    """The decision's counters (``mixerd_authz_decisions_total`` children)."""
    verdict: SecurityVerdict | None
    """The verdict, shared by every request like this one (``None`` when it carries the
    request's own bag: a verified token's attributes over it)."""


class Pending:
    """A gate's answer that waits for a token's verification (:meth:`SecurityTable.decide`)."""

    __slots__ = ("_bag", "_located", "_now", "_rules", "_table")

    def __init__(
        self,
        table: SecurityTable,
        bag: Mapping[str, Any],
        located: tuple[str, str],
        rules: tuple[CompiledJwtRule, ...],
        now: float,
    ) -> None:
        self._table, self._bag, self._located, self._rules, self._now = table, bag, located, rules, now

    async def resolve(self) -> SecurityVerdict | None:
        table = self._table
        try:
            verified = await table._verify(self._located, self._rules, self._now)
        except AuthnError as exc:
            return table._unauthenticated(self._bag, exc)
        answer = table._decide(self._bag, verified)
        assert not isinstance(answer, Pending)  # verified: nothing left to wait for
        return answer


class _Scope:
    """What applies to one workload: its JWT rules (and where their tokens may be), and its
    enforced and dry-run policies.

    When every value the gate's finding depends on is known (the token found and the raw values
    the enforced policies read, :attr:`Workload.inputs`), findings are kept by those
    values (:attr:`known`): a request like an earlier one, with the same token, is answered by
    one lookup, until the token's cache entry expires. Not with dry-run policies (each of their
    would-be denials is logged)."""

    __slots__ = (
        "attributes",
        "dry",
        "empty",
        "enforced",
        "headers",
        "keyed",
        "known",
        "locations",
        "rules",
        "token_attributes",
    )

    def __init__(
        self, rules: tuple[CompiledJwtRule, ...], enforced: Workload | None, dry: Workload | None
    ) -> None:
        self.rules = rules
        self.enforced = enforced
        self.dry = dry
        self.empty = not rules and enforced is None and dry is None
        self.locations = token_locations(rules)
        inputs = () if enforced is None else enforced.inputs
        token_inputs = () if enforced is None else enforced.token_inputs
        self.keyed = not self.empty and dry is None and inputs is not None and token_inputs is not None
        self.headers = tuple(name for is_header, name in inputs or () if is_header)
        """The header values in the key (besides the token)."""
        self.attributes = tuple(name for is_header, name in inputs or () if not is_header)
        self.token_attributes = tuple(name for is_header, name in token_inputs or () if not is_header)
        """In the key without a token: the attributes read in its place (as a Mixer v1 proxy
        sends ``request.auth.*``)."""
        assert not any(is_header for is_header, _ in token_inputs or ())
        self.known: dict[tuple[Any, ...], _Known] = {}


_FOREVER: Final = float("inf")
_KNOWN_PER_WORKLOAD: Final = 4096


class _Counters:
    __slots__ = ("_children", "_family", "by_decision")

    def __init__(self, family: Any) -> None:
        self._family = family
        self._children: dict[tuple[str, str, str], Any] = {}
        self.by_decision: dict[int, tuple[AuthzDecision, tuple[Any, ...]]] = {}

    def inc(self, policy: str, action: str, dry_run: bool) -> None:
        key = (policy, action, "true" if dry_run else "false")
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._family.labels(*key)
        c.inc()

    def decision(self, d: AuthzDecision, dry_run: bool) -> None:
        """Count a (cached, so long-lived) decision: its counters are found once per decision."""
        for c in self.of(d, dry_run):
            c.inc()

    def of(self, d: AuthzDecision, dry_run: bool = False) -> tuple[Any, ...]:
        """The counters of decision ``d`` (found once per decision)."""
        children = self.by_decision.get(id(d))
        if children is not None and children[0] is d:
            return children[1]
        found = [self._child(a, "audit", dry_run) for a in d.audits]
        if d.action:
            found.append(self._child(d.policy, "allow" if d.allowed else "deny", dry_run))
        return remember(self.by_decision, id(d), (d, tuple(found)), 8192)[1]

    def _child(self, policy: str, action: str, dry_run: bool) -> Any:
        key = (policy, action, "true" if dry_run else "false")
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._family.labels(*key)
        return c


class SecurityTable:
    """The compiled security config of one snapshot."""

    def __init__(
        self,
        authn: Sequence[_AuthnPolicy],
        policies: Sequence[CompiledPolicy],
        root_namespace: str,
        *,
        clock: Clock,
        decisions: Any,
        wall: Callable[[], float] = time.time,
        logger_warning: RateLimitedWarning | None = None,
        overlay: bool = True,
    ) -> None:
        self.authn = PolicyIndex(authn, root_namespace)  # type: ignore[arg-type]
        self.enforced = PolicyIndex([p for p in policies if not p.dry_run], root_namespace)
        self.dry_run = PolicyIndex([p for p in policies if p.dry_run], root_namespace)
        self.policies = tuple(policies)
        self.clock = clock
        self.wall = wall
        self.tokens = TokenCache()
        self.overlay = overlay
        """Whether a verified token's ``request.auth.*`` attributes are added to the bag the rules
        see: only when a rule, instance or header operation of the config reads them (every
        attribute read after the gate then goes through one more layer)."""
        self._label_keys: dict[str, tuple[str, ...]] = {}
        self._scopes: dict[Any, _Scope] = {}
        self._count = _Counters(decisions)
        self._upstream_ops: dict[tuple[HeaderOp, ...], tuple[HeaderOp, ...]] = {}
        self._would_deny = logger_warning or RateLimitedWarning(clock)

    def _scope(self, ns: str, bag: Mapping[str, Any]) -> _Scope:
        """What applies to the destination workload (cached by namespace and the label values
        the selectors of that namespace read; labels are not read when none does)."""
        keys = self._label_keys.get(ns)
        if keys is None:
            keys = self._label_keys[ns] = tuple(
                sorted(
                    {*self.authn.label_keys(ns), *self.enforced.label_keys(ns), *self.dry_run.label_keys(ns)}
                )
            )
        labels: Any = None
        key: Any = ns  # a namespace whose selectors read no label: its name (never a tuple)
        if keys:
            labels = bag.get("destination.labels", MISSING)
            if not isinstance(labels, Mapping):
                labels = None
            key = (ns, *(labels.get(k) for k in keys)) if labels is not None else (ns, *(None for _ in keys))
        scope = self._scopes.get(key)
        if scope is None:
            authn = self.authn.applicable(ns, labels) if not self.authn.empty else ()
            enforced = self.enforced.workload(ns, labels) if not self.enforced.empty else None
            dry = self.dry_run.workload(ns, labels) if not self.dry_run.empty else None
            scope = _Scope(
                tuple(r for p in authn for r in p.rules),  # type: ignore[attr-defined]
                enforced if enforced is not None and enforced.policies else None,
                dry if dry is not None and dry.policies else None,
            )
            remember(self._scopes, key, scope, 4096)
        return scope

    async def check(self, bag: Mapping[str, Any]) -> SecurityVerdict | None:
        """The gate's answer; ``None`` when nothing of the config applies to the workload."""
        answer = self.decide(bag)
        return await answer.resolve() if isinstance(answer, Pending) else answer

    def decide(self, bag: Mapping[str, Any]) -> SecurityVerdict | Pending | None:
        """The gate's answer without waiting, or a :class:`Pending` one when a token must be
        verified first (not yet in the token cache; its issuer's keys may have to be fetched)."""
        return self._decide(bag, None)

    def _decide(self, bag: Mapping[str, Any], verified: _Verified | None) -> SecurityVerdict | Pending | None:
        ns: Any = bag.get("destination.namespace")
        if ns.__class__ is not str:
            ns = ns if isinstance(ns, str) else ""
        # A namespace whose selectors read no label has its scope under its name (see _scope).
        scope = self._scopes.get(ns)
        if scope is None:
            scope = self._scope(ns, bag)
        if scope.empty:
            return None
        rules = scope.rules
        headers: Any = MISSING
        if rules or scope.headers:
            headers = bag.get("request.headers")
            if headers is not None and headers.__class__ not in MAPPING_CLASSES:
                headers = as_mapping(headers)
        located = find_token(bag, headers, scope.locations) if rules else None
        key: tuple[Any, ...] | None = None
        if scope.keyed:
            get = bag.get
            named = scope.headers
            key = (
                located,
                *map(get, scope.attributes),
                # without a token, what the token readers read in its place
                *(map(get, scope.token_attributes) if located is None else ()),
                *(() if not named else (None,) * len(named) if headers is None else map(headers.get, named)),
            )
            try:
                known = scope.known.get(key)
            except TypeError:  # an unhashable value (a map where a string was expected)
                key = known = None
            if known is not None and verified is None and self.wall() <= known.until:
                for c in known.counters:
                    c.inc()
                return known.verdict if known.verdict is not None else self._verdict(bag, known)
        found: _Verified | None = None
        until = _FOREVER
        if located is not None:
            now = self.wall()
            hit = self.tokens.entries.get(located)  # a fresh hit inline, else the cache's get
            found = hit[0] if hit is not None and now <= hit[1] else self.tokens.get(located, now)
            if found is None or found.rule not in rules:
                if verified is None:
                    return Pending(self, bag, located, rules, now)
                found = verified
            hit = self.tokens.entries.get(located)
            until = hit[1] if hit is not None else now
        rules_bag = _AuthBag(bag, found.attributes) if found is not None and self.overlay else bag
        enforced, dry = scope.enforced, scope.dry
        decision: AuthzDecision | None = None
        if enforced is not None or dry is not None:
            req = (
                Request(rules_bag, None, None, None, headers)
                if found is None
                else Request(rules_bag, found.auth.claims, found.attributes, found.memo, headers)
            )
            if enforced is not None:
                decision = enforced.decide(req)
            if dry is not None and (decision is None or decision.allowed):
                shadow = dry.decide(req)
                self._count.decision(shadow, True)
                if not shadow.allowed:
                    if decision is not None:
                        self._count.decision(decision, False)
                    self._would_deny.add(
                        1,
                        f"dry-run authorization policy {logsafe(shadow.policy)} would have denied a "
                        f"request (let through): {shadow.message}",
                    )
                    return SecurityVerdict(
                        rules_bag,
                        policy=shadow.policy,
                        handler="authz (dry run: would deny)",
                        request_headers=found.request_headers if found is not None else (),
                    )
        counters = self._count.of(decision) if decision is not None else ()
        for c in counters:
            c.inc()
        known = _Known(found, decision, until, counters, None)
        if found is None or not self.overlay:
            known.verdict = self._verdict(None, known)  # the same for every request like this one
        if key is not None:
            remember(scope.known, key, known, _KNOWN_PER_WORKLOAD)
        return known.verdict if known.verdict is not None else self._verdict(bag, known)

    def _verdict(self, bag: Mapping[str, Any] | None, known: _Known) -> SecurityVerdict:
        """The verdict of a finding for a request whose bag is ``bag`` (``None``: the bag is not
        changed, the verdict can be shared)."""
        found, decision = known.found, known.decision
        if bag is not None and found is not None and self.overlay:
            bag = _AuthBag(bag, found.attributes)
        if decision is not None and not decision.allowed:
            return SecurityVerdict(
                bag,
                Code.PERMISSION_DENIED,
                decision.message,
                decision.policy,
                "authz",
                ((POLICY_HEADER, decision.policy, HeaderAction.REPLACE),),
            )
        return SecurityVerdict(bag, request_headers=found.request_headers if found is not None else ())

    def _unauthenticated(self, bag: Mapping[str, Any], exc: AuthnError) -> SecurityVerdict:
        host = bag.get("request.host", MISSING)
        return SecurityVerdict(
            bag,
            Code.UNAUTHENTICATED,
            f"invalid JWT: {exc}",
            handler="authn",
            deny_headers=(("www-authenticate", _challenge(host, str(exc)), HeaderAction.REPLACE),),
        )

    async def _verify(
        self, located: tuple[str, str], rules: tuple[CompiledJwtRule, ...], now: float
    ) -> _Verified:
        """Verify a token not in the cache (or cached for a rule of another workload), and
        cache it."""
        token, header_name = located
        header, iss = unverified_issuer(token)
        for rule in rules:
            if rule.rule.issuer != iss:
                continue
            keys = rule.keys.current() or await rule.keys.ready()
            if keys is None:
                raise AuthnError("the issuer's keys are not available")
            try:
                auth = verify_token(token, header, rule.rule, keys, now)
            except UnknownKeyError:
                fresh = await rule.keys.refresh()
                if fresh is None or fresh is keys:
                    raise
                auth = verify_token(token, header, rule.rule, fresh, now)
            ops = upstream_headers(rule.rule, auth, header_name)
            # Tokens whose operations are alike (the token header removed, no claim copied)
            # share one tuple, and so the directive and answer made from it downstream.
            ops = self._upstream_ops.setdefault(ops, ops) if len(self._upstream_ops) < 4096 else ops
            verified = _Verified(auth, rule, auth_attributes(auth), ops)
            self.tokens.put(located, verified, auth.expires, now)
            return verified
        raise AuthnError("issuer not allowed")

    @property
    def jwks_uris(self) -> set[str]:
        return {
            r.rule.jwks_uri
            for p in self.authn._by_ns.values()
            for a in p
            for r in a.rules  # type: ignore[attr-defined]
            if r.rule.jwks_uri and not r.rule.jwks
        }


def _challenge(host: Any, reason: str) -> str:
    realm = host if isinstance(host, str) and host else "mixerd"
    realm = realm.replace("\\", "").replace('"', "")
    return f'Bearer realm="{realm}", error="invalid_token", error_description="{reason.replace(chr(34), "")}"'


def _authn_policies(
    security: Mapping[Key, Resource], keys_of: Callable[[str], KeyProvider] | None
) -> tuple[list[_AuthnPolicy], list[str]]:
    out: list[_AuthnPolicy] = []
    problems: list[str] = []
    for key, r in security.items():
        spec = r.spec
        if key.kind != REQUEST_AUTHENTICATION or not isinstance(spec, RequestAuthenticationSpec):
            continue
        name = f"{key.namespace}/{key.name}"
        rules: list[CompiledJwtRule] = []
        for i, jr in enumerate(spec.jwt_rules):
            provider: KeyProvider
            if jr.jwks:
                try:
                    provider = StaticKeys(parse_jwks(jr.jwks))
                except ValueError as exc:
                    problems.append(f"{key}: spec.jwtRules[{i}].jwks: {exc}; this rule is not used")
                    continue
            elif keys_of is not None:
                provider = keys_of(jr.jwks_uri)
            else:
                problems.append(f"{key}: spec.jwtRules[{i}].jwksUri: no key fetcher in this process")
                continue
            rules.append(CompiledJwtRule(jr, provider, name))
        out.append(_AuthnPolicy(name, key.namespace, spec.selector, tuple(rules)))
    return out, problems


def rules_read_auth(snapshot: Snapshot) -> bool:
    """Whether a rule match, an instance or a header operation of ``snapshot`` mentions
    ``request.auth.`` (then the gate adds a verified token's attributes to the rules' bag)."""
    marker = "request.auth."
    for rule in snapshot.rules:
        if marker in rule.match_text:
            return True
        for op in (*rule.request_header_operations, *rule.response_header_operations):
            if any(marker in v for v in op.value_texts):
                return True
    return any(marker in inst.params_json for inst in snapshot.instances.values())


def build_security(
    security: Mapping[Key, Resource],
    root_namespace: str,
    *,
    clock: Clock,
    decisions: Any,
    jwks: JwksFetcher | None = None,
    wall: Callable[[], float] = time.time,
    reads_auth: bool = True,
) -> tuple[SecurityTable | None, list[str]]:
    """The gate of a snapshot's security resources (``None`` when there are none), and the
    problems met while compiling (a jwksUri without a fetcher). ``reads_auth``: whether the
    config's rules read ``request.auth.*`` (:func:`rules_read_auth`)."""
    if not security:
        return None, []
    authn, problems = _authn_policies(security, jwks.provider if jwks is not None else None)
    policies: list[CompiledPolicy] = compile_policies(security, root_namespace)
    policies.extend(compile_rbac(security, root_namespace))
    if not authn and not policies:
        return None, problems
    return SecurityTable(
        authn, policies, root_namespace, clock=clock, decisions=decisions, wall=wall, overlay=reads_auth
    ), problems
