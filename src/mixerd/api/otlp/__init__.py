"""The OTLP receiver (OpenTelemetry's trace and logs export services) into the console:
``convert`` (OTLP spans and log records -> the console's records, pure) and ``service`` (the
servicer, registered on mixerd's gRPC server when the console is on).

The conversion rules are documented in :mod:`mixerd.api.otlp.convert`, the answers in
:mod:`mixerd.api.otlp.service`.
"""

from mixerd.api.otlp.convert import BadRecord, Origin, convert_log, convert_span
from mixerd.api.otlp.service import OtlpService, SpanSink

__all__ = ["BadRecord", "Origin", "OtlpService", "SpanSink", "convert_log", "convert_span"]
