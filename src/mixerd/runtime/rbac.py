"""Istio 1.4 RBAC (``ServiceRole``, ``ServiceRoleBinding``, ``ClusterRbacConfig``) as ALLOW policies.

Semantics (rbac.istio.io/v1alpha1, as Istio 1.4 enforced them):

* The mesh switch ``ClusterRbacConfig`` (or ``RbacConfig``; one per mesh, any namespace) turns
  RBAC on: ``OFF`` (or no switch: ServiceRoles are not enforced), ``ON`` for every service,
  ``ON_WITH_INCLUSION`` for the listed ``services`` (FQDNs, ``destination.service.host``) and
  ``namespaces``, ``ON_WITH_EXCLUSION`` for all but those. ``enforcementMode: PERMISSIVE``
  makes the whole of RBAC a dry run.
* For a service with RBAC on, a request is allowed only when a ``ServiceRoleBinding`` of the
  service's namespace has a subject matching the request and names a ``ServiceRole`` of that
  namespace with a rule matching it; otherwise it is denied (so RBAC on without bindings denies
  everything). A binding in ``mode: PERMISSIVE`` is evaluated as a dry run.
* A rule: ``services`` (patterns over the service host), ``paths``, ``methods``, ``ports`` with
  their ``not`` forms, and ``constraints`` (``destination.labels[...]``, ``request.headers[...]``,
  ``destination.port`` ...): all given must hold. A subject: ``user`` (the source principal;
  ``*`` is everyone, authenticated or not), ``names``, ``namespaces``, ``ips`` with their ``not``
  forms, and ``properties`` (``source.namespace``, ``request.auth.claims[groups]`` ...).

The bindings become one ALLOW policy ``rbac`` of the root namespace (so it reaches every
namespace), in which the destination namespace's bindings decide, applying only to the services
RBAC is on for (and a dry-run policy ``rbac-permissive`` for permissive bindings); they are
evaluated with the AuthorizationPolicies, in Istio's order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mixerd.config import Key, Resource
from mixerd.config.security import (
    CLUSTER_RBAC_CONFIG,
    RBAC_CONFIG,
    SERVICE_ROLE,
    SERVICE_ROLE_BINDING,
    AccessRule,
    AuthzCondition,
    RbacConfigSpec,
    ServiceRoleBindingSpec,
    ServiceRoleSpec,
    Subject,
)
from mixerd.runtime.authz import (
    CompiledPolicy,
    Predicate,
    Request,
    condition_predicate,
    field_predicate,
    pattern_matcher,
)

__all__ = ["compile_rbac"]


def _reader(name: str) -> Callable[[Request], tuple[str, ...]]:
    def read(req: Request) -> tuple[str, ...]:
        return (req.text(name),)

    return read


def _principal(req: Request) -> tuple[str, ...]:
    return (req.text("source.principal").removeprefix("spiffe://"),)


def _path(req: Request) -> tuple[str, ...]:
    path = req.text("request.url_path") or req.text("request.path").split("?", 1)[0]
    return (path,)


def _ips(yes: tuple[str, ...], no: tuple[str, ...]) -> Predicate | None:
    if not yes and not no:
        return None
    return condition_predicate(AuthzCondition("source.ip", "source.ip", (), yes, no))


def _all(preds: list[Predicate]) -> Predicate:
    ps = tuple(preds)
    return lambda req: all(p(req) for p in ps)


def _subject(s: Subject) -> Predicate:
    preds: list[Predicate] = []
    if s.user and s.user != "*":
        preds.append(field_predicate((s.user,), (), _principal))
    if s.names or s.not_names:
        preds.append(field_predicate(s.names, s.not_names, _principal))
    if s.namespaces or s.not_namespaces:
        preds.append(
            condition_predicate(
                AuthzCondition("source.namespace", "source.namespace", (), s.namespaces, s.not_namespaces)
            )
        )
    ips = _ips(s.ips, s.not_ips)
    if ips is not None:
        preds.append(ips)
    for key, value in s.properties.items():
        attribute, _, rest = key.partition("[")
        index = tuple(part for part in rest.rstrip("]").split("][") if part) if rest else ()
        preds.append(condition_predicate(AuthzCondition(key, attribute, index, (value,), ())))
    return _all(preds)


def _access(rule: AccessRule) -> Predicate:
    preds: list[Predicate] = []
    if rule.services:
        services = pattern_matcher(rule.services, lower=True)
        preds.append(lambda req: services(req.text("destination.service.host")))
    if rule.paths or rule.not_paths:
        preds.append(field_predicate(rule.paths, rule.not_paths, _path))
    if rule.methods or rule.not_methods:
        preds.append(field_predicate(rule.methods, rule.not_methods, _reader("request.method")))
    if rule.ports or rule.not_ports:
        ports = tuple(str(p) for p in rule.ports)
        not_ports = tuple(str(p) for p in rule.not_ports)
        preds.append(field_predicate(ports, not_ports, _reader("destination.port")))
    for c in rule.constraints:
        preds.append(condition_predicate(AuthzCondition(c.key, c.attribute, c.index, c.values, ())))
    return _all(preds)


def _enabled(switch: RbacConfigSpec) -> Callable[[str], Callable[[Request], bool]]:
    """For a namespace, whether RBAC is on for a request's destination service."""
    inc_services = pattern_matcher(switch.inclusion.services, lower=True)
    exc_services = pattern_matcher(switch.exclusion.services, lower=True)

    def for_namespace(ns: str) -> Callable[[Request], bool]:
        if switch.mode == "ON":
            return lambda req: True
        if switch.mode == "ON_WITH_INCLUSION":
            if ns in switch.inclusion.namespaces:
                return lambda req: True
            return lambda req: inc_services(req.text("destination.service.host"))
        if ns in switch.exclusion.namespaces:
            return lambda req: False
        return lambda req: not exc_services(req.text("destination.service.host"))

    return for_namespace


def compile_rbac(security: Mapping[Key, Resource], root_namespace: str) -> list[CompiledPolicy]:
    """The ALLOW policies of the snapshot's ServiceRoles and bindings (none when RBAC is off)."""
    switches = sorted(k for k in security if k.kind in (CLUSTER_RBAC_CONFIG, RBAC_CONFIG))
    if not switches:
        return []
    switch = security[switches[0]].spec
    if not isinstance(switch, RbacConfigSpec) or switch.mode == "OFF":
        return []
    roles: dict[tuple[str, str], ServiceRoleSpec] = {}
    bindings: dict[tuple[str, bool], list[Predicate]] = {}
    for key, r in security.items():
        if key.kind == SERVICE_ROLE and isinstance(r.spec, ServiceRoleSpec):
            roles[(key.namespace, key.name)] = r.spec
    for key, r in sorted(security.items()):
        spec = r.spec
        if key.kind != SERVICE_ROLE_BINDING or not isinstance(spec, ServiceRoleBindingSpec):
            continue
        role = roles.get((key.namespace, spec.role_ref.name)) if spec.role_ref is not None else None
        if role is None or not role.rules or not spec.subjects:
            continue
        subjects = [_subject(s) for s in spec.subjects]
        rules = [_access(a) for a in role.rules]
        bindings.setdefault((key.namespace, spec.mode == "PERMISSIVE"), []).append(_binding(subjects, rules))
    enabled = _enabled(switch)
    whole_dry_run = switch.enforcement_mode == "PERMISSIVE"
    dry_by_ns = {ns: _any(ps) for (ns, permissive), ps in bindings.items() if permissive}
    by_ns = {ns: _any(ps) for (ns, permissive), ps in bindings.items() if not permissive}
    out = [
        CompiledPolicy(
            "rbac", root_namespace, "ALLOW", None, _per_namespace(by_ns), whole_dry_run, _applies(enabled)
        )
    ]
    if dry_by_ns:
        out.append(
            CompiledPolicy(
                "rbac-permissive",
                root_namespace,
                "ALLOW",
                None,
                _per_namespace(dry_by_ns),
                True,
                _applies(enabled),
            )
        )
    return out


def _per_namespace(by_ns: dict[str, Predicate]) -> Predicate:
    """The bindings of the destination's namespace decide (none: nothing is allowed)."""
    return lambda req: by_ns.get(req.text("destination.namespace"), _never)(req)


def _applies(enabled: Callable[[str], Callable[[Request], bool]]) -> Callable[[Request], bool]:
    cache: dict[str, Callable[[Request], bool]] = {}

    def applies(req: Request) -> bool:
        ns = req.text("destination.namespace")
        test = cache.get(ns)
        if test is None:
            test = cache[ns] = enabled(ns)
        return test(req)

    return applies


def _never(req: Request) -> bool:
    return False


def _binding(subjects: list[Predicate], rules: list[Predicate]) -> Predicate:
    subs = tuple(subjects)
    acc = tuple(rules)
    return lambda req: any(s(req) for s in subs) and any(a(req) for a in acc)


def _any(preds: list[Predicate]) -> Predicate:
    ps: tuple[Any, ...] = tuple(preds)
    return lambda req: any(p(req) for p in ps)
