"""The statsd handler's params (Mixer's ``adapter.statsd.config.Params``), read field by field.

=====================  ===================================================================
``address``            ``host:port`` of the StatsD server (default ``localhost:8125``)
``prefix``             prepended to every metric name with a dot (default: none)
``flushDuration``      longest time a line waits before its datagram is sent (300 ms;
                       0 means the default; negative is an error)
``flushBytes``         largest datagram (512; 0 or less means 512, as in Mixer;
                       negative is an error, as in Mixer's validation)
``samplingRate``       chance that a value is sent, ``|@rate`` on the line when below 1
                       (default 1; negative is an error; above 1 is 1)
``metrics``            metric instance name (FQN, ``requestcount.instance.istio-system``)
                       -> ``type`` (COUNTER, GAUGE or DISTRIBUTION, required) and
                       ``nameTemplate`` (the ``{{.dimension}}`` subset of Go templates)
=====================  ===================================================================
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from mixerd.adapter import ConfigError, InstanceInfo, Params
from mixerd.adapter.udp import split_host_port

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_FLUSH_BYTES",
    "DEFAULT_FLUSH_DURATION",
    "MetricConfig",
    "MetricType",
    "NameTemplate",
    "StatsdConfig",
    "parse_config",
    "parse_name_template",
]

DEFAULT_ADDRESS: Final = "localhost:8125"
DEFAULT_FLUSH_DURATION: Final = _dt.timedelta(milliseconds=300)
DEFAULT_FLUSH_BYTES: Final = 512


class MetricType(enum.Enum):
    UNKNOWN = 0
    COUNTER = 1
    GAUGE = 2
    DISTRIBUTION = 3


NO_VALUE: Final = "<no value>"
"""What Go's text/template prints for a map key that is not there."""

_ACTION_RE: Final = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_FIELD_RE: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class NameTemplate:
    """A parsed name template: literal text and dimension names, alternating (``parts[0]`` text,
    ``parts[1]`` a dimension, ``parts[2]`` text ...)."""

    source: str
    parts: tuple[str, ...]

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def render(self, dimensions: Mapping[str, Any], text: Any) -> str:
        """The name for these dimension values; ``text(value)`` formats one value."""
        parts = self.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            name = parts[i]
            out.append(text(dimensions[name]) if name in dimensions else NO_VALUE)
            out.append(parts[i + 1])
        return "".join(out)


def parse_name_template(source: str) -> NameTemplate:
    """Parse the supported subset of Go's text/template: literal text and ``{{.dimension}}``
    actions (blanks inside the braces and the ``{{-``/``-}}`` trim markers allowed). Anything else
    (pipelines, functions, ``if``/``range``, comments, ``{{.}}``, nested fields) raises
    ValueError naming it."""
    parts: list[str] = []
    text: list[str] = []
    pos = 0
    trim_next = False
    for m in _ACTION_RE.finditer(source):
        literal = source[pos : m.start()]
        if trim_next:
            literal = literal.lstrip()
        if m.group(1):
            literal = literal.rstrip()
        text.append(literal)
        body = m.group(2)
        field = _FIELD_RE.fullmatch(body)
        if field is None:
            raise ValueError(
                f"unsupported action {{{{{body}}}}}: mixerd supports only {{{{.dimension}}}} in name templates "
                "(no functions, pipelines, conditions or nested fields)"
            )
        parts.append("".join(text))
        parts.append(field.group(1))
        text = []
        trim_next = bool(m.group(3))
        pos = m.end()
    rest = source[pos:]
    if trim_next:
        rest = rest.lstrip()
    if "{{" in rest:
        raise ValueError("unclosed action: '{{' without a matching '}}'")
    text.append(rest)
    parts.append("".join(text))
    return NameTemplate(source, tuple(parts))


@dataclass(frozen=True, slots=True)
class MetricConfig:
    instance_name: str
    type: MetricType
    template: NameTemplate | None


@dataclass(frozen=True, slots=True)
class StatsdConfig:
    address: str
    prefix: str
    flush_duration: _dt.timedelta
    flush_bytes: int
    sampling_rate: float
    metrics: Mapping[str, MetricConfig]


def parse_address(p: Params, default: str) -> str:
    address = p.str("address", default)
    key = p.raw("address")[0]
    if not address:
        p.error(key, "address is empty")
        return address
    try:
        split_host_port(address)
    except ValueError as exc:
        p.error(key, f"address is malformed: {exc}")
    return address


def parse_config(
    config: Mapping[str, Any], instances: Mapping[str, InstanceInfo] | None = None
) -> tuple[StatsdConfig, list[ConfigError]]:
    p = Params(config)
    address = parse_address(p, DEFAULT_ADDRESS)
    prefix = p.str("prefix")
    flush = p.duration("flush_duration", DEFAULT_FLUSH_DURATION)
    if flush <= _dt.timedelta(0):
        flush = DEFAULT_FLUSH_DURATION
    flush_bytes = p.int("flush_bytes", DEFAULT_FLUSH_BYTES, minimum=0)
    if flush_bytes <= 0:
        flush_bytes = DEFAULT_FLUSH_BYTES
    rate = p.float("sampling_rate", 1.0)
    if rate < 0:
        p.error(p.raw("sampling_rate")[0], f"sampling rate must be >= 0, got {rate:g}")
    metrics: dict[str, MetricConfig] = {}
    key, raw = p.raw("metrics")
    if raw is not None and not isinstance(raw, Mapping):
        p.error(key, f"expected a map of metric instance name -> info, got {type(raw).__name__}")
    elif raw is not None:
        for name in raw:
            m = Params(raw[name], f"{key}.{name}", p.errors)
            before = len(p.errors)
            mtype = m.enum("type", MetricType, MetricType.UNKNOWN)
            if mtype is MetricType.UNKNOWN and len(p.errors) == before:
                m.error(m.raw("type")[0], "required: COUNTER, GAUGE or DISTRIBUTION")
            source = m.str("name_template")
            template = None
            if source:
                try:
                    template = parse_name_template(source)
                except ValueError as exc:
                    m.error(m.raw("name_template")[0], f"cannot use template {source!r}: {exc}")
            info = (instances or {}).get(str(name))
            if info is not None and info.template != "metric":
                m.error("", f"instance '{name}' is a {info.template}, not a metric")
            p.errors.extend(m.unknown_fields())
            metrics[str(name)] = MetricConfig(str(name), mtype, template)
    errors = p.errors + p.unknown_fields()
    cfg = StatsdConfig(
        address=address,
        prefix=prefix,
        flush_duration=flush,
        flush_bytes=flush_bytes,
        sampling_rate=min(rate, 1.0),
        metrics=MappingProxyType(metrics),
    )
    return cfg, errors
