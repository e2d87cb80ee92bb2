"""The zipkin handler's params: Mixer's ``adapter.zipkin.config.Params`` plus mixerd's export
settings, read field by field.

=====================  ===================================================================
``url``                where spans are POSTed: a Zipkin collector's ``/api/v2/spans``
                       (``http://zipkin:9411/api/v2/spans``), or with ``exportFormat:
                       OTLP_PROTOBUF`` an OTLP/HTTP receiver's ``/v1/traces``; required
``sampleProbability``  share of traces exported, 0 to 1 (Mixer's; 0, the default, exports
                       nothing: tracing off)
``exportFormat``       mixerd: ``ZIPKIN_JSON`` (default; Zipkin JSON v2) or ``OTLP_PROTOBUF``
                       (OpenTelemetry's ``ExportTraceServiceRequest``)
``timeout``            mixerd: longest a POST may take (default 5 s); a batch not sent in time
                       is dropped
``maxQueueSize``       mixerd: spans waiting to be sent before new ones are dropped (2048)
``maxBatchSize``       mixerd: spans per POST at most (512)
``flushInterval``      mixerd: how often waiting spans are sent (default 1 s)
=====================  ===================================================================
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from mixerd.adapter import ConfigError, Params

__all__ = ["ExportFormat", "ZipkinConfig", "parse_config"]

DEFAULT_TIMEOUT: Final = _dt.timedelta(seconds=5)
DEFAULT_FLUSH_INTERVAL: Final = _dt.timedelta(seconds=1)
DEFAULT_QUEUE: Final = 2048
DEFAULT_BATCH: Final = 512


class ExportFormat(enum.Enum):
    ZIPKIN_JSON = 0
    OTLP_PROTOBUF = 1


@dataclass(frozen=True, slots=True)
class ZipkinConfig:
    url: str
    sample_probability: float
    export_format: ExportFormat
    timeout: _dt.timedelta
    max_queue_size: int
    max_batch_size: int
    flush_interval: _dt.timedelta

    @property
    def content_type(self) -> str:
        return (
            "application/json" if self.export_format is ExportFormat.ZIPKIN_JSON else "application/x-protobuf"
        )


def parse_config(config: Mapping[str, Any]) -> tuple[ZipkinConfig, list[ConfigError]]:
    p = Params(config)
    url = p.str("url", required=True)
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            p.error(p.raw("url")[0], "expected an http:// or https:// URL with a host")
    probability = p.float("sample_probability")
    if not 0.0 <= probability <= 1.0:
        p.error(p.raw("sample_probability")[0], "must be between 0 and 1 inclusive")
    export_format = p.enum("export_format", ExportFormat, ExportFormat.ZIPKIN_JSON)
    timeout = p.duration("timeout", DEFAULT_TIMEOUT, positive=True)
    queue = p.int("max_queue_size", DEFAULT_QUEUE, minimum=1)
    batch = p.int("max_batch_size", DEFAULT_BATCH, minimum=1)
    interval = p.duration("flush_interval", DEFAULT_FLUSH_INTERVAL, positive=True)
    errors = p.errors + p.unknown_fields()
    return (
        ZipkinConfig(
            url=url,
            sample_probability=probability,
            export_format=export_format,
            timeout=timeout,
            max_queue_size=queue,
            max_batch_size=batch,
            flush_interval=interval,
        ),
        errors,
    )
