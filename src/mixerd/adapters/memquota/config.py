"""memquota params: reading, validation and the effective limit of a request (pure)."""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, InstanceInfo, Params
from mixerd.attribute import format_duration

__all__ = [
    "TICKS_PER_SECOND",
    "Limit",
    "MemQuotaConfig",
    "Override",
    "QuotaConfig",
    "parse_config",
]

TICKS_PER_SECOND: Final = 10
"""Rolling windows move in ticks of 100 ms (Mixer's ``ticksPerSecond``)."""

_TICK: Final = _dt.timedelta(seconds=1) / TICKS_PER_SECOND


@dataclass(frozen=True, slots=True)
class Limit:
    """What applies to one request: the maximum, how long a grant lives, and the window size in
    ticks (0 means an allocation counter that never expires)."""

    max_amount: int
    valid_duration: _dt.timedelta
    ticks: int

    @classmethod
    def of(cls, max_amount: int, valid_duration: _dt.timedelta) -> Limit:
        ticks = math.ceil(valid_duration / _TICK) if valid_duration > _dt.timedelta(0) else 0
        return cls(max_amount, valid_duration, ticks)


@dataclass(frozen=True, slots=True)
class Override:
    """A limit for instances whose dimensions (as strings) equal all of ``dimensions``."""

    dimensions: tuple[tuple[str, str], ...]
    limit: Limit

    def matches(self, dimensions: Mapping[str, str]) -> bool:
        return all(dimensions.get(name, "") == value for name, value in self.dimensions)


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    name: str
    limit: Limit
    overrides: tuple[Override, ...] = ()

    def limit_for(self, dimensions: Mapping[str, str]) -> Limit:
        """The first matching override's limit, else the quota's."""
        for override in self.overrides:
            if override.matches(dimensions):
                return override.limit
        return self.limit


@dataclass(frozen=True, slots=True)
class MemQuotaConfig:
    quotas: tuple[QuotaConfig, ...]
    min_deduplication_duration: _dt.timedelta = _dt.timedelta(seconds=1)


def parse_config(
    config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]
) -> tuple[MemQuotaConfig, list[ConfigError]]:
    """Read the params; return the config and every problem found (empty when it is good)."""
    p = Params(config)
    quotas: list[QuotaConfig] = []
    seen: dict[str, int] = {}
    for i, q in p.list("quotas"):
        name = q.str("name", required=True)
        max_amount = q.int("max_amount", minimum=0)
        valid_duration = q.duration("valid_duration")
        limit = Limit.of(max_amount, valid_duration)
        overrides: list[Override] = []
        for _, o in q.list("overrides"):
            dims = o.str_map("dimensions")
            o_max = o.int("max_amount", minimum=0)
            # An override without validDuration keeps the quota's window (Mixer would make it a
            # never-expiring counter); an explicit "0s" still asks for a counter.
            o_duration = o.duration("valid_duration", default=valid_duration)
            o.errors.extend(o.unknown_fields())
            overrides.append(Override(tuple(sorted(dims.items())), Limit.of(o_max, o_duration)))
        q.errors.extend(q.unknown_fields())
        if name:
            if name in seen:
                q.error("name", f"duplicate quota name {name!r} (also quotas[{seen[name]}])")
            else:
                seen[name] = i
        quotas.append(QuotaConfig(name, limit, tuple(overrides)))

    min_dedup = p.duration("min_deduplication_duration", default=_dt.timedelta(seconds=1))
    if min_dedup == _dt.timedelta(0):  # negative durations were already reported by Params
        p.error(
            "minDeduplicationDuration",
            f"deduplication window of {format_duration(min_dedup)} is invalid, must be > 0",
        )
    errors = p.errors + p.unknown_fields()
    for instance in sorted({info.name for info in instances.values()}):
        if instance not in seen:
            errors.append(ConfigError("quotas", f"did not find limit defined for quota {instance}"))
    return MemQuotaConfig(tuple(quotas), min_dedup), errors
