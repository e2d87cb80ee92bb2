"""Mixer adapters that mixerd does not build, and what to use instead: the one table every
"unknown adapter" message consults (config validation, the handler table, the adapter catalogue).

An adapter is listed here when Mixer 1.4 shipped it in its tree (or Istio documented it as an
adapter users ran with Mixer) and mixerd has no built-in adapter of that name, mostly because it
talks to a hosted service that cannot be reached or tested from here. The table is consulted only
when no installed adapter has the name, so an adapter installed as a plugin (or built in later)
always wins over its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["NOT_BUILT_ADAPTERS", "NotBuiltAdapter", "missing_adapter_message"]

_OUT_OF_PROCESS: Final = (
    "or run it as an out-of-process adapter (its `adapter` resource, and a handler with `adapter:` "
    "and `connection.address`: Mixer's gRPC adapter model)"
)


@dataclass(frozen=True, slots=True)
class NotBuiltAdapter:
    what: str
    """What the adapter did in Mixer."""
    instead: str
    """What to configure in mixerd to get the same result."""

    def message(self, name: str) -> str:
        return f"adapter '{name}' ({self.what}) is not built into mixerd; instead: {self.instead}"


NOT_BUILT_ADAPTERS: Final = MappingProxyType(
    {
        "stackdriver": NotBuiltAdapter(
            "Google Cloud Monitoring, Logging and Trace, and the context graph",
            "the prometheus adapter, scraped by Google Cloud Managed Service for Prometheus or the "
            "Stackdriver Prometheus sidecar (or sent on by an OpenTelemetry Collector); logs through "
            "stdio or fluentd to a log agent that writes to Cloud Logging; traces from Envoy's own "
            f"tracer; {_OUT_OF_PROCESS}",
        ),
        "cloudwatch": NotBuiltAdapter(
            "AWS CloudWatch metrics and CloudWatch Logs",
            "the prometheus adapter, scraped by the CloudWatch agent (Container Insights Prometheus "
            "metrics) or an OpenTelemetry Collector with the awsemf exporter; logs through the fluentd "
            f"adapter to Fluentd or Fluent Bit with their CloudWatch Logs output; {_OUT_OF_PROCESS}",
        ),
        "signalfx": NotBuiltAdapter(
            "SignalFx metrics and traces; already removed from Mixer in Istio 1.3",
            "the prometheus adapter scraped by the SignalFx Smart Agent or an OpenTelemetry Collector "
            f"(prometheus receiver, signalfx exporter), or the statsd adapter to the agent's StatsD listener; "
            f"{_OUT_OF_PROCESS}",
        ),
        "solarwinds": NotBuiltAdapter(
            "SolarWinds AppOptics metrics and Papertrail logs",
            "the prometheus adapter scraped by the AppOptics agent, or the statsd adapter to its StatsD "
            "listener; logs through the fluentd adapter to Fluentd with a Papertrail (remote syslog) "
            f"output; {_OUT_OF_PROCESS}",
        ),
        "circonus": NotBuiltAdapter(
            "Circonus metrics over HTTPTrap",
            "the prometheus adapter scraped by the Circonus agent, or the statsd adapter to the "
            f"agent's StatsD listener; {_OUT_OF_PROCESS}",
        ),
        "apigee": NotBuiltAdapter(
            "Apigee API management: API keys, quotas and analytics; Apigee's own out-of-process "
            "adapter, never part of Mixer's tree",
            "Apigee's adapter as an out-of-process adapter (its `adapter` resource, and a handler with "
            "`adapter:` and `connection.address`), or the Apigee Envoy Adapter as Envoy's ext_authz service directly",
        ),
        "bypass": NotBuiltAdapter(
            "calling a gRPC backend through Mixer's out-of-process adapter model (Handle<Template> "
            "calls and, with sessionBased, the InfrastructureBackend sessions); a test adapter",
            "that backend as an out-of-process adapter (its `adapter` resource, and a handler with "
            "`adapter:` and `connection.address`)",
        ),
        "rbac": NotBuiltAdapter(
            "Istio RBAC authorization; removed from Mixer in Istio 1.3",
            "mixerd evaluates Istio's ServiceRole, ServiceRoleBinding and ClusterRbacConfig "
            "(rbac.istio.io/v1alpha1) and AuthorizationPolicy (security.istio.io/v1beta1) resources "
            "itself: put them in the config instead of an rbac handler",
        ),
        "servicecontrol": NotBuiltAdapter(
            "Google Service Control; removed from Mixer after Istio 1.0",
            "Cloud Endpoints' Extensible Service Proxy, or the prometheus and stdio adapters for telemetry",
        ),
    }
)
"""Adapter name -> what it did and what to use instead."""


def missing_adapter_message(name: str, unknown: str) -> str:
    """The message for a handler whose adapter ``name`` is not installed: the table's explanation
    when the adapter is one mixerd does not build, else ``unknown`` (the caller's own wording)."""
    entry = NOT_BUILT_ADAPTERS.get(name)
    return unknown if entry is None else entry.message(name)
