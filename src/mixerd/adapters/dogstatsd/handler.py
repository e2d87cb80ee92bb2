"""The dogstatsd builder and handler: metric instances -> DogStatsD lines over UDP.

A line is ``<prefix><name>:<value>|<type>[|@<rate>][|#<tags>]``, as Mixer's DataDog client wrote
it: COUNTER ``456|c``; GAUGE ``123.000000|g``; DISTRIBUTION of a duration a timer in milliseconds
(``146.000000|ms``), of an integer a histogram (``3459.000000|h``). Tags are the global tags, then
the metric's tags with the instance's dimensions over them (a dimension wins over a metric tag of
the same name), each as ``key:value`` with newlines removed; both groups are sorted by key (Mixer
wrote them in Go's random map order).
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo, RateLimitedWarning, stringify
from mixerd.adapter.udp import UdpLineSender
from mixerd.adapter.values import format_float_f
from mixerd.adapters.dogstatsd.config import DogstatsdConfig, MetricConfig, MetricType, parse_config
from mixerd.attribute import logsafe

__all__ = ["OPTIMAL_PAYLOAD_BYTES", "DogstatsdBuilder", "DogstatsdHandler", "format_tags"]

OPTIMAL_PAYLOAD_BYTES: Final = 1432
"""Largest datagram of a buffered client (Mixer's DataDog client's ``OptimalPayloadSize``)."""
BUFFERED_FLUSH_INTERVAL: Final = 0.1
_WARN_INTERVAL: Final = 60.0


def _tag(key: str, value: str) -> str:
    return f"{key}:{value}".replace("\n", "")


def format_tags(global_tags: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """``|#a:1,b:2`` (global tags first, each group sorted by key), or nothing without tags."""
    items = [_tag(k, global_tags[k]) for k in sorted(global_tags)]
    items += [_tag(k, tags[k]) for k in sorted(tags)]
    return "|#" + ",".join(items) if items else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DogstatsdHandler(Handler):
    def __init__(
        self,
        config: DogstatsdConfig,
        env: Env,
        metrics: Mapping[str, MetricConfig],
        sender: UdpLineSender,
    ) -> None:
        self.config = config
        self.sender = sender
        self._env = env
        self._metrics = metrics
        self._global = config.global_tags
        self._rate = config.sample_rate
        self._rate_text = "|@" + format_float_f(config.sample_rate) if config.sample_rate < 1 else ""
        self.random: Callable[[], float] = random.random
        """Source of sampling decisions (tests replace it)."""
        self.errors = 0
        """Instances not sent because their value does not suit the metric's type."""
        self._bad_values = RateLimitedWarning(env.clock, _WARN_INTERVAL, logger=env.logger)

    def handle_metric(self, instances: Sequence[Any]) -> None:
        rate = self._rate
        prefix = self.config.prefix
        for inst in instances:
            m = self._metrics.get(inst.name)
            if m is None:
                continue
            if rate < 1 and self.random() > rate:
                continue
            value = self._value(m.type, inst.value)
            if value is None:
                self._bad_value(inst.name, m, inst.value)
                continue
            tags = dict(m.tags)
            for k, v in inst.dimensions.items():
                tags[k] = stringify(v)
            line = f"{prefix}{m.name}:{value}{self._rate_text}{format_tags(self._global, tags)}"
            self.sender.add(line.encode())

    @staticmethod
    def _value(mtype: MetricType, value: Any) -> str | None:
        if mtype is MetricType.COUNTER and _is_int(value):
            return f"{int(value)}|c"
        if mtype is MetricType.GAUGE and _is_int(value):
            return f"{float(value):.6f}|g"
        if mtype is MetricType.DISTRIBUTION:
            if isinstance(value, _dt.timedelta):
                return f"{value.total_seconds() * 1000:.6f}|ms"
            if _is_int(value):
                return f"{float(value):.6f}|h"
        return None

    def _bad_value(self, name: str, m: MetricConfig, value: Any) -> None:
        self.errors += 1
        self._env.dropped(1, "bad_value")
        self._bad_values.add(
            1,
            f"dogstatsd: could not record {m.type.name.lower()} metric '{name}' from value "
            f"{logsafe(repr(value))}",
        )

    async def close(self) -> None:
        await self.sender.close()


class DogstatsdBuilder(Builder):
    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.parsed, self.errors = parse_config(config, instances)

    def validate(self) -> list[ConfigError]:
        return list(self.errors)

    def build(self, env: Env) -> DogstatsdHandler:
        cfg = self.parsed
        buffered = cfg.buffer_length > 0
        sender = UdpLineSender(
            env,
            cfg.address,
            max_packet_bytes=OPTIMAL_PAYLOAD_BYTES,
            flush_interval=BUFFERED_FLUSH_INTERVAL,
            max_lines=cfg.buffer_length if buffered else 1,
        )
        return DogstatsdHandler(cfg, env, cfg.metrics, sender)
