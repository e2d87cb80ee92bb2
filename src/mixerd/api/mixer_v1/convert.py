"""Conversions between Mixer's v1 wire messages and mixerd's Python values.

Pure functions and classes: no I/O and no asyncio, so the gRPC service, the CLI client, tests and
benchmarks all share them.

Requests
    :class:`ProtoBag` is a lazy, reference-tracking attribute bag over one
    ``CompressedAttributes`` message. :func:`decode_report` turns a ``ReportRequest`` into one bag
    per attribute set. :func:`check_dictionary` rejects callers that claim to know more global
    words than mixerd does.

Responses
    :func:`encode_referenced`, :func:`encode_precondition`, :func:`encode_quota_result` and
    :func:`encode_route_directive` build the parts of a ``CheckResponse`` from plain values.

Client side
    :func:`encode_attributes`, :func:`build_check_request`, :func:`build_report_request` and
    :func:`decode_check_response`.

Dictionary indices: an index ``i >= 0`` names ``GLOBAL_DICTIONARY[i]``; an index ``i < 0``
names slot ``-i - 1`` of the message's own word list (``~i`` in Python). A request's
``global_word_count`` of 0 means the caller did not say how many global words it knows; any
other value limits the global indices it may use.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from google.protobuf import duration_pb2, timestamp_pb2

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, report_pb2
from mixerd.attribute import (
    GLOBAL_DICTIONARY,
    GLOBAL_INDEX,
    MISSING,
    Bag,
    Condition,
    IPAddress,
    Manifest,
    Reference,
    ReferenceTracker,
    TrackedStringMap,
    ValueType,
    format_duration,
    parse_duration,
    parse_timestamp,
)
from mixerd.config import HeaderAction
from mixerd.runtime import HeaderOperation, RouteDirective

__all__ = [
    "DELTA_ENCODING",
    "GLOBAL_WORD_COUNT",
    "INDEPENDENT_ENCODING",
    "BadRequest",
    "DictionaryMismatch",
    "HeaderOperation",
    "Operation",
    "ProtoBag",
    "RouteDirective",
    "build_check_request",
    "build_report_request",
    "check_dictionary",
    "decode_check_response",
    "decode_referenced",
    "decode_report",
    "decode_route_directive",
    "encode_attributes",
    "encode_precondition",
    "encode_quota_result",
    "encode_referenced",
    "encode_route_directive",
    "status_code_name",
]

GLOBAL_WORD_COUNT: Final = len(GLOBAL_DICTIONARY)
"""How many global dictionary words mixerd knows (222, as Istio 1.4's Mixer)."""

DELTA_ENCODING: Final = report_pb2.ReportRequest.DELTA_ENCODING
"""``ReportRequest.repeated_attributes_semantics`` 0: each set updates the ones before it."""

INDEPENDENT_ENCODING: Final = report_pb2.ReportRequest.INDEPENDENT_ENCODING
"""``ReportRequest.repeated_attributes_semantics`` 1: each set stands alone (what Envoy sends)."""

_CompressedAttributes = attributes_pb2.CompressedAttributes
_ReferencedAttributes = check_pb2.ReferencedAttributes
_AttributeMatch = check_pb2.ReferencedAttributes.AttributeMatch
_PreconditionResult = check_pb2.CheckResponse.PreconditionResult
_QuotaResult = check_pb2.CheckResponse.QuotaResult

# Wire enum values, indexed by their number.
_WIRE_CONDITIONS: Final = (
    _ReferencedAttributes.CONDITION_UNSPECIFIED,
    _ReferencedAttributes.ABSENCE,
    _ReferencedAttributes.EXACT,
    _ReferencedAttributes.REGEX,
)
_WIRE_OPERATIONS: Final = (
    check_pb2.HeaderOperation.REPLACE,
    check_pb2.HeaderOperation.REMOVE,
    check_pb2.HeaderOperation.APPEND,
)


# --- errors ------------------------------------------------------------------------------------


class BadRequest(ValueError):
    """A request message is malformed. ``field`` names where (``attributes.strings``, ...)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DictionaryMismatch(ValueError):
    """The caller claims to know more global dictionary words than mixerd (Mixer answers INTERNAL)."""


def check_dictionary(global_word_count: int) -> None:
    """Raise :class:`DictionaryMismatch` when a caller's ``global_word_count`` exceeds mixerd's."""
    if global_word_count > GLOBAL_WORD_COUNT:
        raise DictionaryMismatch(
            "inconsistent global dictionary versions used: "
            f"mixer knows {GLOBAL_WORD_COUNT} words, caller knows {global_word_count}"
        )


# --- dictionaries ------------------------------------------------------------------------------

_GLOBAL_PREFIXES: dict[int, tuple[str, ...]] = {}


def _global_words(global_word_count: int) -> tuple[str, ...]:
    """The global words a caller may index: all of them when the count is 0 (not given)."""
    if global_word_count == 0 or global_word_count >= GLOBAL_WORD_COUNT:
        check_dictionary(global_word_count)
        return GLOBAL_DICTIONARY
    words = _GLOBAL_PREFIXES.get(global_word_count)
    if words is None:
        words = _GLOBAL_PREFIXES[global_word_count] = GLOBAL_DICTIONARY[:global_word_count]
    return words


def _index_problem(index: int, g: Sequence[str], w: Sequence[str]) -> str | None:
    """Why ``index`` does not resolve against the global words ``g`` and message words ``w``."""
    if index >= 0:
        if index < len(g):
            return None
        if len(g) < GLOBAL_WORD_COUNT:
            return f"index {index} is outside the global dictionary (the caller knows {len(g)} words)"
        return f"index {index} is outside the global dictionary ({len(g)} words)"
    if ~index < len(w):
        return None
    return f"index {index} is outside the message dictionary ({len(w)} words)"


# --- decoding values ---------------------------------------------------------------------------

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_timedelta: Final = _dt.timedelta  # called as (days, seconds, microseconds): positional is faster
_TIMESTAMP_MIN: Final = -62_135_596_800  # 0001-01-01T00:00:00Z
_TIMESTAMP_MAX: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION_MAX: Final = 315_576_000_000  # 10,000 years, the documented range of Duration
_NANOS: Final = 1_000_000_000

# Kinds of the values a ProtoBag converts on first use. Until then the bag holds a
# (kind, raw) tuple; a tuple is never an attribute value, so the type test is exact.
_TIMESTAMP: Final = 0
_DURATION: Final = 1
_IP: Final = 2
_STRING_MAP: Final = 3


def _timestamp_problem(seconds: int, nanos: int) -> str | None:
    if not _TIMESTAMP_MIN <= seconds <= _TIMESTAMP_MAX:
        return f"seconds {seconds} is outside the supported range (years 1 to 9999)"
    if not 0 <= nanos < _NANOS:
        return f"nanos {nanos} is outside 0..999999999"
    return None


def _duration_problem(seconds: int, nanos: int) -> str | None:
    if not -_DURATION_MAX <= seconds <= _DURATION_MAX:
        return f"seconds {seconds} is outside the supported range (+-10000 years)"
    if not -_NANOS < nanos < _NANOS:
        return f"nanos {nanos} is outside -999999999..999999999"
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        return f"seconds {seconds} and nanos {nanos} have different signs"
    return None


def _to_datetime(ts: Any) -> _dt.datetime:
    return _EPOCH + _timedelta(0, ts.seconds, ts.nanos // 1000)


def _to_timedelta(d: Any) -> _dt.timedelta:
    nanos = d.nanos
    return _timedelta(0, d.seconds, nanos // 1000 if nanos >= 0 else -(-nanos // 1000))


# Mixer's probe order, and each typed map's field name for error messages.
_FIELDS: Final = ("strings", "string_maps", "int64s", "doubles", "bools", "timestamps", "durations", "bytes")


def _diagnose(msg: Any, g: Sequence[str], w: Sequence[str], where: str) -> BadRequest:
    """Find the first problem of a message the fast index builder rejected, and describe it."""
    seen: dict[str, str] = {}
    for field in _FIELDS:
        container = getattr(msg, field)
        for key in sorted(container):
            problem = _index_problem(key, g, w)
            if problem is not None:
                return BadRequest(f"{where}.{field}", problem)
            name = g[key] if key >= 0 else w[~key]
            if name in seen:
                if seen[name] == field:
                    problem = f"attribute {name!r} appears twice"
                else:
                    problem = f"attribute {name!r} appears in both {seen[name]} and {field}"
                return BadRequest(f"{where}.{field}", problem)
            seen[name] = field
            value = container[key]
            here = f"{where}.{field}[{name}]"
            if field == "strings":
                problem = _index_problem(value, g, w)
                if problem is not None:
                    return BadRequest(here, "value " + problem)
            elif field == "string_maps":
                entries = value.entries
                for k in sorted(entries):
                    problem = _index_problem(k, g, w)
                    if problem is not None:
                        return BadRequest(here, "key " + problem)
                    problem = _index_problem(entries[k], g, w)
                    if problem is not None:
                        return BadRequest(here, "value " + problem)
            elif field == "timestamps":
                problem = _timestamp_problem(value.seconds, value.nanos)
                if problem is not None:
                    return BadRequest(here, problem)
            elif field == "durations":
                problem = _duration_problem(value.seconds, value.nanos)
                if problem is not None:
                    return BadRequest(here, problem)
            elif field == "bytes" and len(value) not in (0, 4, 16):
                return BadRequest(here, f"an IP address has 4 or 16 bytes, not {len(value)}")
    return BadRequest(where, "malformed compressed attributes")


def _index(msg: Any, g: Sequence[str], w: Sequence[str], where: str) -> dict[str, Any]:
    """Validate ``msg`` and map each attribute name to its value or to a (kind, raw) tuple.

    Strings and numbers are stored as is (reading them is the check). Timestamps, durations,
    IP addresses and string maps are checked here and converted on first use. Any problem sends
    the message to :func:`_diagnose`, which names it; the fast path does no bookkeeping beyond
    what the conversion does anyway (an out-of-range index raises ``IndexError`` by itself).
    """
    # Reading a value out of a upb map costs several times more than iterating its keys, and
    # getitem in a plain loop is the cheapest way to read (cheaper than items() or dict()).
    values: dict[str, Any] = {}
    count = 0
    try:
        m = msg.strings
        n = len(m)
        if n:
            count = n
            for k in m:
                v = m[k]
                values[g[k] if k >= 0 else w[~k]] = g[v] if v >= 0 else w[~v]
        m = msg.string_maps
        n = len(m)
        if n:
            count += n
            lo = -len(w)
            hi = len(g)
            for k in m:
                entries = m[k].entries
                for a in entries:
                    b = entries[a]
                    if not (lo <= a < hi and lo <= b < hi):
                        raise IndexError
                values[g[k] if k >= 0 else w[~k]] = (_STRING_MAP, entries)
        for m in (msg.int64s, msg.doubles, msg.bools):
            n = len(m)
            if n:
                count += n
                for k in m:
                    values[g[k] if k >= 0 else w[~k]] = m[k]
        m = msg.timestamps
        n = len(m)
        if n:
            count += n
            for k in m:
                t = m[k]
                if not (_TIMESTAMP_MIN <= t.seconds <= _TIMESTAMP_MAX and 0 <= t.nanos < _NANOS):
                    raise IndexError
                values[g[k] if k >= 0 else w[~k]] = (_TIMESTAMP, t)
        m = msg.durations
        n = len(m)
        if n:
            count += n
            for k in m:
                d = m[k]
                seconds = d.seconds
                nanos = d.nanos
                if not (
                    -_DURATION_MAX <= seconds <= _DURATION_MAX
                    and -_NANOS < nanos < _NANOS
                    and (seconds <= 0 or nanos >= 0)
                    and (seconds >= 0 or nanos <= 0)
                ):
                    raise IndexError
                values[g[k] if k >= 0 else w[~k]] = (_DURATION, d)
        m = msg.bytes
        n = len(m)
        if n:
            count += n
            for k in m:
                b = m[k]
                if len(b) not in (0, 4, 16):
                    raise IndexError
                values[g[k] if k >= 0 else w[~k]] = (_IP, b)
    except IndexError:
        raise _diagnose(msg, g, w, where) from None
    if len(values) != count:
        raise _diagnose(msg, g, w, where)
    return values


# --- ProtoBag ----------------------------------------------------------------------------------


class ProtoBag(Bag):
    """An attribute bag over one ``CompressedAttributes`` message.

    Building the bag checks every dictionary index (and the shape of every timestamp, duration
    and IP address) once, so a malformed message raises :class:`BadRequest` before anything is
    dispatched. Values that need converting (timestamps, durations, IP addresses, string maps)
    are converted when first read.

    With ``track=True`` every ``get`` is recorded in :attr:`tracker`: ``ABSENCE`` or ``EXACT``,
    and for a string map its name goes into ``tracker.whole_maps`` and the map comes back as a
    :class:`~mixerd.attribute.TrackedStringMap` whose key lookups are recorded as ``name[key]``.
    ``track=False`` (Report) keeps ``get`` as cheap as possible; the tracker then stays empty.

    ``default_words`` is the word list used when the message has none of its own (Report's
    request-level ``default_words``). ``where`` prefixes error messages.
    """

    __slots__ = ("_g", "_values", "_w", "tracker")

    tracker: ReferenceTracker
    """The references recorded by ``get`` (always empty when the bag does not track)."""
    _g: Sequence[str]
    _w: Sequence[str]
    _values: dict[str, Any]

    def __new__(
        cls,
        attributes: attributes_pb2.CompressedAttributes,
        *,
        global_word_count: int = 0,
        default_words: Sequence[str] = (),
        track: bool = True,
        tracker: ReferenceTracker | None = None,
        where: str = "attributes",
    ) -> ProtoBag:
        # An untracking bag is a subclass whose get() has no tracking branch at all.
        return object.__new__(cls if track or cls is not ProtoBag else _UntrackedProtoBag)

    def __init__(
        self,
        attributes: attributes_pb2.CompressedAttributes,
        *,
        global_word_count: int = 0,
        default_words: Sequence[str] = (),
        track: bool = True,
        tracker: ReferenceTracker | None = None,
        where: str = "attributes",
    ) -> None:
        g = _global_words(global_word_count)
        own = attributes.words
        w: Sequence[str] = tuple(own) if own else default_words
        self._g = g
        self._w = w
        self._values = _index(attributes, g, w, where)
        self.tracker = ReferenceTracker() if tracker is None else tracker

    def _convert(self, name: str, lazy: tuple[int, Any]) -> Any:
        value = _convert_raw(lazy, self._g, self._w)
        self._values[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get(name, MISSING)
        tracker = self.tracker
        if value is MISSING:
            tracker.record(name, False)
            return default
        if type(value) is tuple:
            value = self._convert(name, value)
        tracker.record(name, True)
        if type(value) is dict:
            tracker.whole_maps.add(name)
            return TrackedStringMap(name, value, tracker)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        """Every attribute, converted (string maps as plain dicts), without recording references."""
        values = self._values
        for name, value in list(values.items()):
            if type(value) is tuple:
                self._convert(name, value)
        return dict(values)

    def __repr__(self) -> str:
        return f"ProtoBag({self.to_dict()!r})"


class _UntrackedProtoBag(ProtoBag):
    """A :class:`ProtoBag` built with ``track=False``: ``get`` records nothing."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get(name, default)
        if type(value) is tuple and value is not default:
            return self._convert(name, value)
        return value


# --- Report ------------------------------------------------------------------------------------


def decode_report(req: report_pb2.ReportRequest) -> list[Mapping[str, Any]]:
    """The attribute bags of a ``ReportRequest``, one per attribute set, in order.

    Each bag is a plain ``dict`` of converted values (nobody tracks references in a Report, and
    a dict is the cheapest mapping to read). A set without words of its own uses
    ``default_words``. With ``INDEPENDENT_ENCODING`` each set stands alone; with
    ``DELTA_ENCODING`` (the proto default) set *i* is the attributes of sets 0..i applied in
    order, later values replacing earlier ones.

    Raises :class:`DictionaryMismatch` for a too-large ``global_word_count`` and
    :class:`BadRequest` (naming ``attributes[i]...``) for a malformed set.
    """
    sets = req.attributes
    if not sets:
        check_dictionary(req.global_word_count)
        return []
    gwc = req.global_word_count
    default = tuple(req.default_words)
    g = _global_words(gwc)
    if req.repeated_attributes_semantics == INDEPENDENT_ENCODING:
        out: list[Mapping[str, Any]] = []
        for i, msg in enumerate(sets):
            own = msg.words
            w = tuple(own) if own else default
            out.append(_materialize(_index(msg, g, w, f"attributes[{i}]"), g, w))
        return out
    out = []
    accumulated: dict[str, Any] = {}
    for i, msg in enumerate(sets):
        own = msg.words
        w = tuple(own) if own else default
        accumulated.update(_materialize(_index(msg, g, w, f"attributes[{i}]"), g, w))
        out.append(dict(accumulated))
    return out


def _convert_raw(lazy: tuple[int, Any], g: Sequence[str], w: Sequence[str]) -> Any:
    """The value of an entry :func:`_index` left raw (already checked): a string map, timestamp,
    duration or IP address."""
    kind, raw = lazy
    if kind == _STRING_MAP:
        return {g[a] if a >= 0 else w[~a]: g[b] if b >= 0 else w[~b] for a, b in raw.items()}
    if kind == _TIMESTAMP:
        return _to_datetime(raw)
    if kind == _DURATION:
        return _to_timedelta(raw)
    return IPAddress(raw)


def _materialize(values: dict[str, Any], g: Sequence[str], w: Sequence[str]) -> dict[str, Any]:
    """Convert the values :func:`_index` left raw, in place: a plain dict is the cheapest bag to
    read (every lookup a C call), and every Report attribute set is read many times."""
    for name, value in values.items():
        if type(value) is tuple:
            values[name] = _convert_raw(value, g, w)
    return values


# --- encoding attributes (client side) ---------------------------------------------------------


class _Words:
    """Assigns dictionary indices: global words the caller may use, else message-dictionary slots."""

    __slots__ = ("_limit", "_slots", "words")

    def __init__(self, global_word_count: int, words: list[str] | None = None) -> None:
        self._limit = global_word_count
        self.words: list[str] = [] if words is None else words
        self._slots: dict[str, int] = {}
        for slot, word in enumerate(self.words):
            self._slots.setdefault(word, ~slot)

    def index(self, word: str) -> int:
        i = GLOBAL_INDEX.get(word)
        if i is not None and i < self._limit:
            return i
        return self.local(word)

    def local(self, word: str) -> int:
        i = self._slots.get(word)
        if i is None:
            i = self._slots[word] = ~len(self.words)
            self.words.append(word)
        return i


_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def _coerce(name: str, value: Any, vtype: ValueType) -> Any:
    """Turn ``value`` into the runtime representation of ``vtype`` (strings are parsed)."""
    if vtype in (ValueType.STRING, ValueType.DNS_NAME, ValueType.EMAIL_ADDRESS, ValueType.URI):
        if isinstance(value, str):
            return value
    elif vtype is ValueType.INT64:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value, 10)
            except ValueError:
                pass
    elif vtype is ValueType.DOUBLE:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif vtype is ValueType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif vtype is ValueType.TIMESTAMP:
        if isinstance(value, _dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return parse_timestamp(value)
            except ValueError:
                pass
    elif vtype is ValueType.DURATION:
        if isinstance(value, _dt.timedelta):
            return value
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError:
                pass
    elif vtype is ValueType.IP_ADDRESS:
        if isinstance(value, IPAddress | bytes | bytearray | ipaddress.IPv4Address | ipaddress.IPv6Address):
            return value
        if isinstance(value, str):
            try:
                return IPAddress.parse(value)
            except ValueError:
                pass
    elif vtype is ValueType.STRING_MAP and isinstance(value, Mapping):
        return value
    raise ValueError(f"attribute {name}: {value!r} is not a valid {vtype.name} value")


def _timestamp_pb(value: _dt.datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _duration_pb(value: _dt.timedelta) -> duration_pb2.Duration:
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = -1 if micros < 0 else 1
    seconds, rest = divmod(abs(micros), 1_000_000)
    return duration_pb2.Duration(seconds=sign * seconds, nanos=sign * rest * 1000)


def _encode(
    values: Mapping[str, Any], manifest: Manifest | None, words: _Words
) -> attributes_pb2.CompressedAttributes:
    strings: dict[int, int] = {}
    int64s: dict[int, int] = {}
    doubles: dict[int, float] = {}
    bools: dict[int, bool] = {}
    timestamps: dict[int, timestamp_pb2.Timestamp] = {}
    durations: dict[int, duration_pb2.Duration] = {}
    raw: dict[int, bytes] = {}
    string_maps: dict[int, attributes_pb2.StringMap] = {}
    index = words.index
    for name, given in values.items():
        vtype = None if manifest is None else manifest.get(name)
        value = given if vtype is None else _coerce(name, given, vtype)
        key = index(name)
        if isinstance(value, bool):
            bools[key] = value
        elif isinstance(value, str):
            strings[key] = index(value)
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"attribute {name}: {value} does not fit in 64 bits")
            int64s[key] = value
        elif isinstance(value, float):
            doubles[key] = value
        elif isinstance(value, _dt.datetime):
            timestamps[key] = _timestamp_pb(value)
        elif isinstance(value, _dt.timedelta):
            durations[key] = _duration_pb(value)
        elif isinstance(value, IPAddress | ipaddress.IPv4Address | ipaddress.IPv6Address):
            raw[key] = value.packed
        elif isinstance(value, bytes | bytearray):
            if len(value) not in (0, 4, 16):
                raise ValueError(f"attribute {name}: an IP address has 4 or 16 bytes, not {len(value)}")
            raw[key] = bytes(value)
        elif isinstance(value, Mapping):
            entries: dict[int, int] = {}
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise ValueError(f"attribute {name}: a string map holds strings, not {k!r}: {v!r}")
                entries[index(k)] = index(v)
            string_maps[key] = attributes_pb2.StringMap(entries=entries)
        else:
            raise ValueError(f"attribute {name}: cannot send a {type(value).__name__} value")
    return _CompressedAttributes(
        strings=strings,
        int64s=int64s,
        doubles=doubles,
        bools=bools,
        timestamps=timestamps,
        durations=durations,
        bytes=raw,
        string_maps=string_maps,
    )


def encode_attributes(
    values: Mapping[str, Any],
    manifest: Manifest | None = None,
    *,
    words: list[str] | None = None,
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> attributes_pb2.CompressedAttributes:
    """Compress ``values`` into a ``CompressedAttributes`` message.

    Each value goes into the typed map of its Python type (``bool`` -> bools, ``int`` -> int64s,
    ``float`` -> doubles, ``str`` -> strings, ``datetime`` -> timestamps, ``timedelta`` ->
    durations, :class:`IPAddress` or raw bytes -> bytes, ``Mapping`` -> string_maps). With a
    ``manifest``, the attributes it lists are first converted to their declared type, so
    ``"10.0.0.1"`` becomes an IP address and ``"200"`` an INT64 (``ValueError`` otherwise).

    Names and strings use the first ``global_word_count`` global words where possible and a
    message dictionary otherwise. With ``words`` given, that list is the (shared) message
    dictionary: new words are appended to it and the message's own ``words`` stays empty, as
    Envoy does with a Report's ``default_words``.
    """
    check_dictionary(global_word_count)
    if words is None:
        state = _Words(global_word_count)
        msg = _encode(values, manifest, state)
        msg.words.extend(state.words)
        return msg
    return _encode(values, manifest, _Words(global_word_count, words))


def build_check_request(
    values: Mapping[str, Any],
    manifest: Manifest | None = None,
    *,
    quotas: Mapping[str, int | tuple[int, bool]] | None = None,
    dedup_id: str = "",
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> check_pb2.CheckRequest:
    """A ``CheckRequest`` for ``values``.

    ``quotas`` maps a quota name to an amount or to ``(amount, best_effort)``.
    """
    req = check_pb2.CheckRequest(
        attributes=encode_attributes(values, manifest, global_word_count=global_word_count),
        global_word_count=global_word_count,
        deduplication_id=dedup_id,
    )
    for name, params in (quotas or {}).items():
        amount, best_effort = (params, False) if isinstance(params, int) else params
        req.quotas[name].amount = amount
        req.quotas[name].best_effort = best_effort
    return req


def build_report_request(
    sets: Iterable[Mapping[str, Any]],
    manifest: Manifest | None = None,
    *,
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> report_pb2.ReportRequest:
    """A ``ReportRequest`` of independent attribute sets that share one ``default_words`` list.

    This is how Envoy batches reports.
    """
    check_dictionary(global_word_count)
    state = _Words(global_word_count)
    messages = [_encode(values, manifest, state) for values in sets]
    return report_pb2.ReportRequest(
        attributes=messages,
        default_words=state.words,
        global_word_count=global_word_count,
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )


# --- Check responses ---------------------------------------------------------------------------


class Operation(enum.IntEnum):
    """What a :class:`~mixerd.runtime.HeaderOperation` does (``HeaderOperation.Operation`` on the wire)."""

    REPLACE = 0
    REMOVE = 1
    APPEND = 2


def encode_referenced(
    references: Iterable[Reference],
    whole_maps: Collection[str] = (),
    global_word_count: int = 0,
) -> check_pb2.ReferencedAttributes:
    """``ReferencedAttributes`` for ``references`` (a tracker's ``references()``).

    Words go through the global dictionary when their index is below the caller's
    ``global_word_count`` (0 = none) and into the message dictionary otherwise. An EXACT
    reference to a whole string map listed in ``whole_maps`` is left out (only its keys matter
    to the proxy, as in Mixer). A map key never uses index 0, which means "no key" on the wire.
    """
    words = _Words(global_word_count)
    out = _ReferencedAttributes()
    add = out.attribute_matches.add  # filling added entries is the cheapest way to build them
    for ref in references:
        if ref.map_key is None:
            if ref.condition is Condition.EXACT and ref.name in whole_maps:
                continue
            match = add()
            match.name = words.index(ref.name)
        else:
            match = add()
            match.name = words.index(ref.name)
            key = words.index(ref.map_key)
            match.map_key = key if key != 0 else words.local(ref.map_key)
        match.condition = _WIRE_CONDITIONS[ref.condition]
    out.words.extend(words.words)
    return out


def encode_route_directive(directive: RouteDirective) -> check_pb2.RouteDirective:
    """The wire form of a :class:`RouteDirective` (``ValueError`` for an unknown operation)."""

    def ops(items: Iterable[HeaderOperation]) -> list[check_pb2.HeaderOperation]:
        out = []
        for op in items:
            if op.operation not in (0, 1, 2):
                raise ValueError(f"header {op.name}: unknown header operation {op.operation}")
            operation = _WIRE_OPERATIONS[op.operation]
            out.append(check_pb2.HeaderOperation(name=op.name, value=op.value, operation=operation))
        return out

    return check_pb2.RouteDirective(
        request_header_operations=ops(directive.request_header_operations),
        response_header_operations=ops(directive.response_header_operations),
        direct_response_code=directive.direct_response_code,
        direct_response_body=directive.direct_response_body,
    )


def encode_precondition(
    *,
    status_code: int = 0,
    message: str = "",
    valid_duration: _dt.timedelta = _dt.timedelta(0),
    valid_use_count: int = 0,
    referenced: check_pb2.ReferencedAttributes | None = None,
    route_directive: RouteDirective | None = None,
) -> check_pb2.CheckResponse.PreconditionResult:
    """A ``CheckResponse.PreconditionResult``; ``referenced`` is an :func:`encode_referenced` result."""
    result = _PreconditionResult(valid_duration=_duration_pb(valid_duration), valid_use_count=valid_use_count)
    result.status.code = status_code
    result.status.message = message
    if referenced is not None:
        result.referenced_attributes.CopyFrom(referenced)
    if route_directive is not None:
        result.route_directive.CopyFrom(encode_route_directive(route_directive))
    return result


def encode_quota_result(
    *,
    status_code: int = 0,
    message: str = "",
    valid_duration: _dt.timedelta = _dt.timedelta(0),
    granted_amount: int = 0,
    referenced: check_pb2.ReferencedAttributes | None = None,
) -> check_pb2.CheckResponse.QuotaResult:
    """A ``CheckResponse.QuotaResult``; ``referenced`` is an :func:`encode_referenced` result."""
    result = _QuotaResult(valid_duration=_duration_pb(valid_duration), granted_amount=granted_amount)
    result.status.code = status_code
    result.status.message = message
    if referenced is not None:
        result.referenced_attributes.CopyFrom(referenced)
    return result


# --- decoding Check responses (client side) ----------------------------------------------------

_STATUS_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def status_code_name(code: int) -> str:
    """The gRPC name of a status code (``7`` -> ``"PERMISSION_DENIED"``), or the number as text."""
    return _STATUS_NAMES[code] if 0 <= code < len(_STATUS_NAMES) else str(code)


def decode_referenced(referenced: check_pb2.ReferencedAttributes) -> list[str]:
    """``ReferencedAttributes`` as sorted ``name`` / ``-name`` / ``map[key]`` / ``-map[key]`` strings.

    REGEX matches read ``name~/regex/``. Raises ``ValueError`` for an index that names no word.
    """
    words = tuple(referenced.words)

    def word(index: int) -> str:
        problem = _index_problem(index, GLOBAL_DICTIONARY, words)
        if problem is not None:
            raise ValueError(f"referenced_attributes: {problem}")
        return GLOBAL_DICTIONARY[index] if index >= 0 else words[~index]

    out = []
    for match in referenced.attribute_matches:
        text = word(match.name)
        if match.map_key:
            text += f"[{word(match.map_key)}]"
        if match.condition == Condition.ABSENCE:
            text = "-" + text
        elif match.condition == Condition.REGEX:
            text += f"~/{match.regex}/"
        out.append(text)
    return sorted(out)


def decode_route_directive(directive: check_pb2.RouteDirective) -> RouteDirective:
    """A wire ``RouteDirective`` as a :class:`RouteDirective`."""

    def ops(items: Iterable[check_pb2.HeaderOperation]) -> tuple[HeaderOperation, ...]:
        return tuple(HeaderOperation(op.name, op.value, HeaderAction(op.operation)) for op in items)

    return RouteDirective(
        request_header_operations=ops(directive.request_header_operations),
        response_header_operations=ops(directive.response_header_operations),
        direct_response_code=directive.direct_response_code,
        direct_response_body=directive.direct_response_body,
    )


def _readable_duration(d: Any) -> str:
    return format_duration(_to_timedelta(d))


def _readable_directive(directive: RouteDirective) -> dict[str, Any]:
    def ops(items: tuple[HeaderOperation, ...]) -> list[dict[str, str]]:
        return [
            {
                "name": op.name,
                "value": op.value,
                "operation": op.operation.name,
            }
            for op in items
        ]

    out: dict[str, Any] = {}
    if directive.request_header_operations:
        out["request_header_operations"] = ops(directive.request_header_operations)
    if directive.response_header_operations:
        out["response_header_operations"] = ops(directive.response_header_operations)
    if directive.direct_response_code:
        out["direct_response_code"] = directive.direct_response_code
    if directive.direct_response_body:
        out["direct_response_body"] = directive.direct_response_body
    return out


def decode_check_response(resp: check_pb2.CheckResponse) -> dict[str, Any]:
    """A ``CheckResponse`` as plain, printable values.

    Keys: ``status`` (code name), ``message``, ``valid_duration`` (Go duration text),
    ``valid_use_count``, ``referenced`` (see :func:`decode_referenced`), ``route_directive``
    (only when the response has one) and ``quotas`` (name -> ``status``, ``message``,
    ``granted_amount``, ``valid_duration``, ``referenced``).
    """
    pre = resp.precondition
    out: dict[str, Any] = {
        "status": status_code_name(pre.status.code),
        "message": pre.status.message,
        "valid_duration": _readable_duration(pre.valid_duration),
        "valid_use_count": pre.valid_use_count,
        "referenced": decode_referenced(pre.referenced_attributes),
    }
    if pre.HasField("route_directive"):
        out["route_directive"] = _readable_directive(decode_route_directive(pre.route_directive))
    quotas: dict[str, Any] = {}
    for name in sorted(resp.quotas):
        q = resp.quotas[name]
        quotas[name] = {
            "status": status_code_name(q.status.code),
            "message": q.status.message,
            "granted_amount": q.granted_amount,
            "valid_duration": _readable_duration(q.valid_duration),
            "referenced": decode_referenced(q.referenced_attributes),
        }
    out["quotas"] = quotas
    return out
