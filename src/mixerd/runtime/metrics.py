"""mixerd's own metrics (served on the monitoring port's ``/metrics``).

Each :class:`~mixerd.runtime.Runtime` owns one :class:`RuntimeMetrics`, with a registry of its
own: two runtimes in one process (tests, several workers) count independently. The runtime's
dispatcher carries it (``Dispatcher.metrics``), so every front-end built on a dispatcher counts
in its runtime's registry. Metrics of adapters (the prometheus adapter's) live in registries of
their own and are not part of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mixerd.adapter.authz_metrics import AuthzDecisions

__all__ = ["RuntimeMetrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class RuntimeMetrics:
    """mixerd's own metric families on one registry (:attr:`registry`)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mixerd_requests",
            "API requests by front-end, method and outcome.",
            ["api", "method", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mixerd_request_duration_seconds",
            "Time to answer an API request.",
            ["api", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.report_attribute_sets = Counter(
            "mixerd_report_attribute_sets",
            "Attribute sets received in Report calls (all front-ends).",
            registry=r,
        )
        self.dispatches = Counter(
            "mixerd_dispatches",
            "Handler calls, by handler and template.",
            ["handler", "template"],
            registry=r,
        )
        self.dispatch_errors = Counter(
            "mixerd_dispatch_errors",
            "Handler calls that failed (exception or deadline), by handler and template.",
            ["handler", "template"],
            registry=r,
        )
        self.rule_evaluation_errors = Counter(
            "mixerd_rule_evaluation_errors",
            "Rule expressions that could not be evaluated against a request, by rule and part: "
            "match (the rule's match) or instance (an instance the rule sends to a handler).",
            ["rule", "part"],
            registry=r,
        )
        self.check_cache = Counter(
            "mixerd_check_cache_lookups",
            "Checks looked up in the decision cache, by result (hit: answered from it; miss: "
            "evaluated). Checks with quotas do not use it.",
            ["result"],
            registry=r,
        )
        self.unconfigured_quotas = Counter(
            "mixerd_unconfigured_quota_requests",
            "Requests for a quota no rule routes (granted, as Mixer does).",
            registry=r,
        )
        self.config_errors = Gauge(
            "mixerd_config_errors", "Problems found in the configuration now in force.", registry=r
        )
        self.config_generation = Gauge(
            "mixerd_config_generation", "Id of the configuration snapshot now in force.", registry=r
        )
        self.handlers_built = Counter("mixerd_handlers_built", "Handlers built.", registry=r)
        self.handlers_reused = Counter(
            "mixerd_handlers_reused",
            "Handlers kept across a config change (unchanged signature).",
            registry=r,
        )
        self.handlers_closed = Counter("mixerd_handlers_closed", "Handlers retired and closed.", registry=r)
        # The report pipeline (mixerd.runtime.reporting), labelled by front-end.
        self.report_queued = Gauge(
            "mixerd_report_queued", "Attribute sets waiting to be dispatched.", ["api"], registry=r
        )
        self.report_dropped = Counter(
            "mixerd_report_dropped",
            "Attribute sets dropped before dispatch, by front-end and reason (queue_full, shutdown, invalid).",
            ["api", "reason"],
            registry=r,
        )
        self.report_batches = Counter(
            "mixerd_report_batches", "Report batches dispatched, by front-end.", ["api"], registry=r
        )
        self.report_errors = Counter(
            "mixerd_report_errors",
            "Problems reported by the dispatcher (one per instance that could not be built or failed "
            "handler call).",
            ["api"],
            registry=r,
        )
        self._families: dict[str, Any] = {}
        self.authz_decisions = AuthzDecisions.on(self.counter)
        """``mixerd_authz_decisions_total{policy,action,dry_run}`` (:mod:`mixerd.adapter.authz_metrics`),
        handed to handlers as the shared service ``authz_decisions``."""

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name`` of this registry, created on first use (front-end metrics: every
        service of one runtime shares it)."""
        return self._family(Counter, name, documentation, labelnames)  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge ``name`` of this registry, created on first use."""
        return self._family(Gauge, name, documentation, labelnames)  # type: ignore[no-any-return]

    def _family(self, kind: type, name: str, documentation: str, labelnames: Sequence[str]) -> Any:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(name, documentation, labelnames, registry=self.registry)
        elif not isinstance(family, kind):
            raise ValueError(f"metric {name} is already registered as a {type(family).__name__}")
        return family

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (0 when it was never set): for tests and tools."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
