"""The ``stdio`` adapter: log entries and metrics as lines on stdout, stderr or a (rotated) file.

Params are Mixer's (``logStream``, ``severityLevels``, ``metricLevel``, ``outputAsJson``,
``outputLevel``, ``outputPath``, ``maxMegabytesBeforeRotation``, ``maxDaysBeforeRotation``,
``maxRotatedFiles``) plus ``maxQueuedLines``; see :mod:`mixerd.adapters.stdio.config`. Line
formats are in :mod:`mixerd.adapters.stdio.format`, rotation in :mod:`mixerd.adapters.stdio.sink`
and the non-blocking write path in :mod:`mixerd.adapters.stdio.handler`.

Each log entry becomes one line at the level its ``severity`` maps to, stamped with the entry's
``timestamp`` (the clock's time if it has none), carrying the entry's variables sorted by name.
Each metric becomes one line at ``metricLevel`` with ``value`` and the dimensions. Lines below
``outputLevel`` are dropped.

Differences from Mixer, on purpose: writes never block a request (bounded queue, background
writer; see :mod:`mixerd.adapters.stdio.handler`); ``severityLevels`` entries are merged over
the defaults; an entry without a timestamp gets the current time (Mixer printed year 1); the text
format is ``time<TAB>level<TAB>instance<TAB>k=v ...`` instead of zap's console format with a JSON
tail; rotation honours the three limits as documented (Mixer passed megabytes as bytes and swapped
the age and count limits when it configured lumberjack).
"""

from __future__ import annotations

from typing import Final

from mixerd.adapter import Info
from mixerd.adapters.stdio.config import DEFAULT_SEVERITY_LEVELS, Level, StdioConfig, Stream, parse_config
from mixerd.adapters.stdio.format import format_line, json_value, text_value
from mixerd.adapters.stdio.handler import StdioBuilder, StdioHandler
from mixerd.adapters.stdio.sink import FileSink, RotatingFileSink, StreamSink, rotated_files

__all__ = [
    "DEFAULT_SEVERITY_LEVELS",
    "INFO",
    "FileSink",
    "Level",
    "RotatingFileSink",
    "StdioBuilder",
    "StdioConfig",
    "StdioHandler",
    "Stream",
    "StreamSink",
    "format_line",
    "json_value",
    "parse_config",
    "rotated_files",
    "text_value",
]

INFO: Final = Info(
    name="stdio",
    description="Writes log entries and metrics to stdout, stderr or a (rotated) file.",
    templates=("logentry", "metric"),
    builder=StdioBuilder,
    default_config={
        "logStream": "STDOUT",
        "metricLevel": "INFO",
        "outputLevel": "INFO",
        "outputAsJson": True,
        "maxMegabytesBeforeRotation": 100,
        "maxDaysBeforeRotation": 30,
        "maxRotatedFiles": 1000,
    },
)
