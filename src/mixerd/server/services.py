"""The front-ends a server runs, built over one runtime."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mixerd.api.accesslog.convert import parse_reporter_kinds
from mixerd.api.accesslog.service import AccessLogService
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.runtime import Runtime
from mixerd.server.settings import Settings

__all__ = ["build_http_authz_app", "build_services"]


def build_services(runtime: Runtime, settings: Settings) -> list[Any]:
    """gRPC services, each with ``register(server)`` and optionally ``async aclose()``.

    Raises ``ValueError`` for a bad setting (the server refuses to start).
    """
    s = settings
    return [
        MixerService(runtime.dispatcher, runtime.reports),
        RateLimitService(
            runtime.dispatcher,
            shadow=s.ratelimit_shadow,
            shadow_domains=[d.strip() for d in s.ratelimit_shadow_domains.split(",")],
            failure_mode=s.ratelimit_failure_mode,
        ),
        AccessLogService(
            runtime.dispatcher,
            reporter_kinds=parse_reporter_kinds(s.accesslog_reporter_kinds),
            queue_entries=s.accesslog_queue_entries,
            batch_entries=s.accesslog_batch_entries,
            enqueue_timeout=s.accesslog_enqueue_timeout,
            drop=s.accesslog_drop,
            flush_timeout=min(5.0, s.drain_timeout),
        ),
    ]


def build_http_authz_app(runtime: Runtime, settings: Settings) -> web.Application | None:
    """The HTTP authorization endpoint, when a front-end provides one."""
    return None
