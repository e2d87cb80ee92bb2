"""The quotas an Envoy ext_authz Check charges (pure).

Two sources, merged (the larger charge wins when both name the same quota):

* ``QuotaSpecBinding`` / ``QuotaSpec`` resources (:class:`QuotaPlan`): a binding applies when one
  of its services matches the request: ``service`` (an FQDN) must equal
  ``destination.service.host``; otherwise ``name`` and ``namespace`` (empty or ``*`` match
  anything) must equal ``destination.service.name`` and ``destination.service.namespace`` (else
  ``destination.namespace``, else the default namespace); ``labels`` must be a subset of
  ``destination.labels``; ``domain`` is not checked. Through ext_authz these service attributes
  come from the context extensions above. A spec rule applies when it has no ``match`` clause or
  one clause matches: every attribute of the clause is present and its text matches the
  ``StringMatch`` (``exact``/``prefix``/``regex``, a full match); ``name[key]`` reads one key of a
  STRING_MAP attribute (``request.headers[x-user]``).
* context extension ``mixerd.quotas`` = ``name[=amount],...`` (amount defaults to 1).

A quota is denied (``RESOURCE_EXHAUSTED``, HTTP 429, "quota exhausted: <name>") when its handler
grants less than the charge; a quota whose handler answers with a non-OK status is denied with that
status. Quotas carry no deduplication id (Envoy does not retry ext_authz calls by default, and
neither ``x-request-id`` nor Envoy's stream id is unique enough to deduplicate on safely).

"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from mixerd.adapter import QuotaArgs
from mixerd.api.ext_authz.request import QUOTAS_EXTENSION, BadRequest, _RequestBag
from mixerd.attribute import MISSING
from mixerd.config import (
    IstioService,
    QuotaRule,
    QuotaSpecBindingSpec,
    QuotaSpecSpec,
    StringMatch,
)

__all__ = [
    "QuotaPlan",
    "parse_quota_list",
    "quota_args",
]

# --- quotas -------------------------------------------------------------------------------------


def parse_quota_list(text: str, where: str = f"context extension {QUOTAS_EXTENSION}") -> dict[str, int]:
    """``name[=amount],...`` -> {name: amount}; raises :class:`BadRequest` naming ``where``."""
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, amount = item.partition("=")
        name = name.strip()
        if not name:
            raise BadRequest(f"{where}: {item!r} has no quota name")
        if sep:
            amount = amount.strip()
            if not (amount.isascii() and amount.isdigit()) or len(amount) > 18 or int(amount) < 1:
                raise BadRequest(f"{where}: amount of {name!r} must be a positive integer, got {amount!r}")
            n = int(amount)
        else:
            n = 1
        out[name] = max(out.get(name, 0), n)
    return out


def _attr_text(attrs: Mapping[str, Any], name: str) -> str | None:
    if name.endswith("]") and "[" in name:
        base, _, key = name[:-1].partition("[")
        m = attrs.get(base)
        if not isinstance(m, Mapping):
            return None
        v = m.get(key.strip("\"'"))
        return None if v is None else str(v)
    v = attrs.get(name, MISSING)
    if v is MISSING or v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _rule_matches(rule: QuotaRule, attrs: Mapping[str, Any]) -> bool:
    if not rule.match:
        return True
    return any(all(_clause_matches(n, m, attrs) for n, m in clause.items()) for clause in rule.match)


def _clause_matches(name: str, m: StringMatch, attrs: Mapping[str, Any]) -> bool:
    text = _attr_text(attrs, name)
    return text is not None and m.matches(text)


def _wild(pattern: str, value: str | None) -> bool:
    return not pattern or pattern == "*" or pattern == value


def _service_matches(svc: IstioService, attrs: Mapping[str, Any], default_namespace: str) -> bool:
    if svc.service:
        return svc.service == attrs.get("destination.service.host")
    if not _wild(svc.name, attrs.get("destination.service.name")):
        return False
    ns = attrs.get("destination.service.namespace") or attrs.get("destination.namespace") or default_namespace
    if not _wild(svc.namespace, ns):
        return False
    if svc.labels:
        labels = attrs.get("destination.labels")
        if not isinstance(labels, Mapping):
            return False
        return all(labels.get(k) == v for k, v in svc.labels.items())
    return True


@dataclass(frozen=True, slots=True)
class _Binding:
    services: tuple[IstioService, ...]
    rules: tuple[QuotaRule, ...]


@dataclass(frozen=True, slots=True)
class QuotaPlan:
    """The quotas a Check charges, from ``QuotaSpecBinding`` and ``QuotaSpec`` resources.

    Build it once per config snapshot with :meth:`build`; :meth:`select` is cheap when the config
    has no bindings.
    """

    bindings: tuple[_Binding, ...] = ()
    default_namespace: str = "istio-system"

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
                out.append(_Binding(tuple(b.services), tuple(rules)))
        return cls(tuple(out), default_namespace)

    def select(self, attrs: Mapping[str, Any]) -> dict[str, int]:
        """{quota name: charge} for a request (the largest charge when several rules name it)."""
        out: dict[str, int] = {}
        for b in self.bindings:
            if not any(_service_matches(s, attrs, self.default_namespace) for s in b.services):
                continue
            for rule in b.rules:
                if _rule_matches(rule, attrs):
                    for q in rule.quotas:
                        if q.charge > out.get(q.quota, 0):
                            out[q.quota] = q.charge
        return out


_NO_PLAN: Final = QuotaPlan()


@functools.lru_cache(maxsize=256)
def _extension_quotas(text: str) -> Mapping[str, QuotaArgs]:
    return MappingProxyType({name: QuotaArgs(amount=n) for name, n in parse_quota_list(text).items()})


def quota_args(attrs: Mapping[str, Any], plan: QuotaPlan = _NO_PLAN) -> Mapping[str, QuotaArgs] | None:
    """The quotas to request with a Check: the plan's and ``mixerd.quotas`` merged (None if none).

    Raises :class:`BadRequest` for a malformed ``mixerd.quotas``.
    """
    if isinstance(attrs, _RequestBag):
        text = attrs.extension(QUOTAS_EXTENSION)
    else:
        ext = attrs.get("context.extensions")
        text = ext.get(QUOTAS_EXTENSION) if ext else None
    if not plan.bindings:
        if not text:
            return None
        return _extension_quotas(text) or None
    amounts = plan.select(attrs)
    if text:
        for name, args in _extension_quotas(text).items():
            if args.amount > amounts.get(name, 0):
                amounts[name] = args.amount
    if not amounts:
        return None
    return {name: QuotaArgs(amount=n) for name, n in amounts.items()}
