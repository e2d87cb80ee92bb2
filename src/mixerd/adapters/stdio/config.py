"""The stdio handler's params (Mixer's ``adapter.stdio.config.Params``), read field by field.

==============================  ==============================================================
``logStream``                   STDOUT (default) | STDERR | FILE | ROTATED_FILE
``severityLevels``              severity string -> INFO | WARNING | ERROR, merged over the
                                defaults (INFO/info/INFORMATIONAL/informational -> INFO,
                                WARN/warn/WARNING/warning -> WARNING, ERR/err/ERROR/error/
                                FATAL/fatal -> ERROR); an unknown severity is INFO
``metricLevel``                 level of metric lines (default INFO)
``outputAsJson``                JSON lines (default true) or tab-separated text
``outputLevel``                 lines below this level are dropped (default INFO)
``outputPath``                  required for FILE / ROTATED_FILE, forbidden otherwise
``maxMegabytesBeforeRotation``  ROTATED_FILE: rotate when the file would exceed this (100;
                                fractions allowed, e.g. 0.5)
``maxDaysBeforeRotation``       ROTATED_FILE: remove rotated files older than this (30; 0 = keep)
``maxRotatedFiles``             ROTATED_FILE: keep at most this many rotated files (1000; 0 = all)
``maxQueuedLines``              mixerd: lines buffered before the oldest are dropped (10000)
==============================  ==============================================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from mixerd.adapter import ConfigError, Params

__all__ = ["DEFAULT_SEVERITY_LEVELS", "Level", "StdioConfig", "Stream", "parse_config"]


class Stream(enum.Enum):
    STDOUT = 0
    STDERR = 1
    FILE = 2
    ROTATED_FILE = 3


class Level(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2


DEFAULT_SEVERITY_LEVELS: Final[Mapping[str, Level]] = MappingProxyType(
    {
        "INFORMATIONAL": Level.INFO,
        "informational": Level.INFO,
        "INFO": Level.INFO,
        "info": Level.INFO,
        "WARNING": Level.WARNING,
        "warning": Level.WARNING,
        "WARN": Level.WARNING,
        "warn": Level.WARNING,
        "ERROR": Level.ERROR,
        "error": Level.ERROR,
        "ERR": Level.ERROR,
        "err": Level.ERROR,
        "FATAL": Level.ERROR,
        "fatal": Level.ERROR,
    }
)
DEFAULT_MAX_QUEUED_LINES: Final = 10_000


@dataclass(frozen=True, slots=True)
class StdioConfig:
    log_stream: Stream
    severity_levels: Mapping[str, Level]
    metric_level: Level
    output_as_json: bool
    output_level: Level
    output_path: str
    max_bytes_before_rotation: int
    max_days_before_rotation: int
    max_rotated_files: int
    max_queued_lines: int


def parse_config(config: Mapping[str, Any]) -> tuple[StdioConfig, list[ConfigError]]:
    p = Params(config)
    stream = p.enum("log_stream", Stream, Stream.STDOUT)
    severity = dict(DEFAULT_SEVERITY_LEVELS)
    key, raw = p.raw("severity_levels")
    if raw is not None:
        if isinstance(raw, Mapping):
            levels = Params(raw, key, p.errors)
            for name in raw:
                severity[str(name)] = levels.enum(str(name), Level, Level.INFO)
        else:
            p.error(key, f"expected a map of severity -> level, got {type(raw).__name__}")
    metric_level = p.enum("metric_level", Level, Level.INFO)
    as_json = p.bool("output_as_json", default=True)
    output_level = p.enum("output_level", Level, Level.INFO)
    path = p.str("output_path")
    megabytes = p.float("max_megabytes_before_rotation", default=100.0)
    if not megabytes > 0:
        p.error(p.raw("max_megabytes_before_rotation")[0], f"must be > 0, got {megabytes}")
    max_days = p.int("max_days_before_rotation", default=30, minimum=0)
    max_files = p.int("max_rotated_files", default=1000, minimum=0)
    max_lines = p.int("max_queued_lines", default=DEFAULT_MAX_QUEUED_LINES, minimum=1)
    if stream in (Stream.STDOUT, Stream.STDERR):
        if path:
            p.error(
                p.raw("output_path")[0],
                "cannot specify an output path when using a STDOUT or STDERR log stream",
            )
    elif not path:
        p.error(
            p.raw("output_path")[0], "need a valid output path when using a FILE or ROTATED_FILE log stream"
        )
    errors = p.errors + p.unknown_fields()
    cfg = StdioConfig(
        log_stream=stream,
        severity_levels=MappingProxyType(severity),
        metric_level=metric_level,
        output_as_json=as_json,
        output_level=output_level,
        output_path=path,
        max_bytes_before_rotation=max(1, int(megabytes * 1024 * 1024)),
        max_days_before_rotation=max_days,
        max_rotated_files=max_files,
        max_queued_lines=max(1, max_lines),
    )
    return cfg, errors
