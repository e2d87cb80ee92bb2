"""The fluentd handler's params (Mixer's ``adapter.fluentd.config.Params``), read field by field.

========================  ================================================================
``address``               ``host:port`` of the Fluentd forward input (default
                          ``localhost:24224``)
``integerDuration``       durations as integer milliseconds instead of Go's text (``1.5s``)
``instanceBufferSize``    log entries waiting to be encoded before new ones are dropped (1024)
``maxBatchSizeBytes``     encoded bytes gathered before a push (8 MiB); a single entry larger
                          than this is dropped
``pushIntervalDuration``  a push at least this often when there is data (1 m)
``pushTimeoutDuration``   longest a push may take; a push that does not finish in time is
                          dropped (1 m)
``requireAck``            mixerd: send each batch in Forward mode with a ``chunk`` option and
                          wait for Fluentd's ``ack``; a batch without one is sent again
                          (at-least-once) instead of dropped (default false: Mixer's Message
                          mode without acknowledgements)
========================  ================================================================

As in Mixer, 0 (or an absent field) means the default and a negative value is an error.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, Params

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_TIMEOUT",
    "FluentdConfig",
    "parse_config",
    "split_address",
]

DEFAULT_ADDRESS: Final = "localhost:24224"
DEFAULT_BUFFER_SIZE: Final = 1024
DEFAULT_MAX_BATCH_BYTES: Final = 8 * 1024 * 1024
DEFAULT_TIMEOUT: Final = _dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class FluentdConfig:
    address: str
    host: str
    port: int
    integer_duration: bool
    instance_buffer_size: int
    max_batch_size_bytes: int
    push_interval: _dt.timedelta
    push_timeout: _dt.timedelta
    require_ack: bool


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port) as Go's ``net.SplitHostPort`` then
    ``strconv.Atoi`` (what Mixer's builder did); an empty host is the local host."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or not address[end + 1 :].startswith(":"):
            raise ValueError(f"address {address!r}: expected [host]:port")
        host, port = address[1:end], address[end + 2 :]
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            raise ValueError(f"address {address!r}: missing port")
        if ":" in host:
            raise ValueError(f"address {address!r}: too many colons (write an IPv6 host as [host]:port)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: bad port {port!r}")
    return host or "localhost", int(port)


def parse_config(config: Mapping[str, Any]) -> tuple[FluentdConfig, list[ConfigError]]:
    p = Params(config)
    address = p.str("address", DEFAULT_ADDRESS)
    host, port = "localhost", 24224
    if not address:
        p.error(p.raw("address")[0], "address is empty")
    else:
        try:
            host, port = split_address(address)
        except ValueError as exc:
            p.error(p.raw("address")[0], f"address is malformed: {exc}")
    integer_duration = p.bool("integer_duration")
    buffer_size = p.int("instance_buffer_size", 0, minimum=0)
    max_batch = p.int("max_batch_size_bytes", 0, minimum=0)
    interval = p.duration("push_interval_duration")
    timeout = p.duration("push_timeout_duration")
    require_ack = p.bool("require_ack")
    errors = p.errors + p.unknown_fields()
    zero = _dt.timedelta(0)
    cfg = FluentdConfig(
        address=address,
        host=host,
        port=port,
        integer_duration=integer_duration,
        instance_buffer_size=buffer_size if buffer_size > 0 else DEFAULT_BUFFER_SIZE,
        max_batch_size_bytes=max_batch if max_batch > 0 else DEFAULT_MAX_BATCH_BYTES,
        push_interval=interval if interval > zero else DEFAULT_TIMEOUT,
        push_timeout=timeout if timeout > zero else DEFAULT_TIMEOUT,
        require_ack=require_ack,
    )
    return cfg, errors
