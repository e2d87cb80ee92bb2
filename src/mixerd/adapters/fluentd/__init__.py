"""The ``fluentd`` adapter: log entries to a Fluentd (or Fluent Bit) forward input, over TCP in
the forward protocol with msgpack.

Params are Mixer's (``address``, ``integerDuration``, ``instanceBufferSize``,
``maxBatchSizeBytes``, ``pushIntervalDuration``, ``pushTimeoutDuration``) plus mixerd's
``requireAck``; see :mod:`mixerd.adapters.fluentd.config`. What each entry becomes (tag, time,
record) is in :mod:`mixerd.adapters.fluentd.encode`; queueing, batching, pushing, reconnecting and
what is dropped when in :mod:`mixerd.adapters.fluentd.handler`. The request path only appends to a
bounded queue; nothing there waits for Fluentd.

Differences from Mixer, on purpose (besides those listed in the modules): a batch that cannot be
written because Fluentd is unreachable is pushed again after a backoff on a new connection (Mixer's
client kept unsent data in its own buffer and retried on the next write), and the drops Mixer only
logged are counted (``mixerd_adapter_dropped_total{handler, reason}``: ``queue_full``,
``too_large``, ``timeout``, ``encode_error``, ``shutdown``).
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.fluentd.config import DEFAULT_ADDRESS, FluentdConfig, parse_config, split_address
from mixerd.adapters.fluentd.encode import encode_event, event_time, message, record_of, record_value
from mixerd.adapters.fluentd.handler import FluentdBuilder, FluentdHandler

__all__ = [
    "INFO",
    "FluentdBuilder",
    "FluentdConfig",
    "FluentdHandler",
    "encode_event",
    "event_time",
    "message",
    "parse_config",
    "record_of",
    "record_value",
    "split_address",
]

INFO: Final = Info(
    name="fluentd",
    description="Sends log entries to a Fluentd forward input (TCP, msgpack), batched off the request path.",
    templates=("logentry",),
    builder=FluentdBuilder,
    default_config={"address": DEFAULT_ADDRESS},
)
