"""Envoy's gRPC access-log service (``envoy.service.accesslog.v3.AccessLogService``) into the
Report path: ``convert`` (entries -> attribute bags, pure) and ``service`` (the servicer, with a
bounded queue and one dispatch worker).

The attribute mapping is documented in :mod:`mixerd.api.accesslog.convert`.
"""

from mixerd.api.accesslog.convert import (
    Converted,
    StreamContext,
    StreamState,
    TcpBytes,
    convert_http,
    convert_message,
    convert_tcp,
    parse_reporter_kinds,
    stream_context,
)

__all__ = [
    "Converted",
    "StreamContext",
    "StreamState",
    "TcpBytes",
    "convert_http",
    "convert_message",
    "convert_tcp",
    "parse_reporter_kinds",
    "stream_context",
]
