"""The front-ends a server runs, built over one runtime."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mixerd.api.mixer_v1.service import MixerService
from mixerd.runtime import Runtime

__all__ = ["build_http_authz_app", "build_services"]


def build_services(runtime: Runtime) -> list[Any]:
    """gRPC services, each with ``register(server)`` and optionally ``async aclose()``."""
    return [MixerService(runtime.dispatcher, runtime.reports)]


def build_http_authz_app(runtime: Runtime) -> web.Application | None:
    """The HTTP authorization endpoint, when a front-end provides one."""
    return None
