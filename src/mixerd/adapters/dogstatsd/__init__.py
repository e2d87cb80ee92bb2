"""The ``dogstatsd`` adapter: metric instances as DogStatsD lines (StatsD with tags) over UDP, for
a DataDog agent.

Params are Mixer's (``address``, ``prefix``, ``bufferLength``, ``globalTags``, ``sampleRate``,
``metrics`` with ``name``, ``type`` and ``tags``); see :mod:`mixerd.adapters.dogstatsd.config`,
which also checks, as Mixer did, that every metric instance sent here is configured and that the
value types suit the metric types. Lines are in :mod:`mixerd.adapters.dogstatsd.handler`: every
dimension of the instance becomes a tag. Datagrams are sent off the request path by
:class:`mixerd.adapter.udp.UdpLineSender` (bounded queue; lines it cannot queue or send are
counted in ``mixerd_adapter_dropped_total{handler, reason}``).

Differences from Mixer, on purpose: tags are written sorted (global tags, then metric tags and
dimensions) instead of in Go's random map order; an empty ``prefix`` means no prefix (Mixer's
client wrote a lone ``.``); a metric entry without ``name`` uses the instance's name (Mixer sent
an empty name); values that do not suit the type are counted in ``handler.errors`` and as dropped
(``bad_value``) instead of failing the report; unbuffered lines also leave through the background
sender (at once, one per datagram) rather than being written on the request path.
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.dogstatsd.config import (
    DEFAULT_ADDRESS,
    DEFAULT_PREFIX,
    DogstatsdConfig,
    MetricConfig,
    MetricType,
    parse_config,
)
from mixerd.adapters.dogstatsd.handler import (
    OPTIMAL_PAYLOAD_BYTES,
    DogstatsdBuilder,
    DogstatsdHandler,
    format_tags,
)

__all__ = [
    "INFO",
    "OPTIMAL_PAYLOAD_BYTES",
    "DogstatsdBuilder",
    "DogstatsdConfig",
    "DogstatsdHandler",
    "MetricConfig",
    "MetricType",
    "format_tags",
    "parse_config",
]

INFO: Final = Info(
    name="dogstatsd",
    description="Sends metrics to a DataDog agent as DogStatsD lines (dimensions as tags) over UDP.",
    templates=("metric",),
    builder=DogstatsdBuilder,
    default_config={
        "address": DEFAULT_ADDRESS,
        "prefix": DEFAULT_PREFIX,
        "bufferLength": 0,
        "sampleRate": 1.0,
    },
)
