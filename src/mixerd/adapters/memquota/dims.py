"""Dimension values as strings, as Mixer's ``adapter.Stringify`` writes them (pure).

Quota overrides are matched, and counters keyed, by the string form of each instance dimension:
an override ``{source.ip: "10.0.0.1"}`` matches an IP_ADDRESS dimension whose text is
``10.0.0.1``, and an absent dimension matches only ``""``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixerd.adapter import stringify

__all__ = ["CounterKey", "counter_key", "dimension_strings", "stringify"]

CounterKey = tuple[str, tuple[tuple[str, str], ...]]
"""A counter's identity: the quota name and its sorted ``(dimension, string value)`` pairs."""


def dimension_strings(dimensions: Mapping[str, Any]) -> dict[str, str]:
    """Every dimension as a string."""
    return {name: stringify(value) for name, value in dimensions.items()}


def counter_key(quota: str, dimensions: Mapping[str, str]) -> CounterKey:
    """The identity of the counter for ``quota`` and these (stringified) dimensions."""
    return (quota, tuple(sorted(dimensions.items())))
