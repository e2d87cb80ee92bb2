"""The routing table: which handlers get which instances, for each variety and namespace.

``variety -> namespace -> NamespaceTable``. A NamespaceTable lists *destinations* (one per
handler x template, ordered by handler name, then template), each with *instance groups*, plus
the *directive groups* (a rule's header operations). As in Mixer's builder, the rule actions that
send instances to a destination under the same match condition (the same text; ``""`` and
``"true"`` are "always") share one instance group: the condition is evaluated once and the
group's instances are the actions' instances in rule order (rules by fully qualified name), an
instance named by two rules twice (Mixer dispatched it twice too). Groups are ordered by their
match text ("always" first), which is the dispatch order and the order of :meth:`RoutingTable.dump`.
mixerd keeps two things apart: groups of rules that differ in fail-closed behaviour, and groups of
a rule with ``sampling`` (decided per rule) and any other rule's, are not merged.

Destinations of the default config namespace (``istio-system``) apply to every
namespace: they are put in front of each namespace's own list, and a namespace without rules of
its own uses the default table. (As in Mixer, header-operation directives of the default
namespace are not copied into namespaces that have rules of their own.)

Fail-closed is decided here, once per config: an instance group of a CHECK or QUOTA table is
``fail_closed`` when its rule's ``mixerd.io/fail-closed`` annotation says so, or, without one,
when the server runs with ``--fail-closed``. Groups of other varieties never are (a Report, an
attribute generator never denies).

Rule sampling is compiled here too: one :class:`~mixerd.runtime.sampling.RuleSampler` per rule
with ``sampling``, shared by that rule's REPORT instance groups (only those: sampling never skips
a check, a quota, an attribute generator or header operations).

The table is immutable once built (a sampler's rate-limit window is its only moving part); the
dispatcher pins one table per request. It also carries the config's
:class:`~mixerd.runtime.quotas.QuotaPlan` (which quotas a Check charges), built with it, so what a
request is charged and where it is routed always come from the same config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mixerd.adapter import Clock
from mixerd.attribute import ValueType, merge_reads
from mixerd.config import CompiledHeaderOperation, Snapshot
from mixerd.lang import Expression
from mixerd.runtime.checkcache import CheckCache
from mixerd.runtime.handlers import HandlerEntry, HandlerTable
from mixerd.runtime.metrics import RuntimeMetrics
from mixerd.runtime.quotas import EMPTY_QUOTA_PLAN, QuotaPlan
from mixerd.runtime.sampling import RuleSampler
from mixerd.runtime.security import SecurityTable
from mixerd.templates import InstanceBuilder, OutputMapper, Variety

__all__ = [
    "Destination",
    "DirectiveGroup",
    "InstanceGroup",
    "NamespaceTable",
    "RoutingTable",
    "build_routing_table",
]

_VARIETY_ORDER = (Variety.ATTRIBUTE_GENERATOR, Variety.CHECK, Variety.QUOTA, Variety.REPORT)
_DENYING = (Variety.CHECK, Variety.QUOTA)
"""The varieties whose instance groups can fail closed."""


@dataclass(frozen=True, slots=True, eq=False)
class InstanceGroup:
    """The instances one rule action sends to one destination, and the rule's condition."""

    rule: str
    """The (first) rule of the group."""
    condition: Expression | None
    builders: tuple[InstanceBuilder, ...]
    mappers: tuple[OutputMapper | None, ...] = ()
    action_name: str = ""
    fail_closed: bool = False
    """Deny the Check (or the quota) when ``condition`` or a builder fails to evaluate, instead
    of skipping the group (CHECK and QUOTA groups only)."""
    rules: tuple[str, ...] = ()
    """The rule of each builder, when the group merges the actions of several rules (empty: every
    builder is ``rule``'s)."""

    def rule_of(self, index: int) -> str:
        """The rule that sent the instance of builder ``index``."""
        return self.rules[index] if self.rules else self.rule

    @property
    def all_rules(self) -> tuple[str, ...]:
        """The distinct rules of the group, in order."""
        return tuple(dict.fromkeys(self.rules)) if self.rules else (self.rule,)

    sampler: RuleSampler | None = None
    """REPORT groups of a rule with ``sampling``: decides per request whether the group runs."""


@dataclass(frozen=True, slots=True, eq=False)
class Destination:
    """One handler x template, and everything routed to it."""

    handler: HandlerEntry
    template: str
    method: Callable[..., Any]
    is_async: bool
    groups: tuple[InstanceGroup, ...]
    dispatches: Any
    """This destination's child of ``mixerd_dispatches_total`` (bound once, not per call)."""
    dispatch_errors: Any
    """This destination's child of ``mixerd_dispatch_errors_total``."""
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.handler.name)


@dataclass(frozen=True, slots=True)
class DirectiveGroup:
    rule: str
    condition: Expression | None
    request_ops: tuple[CompiledHeaderOperation, ...]
    response_ops: tuple[CompiledHeaderOperation, ...]


@dataclass(frozen=True, slots=True)
class NamespaceTable:
    destinations: tuple[Destination, ...] = ()
    directives: tuple[DirectiveGroup, ...] = ()
    quota_index: Mapping[str, tuple[Destination, ...]] = field(default_factory=dict)
    """QUOTA tables only: lower-cased short instance name -> the destinations that quota is routed
    to, each restricted to the instances of that name (in routing order)."""


_EMPTY = NamespaceTable()


class RoutingTable:
    """An immutable routing table, plus a count of the requests currently using it."""

    __slots__ = (
        "_defaults",
        "_namespaces",
        "_reads",
        "check_cache",
        "default_namespace",
        "errors",
        "handlers",
        "has_generators",
        "id",
        "in_flight",
        "manifest",
        "quota_plan",
        "security",
    )

    def __init__(
        self,
        id: int,
        default_namespace: str,
        namespaces: dict[Variety, dict[str, NamespaceTable]],
        defaults: dict[Variety, NamespaceTable],
        handlers: HandlerTable,
        errors: list[str],
        quota_plan: QuotaPlan = EMPTY_QUOTA_PLAN,
        manifest: Mapping[str, ValueType] | None = None,
    ) -> None:
        self.id = id
        self.default_namespace = default_namespace
        self._namespaces = namespaces
        self._defaults = defaults
        self.handlers = handlers
        self.errors = errors
        self.quota_plan = quota_plan
        """What a Check is charged (``QuotaSpec``/``QuotaSpecBinding`` of the same config)."""
        self.manifest: Mapping[str, ValueType] = {} if manifest is None else manifest
        """The config's attribute manifest (what front-ends check typed wire values against)."""
        self.security: SecurityTable | None = None
        """The config's authentication and authorization gate (:mod:`mixerd.runtime.security`);
        ``None`` without security resources. Set by the runtime before the table is put in force."""
        self.in_flight = 0
        self.check_cache: CheckCache | None = None
        """This table's decision cache (the dispatcher gives it one when it is put in force)."""
        self.has_generators = self.has(Variety.ATTRIBUTE_GENERATOR)
        """Whether any attribute generator is routed (requests skip preprocessing otherwise)."""
        self._reads: dict[tuple[Variety, ...], frozenset[str] | None] = {}

    def lookup(self, variety: Variety, namespace: str) -> NamespaceTable:
        table = self._namespaces.get(variety)
        if table is not None:
            found = table.get(namespace)
            if found is not None:
                return found
        return self._defaults.get(variety, _EMPTY)

    def has(self, variety: Variety) -> bool:
        return bool(self._namespaces.get(variety)) or bool(self._defaults.get(variety, _EMPTY).destinations)

    def attributes_read(self, *varieties: Variety) -> frozenset[str] | None:
        """Every attribute name the match conditions, instances and samplers routed for
        ``varieties`` (in every namespace) may read; computed once per table and varieties.

        An instance of a ``whole_set`` template (the attribute set itself, e.g. ``attributes``)
        reads what its handler reads: the handler's ``attributes_read`` names, or every name
        (None) when the handler does not declare them. A handler may name single entries of a
        string map (:func:`~mixerd.attribute.map_entry`); such an entry stays in the result only
        while nobody reads its map whole (:func:`~mixerd.attribute.merge_reads`)."""
        if varieties in self._reads:
            return self._reads[varieties]
        names: set[str] = set()
        every = False
        for variety in varieties:
            tables = [*self._namespaces.get(variety, {}).values()]
            default = self._defaults.get(variety)
            if default is not None:
                tables.append(default)
            for t in tables:
                for d in t.destinations:
                    for g in d.groups:
                        if g.condition is not None:
                            names.update(g.condition.reads)
                        if g.sampler is not None:
                            names.update(g.sampler.attributes)
                        for b in g.builders:
                            if b.template.whole_set:
                                declared = getattr(d.handler.handler, "attributes_read", None)
                                if declared is None:
                                    every = True
                                else:
                                    names.update(declared)
                            else:
                                names.update(b.attributes)
        found = self._reads[varieties] = None if every else merge_reads(names)
        return found

    def dump(self) -> str:
        """A canonical, human-readable text form (stable across runs; tested as golden text)."""
        lines = [f"routing table {self.id} (default namespace {self.default_namespace})"]
        for variety in _VARIETY_ORDER:
            per_ns = dict(self._namespaces.get(variety, {}))
            default = self._defaults.get(variety)
            if default is not None and (default.destinations or default.directives):
                per_ns.setdefault(self.default_namespace, default)
            if not per_ns:
                continue
            lines.append(f"{variety.name}:")
            for ns in sorted(per_ns):
                t = per_ns[ns]
                lines.append(f"  namespace {ns}:")
                for d in t.destinations:
                    lines.append(f"    handler {d.handler.name} ({d.handler.adapter}) template {d.template}")
                    for g in d.groups:
                        cond = g.condition.text if g.condition is not None else "(always)"
                        closed = " (fail-closed)" if g.fail_closed else ""
                        rules = ", ".join(g.all_rules)
                        lines.append(f"      rule{'s' if g.rules else ''} {rules} match {cond}{closed}")
                        if g.sampler is not None:
                            lines.append(f"        sampled: {g.sampler.config.describe()}")
                        for i, b in enumerate(g.builders):
                            of = f" (rule {g.rules[i]})" if g.rules else ""
                            lines.append(f"        instance {b.name}{of}")
                for dg in t.directives:
                    cond = dg.condition.text if dg.condition is not None else "(always)"
                    lines.append(f"    directives of rule {dg.rule} match {cond}")
                    for side, ops in (("request", dg.request_ops), ("response", dg.response_ops)):
                        for op in ops:
                            verb = op.operation.name
                            values = ", ".join(v.text for v in op.values)
                            lines.append(f"      {side} {verb} {op.name} {values}".rstrip())
        if self.errors:
            lines.append("errors:")
            lines.extend(f"  {e}" for e in self.errors)
        return "\n".join(lines) + "\n"


@dataclass
class _Acc:
    destinations: dict[tuple[str, str], list[InstanceGroup]] = field(default_factory=dict)
    directives: list[DirectiveGroup] = field(default_factory=list)


def build_routing_table(
    snapshot: Snapshot,
    handlers: HandlerTable,
    default_namespace: str,
    metrics: RuntimeMetrics | None = None,
    *,
    fail_closed: bool = False,
    clock: Clock | None = None,
    randbelow: Callable[[int], int] | None = None,
) -> RoutingTable:
    """Route every satisfied rule action of ``snapshot`` to the live handlers of ``handlers``, and
    compile the snapshot's quota plan. ``metrics``: where the destinations count their calls (the
    runtime's; by default a registry of their own). ``fail_closed``: the server's default for
    rules without a ``mixerd.io/fail-closed`` annotation. ``clock`` and ``randbelow`` (``n ->``
    an integer in ``[0, n)``) drive rule sampling (default: the system clock, :mod:`random`)."""
    metrics = metrics or RuntimeMetrics()
    errors: list[str] = list(handlers.errors)
    acc: dict[Variety, dict[str, _Acc]] = {}
    any_directives: dict[str, list[DirectiveGroup]] = {}

    for rule in sorted(snapshot.rules, key=lambda r: r.key.fqn):
        ns = rule.namespace
        closed = fail_closed if rule.fail_closed is None else rule.fail_closed
        sampler = (
            RuleSampler(rule.key.fqn, rule.sampling, randbelow=randbelow, clock=clock)
            if rule.sampling is not None
            else None
        )
        for action in rule.actions:
            entry = handlers.entries.get(action.handler_fqn)
            if entry is None:
                errors.append(
                    f"rule {rule.key.fqn}: handler {action.handler_fqn} is not available; action skipped"
                )
                continue
            by_template: dict[str, list[Any]] = {}
            for ifqn in action.instance_fqns:
                inst = snapshot.instances.get(ifqn)
                if inst is not None:
                    by_template.setdefault(inst.template, []).append(inst)
            for template, insts in by_template.items():
                if entry.method(template) is None:
                    errors.append(
                        f"rule {rule.key.fqn}: handler {entry.name} ({entry.adapter}) has no method for "
                        f"template {template}; action skipped"
                    )
                    continue
                variety = insts[0].builder.template.variety
                if variety is Variety.CHECK_WITH_OUTPUT:
                    variety = Variety.CHECK
                group = InstanceGroup(
                    rule=rule.key.fqn,
                    condition=rule.match,
                    builders=tuple(i.builder for i in insts),
                    mappers=tuple(getattr(i, "output_mapper", None) for i in insts),
                    action_name=action.name or "",
                    fail_closed=closed if variety in _DENYING else False,
                    sampler=sampler if variety is Variety.REPORT else None,
                )
                ns_acc = acc.setdefault(variety, {}).setdefault(ns, _Acc())
                ns_acc.destinations.setdefault((entry.name, template), []).append(group)
        req = rule.request_header_operations
        resp = rule.response_header_operations
        if req or resp:
            any_directives.setdefault(ns, []).append(DirectiveGroup(rule.key.fqn, rule.match, req, resp))

    # Directives live in the CHECK tables.
    for ns, groups in any_directives.items():
        acc.setdefault(Variety.CHECK, {}).setdefault(ns, _Acc()).directives.extend(groups)

    namespaces: dict[Variety, dict[str, NamespaceTable]] = {}
    defaults: dict[Variety, NamespaceTable] = {}
    for variety, per_ns in acc.items():
        built = {ns: _finish(variety, a, handlers, metrics) for ns, a in per_ns.items()}
        default = built.pop(default_namespace, _EMPTY)
        defaults[variety] = default
        namespaces[variety] = {
            ns: NamespaceTable(
                default.destinations + t.destinations,
                t.directives,
                _quota_index(default.destinations + t.destinations) if variety is Variety.QUOTA else {},
            )
            for ns, t in built.items()
        }
    plan = QuotaPlan.of_snapshot(snapshot, default_namespace)
    return RoutingTable(
        snapshot.id, default_namespace, namespaces, defaults, handlers, errors, plan, snapshot.manifest
    )


def _finish(variety: Variety, a: _Acc, handlers: HandlerTable, metrics: RuntimeMetrics) -> NamespaceTable:
    dests = []
    for (handler_name, template), groups in sorted(a.destinations.items()):
        entry = handlers.entries[handler_name]
        found = entry.method(template)
        assert found is not None  # checked while grouping
        method, is_async = found
        dests.append(
            Destination(
                entry,
                template,
                method,
                is_async,
                _merge_groups(groups),
                metrics.dispatches.labels(handler_name, template),
                metrics.dispatch_errors.labels(handler_name, template),
            )
        )
    table = tuple(dests)
    return NamespaceTable(table, tuple(a.directives), _quota_index(table) if variety is Variety.QUOTA else {})


def _match_text(g: InstanceGroup) -> str:
    return g.condition.text.strip() if g.condition is not None else ""


def _merge_groups(groups: list[InstanceGroup]) -> tuple[InstanceGroup, ...]:
    """One group per (match text, fail-closed, sampler) of a destination, ordered by match text
    (see the module doc); ``groups`` come in rule order."""
    merged: dict[tuple[str, bool, int], list[InstanceGroup]] = {}
    for g in groups:
        merged.setdefault((_match_text(g), g.fail_closed, id(g.sampler)), []).append(g)
    out: list[InstanceGroup] = []
    for _, parts in sorted(merged.items(), key=lambda kv: kv[0][0]):
        first = parts[0]
        if len(parts) == 1:
            out.append(first)
            continue
        rules = tuple(g.rule_of(i) for g in parts for i in range(len(g.builders)))
        out.append(
            InstanceGroup(
                rule=first.rule,
                condition=first.condition,
                builders=tuple(b for g in parts for b in g.builders),
                mappers=tuple(m for g in parts for m in g.mappers),
                action_name=first.action_name,
                fail_closed=first.fail_closed,
                rules=rules if len(set(rules)) > 1 else (),
                sampler=first.sampler,
            )
        )
    return tuple(out)


def _short_name(fqn: str) -> str:
    return fqn.split(".", 1)[0].lower()


def _quota_index(dests: tuple[Destination, ...]) -> dict[str, tuple[Destination, ...]]:
    index: dict[str, list[Destination]] = {}
    for d in dests:
        names = {_short_name(b.name) for g in d.groups for b in g.builders}
        for name in sorted(names):
            groups = []
            for g in d.groups:
                picked = [i for i, b in enumerate(g.builders) if _short_name(b.name) == name]
                if picked:
                    rules = tuple(g.rule_of(i) for i in picked)
                    groups.append(
                        InstanceGroup(
                            rules[0],
                            g.condition,
                            tuple(g.builders[i] for i in picked),
                            (),
                            g.action_name,
                            g.fail_closed,
                            rules if len(set(rules)) > 1 else (),
                        )
                    )
            index.setdefault(name, []).append(replace(d, groups=tuple(groups)))
    return {k: tuple(v) for k, v in index.items()}
