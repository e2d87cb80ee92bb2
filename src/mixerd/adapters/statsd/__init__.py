"""The ``statsd`` adapter: metric instances as StatsD lines in UDP datagrams.

Params are Mixer's (``address``, ``prefix``, ``flushDuration``, ``flushBytes``, ``samplingRate``,
``metrics`` with ``type`` and ``nameTemplate``); see :mod:`mixerd.adapters.statsd.config`. Lines
and values are in :mod:`mixerd.adapters.statsd.handler`; datagrams are packed and sent off the
request path by :class:`mixerd.adapter.udp.UdpLineSender` (a bounded queue; lines it cannot queue
or send are counted in ``mixerd_adapter_dropped_total{handler, reason}``).

A metric instance is sent when ``metrics`` has an entry for its full name
(``requestcount.instance.istio-system``); its StatsD name is that name, or ``nameTemplate``
filled with the instance's dimensions. Each line goes out with probability ``samplingRate``.

``nameTemplate`` supports the ``{{.dimension}}`` subset of Go's text/template (literal text and
dimension references, with blanks and ``{{-``/``-}}`` trim markers); a template using anything
else (functions, pipelines, ``if``/``range``) is refused by validation. Dimension values are
written as label values are everywhere in mixerd (Mixer's ``adapter.Stringify``: ``500``,
``true``, ``1.5``, durations as ``1.5s``, IPs dotted); a dimension the instance does not have is
written ``<no value>``, as Go's templates do.

Differences from Mixer, on purpose: a metric entry without a ``type`` (Mixer's UNKNOWN, an error
at every report) is refused by validation; the characters that would break the line format
(``:``, ``|``, ``@``, newlines) in a name rendered from dimensions become ``_``; ``flushDuration:
0`` means the default (Mixer's client could not start with it); values that do not suit the type
(a float for a COUNTER) are not sent and are counted in ``handler.errors`` and as dropped
(``bad_value``) instead of failing the report.
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.statsd.config import (
    DEFAULT_ADDRESS,
    MetricConfig,
    MetricType,
    NameTemplate,
    StatsdConfig,
    parse_config,
    parse_name_template,
)
from mixerd.adapters.statsd.handler import StatsdBuilder, StatsdHandler, duration_ms, rate_suffix, safe_name

__all__ = [
    "INFO",
    "MetricConfig",
    "MetricType",
    "NameTemplate",
    "StatsdBuilder",
    "StatsdConfig",
    "StatsdHandler",
    "duration_ms",
    "parse_config",
    "parse_name_template",
    "rate_suffix",
    "safe_name",
]

INFO: Final = Info(
    name="statsd",
    description="Sends metrics to a StatsD server as lines in UDP datagrams.",
    templates=("metric",),
    builder=StatsdBuilder,
    default_config={
        "address": DEFAULT_ADDRESS,
        "prefix": "",
        "flushDuration": "0.3s",
        "flushBytes": 512,
        "samplingRate": 1.0,
    },
)
