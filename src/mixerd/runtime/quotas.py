"""Quota plans: which quotas a request is charged, from ``QuotaSpecBinding`` / ``QuotaSpec``.

A binding applies when one of its services matches the request: ``service`` (an FQDN) must equal
``destination.service.host``; otherwise ``name`` and ``namespace`` (empty or ``*`` match
anything) must equal ``destination.service.name`` and ``destination.service.namespace`` (else
``destination.namespace``, else the default namespace); ``labels`` must be a subset of
``destination.labels``; ``domain`` is not checked. A spec rule applies when it has no ``match``
clause or one clause matches: every attribute of the clause is present and its text matches the
``StringMatch`` (``exact``/``prefix``/``regex``, a full match); ``name[key]`` reads one key of a
STRING_MAP attribute (``request.headers[x-user]``). When several rules name a quota, the
largest charge wins.

A :class:`QuotaPlan` is compiled once per config (every service, clause and attribute read
becomes a small closure) and belongs to the routing table built from the same config, so a
request pinning a table also pins the plan (:attr:`RoutingTable.quota_plan
<mixerd.runtime.routing.RoutingTable.quota_plan>`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.attribute import MISSING
from mixerd.config import IstioService, QuotaRule, QuotaSpecBindingSpec, QuotaSpecSpec, Snapshot, StringMatch

__all__ = ["EMPTY_QUOTA_PLAN", "QuotaPlan"]

_Test = Callable[[Mapping[str, Any]], bool]
_Text = Callable[[Mapping[str, Any]], "str | None"]


def _text_of(name: str) -> _Text:
    """A reader of attribute ``name`` as text (None when absent); ``base[key]`` reads one key of
    a map attribute."""
    if name.endswith("]") and "[" in name:
        base, _, key = name[:-1].partition("[")
        key = key.strip("\"'")

        def map_value(attrs: Mapping[str, Any]) -> str | None:
            m = attrs.get(base)
            if not isinstance(m, Mapping):
                return None
            v = m.get(key)
            return None if v is None else str(v)

        return map_value

    def value(attrs: Mapping[str, Any]) -> str | None:
        v = attrs.get(name, MISSING)
        if v is MISSING or v is None:
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        return v if isinstance(v, str) else str(v)

    return value


def _matcher(m: StringMatch) -> Callable[[str], bool]:
    if m.exact is not None:
        return m.exact.__eq__
    if m.prefix is not None:
        prefix = m.prefix
        return lambda text: text.startswith(prefix)
    return m.matches


def _clause(clause: Mapping[str, StringMatch]) -> _Test:
    tests = tuple((_text_of(name), _matcher(m)) for name, m in clause.items())

    def matches(attrs: Mapping[str, Any]) -> bool:
        for text_of, match in tests:
            text = text_of(attrs)
            if text is None or not match(text):
                return False
        return True

    return matches


def _wild(pattern: str) -> Callable[[Any], bool]:
    if not pattern or pattern == "*":
        return lambda value: True
    return lambda value: value == pattern


def _service(svc: IstioService, default_namespace: str) -> _Test:
    if svc.service:
        host = svc.service
        return lambda attrs: attrs.get("destination.service.host") == host
    name_ok = _wild(svc.name)
    namespace_ok = _wild(svc.namespace)
    labels = tuple(svc.labels.items())

    def matches(attrs: Mapping[str, Any]) -> bool:
        if not name_ok(attrs.get("destination.service.name")):
            return False
        ns = (
            attrs.get("destination.service.namespace")
            or attrs.get("destination.namespace")
            or default_namespace
        )
        if not namespace_ok(ns):
            return False
        if labels:
            have = attrs.get("destination.labels")
            if not isinstance(have, Mapping):
                return False
            return all(have.get(k) == v for k, v in labels)
        return True

    return matches


@dataclass(frozen=True, slots=True)
class _Rule:
    clauses: tuple[_Test, ...]
    """Empty: the rule applies to every request."""
    charges: tuple[tuple[str, int], ...]

    def applies(self, attrs: Mapping[str, Any]) -> bool:
        return not self.clauses or any(c(attrs) for c in self.clauses)


def _rule(rule: QuotaRule) -> _Rule:
    return _Rule(tuple(_clause(c) for c in rule.match), tuple((q.quota, q.charge) for q in rule.quotas))


@dataclass(frozen=True, slots=True)
class _Binding:
    services: tuple[_Test, ...]
    rules: tuple[_Rule, ...]


@dataclass(frozen=True, slots=True)
class QuotaPlan:
    """The quotas a request is charged, compiled from one config's bindings and specs (see the
    module docstring). :meth:`select` is one attribute read when the config has no bindings."""

    bindings: tuple[_Binding, ...] = ()

    @classmethod
    def build(
        cls,
        specs: Mapping[tuple[str, str], QuotaSpecSpec],
        bindings: Iterable[QuotaSpecBindingSpec],
        *,
        default_namespace: str = "istio-system",
    ) -> QuotaPlan:
        """``specs`` maps (namespace, name) to a spec; a binding naming a missing spec skips it."""
        out: list[_Binding] = []
        for b in bindings:
            rules: list[QuotaRule] = []
            for ref in b.quota_specs:
                spec = specs.get((ref.namespace, ref.name))
                if spec is not None:
                    rules.extend(spec.rules)
            if rules and b.services:
                out.append(
                    _Binding(
                        tuple(_service(s, default_namespace) for s in b.services),
                        tuple(_rule(r) for r in rules),
                    )
                )
        return cls(tuple(out)) if out else EMPTY_QUOTA_PLAN

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot, default_namespace: str) -> QuotaPlan:
        """The plan of a config snapshot's ``QuotaSpec`` and ``QuotaSpecBinding`` resources."""
        specs = {(key.namespace, key.name): spec for key, spec in snapshot.quota_specs.items()}
        return cls.build(specs, snapshot.quota_spec_bindings.values(), default_namespace=default_namespace)

    def select(self, attrs: Mapping[str, Any]) -> dict[str, int]:
        """{quota name: charge} for a request (the largest charge when several rules name it)."""
        out: dict[str, int] = {}
        for b in self.bindings:
            if not any(s(attrs) for s in b.services):
                continue
            for rule in b.rules:
                if rule.applies(attrs):
                    for quota, charge in rule.charges:
                        if charge > out.get(quota, 0):
                            out[quota] = charge
        return out


EMPTY_QUOTA_PLAN: Final = QuotaPlan()
"""The plan of a config without bindings: charges nothing."""
