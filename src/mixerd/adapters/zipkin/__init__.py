"""The ``zipkin`` adapter: ``tracespan`` instances exported to a Zipkin collector as Zipkin JSON v2
(``POST /api/v2/spans``), or to an OpenTelemetry collector as OTLP/HTTP protobuf (``/v1/traces``).

Params are Mixer's (``url``, ``sampleProbability``) plus mixerd's export settings
(``exportFormat``, ``timeout``, ``maxQueueSize``, ``maxBatchSize``, ``flushInterval``); see
:mod:`mixerd.adapters.zipkin.config`. What a span becomes is in
:mod:`mixerd.adapters.zipkin.convert`; queueing, batching and what is dropped when in
:mod:`mixerd.adapters.zipkin.handler`.
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.zipkin.config import ExportFormat, ZipkinConfig, parse_config
from mixerd.adapters.zipkin.convert import (
    Span,
    http_trace_status,
    otlp_request,
    parse_span_id,
    parse_trace_id,
    sampled,
    span_of,
    tags_of,
    zipkin_json,
)
from mixerd.adapters.zipkin.handler import ZipkinBuilder, ZipkinHandler

__all__ = [
    "INFO",
    "ExportFormat",
    "Span",
    "ZipkinBuilder",
    "ZipkinConfig",
    "ZipkinHandler",
    "http_trace_status",
    "otlp_request",
    "parse_config",
    "parse_span_id",
    "parse_trace_id",
    "sampled",
    "span_of",
    "tags_of",
    "zipkin_json",
]

INFO: Final = Info(
    name="zipkin",
    description="Exports trace spans to Zipkin (JSON v2) or an OTLP/HTTP collector, batched off the request path.",
    templates=("tracespan",),
    builder=ZipkinBuilder,
    default_config={"sampleProbability": 0.0},
)
