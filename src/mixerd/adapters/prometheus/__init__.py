"""The ``prometheus`` adapter: metric instances become Prometheus series served on ``/metrics``.

Params are Mixer's (see :mod:`mixerd.adapters.prometheus.config` for every field): ``metrics[]``
(``instanceName``, ``name``, ``namespace``, ``description``, ``kind``, ``labelNames``,
``buckets``) and ``metricsExpirationPolicy``, plus mixerd's cardinality guard:

``maxSeriesPerMetric`` (default 10000)
    A metric never holds more series (label-value sets) than this. A report that would create one
    more is not recorded; instead ``mixerd_prometheus_series_overflow_total{metric="<name>"}`` is
    incremented (it is exported next to the metrics) and a warning is logged at most once a minute
    per metric. Together with ``metricsExpirationPolicy`` this bounds the memory a misbehaving
    dimension (a request id, a pod IP) can take, the failure mode behind Istio issues #6741/#7734.
    With ``mixerd serve --workers N`` each worker holds at most ``maxSeriesPerMetric // N`` series
    of a metric, so the merged ``/metrics`` never exceeds the limit (a label set held by two workers
    is one series there but uses both workers' shares: the guard may refuse before the limit).

Values: floats as is, integers, durations (seconds) and numeric strings; anything else is an
error for that instance (counted in ``handler.errors``; the rest of the batch is recorded). Label
values are Mixer's ``adapter.Stringify`` of the dimensions (:func:`stringify`).

Serving: all live handlers' registries are exported together by the process-wide
:data:`EXPORTER`; the server calls ``EXPORTER.render()`` (bytes) and sends it with
``EXPORTER.content_type``. This package starts no HTTP server. (Use ``render()``, not
prometheus_client's ``generate_latest``: the latter appends ``_total`` to counter names.)

Handler replacement: metric objects are shared by definition (SHA-256), so a handler rebuilt after
an unrelated config change continues its predecessor's counters; a handler is recognised as the
successor of another by its ``Env.name`` (the handler resource's name). A different handler that
defines a live metric name differently fails to build (:class:`MetricConflictError`).

Differences from Mixer, on purpose:

* ``name`` defaults to the instance's short name (``requestcount``), not its full name
  (``requestcount_instance_istiosystem``).
* ``instanceName`` is required and must be an instance the rules send to the handler; each label
  must be one of the instance's dimensions (checked when the instance's types are known). Mixer
  accepted such configs and then failed every report. Dimensions without a label are ignored.
* One instance may feed several metrics (e.g. the same requests with fewer labels).
* Series are exported as Go's client did (names as configured, ``le="1e+06"``, no ``_created``),
  string-map label values have sorted keys, and a redefinition replaces only the changed metric
  instead of clearing every metric of the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mixerd.adapter import Info, InstanceInfo
from mixerd.adapters.prometheus.config import (
    DEFAULT_BUCKETS,
    DEFAULT_MAX_SERIES,
    Kind,
    MetricDefinition,
    safe_name,
)
from mixerd.adapters.prometheus.exporter import CONTENT_TYPE, MetricConflictError, PrometheusExporter
from mixerd.adapters.prometheus.handler import HandleMetricError, PrometheusBuilder, PrometheusHandler
from mixerd.adapters.prometheus.series import OVERFLOW_METRIC, MetricVec
from mixerd.adapters.prometheus.values import prom_value, stringify

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "EXPORTER",
    "INFO",
    "OVERFLOW_METRIC",
    "HandleMetricError",
    "Kind",
    "MetricConflictError",
    "MetricDefinition",
    "MetricVec",
    "PrometheusBuilder",
    "PrometheusExporter",
    "PrometheusHandler",
    "make_info",
    "prom_value",
    "safe_name",
    "stringify",
]

EXPORTER: Final = PrometheusExporter()
"""The process-wide exporter behind ``/metrics`` (every handler built from :data:`INFO`)."""


def make_info(exporter: PrometheusExporter) -> Info:
    """The adapter bound to ``exporter`` (tests use a private exporter; the entry point uses
    :data:`EXPORTER`)."""

    def builder(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> PrometheusBuilder:
        return PrometheusBuilder(config, instances, exporter=exporter)

    return Info(
        name="prometheus",
        description="Publishes metric instances as Prometheus metrics (served by mixerd on /metrics).",
        templates=("metric",),
        builder=builder,
        default_config={},
    )


INFO: Final = make_info(EXPORTER)
