"""mixerd's own metrics (served on the monitoring port's ``/metrics``)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "CONFIG_ERRORS",
    "CONFIG_GENERATION",
    "DISPATCHES",
    "DISPATCH_ERRORS",
    "HANDLERS_BUILT",
    "HANDLERS_CLOSED",
    "HANDLERS_REUSED",
    "REGISTRY",
    "REPORT_ATTRIBUTE_SETS",
    "REQUESTS",
    "REQUEST_SECONDS",
]

REGISTRY: Final = CollectorRegistry(auto_describe=True)

REQUESTS: Final = Counter(
    "mixerd_requests",
    "API requests by front-end, method and outcome.",
    ["api", "method", "code"],
    registry=REGISTRY,
)
REQUEST_SECONDS: Final = Histogram(
    "mixerd_request_duration_seconds",
    "Time to answer an API request.",
    ["api", "method"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
REPORT_ATTRIBUTE_SETS: Final = Counter(
    "mixerd_report_attribute_sets",
    "Attribute sets received in Report calls (all front-ends).",
    registry=REGISTRY,
)
DISPATCHES: Final = Counter(
    "mixerd_dispatches", "Handler calls, by handler and template.", ["handler", "template"], registry=REGISTRY
)
DISPATCH_ERRORS: Final = Counter(
    "mixerd_dispatch_errors",
    "Handler calls that failed (exception or deadline), by handler and template.",
    ["handler", "template"],
    registry=REGISTRY,
)
CONFIG_ERRORS: Final = Gauge(
    "mixerd_config_errors", "Problems found in the configuration now in force.", registry=REGISTRY
)
CONFIG_GENERATION: Final = Gauge(
    "mixerd_config_generation", "Id of the configuration snapshot now in force.", registry=REGISTRY
)
HANDLERS_BUILT: Final = Counter("mixerd_handlers_built", "Handlers built.", registry=REGISTRY)
HANDLERS_REUSED: Final = Counter(
    "mixerd_handlers_reused", "Handlers kept across a config change (unchanged signature).", registry=REGISTRY
)
HANDLERS_CLOSED: Final = Counter("mixerd_handlers_closed", "Handlers retired and closed.", registry=REGISTRY)
