"""The statsd builder and handler: metric instances -> StatsD lines, batched into UDP datagrams.

Lines are ``<prefix>.<name>:<value>|<type>[|@<rate>]``: COUNTER ``|c`` and GAUGE ``|g`` take
integer values; DISTRIBUTION sends a duration as a timer in milliseconds (``|ms``, Go's shortest
decimal form) and an integer as a counter (``|c``), as Mixer's adapter did. The rate suffix has
six decimals (``|@0.500000``), as Mixer's client wrote it.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, RateLimitedWarning, stringify
from mixerd.adapter.udp import UdpLineSender
from mixerd.adapter.values import format_float_f
from mixerd.adapters.statsd.config import MetricConfig, MetricType, StatsdConfig, parse_config
from mixerd.attribute import logsafe

__all__ = ["StatsdBuilder", "StatsdHandler", "duration_ms", "rate_suffix", "safe_name"]

_UNSAFE: Final = str.maketrans({":": "_", "|": "_", "@": "_", "\n": "_", "\r": "_"})
_WARN_INTERVAL: Final = 60.0
_MICROS_PER_MS: Final = 1000


def safe_name(name: str) -> str:
    """A rendered name with the characters that would break the line format (``:``, ``|``,
    ``@``, newlines) replaced by ``_``."""
    return name.translate(_UNSAFE)


def duration_ms(value: _dt.timedelta) -> str:
    """Milliseconds as Go's ``strconv.FormatFloat(ms, 'f', -1, 64)`` (``146``, ``0.5``)."""
    micros = value // _dt.timedelta(microseconds=1)
    if micros % _MICROS_PER_MS == 0:
        return str(micros // _MICROS_PER_MS)
    return format_float_f(micros / _MICROS_PER_MS)


def rate_suffix(rate: float) -> str:
    """``|@0.500000`` for a rate below 1 (six decimals, as Mixer's client), else nothing."""
    return f"|@{rate:.6f}" if rate < 1 else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class StatsdHandler(Handler):
    """Sends each metric instance named in ``metrics`` as one StatsD line."""

    def __init__(
        self,
        config: StatsdConfig,
        env: Env,
        metrics: Mapping[str, MetricConfig],
        sender: UdpLineSender,
    ) -> None:
        self.config = config
        self.sender = sender
        self._env = env
        self._metrics = metrics
        self._prefix = config.prefix + "." if config.prefix else ""
        self._rate = config.sampling_rate
        self._suffix = rate_suffix(config.sampling_rate)
        self.random: Callable[[], float] = random.random
        """Source of sampling decisions (tests replace it)."""
        self.errors = 0
        """Instances not sent because their value does not suit the metric's type."""
        self._bad_values = RateLimitedWarning(env.clock, _WARN_INTERVAL, logger=env.logger)

    def handle_metric(self, instances: Sequence[Any]) -> None:
        rate = self._rate
        for inst in instances:
            m = self._metrics.get(inst.name)
            if m is None:
                continue
            if rate < 1 and not self.random() < rate:
                continue
            line = self._line(m, inst.value, inst.dimensions)
            if line is None:
                self._bad_value(inst.name, m, inst.value)
                continue
            self.sender.add(line.encode())

    def _line(self, m: MetricConfig, value: Any, dimensions: Mapping[str, Any]) -> str | None:
        mtype = m.type
        if mtype is MetricType.DISTRIBUTION and isinstance(value, _dt.timedelta):
            text, kind = duration_ms(value), "|ms"
        elif _is_int(value):
            text, kind = str(int(value)), "|g" if mtype is MetricType.GAUGE else "|c"
        else:
            return None
        name = m.instance_name if m.template is None else safe_name(m.template.render(dimensions, stringify))
        return f"{self._prefix}{name}:{text}{kind}{self._suffix}"

    def _bad_value(self, name: str, m: MetricConfig, value: Any) -> None:
        self.errors += 1
        self._env.dropped(1, "bad_value")
        want = "an integer or a duration" if m.type is MetricType.DISTRIBUTION else "an integer"
        self._bad_values.add(
            1,
            f"statsd: could not record {m.type.name.lower()} metric '{name}': expected {want} value, "
            f"got {logsafe(repr(value))}",
        )

    async def close(self) -> None:
        await self.sender.close()


class StatsdBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed, self.errors = parse_config(config, instances)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> StatsdHandler:
        cfg = self.parsed
        metrics: dict[str, MetricConfig] = {}
        for name, m in cfg.metrics.items():
            if self.instances and name not in self.instances:
                env.logger.info("statsd: metrics has an entry for '%s', which no rule sends here", name)
                continue
            metrics[name] = m
        for name, info in self.instances.items():
            if info.template == "metric" and name not in metrics:
                env.logger.info("statsd: instance '%s' has no entry in metrics; it is not sent", name)
        sender = UdpLineSender(
            env,
            cfg.address,
            max_packet_bytes=cfg.flush_bytes,
            flush_interval=cfg.flush_duration.total_seconds(),
        )
        return StatsdHandler(cfg, env, metrics, sender)
