"""The dogstatsd handler's params (Mixer's ``adapter.dogstatsd.config.Params``), read field by field,
and Mixer's checks of them against the metric instances the rules send to the handler.

================  ========================================================================
``address``       ``host:port`` of the DogStatsD agent (default ``localhost:8125``)
``prefix``        prepended to every metric name, with a ``.`` added if it has none
                  (default ``istio.``; empty: no prefix)
``bufferLength``  lines sent together: 0 (default) sends each line at once; N > 0 sends
                  when N lines are waiting or every 100 ms, in datagrams of at most
                  1432 bytes (Mixer's client)
``globalTags``    tags on every line (map: ``env: prod`` -> ``env:prod``)
``sampleRate``    chance that a value is sent, in [0, 1] (default 1); ``|@rate`` below 1
``metrics``       metric instance name (FQN) -> ``name`` (the DataDog metric name),
                  ``type`` (COUNTER, GAUGE or DISTRIBUTION) and ``tags`` (map)
================  ========================================================================

Validation (Mixer's): every metric instance a rule sends here needs an entry in ``metrics``, and
every entry must name such an instance; COUNTER and GAUGE need INT64 values, DISTRIBUTION a
DURATION or INT64 value; the type must be set.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from mixerd.adapter import ConfigError, InstanceInfo, Params
from mixerd.adapter.udp import split_host_port
from mixerd.attribute import ValueType

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_PREFIX",
    "DogstatsdConfig",
    "MetricConfig",
    "MetricType",
    "parse_config",
]

DEFAULT_ADDRESS: Final = "localhost:8125"
DEFAULT_PREFIX: Final = "istio."


class MetricType(enum.Enum):
    UNKNOWN_TYPE = 0
    COUNTER = 1
    GAUGE = 2
    DISTRIBUTION = 3


@dataclass(frozen=True, slots=True)
class MetricConfig:
    instance_name: str
    name: str
    type: MetricType
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DogstatsdConfig:
    address: str
    prefix: str
    buffer_length: int
    global_tags: Mapping[str, str]
    sample_rate: float
    metrics: Mapping[str, MetricConfig]


def _value_type(info: InstanceInfo) -> ValueType | None:
    return info.types.get("value")


def parse_config(
    config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]
) -> tuple[DogstatsdConfig, list[ConfigError]]:
    p = Params(config)
    key = p.raw("address")[0]
    address = p.str("address", DEFAULT_ADDRESS)
    if not address:
        p.error(key, "address is empty")
    else:
        try:
            split_host_port(address)
        except ValueError as exc:
            p.error(key, f"address is malformed: {exc}")
    prefix = p.str("prefix", DEFAULT_PREFIX)
    if prefix and not prefix.endswith("."):
        prefix += "."
    buffer_length = p.int("buffer_length", 0)
    if buffer_length < 0:
        p.error(p.raw("buffer_length")[0], "buffer length must be >= 0")
    global_tags = p.str_map("global_tags")
    rate = p.float("sample_rate", 1.0)
    if not 0 <= rate <= 1:
        p.error(p.raw("sample_rate")[0], f"sampling rate must be between 0 and 1, got {rate:g}")

    metric_instances = {n: i for n, i in instances.items() if i.template == "metric"}
    metrics: dict[str, MetricConfig] = {}
    mkey, raw = p.raw("metrics")
    if raw is not None and not isinstance(raw, Mapping):
        p.error(mkey, f"expected a map of metric instance name -> info, got {type(raw).__name__}")
        raw = None
    for raw_name in raw or {}:
        name = str(raw_name)
        m = Params(raw[raw_name], f"{mkey}.{name}", p.errors)
        before = len(p.errors)
        mtype = m.enum("type", MetricType, MetricType.UNKNOWN_TYPE)
        tags = m.str_map("tags")
        mname = m.str("name") or name
        p.errors.extend(m.unknown_fields())
        metrics[name] = MetricConfig(name, mname, mtype, MappingProxyType(tags))
        info = metric_instances.get(name)
        if info is None:
            m.error(
                "",
                f"{name} is not a valid metric that can be emitted (no rule sends this metric instance here)",
            )
            continue
        if len(p.errors) > before:
            continue
        value = _value_type(info)
        tpath = m.raw("type")[0]
        if mtype in (MetricType.COUNTER, MetricType.GAUGE):
            if value is not None and value is not ValueType.INT64:
                m.error(tpath, f"Counters and Gauges must be an Int64 but metric {name} is a {value.name}")
        elif mtype is MetricType.DISTRIBUTION:
            if value is not None and value not in (ValueType.DURATION, ValueType.INT64):
                m.error(
                    tpath,
                    f"Histograms must be either a Duration or an Int64 but metric {name} is a {value.name}",
                )
        else:
            m.error(tpath, "required: COUNTER, GAUGE or DISTRIBUTION")
    for name in metric_instances:
        if name not in metrics:
            p.error(
                mkey, f"{name} is a valid metric but is not configured to be handled by the datadog adapter"
            )
    errors = p.errors + p.unknown_fields()
    cfg = DogstatsdConfig(
        address=address,
        prefix=prefix,
        buffer_length=max(0, buffer_length),
        global_tags=MappingProxyType(global_tags),
        sample_rate=rate,
        metrics=MappingProxyType(metrics),
    )
    return cfg, errors
