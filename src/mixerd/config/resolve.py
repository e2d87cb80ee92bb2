"""Name resolution: how a rule's ``handler`` and ``instances`` entries find their resources.

Every resource has a fully qualified name (FQN) ``name.kind.namespace``:

* generic resources: ``requestcount.instance.istio-system``, ``prometheus.handler.istio-system``;
* legacy resources keep their legacy kind: ``kind: metric`` named ``requestcount`` is
  ``requestcount.metric.istio-system``; ``kind: memquota`` named ``handler`` is
  ``handler.memquota.istio-system``.

A reference written in a rule of namespace ``NS`` is resolved like Mixer's ``canonicalize``
(``mixer/pkg/runtime/config/util.go``), where ``KIND`` is ``handler`` for an action's handler and
``instance`` for its instances:

1. no dot, ``name``: exactly ``name.KIND.NS``. So a bare name only finds *generic* resources in
   the rule's own namespace (``prometheus`` -> ``prometheus.handler.NS``); a legacy resource must
   be written with its kind.
2. one dot, ``a.b``: ambiguous between "name.kind" (legacy style) and "name.namespace". First
   ``a.b.NS`` (``denyrequest.checknothing`` -> ``denyrequest.checknothing.NS``,
   ``handler.memquota`` -> ``handler.memquota.NS``, ``requestcount.instance`` ->
   ``requestcount.instance.NS``), then ``a.KIND.b`` (``source-whitelist.istio-system`` ->
   ``source-whitelist.handler.istio-system``).
3. two dots or more: taken as the FQN as written (``requestcount.metric.istio-system``).

There is no fallback to the default (``istio-system``) namespace: a rule in ``default`` that
names ``prometheus`` looks only for ``prometheus.handler.default``. A handler table holds
generic and legacy handlers together (likewise instances), so ``whitelist.listchecker`` and
``whitelist`` can name two different resources.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

__all__ = ["Resolution", "candidates", "resolve", "short_name"]


def candidates(name: str, kind: str, namespace: str) -> tuple[str, ...]:
    """The FQNs that ``name`` may stand for, in the order they are tried."""
    dots = name.count(".")
    if dots == 0:
        return (f"{name}.{kind}.{namespace}",)
    if dots == 1:
        first, second = name.split(".")
        return (f"{first}.{second}.{namespace}", f"{first}.{kind}.{second}")
    return (name,)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The FQN ``name`` resolved to (``None`` if none of ``tried`` exists)."""

    name: str
    fqn: str | None
    tried: tuple[str, ...]

    def describe_failure(self) -> str:
        return "looked for " + " and ".join(self.tried)


def resolve(name: str, kind: str, namespace: str, known: Container[str]) -> Resolution:
    """Resolve ``name`` against the FQNs in ``known``."""
    tried = candidates(name, kind, namespace)
    for fqn in tried:
        if fqn in known:
            return Resolution(name, fqn, tried)
    return Resolution(name, None, tried)


def short_name(fqn: str) -> str:
    """``requestcount.instance.istio-system`` -> ``requestcount`` (a non-FQN is returned as is)."""
    return fqn.split(".", 1)[0] if fqn.count(".") == 2 else fqn
