"""The prometheus handler's params, read and checked field by field (pure, no I/O).

Params (Mixer's ``adapter.prometheus.config.Params``, camelCase or snake_case keys)::

    metrics:                          # one entry per exported metric
    - instanceName: requestcount.instance.istio-system   # required; an instance sent to this handler
      name: requests_total            # default: the instance's short name (``requestcount``)
      namespace: istio                # default ``istio``; exported name = <namespace>_<name>
      description: ...                # HELP text; default: the name
      kind: COUNTER                   # GAUGE | COUNTER | DISTRIBUTION (required)
      labelNames: [reporter, ...]     # each one a dimension of the instance
      buckets:                        # DISTRIBUTION only; one of:
        linearBuckets: {numFiniteBuckets: 5, width: 12, offset: 45}        # offset + i*width, i in 0..n
        exponentialBuckets: {numFiniteBuckets: 8, growthFactor: 10, scale: 1}  # scale*growth^i, i in 0..n
        explicitBuckets: {bounds: [0.005, 0.01, ...]}                      # default: Go client's DefBuckets
    metricsExpirationPolicy:          # series not updated for metricsExpiryDuration are removed
      metricsExpiryDuration: 10m      # required (> 0) when the policy is given
      expiryCheckIntervalDuration: 1m # default: metricsExpiryDuration / 2
    maxSeriesPerMetric: 10000         # mixerd's cardinality guard (see the package docstring)

Names are sanitised as Mixer does: a leading ``/`` is dropped, ``/``, ``.`` and blanks become ``_``
and ``-`` is removed (``not-istio`` -> ``notistio``). Label names are sanitised the same way.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, InstanceInfo, Params
from mixerd.attribute import ValueType

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "ExpirationPolicy",
    "Kind",
    "MetricConfig",
    "MetricDefinition",
    "PrometheusConfig",
    "bucket_bounds",
    "parse_config",
    "safe_name",
    "short_instance_name",
]

DEFAULT_NAMESPACE: Final = "istio"
DEFAULT_MAX_SERIES: Final = 10_000
MAX_FINITE_BUCKETS: Final = 10_000
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""client_golang's ``DefBuckets`` (Python's client has a different default; Mixer used Go's)."""

_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_REPLACEMENTS: Final = str.maketrans({"/": "_", ".": "_", " ": "_", "-": None})
_HISTOGRAM_RESERVED: Final = frozenset({"le"})


class Kind(enum.Enum):
    """Mixer's ``MetricInfo.Kind``."""

    UNSPECIFIED = 0
    GAUGE = 1
    COUNTER = 2
    DISTRIBUTION = 3


def safe_name(name: str) -> str:
    """Mixer's ``safeName``: drop a leading ``/``; ``/ . space`` -> ``_``; drop ``-``."""
    return name.removeprefix("/").translate(_REPLACEMENTS)


def short_instance_name(fqn: str) -> str:
    """``requestcount.instance.istio-system`` -> ``requestcount`` (a name with fewer than three
    dot-separated parts is returned whole)."""
    parts = fqn.split(".")
    return ".".join(parts[:-2]) if len(parts) >= 3 else fqn


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """What a metric looks like from outside: two definitions are the same metric iff equal."""

    name: str
    """Exported name, namespace included (``istio_requests_total``)."""
    kind: Kind
    help: str
    label_names: tuple[str, ...]
    """Sanitised label names, in config order."""
    bounds: tuple[float, ...] = ()
    """Finite bucket upper bounds (DISTRIBUTION only)."""

    @property
    def sha256(self) -> str:
        """A digest of the definition (the key under which exporters share metric objects)."""
        canonical = json.dumps(
            [self.name, self.kind.name, self.help, list(self.label_names), [repr(b) for b in self.bounds]],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def describe(self) -> str:
        text = f"{self.kind.name} {self.name}{{{', '.join(self.label_names)}}}"
        if self.kind is Kind.DISTRIBUTION:
            text += f" buckets {list(self.bounds)}"
        return text


@dataclass(frozen=True, slots=True)
class MetricConfig:
    """One ``metrics[]`` entry: which instance feeds which metric, reading which dimensions."""

    instance_name: str
    definition: MetricDefinition
    dimension_keys: tuple[str, ...]
    """The dimension read for each label (same order as ``definition.label_names``)."""
    dimension_types: tuple[ValueType | None, ...]
    """The static type of each of those dimensions, when the instance's types are known."""


@dataclass(frozen=True, slots=True)
class ExpirationPolicy:
    expiry: float
    """Seconds without an update after which a series is removed."""
    check_interval: float


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    metrics: tuple[MetricConfig, ...]
    expiration: ExpirationPolicy | None
    max_series_per_metric: int


def parse_config(
    config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]
) -> tuple[PrometheusConfig, list[ConfigError]]:
    """Read the params; every problem is returned with its field path."""
    p = Params(config)
    metrics: list[tuple[int, MetricConfig]] = []
    for i, m in p.list("metrics"):
        parsed = _parse_metric(m, instances)
        if parsed is not None:
            metrics.append((i, parsed))
    _check_duplicates(p, metrics)
    expiration = _parse_expiration(p)
    max_series = p.int("max_series_per_metric", default=DEFAULT_MAX_SERIES, minimum=1)
    errors = p.errors + p.unknown_fields()
    return PrometheusConfig(tuple(mc for _, mc in metrics), expiration, max_series), errors


def _parse_metric(m: Params, instances: Mapping[str, InstanceInfo]) -> MetricConfig | None:
    start = len(m.errors)
    instance_name = m.str("instance_name", required=True)
    info = instances.get(instance_name) if instance_name else None
    if instance_name and info is None:
        known = ", ".join(sorted(instances)) or "none"
        m.error(
            m.raw("instance_name")[0],
            f"instance '{instance_name}' is not sent to this handler by any rule (instances: {known})",
        )
    elif info is not None and info.template != "metric":
        m.error(m.raw("instance_name")[0], f"instance '{instance_name}' is a {info.template}, not a metric")

    namespace_raw = m.str("namespace")
    namespace = safe_name(namespace_raw) if namespace_raw else DEFAULT_NAMESPACE
    name_raw = m.str("name") or short_instance_name(instance_name)
    full_name = f"{namespace}_{safe_name(name_raw)}" if namespace else safe_name(name_raw)
    if not _METRIC_NAME_RE.match(full_name):
        m.error(m.raw("name")[0], f"'{full_name}' is not a valid Prometheus metric name")
    description = m.str("description")

    kind = m.enum("kind", Kind, Kind.UNSPECIFIED)
    if kind is Kind.UNSPECIFIED and not any(e.path.endswith(".kind") for e in m.errors[start:]):
        m.error(m.raw("kind")[0], "required: GAUGE, COUNTER or DISTRIBUTION")

    label_key = m.raw("label_names")[0]
    raw_labels = m.str_list("label_names")
    labels: list[str] = []
    for j, raw in enumerate(raw_labels):
        label = safe_name(raw)
        where = f"{label_key}[{j}]"
        if not _LABEL_NAME_RE.match(label):
            m.error(where, f"'{label}' is not a valid Prometheus label name")
        elif label.startswith("__"):
            m.error(where, f"label names starting with '__' are reserved ({label})")
        elif kind is Kind.DISTRIBUTION and label in _HISTOGRAM_RESERVED:
            m.error(where, f"'{label}' is reserved in histograms")
        elif label in labels:
            m.error(where, f"duplicate label name '{label}'")
        labels.append(label)

    bounds: tuple[float, ...] = ()
    buckets = m.child("buckets")
    if kind is Kind.DISTRIBUTION:
        bounds = bucket_bounds(buckets)

    keys, types = _dimensions(m, label_key, raw_labels, labels, info)
    m.errors.extend(m.unknown_fields())
    if len(m.errors) > start:
        return None
    definition = MetricDefinition(full_name, kind, description or name_raw, tuple(labels), bounds)
    return MetricConfig(instance_name, definition, keys, types)


def _dimensions(
    m: Params, label_key: str, raw_labels: list[str], labels: list[str], info: InstanceInfo | None
) -> tuple[tuple[str, ...], tuple[ValueType | None, ...]]:
    """The dimension feeding each label. When the instance's expression types are known, every
    label must name one of its dimensions (Mixer failed every report of such a config instead)."""
    dims: dict[str, ValueType] = {}
    typed = info is not None and bool(info.types)
    if info is not None:
        dims = {k[len("dimensions.") :]: t for k, t in info.types.items() if k.startswith("dimensions.")}
    keys: list[str] = []
    types: list[ValueType | None] = []
    for j, (raw, label) in enumerate(zip(raw_labels, labels, strict=True)):
        key = raw
        if typed and raw not in dims:
            matches = [d for d in dims if safe_name(d) == label]
            if matches:
                key = matches[0]
            else:
                have = ", ".join(sorted(dims)) or "none"
                m.error(
                    f"{label_key}[{j}]",
                    f"instance '{info.name if info else ''}' has no dimension '{raw}' "
                    f"(its dimensions: {have})",
                )
        keys.append(key)
        types.append(dims.get(key))
    return tuple(keys), tuple(types)


def bucket_bounds(p: Params) -> tuple[float, ...]:
    """The finite upper bounds of a ``buckets`` definition (Mixer: n+1 bounds for n finite buckets)."""
    present = [k for k in ("linear_buckets", "exponential_buckets", "explicit_buckets") if p.has(k)]
    if not present:
        p.errors.extend(p.unknown_fields())
        return DEFAULT_BUCKETS
    if len(present) > 1:
        given = ", ".join(p.raw(k)[0] for k in present)
        p.error("", f"give only one of linearBuckets, exponentialBuckets or explicitBuckets, not {given}")
    kind = present[0]
    q = p.child(kind)
    bounds: list[float] = []
    if kind == "linear_buckets":
        n = q.int("num_finite_buckets", minimum=0)
        width = q.float("width")
        offset = q.float("offset")
        if n > MAX_FINITE_BUCKETS:
            q.error(q.raw("num_finite_buckets")[0], f"at most {MAX_FINITE_BUCKETS} buckets")
        elif n >= 1 and not width > 0:
            q.error(q.raw("width")[0], f"must be > 0, got {width}")
        else:
            bounds = [offset + i * width for i in range(n + 1)]
    elif kind == "exponential_buckets":
        n = q.int("num_finite_buckets", minimum=0)
        growth = q.float("growth_factor")
        scale = q.float("scale")
        ok = True
        if n > MAX_FINITE_BUCKETS:
            q.error(q.raw("num_finite_buckets")[0], f"at most {MAX_FINITE_BUCKETS} buckets")
            ok = False
        if not scale > 0:
            q.error(q.raw("scale")[0], f"must be > 0, got {scale}")
            ok = False
        if not growth > 1:
            q.error(q.raw("growth_factor")[0], f"must be > 1, got {growth}")
            ok = False
        if ok:
            bounds = [scale * growth**i for i in range(n + 1)]
            if any(math.isinf(b) for b in bounds):
                q.error("", "bucket bounds overflow to infinity")
    else:
        key, raw = q.raw("bounds")
        if raw is None or (isinstance(raw, list) and not raw):
            q.error(key, "required: at least one bound")
        elif not isinstance(raw, list):
            q.error(key, f"expected a list of numbers, got {type(raw).__name__}")
        else:
            for j, b in enumerate(raw):
                if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
                    q.error(f"{key}[{j}]", f"expected a finite number, got {b!r}")
                elif bounds and not b > bounds[-1]:
                    q.error(f"{key}[{j}]", f"bounds must increase strictly ({b} follows {bounds[-1]})")
                else:
                    bounds.append(float(b))
    p.errors.extend(q.unknown_fields())
    p.errors.extend(p.unknown_fields())
    return tuple(bounds)


def _check_duplicates(p: Params, metrics: list[tuple[int, MetricConfig]]) -> None:
    """Two entries may export the same name only with the same definition (they then share it)."""
    seen: dict[str, tuple[int, MetricDefinition]] = {}
    key = p.raw("metrics")[0]
    for i, mc in metrics:
        d = mc.definition
        first = seen.get(d.name)
        if first is None:
            seen[d.name] = (i, d)
        elif first[1] != d:
            p.error(
                f"{key}[{i}]",
                f"metric '{d.name}' is defined twice differently: {first[1].describe()} "
                f"({key}[{first[0]}]) and {d.describe()}",
            )


def _parse_expiration(p: Params) -> ExpirationPolicy | None:
    if not p.has("metrics_expiration_policy"):
        return None
    e = p.child("metrics_expiration_policy")
    expiry = e.duration("metrics_expiry_duration")
    interval = e.duration("expiry_check_interval_duration")
    p.errors.extend(e.unknown_fields())
    if expiry <= _dt.timedelta(0):
        if not e.has("metrics_expiry_duration") or expiry == _dt.timedelta(0):
            e.error(
                e.raw("metrics_expiry_duration")[0], "must be > 0 when a metricsExpirationPolicy is given"
            )
        return None
    if interval <= _dt.timedelta(0):
        interval = expiry / 2
    return ExpirationPolicy(expiry.total_seconds(), interval.total_seconds())
