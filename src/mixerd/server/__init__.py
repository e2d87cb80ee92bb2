"""Process wiring: settings, the gRPC and HTTP servers, signals, shutdown.

:class:`Server` (and the runtime behind it) is imported on first use, so the supervisor of
``mixerd serve --workers N`` (:mod:`mixerd.server.workers`) runs without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mixerd.server.settings import Settings, add_arguments, parse_address

if TYPE_CHECKING:
    from mixerd.server.app import Server, default_config_text, protobuf_backend

__all__ = ["Server", "Settings", "add_arguments", "default_config_text", "parse_address", "protobuf_backend"]

_FROM_APP = ("Server", "default_config_text", "protobuf_backend")


def __getattr__(name: str) -> Any:
    if name in _FROM_APP:
        from mixerd.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'mixerd.server' has no attribute {name!r}")
