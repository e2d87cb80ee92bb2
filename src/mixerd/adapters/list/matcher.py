"""Pure list logic of the ``list`` adapter: list formats, entry validation and matching (no I/O).

Entry types (Mixer's ``entryType``):

``STRINGS``
    exact, case-sensitive string equality (a ``frozenset``).
``CASE_INSENSITIVE_STRINGS``
    equality after Unicode case folding (``str.casefold``; Mixer upper-cased, which differs only for
    a few non-ASCII letters such as ``ß``).
``IP_ADDRESSES``
    each entry is an address or a CIDR range (``10.0.0.0/8``, ``2001:db8::/32``); host bits in a
    range are ignored as Go's ``net.ParseCIDR`` does. A bare address is a single host (Mixer
    appended ``/32`` to every bare entry, which turned a bare IPv6 address into a ``/32`` range; we
    use ``/128`` for IPv6). IPv4-mapped IPv6 addresses (``::ffff:10.1.2.3``) match IPv4 ranges.
    Lookup is one set probe per distinct prefix length, not a scan of the list.
``REGEX``
    RE2 patterns (google-re2, never Python's ``re``), matched *unanchored* exactly as Mixer's Go
    ``regexp.MatchString``: ``abc`` is in a list holding ``a*b`` (``^...$`` anchors a pattern). All
    patterns of a list are compiled into a few ``re2.Set`` objects (at most :data:`REGEX_SET_SIZE`
    patterns each), so a lookup costs a handful of automaton runs however long the list is.

Fetched list bodies (:func:`parse_body`): ``STRINGS``, ``CASE_INSENSITIVE_STRINGS`` and ``REGEX``
are one entry per line (``\\n``; a trailing ``\\r`` is dropped; empty lines are ignored; other
whitespace is kept, as in Mixer). ``IP_ADDRESSES`` is Mixer's YAML document ``whitelist: [ip or
CIDR, ...]``; as a mixerd convenience a body that is not a YAML mapping is read one entry per line
(blank lines and ``#`` comments ignored, surrounding whitespace stripped).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import re2
import yaml

from mixerd.attribute import V4_MAPPED_PREFIX, IPAddress, parse_ip

__all__ = [
    "REGEX_SET_SIZE",
    "EntryError",
    "EntryType",
    "InvalidValueError",
    "IpMatcher",
    "ListParseError",
    "Matcher",
    "RegexMatcher",
    "StringMatcher",
    "build_matcher",
    "check_entry",
    "parse_body",
    "value_text",
]

REGEX_SET_SIZE: Final = 2048
"""Patterns per ``re2.Set`` (one huge set can exceed RE2's memory budget and fail to compile)."""

_RE2_MAX_MEM: Final = 64 << 20


class EntryType(enum.IntEnum):
    """How list entries are interpreted (Mixer's ``ListEntryType`` numbers)."""

    STRINGS = 0
    CASE_INSENSITIVE_STRINGS = 1
    IP_ADDRESSES = 2
    REGEX = 3


class EntryError(ValueError):
    """A list entry is not valid for the list's type; ``index`` is its position in the input."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


class ListParseError(ValueError):
    """A fetched list body could not be read."""


class InvalidValueError(ValueError):
    """The checked value cannot be looked up in this kind of list (e.g. not an IP address)."""


class Matcher(Protocol):
    """A compiled list."""

    def contains(self, value: str) -> bool:
        """Whether ``value`` is in the list; :class:`InvalidValueError` if it cannot be."""

    def __len__(self) -> int: ...


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    return options


# --- entries --------------------------------------------------------------------------------------


def _parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = entry.strip()
    try:
        if "/" in text:
            network = ipaddress.ip_network(text, strict=False)
        else:
            network = ipaddress.ip_network(parse_ip(text).address)
    except ValueError:
        raise ValueError(f"'{entry}' is not an IP address or CIDR range") from None
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _compile_regex(entry: str) -> Any:
    try:
        return re2.compile(entry, options=_re2_options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(f"'{entry}' is not a valid RE2 regular expression: {detail}") from None


def check_entry(entry_type: EntryType, entry: str) -> str | None:
    """Why ``entry`` is not valid for ``entry_type`` (``None`` when it is)."""
    try:
        if entry_type is EntryType.IP_ADDRESSES:
            _parse_network(entry)
        elif entry_type is EntryType.REGEX:
            _compile_regex(entry)
    except ValueError as exc:
        return str(exc)
    return None


# --- matchers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """Exact or case-folded string membership."""

    entries: frozenset[str]
    fold: bool = False

    def contains(self, value: str) -> bool:
        return (value.casefold() if self.fold else value) in self.entries

    def __len__(self) -> int:
        return len(self.entries)


_V4: Final = 4
_V6: Final = 6


class IpMatcher:
    """Address/range membership: per IP version, one set of network numbers per prefix length."""

    __slots__ = ("_count", "_v4", "_v6")

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        count = 0
        for net in networks:
            table = v4 if net.version == _V4 else v6
            table.setdefault(net.prefixlen, set()).add(int(net.network_address))
            count += 1
        width4, width6 = 32, 128
        # (mask, networks) per prefix length, longest prefixes first (most specific)
        self._v4 = tuple(
            (((1 << p) - 1) << (width4 - p), frozenset(s)) for p, s in sorted(v4.items(), reverse=True)
        )
        self._v6 = tuple(
            (((1 << p) - 1) << (width6 - p), frozenset(s)) for p, s in sorted(v6.items(), reverse=True)
        )
        self._count = count

    def contains(self, value: str) -> bool:
        try:
            ip = parse_ip(value)
        except ValueError:
            raise InvalidValueError(f"{value} is not a valid IP address") from None
        return self.contains_ip(ip)

    def contains_address(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if addr.version == _V6:
            mapped = addr.ipv4_mapped
            if mapped is not None:
                addr = mapped
        return self._lookup(addr.version == _V4, int(addr))

    def contains_ip(self, ip: IPAddress) -> bool:
        """Membership of a Mixer IP value, read straight from its 4 or 16 bytes."""
        packed = ip.packed
        if len(packed) == 16 and not packed.startswith(V4_MAPPED_PREFIX):
            return self._lookup(False, int.from_bytes(packed))
        if len(packed) not in (4, 16):
            raise InvalidValueError(f"{ip} is not a valid IP address")
        return self._lookup(True, int.from_bytes(packed[-4:]))

    def _lookup(self, v4: bool, number: int) -> bool:
        for mask, nets in self._v4 if v4 else self._v6:  # noqa: SIM110 (a plain loop is faster than any())
            if number & mask in nets:
                return True
        return False

    def __len__(self) -> int:
        return self._count


class RegexMatcher:
    """Unanchored RE2 search over many patterns, compiled into a few ``re2.Set`` objects."""

    __slots__ = ("_count", "_sets")

    def __init__(self, patterns: Sequence[str]) -> None:
        sets = []
        for start in range(0, len(patterns), REGEX_SET_SIZE):
            rset = re2.Set.SearchSet(_re2_options())
            for pattern in patterns[start : start + REGEX_SET_SIZE]:
                rset.Add(pattern)
            rset.Compile()
            sets.append(rset)
        self._sets = tuple(sets)
        self._count = len(patterns)

    def contains(self, value: str) -> bool:
        return any(s.Match(value) for s in self._sets)

    def __len__(self) -> int:
        return self._count


def build_matcher(entry_type: EntryType, entries: Sequence[str]) -> Matcher:
    """Compile ``entries``; :class:`EntryError` names the first bad entry by index."""
    if entry_type is EntryType.STRINGS:
        return StringMatcher(frozenset(e for e in entries if e))
    if entry_type is EntryType.CASE_INSENSITIVE_STRINGS:
        return StringMatcher(frozenset(e.casefold() for e in entries if e), fold=True)
    if entry_type is EntryType.IP_ADDRESSES:
        networks = []
        for i, entry in enumerate(entries):
            try:
                networks.append(_parse_network(entry))
            except ValueError as exc:
                raise EntryError(i, str(exc)) from None
        return IpMatcher(networks)
    for i, entry in enumerate(entries):
        # compiling one by one gives the error message; a Set only says "failed"
        problem = check_entry(EntryType.REGEX, entry)
        if problem is not None:
            raise EntryError(i, problem)
    return RegexMatcher(entries)


# --- bodies -----------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.split("\n") if line.removesuffix("\r")]


def parse_body(entry_type: EntryType, body: bytes) -> list[str]:
    """The entries of a fetched list body (see the module docstring for the formats)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ListParseError(f"list is not UTF-8 text: {exc}") from None
    if entry_type is not EntryType.IP_ADDRESSES:
        return _lines(text)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # a safe loader (C if available)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict):
        out = []
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                out.append(entry)
        return out
    items = doc.get("whitelist")
    if items is None:
        return []
    if not isinstance(items, list):
        raise ListParseError(f"'whitelist' must be a list of IP addresses, got {type(items).__name__}")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ListParseError(f"whitelist[{i}]: expected an IP address or CIDR string, got {item!r}")
        entries.append(item)
    return entries


# --- values -----------------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """The text a listentry value is looked up as: strings as they are, IP addresses in their
    standard text form (as Go's ``net.IP.String``); :class:`InvalidValueError` otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, IPAddress):
        return str(value)
    if isinstance(value, bytes | bytearray) and len(value) in (0, 4, 16):
        return str(IPAddress(bytes(value)))
    shown = "<nil>" if value is None else value
    raise InvalidValueError(f"{shown} is not a valid string or IP address")
