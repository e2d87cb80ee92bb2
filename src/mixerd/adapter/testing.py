"""A harness for adapter tests: build a handler from config and instances as the runtime would,
then drive it with attribute dicts and a manual clock. Third-party adapter authors use it too::

    from mixerd.adapter.testing import AdapterHarness

    async def test_denies():
        h = AdapterHarness(MY_INFO, config={...},
                           instances={"entry": ("listentry", {"value": "source.name"})})
        result = await h.check("entry", {"source.name": "bob"})
        assert result.status.code == Code.PERMISSION_DENIED
        await h.close()
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from mixerd.adapter.env import Env, ManualClock
from mixerd.adapter.registry import get_adapter
from mixerd.adapter.results import CheckResult, QuotaArgs, QuotaResult
from mixerd.adapter.sdk import ConfigError, Info, InstanceInfo, handler_method
from mixerd.attribute import ValueType, stock_manifest
from mixerd.templates import TEMPLATES, InstanceBuilder, Variety, compile_instance

__all__ = ["AdapterHarness", "HarnessConfigError", "ManualClock", "call"]


class HarnessConfigError(ValueError):
    """The handler config did not validate; ``errors`` lists the problems."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)


async def call(fn: Any, *args: Any) -> Any:
    """Call a handler method that may be sync or async."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class AdapterHarness:
    """One handler under test. ``instances`` maps a short instance name to ``(template, params)``."""

    def __init__(
        self,
        adapter: Info | str,
        config: Mapping[str, Any] | None = None,
        instances: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
        *,
        manifest: Mapping[str, ValueType] | None = None,
        clock: ManualClock | None = None,
        namespace: str = "istio-system",
        services: Mapping[str, object] | None = None,
    ) -> None:
        self.info = get_adapter(adapter) if isinstance(adapter, str) else adapter
        self.clock = clock or ManualClock()
        manifest = manifest if manifest is not None else stock_manifest()
        self.builders: dict[str, InstanceBuilder] = {}
        for short, (template, params) in (instances or {}).items():
            self.builders[short] = compile_instance(
                f"{short}.instance.{namespace}", template, params, manifest
            )
        infos = {b.name: InstanceInfo(b.name, b.template.name, dict(b.types)) for b in self.builders.values()}
        builder = self.info.builder(dict(config or {}), infos)
        errors = builder.validate()
        if errors:
            raise HarnessConfigError(errors)
        self.env = Env(f"{self.info.name}.handler.{namespace}", clock=self.clock, services=services)
        self.handler = builder.build(self.env)

    @staticmethod
    def validate(
        adapter: Info | str,
        config: Mapping[str, Any],
        instances: Mapping[str, InstanceInfo] | None = None,
    ) -> list[ConfigError]:
        info = get_adapter(adapter) if isinstance(adapter, str) else adapter
        return info.builder(config, instances or {}).validate()

    def instance(self, name: str, attributes: Mapping[str, Any]) -> Any:
        return self.builders[name].build(attributes)

    async def check(self, name: str, attributes: Mapping[str, Any]) -> CheckResult:
        b = self.builders[name]
        method = getattr(self.handler, handler_method(b.template.name))
        return await call(method, b.build(attributes))  # type: ignore[no-any-return]

    async def quota(
        self, name: str, attributes: Mapping[str, Any], args: QuotaArgs | None = None
    ) -> QuotaResult:
        b = self.builders[name]
        return await call(self.handler.handle_quota, b.build(attributes), args or QuotaArgs())  # type: ignore[no-any-return]

    async def report(self, name: str, bags: Sequence[Mapping[str, Any]]) -> None:
        b = self.builders[name]
        await call(getattr(self.handler, handler_method(b.template.name)), [b.build(a) for a in bags])

    async def generate(self, name: str, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        b = self.builders[name]
        if TEMPLATES[b.template.name].variety is not Variety.ATTRIBUTE_GENERATOR:
            raise TypeError(f"{b.template.name} is not an attribute generator template")
        method = getattr(self.handler, handler_method(b.template.name, True))
        return await call(method, b.build(attributes))  # type: ignore[no-any-return]

    async def close(self) -> None:
        close = getattr(self.handler, "close", None)
        if close is not None:
            await call(close)
        await self.env.aclose()
