"""The one counter of authorization decisions, ``mixerd_authz_decisions_total{policy,action,dry_run}``.

Whatever decides allow or deny on policy (the ``opa`` adapter, authorization policies) counts each
decision here, so dashboards read one family:

* ``policy``: who decided (a handler's fully qualified name, a policy's ``name.namespace``);
* ``action``: ``allow`` or ``deny`` -- what the policy decided, also in dry run (where the caller
  is allowed whatever the policy decided);
* ``dry_run``: ``true`` when the decision was only recorded, not enforced.

The runtime creates the counter on its registry (:meth:`mixerd.runtime.metrics.RuntimeMetrics`
``.authz_decisions``) and hands it to handlers as the shared service :data:`AUTHZ_DECISIONS`;
a handler finds it with :func:`decisions_of` (None in processes without a runtime registry, such
as ``mixerd validate`` or an adapter test harness without services).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from mixerd.adapter.env import Env

__all__ = [
    "AUTHZ_DECISIONS",
    "METRIC_HELP",
    "METRIC_LABELS",
    "METRIC_NAME",
    "AuthzDecisions",
    "decisions_of",
]

AUTHZ_DECISIONS: Final = "authz_decisions"
"""The name of the shared service (``Env.shared``) that is an :class:`AuthzDecisions`."""

METRIC_NAME: Final = "mixerd_authz_decisions"
"""The counter's name (exposed as ``mixerd_authz_decisions_total``)."""

METRIC_HELP: Final = (
    "Authorization decisions by deciding policy (handler or policy name), action (allow, deny: what "
    "the policy decided) and dry_run (true: recorded, not enforced)."
)

METRIC_LABELS: Final[Sequence[str]] = ("policy", "action", "dry_run")

ALLOW: Final = "allow"
DENY: Final = "deny"


class AuthzDecisions:
    """Counts decisions on a counter with the labels :data:`METRIC_LABELS`."""

    __slots__ = ("_counter", "_labels")

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self._labels: dict[tuple[str, bool, bool], Any] = {}

    @classmethod
    def on(cls, make_counter: Callable[[str, str, Sequence[str]], Any]) -> AuthzDecisions:
        """Create the counter with ``make_counter(name, help, labels)`` (a registry's factory)."""
        return cls(make_counter(METRIC_NAME, METRIC_HELP, METRIC_LABELS))

    def count(self, policy: str, allowed: bool, dry_run: bool = False) -> None:
        """Count one decision: ``allowed`` is what the policy decided."""
        key = (policy, allowed, dry_run)
        child = self._labels.get(key)
        if child is None:
            child = self._labels[key] = self._counter.labels(
                policy, ALLOW if allowed else DENY, "true" if dry_run else "false"
            )
        child.inc()


def decisions_of(env: Env) -> AuthzDecisions | None:
    """The process's decision counter, or None where there is none."""
    service = env.shared(AUTHZ_DECISIONS)
    return service if isinstance(service, AuthzDecisions) else None
