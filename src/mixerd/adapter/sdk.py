"""The adapter contract.

An adapter is described by an :class:`Info` and registered as an entry point of the group
``mixerd.adapters`` (``name = "package.module:INFO"``). For each handler resource the runtime

1. creates a :class:`Builder` with the handler's ``params`` and the instances the rules send it,
2. calls :meth:`Builder.validate`, which returns *every* problem with its field path (an empty
   list means the config is good), and only then
3. calls :meth:`Builder.build` with an :class:`Env`, which returns the handler object.

Handlers receive instances through methods named after the template (sync ``def`` or
``async def``; the runtime looks once and calls sync methods inline):

================================  ==============================================================
variety                           method
================================  ==============================================================
CHECK (listentry, checknothing..)  ``handle_<template>(instance) -> CheckResult``
REPORT (metric, logentry ...)      ``handle_<template>(instances: Sequence[instance]) -> None``
QUOTA (quota)                      ``handle_quota(instance, args: QuotaArgs) -> QuotaResult``
ATTRIBUTE_GENERATOR (kubernetes)   ``generate_<template>(instance) -> Mapping[str, Any]`` (outputs)
================================  ==============================================================

and ``close()`` (sync or async) when the runtime retires them. The runtime owns batching,
deadlines and error containment: an exception from a handler becomes an error status for that
call and never reaches the server.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixerd.adapter.env import Env
from mixerd.attribute import ValueType

__all__ = ["Builder", "ConfigError", "Handler", "Info", "InstanceInfo", "handler_method"]


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a handler's params: ``path`` is relative to ``params`` (``quotas[0].maxAmount``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What a builder learns about one instance the handler will receive."""

    name: str
    """Fully qualified instance name (``requestcount.instance.istio-system``)."""
    template: str
    types: Mapping[str, ValueType] = field(default_factory=dict)
    """Inferred type of each instance field expression, by path (``value``, ``dimensions.source``)."""


class Handler:
    """Base class for handlers (optional: any object with the right methods works)."""

    def close(self) -> Any:
        """Release resources. May be ``async``."""
        return None


class Builder(abc.ABC):
    """Validates a handler's config, then builds the handler."""

    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        self.config = config
        self.instances = instances

    @abc.abstractmethod
    def validate(self) -> list[ConfigError]:
        """Every problem of the config (empty when it is good). Must not do I/O."""

    @abc.abstractmethod
    def build(self, env: Env) -> Any:
        """Create the handler. Called only after :meth:`validate` returned no errors."""


@dataclass(frozen=True, slots=True)
class Info:
    """An adapter: its name, what it does, the templates it handles and how to build it."""

    name: str
    description: str
    templates: tuple[str, ...]
    builder: Callable[[Mapping[str, Any], Mapping[str, InstanceInfo]], Builder]
    default_config: Mapping[str, Any] = field(default_factory=dict)


def handler_method(template: str, variety_is_generator: bool = False) -> str:
    """The method name a handler implements for ``template``."""
    return f"generate_{template}" if variety_is_generator else f"handle_{template}"
