"""Turning loosely typed input (command-line text, YAML values) into typed attribute values.

The one conversion of loose input: the command line, test scenarios and the Mixer v1 client
encoder (:func:`mixerd.api.mixer_v1.client.encode_attributes` with a manifest) all use it.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Mapping
from typing import Any

from mixerd.attribute.types import (
    URI,
    DNSName,
    EmailAddress,
    IPAddress,
    ValueType,
    parse_duration,
    parse_ip,
    parse_timestamp,
)

__all__ = ["coerce"]

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(value: Any, value_type: ValueType) -> Any:
    """Convert ``value`` (text, or what YAML gave) to the runtime form of ``value_type``.

    Raises ``ValueError`` naming the expected type when the value does not fit.
    """
    t = value_type
    try:
        if t is ValueType.STRING:
            return value if isinstance(value, str) else _scalar_text(value)
        if t is ValueType.INT64:
            if isinstance(value, bool):
                raise ValueError
            return value if isinstance(value, int) else int(str(value), 0)
        if t is ValueType.DOUBLE:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t is ValueType.BOOL:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if t is ValueType.TIMESTAMP:
            if isinstance(value, _dt.datetime):
                return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
            if str(value) == "now":
                return _dt.datetime.now(_dt.UTC)
            return parse_timestamp(str(value))
        if t is ValueType.DURATION:
            if isinstance(value, _dt.timedelta):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return _dt.timedelta(seconds=value)
            return parse_duration(str(value))
        if t is ValueType.IP_ADDRESS:
            if isinstance(value, IPAddress):
                return value
            if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                return IPAddress(value.packed)
            if isinstance(value, bytes | bytearray):
                return IPAddress(bytes(value))
            return parse_ip(str(value).strip())
        if t is ValueType.DNS_NAME:
            return DNSName(_scalar_text(value))
        if t is ValueType.EMAIL_ADDRESS:
            return EmailAddress(_scalar_text(value))
        if t is ValueType.URI:
            return URI(_scalar_text(value))
        if t is ValueType.STRING_MAP:
            if not isinstance(value, Mapping):
                raise ValueError
            return {str(k): _scalar_text(v) for k, v in value.items()}
    except (ValueError, TypeError):
        pass
    raise ValueError(f"{value!r} is not a valid {t.name}")


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError
