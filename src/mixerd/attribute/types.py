"""Mixer's value types and their Python representations.

Runtime representation of each :class:`ValueType` (what a :class:`~mixerd.attribute.Bag` holds
and what compiled expressions return):

=============  =========================================================
STRING         ``str``
INT64          ``int``
DOUBLE         ``float``
BOOL           ``bool``
TIMESTAMP      ``datetime.datetime`` (timezone-aware, UTC)
IP_ADDRESS     :class:`IPAddress` (4 or 16 bytes, as on Mixer's wire)
EMAIL_ADDRESS  :class:`EmailAddress` (a ``str``)
URI            :class:`URI` (a ``str``)
DNS_NAME       :class:`DNSName` (a ``str``)
DURATION       ``datetime.timedelta``
STRING_MAP     any ``Mapping[str, str]``
=============  =========================================================

DNS names, e-mail addresses and URIs travel as strings (Mixer sends them in the ``strings`` map);
the ``str`` subclasses only mark that a value was validated by a conversion function. Typed
equality (``dnsName("a.") == dnsName("A")``) is decided by the static type in the compiler, not by
``__eq__``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "URI",
    "V4_MAPPED_PREFIX",
    "DNSName",
    "EmailAddress",
    "IPAddress",
    "ValueType",
    "format_duration",
    "parse_duration",
    "parse_ip",
    "parse_timestamp",
    "type_of",
]


class ValueType(enum.IntEnum):
    """Mixer's attribute value types, with Mixer's names and numbers (policy/v1beta1/value_type.proto)."""

    VALUE_TYPE_UNSPECIFIED = 0
    STRING = 1
    INT64 = 2
    DOUBLE = 3
    BOOL = 4
    TIMESTAMP = 5
    IP_ADDRESS = 6
    EMAIL_ADDRESS = 7
    URI = 8
    DNS_NAME = 9
    DURATION = 10
    STRING_MAP = 11

    @classmethod
    def parse(cls, name: str | int | ValueType) -> ValueType:
        """Turn ``"STRING"``, ``"string"``, ``1`` or ``ValueType.STRING`` into a ValueType."""
        if isinstance(name, ValueType):
            return name
        if isinstance(name, int):
            return cls(name)
        try:
            return cls[name.strip().upper()]
        except KeyError:
            valid = ", ".join(t.name for t in cls if t is not cls.VALUE_TYPE_UNSPECIFIED)
            raise ValueError(f"unknown value type {name!r} (expected one of {valid})") from None


class IPAddress:
    """An IP address as Mixer carries it: the raw 4- or 16-byte form.

    Two addresses are equal when they name the same address, so ``1.2.3.4`` in its 4-byte form
    equals its 16-byte IPv4-mapped form (Go's ``net.IP.Equal``). ``packed`` keeps the exact bytes.
    """

    __slots__ = ("_key", "packed")

    packed: bytes
    _key: bytes

    def __init__(self, packed: bytes) -> None:
        if len(packed) not in (0, 4, 16):
            raise ValueError(f"an IP address has 4 or 16 bytes, not {len(packed)}")
        object.__setattr__(self, "packed", bytes(packed))
        key = packed
        if len(packed) == 16 and packed[:12] == V4_MAPPED_PREFIX:
            key = packed[12:]
        object.__setattr__(self, "_key", bytes(key))

    @classmethod
    def parse(cls, text: str) -> IPAddress:
        """Parse IP address text: the same as :func:`parse_ip`."""
        return parse_ip(text)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("IPAddress is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IPAddress):
            return self._key == other._key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        key = self._key
        if len(key) == 4:
            return socket.inet_ntoa(key)
        if not key:
            return "<nil>"
        return socket.inet_ntop(socket.AF_INET6, key)

    def __repr__(self) -> str:
        return f"IPAddress({str(self)!r})"

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address as a standard-library object (IPv4 for v4 and v4-mapped forms)."""
        if len(self._key) == 4:
            return ipaddress.IPv4Address(self._key)
        return ipaddress.IPv6Address(self._key)


V4_MAPPED_PREFIX: Final = b"\x00" * 10 + b"\xff\xff"
"""The first 12 bytes of the 16-byte IPv4-mapped form of an IPv4 address (``::ffff:a.b.c.d``)."""

_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
_inet_pton: Final = socket.inet_pton


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress:
    """Parse the text of an IP address, as Go 1.13's ``net.ParseIP`` (what Mixer's ``ip()`` does).

    This is mixerd's one IP address parser: the expression function ``ip()``, wire front-ends,
    adapters and configuration all use it. The semantics:

    * IPv4 in dotted-decimal form (exactly four parts of ASCII digits, each at most 255) gives
      the 16-byte IPv4-mapped form (:data:`V4_MAPPED_PREFIX` + the 4 bytes), so
      ``parse_ip("1.2.3.4") == parse_ip("::ffff:1.2.3.4")``. Leading zeros are accepted and
      read as decimal (``"010.0.0.1"`` is ``10.0.0.1``), as Go before 1.17 did and Mixer's
      conformance tables require.
    * IPv6 in any RFC 4291 text form, including an embedded dotted IPv4 tail, gives 16 bytes.
    * Everything else raises ``ValueError`` (``could not convert <text> to IP_ADDRESS``):
      surrounding whitespace (callers with loose input, such as
      :func:`~mixerd.attribute.coerce`, strip it first), non-ASCII digits, hexadecimal or octal
      forms, CIDR suffixes, and **scoped IPv6 addresses** such as ``fe80::1%eth0``. Go rejects
      the zone and an :class:`IPAddress` has nowhere to keep it; Envoy formats socket
      addresses without a zone, so a zoned address on the wire is malformed input.

    Results are cached (the hot path parses the same few addresses over and over); an
    :class:`IPAddress` is immutable, so sharing one is safe.
    """
    try:
        return IPAddress(V4_MAPPED_PREFIX + _inet_pton(_AF_INET, text))
    except (OSError, ValueError, UnicodeError):
        pass
    packed = _parse_ipv4_leading_zeros(text) if ":" not in text else None
    if packed is None:
        try:
            packed = _inet_pton(_AF_INET6, text)
        except (OSError, ValueError, UnicodeError):
            raise ValueError(f"could not convert {text} to IP_ADDRESS") from None
    return IPAddress(packed)


def _parse_ipv4_leading_zeros(text: str) -> bytes | None:
    """Dotted IPv4 that the C library rejects only for its leading zeros (Go 1.13 accepts them)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    out = bytearray()
    for part in parts:
        if not part or not (part.isascii() and part.isdigit()) or int(part) > 255:
            return None
        out.append(int(part))
    return V4_MAPPED_PREFIX + bytes(out)


class DNSName(str):
    """A DNS name (validated by :func:`mixerd.lang.functions.dns_name`)."""

    __slots__ = ()


class EmailAddress(str):
    """An e-mail address (validated by :func:`mixerd.lang.functions.email`)."""

    __slots__ = ()


class URI(str):
    """A URI (validated by :func:`mixerd.lang.functions.uri`)."""

    __slots__ = ()


# --- durations -------------------------------------------------------------------------------

_UNITS_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_RE: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> _dt.timedelta:
    """Parse a Go duration string (``"10ms"``, ``"1h30m"``, ``"-1.5s"``, ``"0"``).

    Raises ``ValueError`` for anything Go's ``time.ParseDuration`` would reject.
    """
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return _dt.timedelta(0)
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if total > _MAX_DURATION_NS:  # Go's int64 nanoseconds (about 292 years); timedelta would overflow too
        raise ValueError(f"invalid duration {text!r}")
    return _dt.timedelta(microseconds=sign * total / 1000)


_MAX_DURATION_NS: Final = 2**63 - 1


def format_duration(d: _dt.timedelta) -> str:
    """Format a duration as Go's ``Duration.String()`` does (``"1m30s"``, ``"20ms"``, ``"0s"``)."""
    ns = (d.days * 86400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, rem = divmod(ns, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _trim(rem / 1_000_000_000) + "s"


def _trim(x: float) -> str:
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return text or "0"


# --- timestamps ------------------------------------------------------------------------------

_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z"
)


def parse_timestamp(text: str) -> _dt.datetime:
    """Parse an RFC 3339 timestamp (the only form Mixer's ``timestamp()`` accepts) into UTC."""
    m = _RFC3339_RE.match(text)
    if m is None:
        raise ValueError(
            f"could not convert '{text}' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7)
    micros = int((frac[1:] + "000000")[:6]) if frac else 0
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = _dt.UTC
    else:
        offset = _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = _dt.timezone(-offset if zone[0] == "-" else offset)
    try:
        value = _dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:
        raise ValueError(
            f"could not convert '{text}' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'"
        ) from None
    return value.astimezone(_dt.UTC)


# --- type of a runtime value -----------------------------------------------------------------


def type_of(value: Any) -> ValueType:
    """The ValueType of a runtime value, or VALUE_TYPE_UNSPECIFIED if it is none of Mixer's types."""
    # Order matters: bool is an int, the marked string types are strs.
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, str):
        if isinstance(value, DNSName):
            return ValueType.DNS_NAME
        if isinstance(value, EmailAddress):
            return ValueType.EMAIL_ADDRESS
        if isinstance(value, URI):
            return ValueType.URI
        return ValueType.STRING
    if isinstance(value, int):
        return ValueType.INT64
    if isinstance(value, float):
        return ValueType.DOUBLE
    if isinstance(value, _dt.datetime):
        return ValueType.TIMESTAMP
    if isinstance(value, _dt.timedelta):
        return ValueType.DURATION
    if isinstance(value, IPAddress):
        return ValueType.IP_ADDRESS
    if isinstance(value, Mapping):
        return ValueType.STRING_MAP
    return ValueType.VALUE_TYPE_UNSPECIFIED
