"""The front-ends a server runs, built over one runtime."""

from __future__ import annotations

from typing import Any

from mixerd.api.accesslog.convert import parse_reporter_kinds
from mixerd.api.accesslog.service import AccessLogService
from mixerd.api.decisions import recorder_of
from mixerd.api.ext_authz import ExtAuthzService, HttpAuthzOptions, HttpAuthzServer, build_http_authz_server
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.mixer_v1.wire import RequestLimits
from mixerd.api.otlp import OtlpService, SpanSink
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.runtime import Runtime
from mixerd.server.settings import Settings

__all__ = ["build_services", "http_authz_server"]


def build_services(
    runtime: Runtime,
    settings: Settings,
    console_sink: SpanSink | None = None,
    *,
    caller_identity: bool = False,
) -> list[Any]:
    """gRPC services, each with ``register(server)`` and optionally ``async aclose()``. The OTLP
    receiver is among them only with a ``console_sink`` (the console is on).

    ``caller_identity``: the listener requires client certificates, so every service reads the
    caller's SPIFFE ID into ``mixerd.caller.principal``. Raises ``ValueError`` for a bad setting
    (the server refuses to start).
    """
    s = settings
    services: list[Any] = [
        MixerService(
            runtime.dispatcher,
            limits=RequestLimits(
                words=s.max_request_words,
                attributes=s.max_attributes,
                report_sets=s.max_report_sets,
                map_entries=s.max_map_entries,
                decoded_values=s.max_decoded_values,
            ),
            caller_identity=caller_identity,
            recorder=recorder_of(runtime),
        ),
        ExtAuthzService(runtime, caller_identity=caller_identity),
        RateLimitService(
            runtime.dispatcher,
            shadow=s.ratelimit_shadow,
            shadow_domains=[d.strip() for d in s.ratelimit_shadow_domains.split(",")],
            failure_mode=s.ratelimit_failure_mode,
            caller_identity=caller_identity,
            recorder=recorder_of(runtime),
        ),
        AccessLogService(
            runtime.dispatcher,
            reporter_kinds=parse_reporter_kinds(s.accesslog_reporter_kinds),
            queue_entries=s.accesslog_queue_entries,
            batch_entries=s.accesslog_batch_entries,
            enqueue_timeout=s.accesslog_enqueue_timeout,
            drop=s.accesslog_drop,
            flush_timeout=min(5.0, s.drain_timeout),
            caller_identity=caller_identity,
        ),
    ]
    if console_sink is not None:
        services.append(
            OtlpService(console_sink, metrics=runtime.dispatcher.metrics, clock=runtime.dispatcher.clock)
        )
    return services


def http_authz_server(
    runtime: Runtime, settings: Settings, *, caller_identity: bool = False
) -> HttpAuthzServer:
    """The HTTP authorization endpoint (Envoy http_service, nginx auth_request, Traefik ForwardAuth);
    ``caller_identity`` as for :func:`build_services`."""
    options = HttpAuthzOptions(
        prefix=settings.http_authz_prefix,
        extension_headers=settings.http_authz_extension_headers,
        read_timeout=settings.http_authz_read_timeout,
        max_connections=settings.http_authz_max_connections,
        caller_identity=caller_identity,
    )
    return build_http_authz_server(runtime, options)
