"""Finding adapters: every adapter, built-in or third-party, is an entry point of ``mixerd.adapters``."""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Final

from mixerd.adapter.sdk import Info

__all__ = ["ENTRY_POINT_GROUP", "AdapterNotFound", "get_adapter", "load_adapters"]

ENTRY_POINT_GROUP: Final = "mixerd.adapters"
_log = logging.getLogger(__name__)


class AdapterNotFound(LookupError):
    """No adapter of that name is installed."""


@functools.cache
def load_adapters() -> MappingProxyType[str, Info]:
    """Load every adapter once. A broken entry point is logged and left out, not fatal."""
    found: dict[str, Info] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            info = ep.load()
        except Exception:
            _log.exception("could not load adapter entry point %s = %s", ep.name, ep.value)
            continue
        if not isinstance(info, Info):
            _log.error("entry point %s = %s is not a mixerd.adapter.Info", ep.name, ep.value)
            continue
        if info.name != ep.name:
            _log.warning("adapter entry point %s names adapter %s; using %s", ep.name, info.name, ep.name)
        found[ep.name] = info
    return MappingProxyType(found)


def get_adapter(name: str) -> Info:
    adapters = load_adapters()
    info = adapters.get(name)
    if info is None:
        known = ", ".join(sorted(adapters)) or "none"
        raise AdapterNotFound(
            f"no adapter named '{name}' in entry-point group '{ENTRY_POINT_GROUP}' (installed: {known})"
        )
    return info
