"""Decoding Mixer v1 requests on the server: compressed attributes into bags, Reports into dicts.

Pure functions and classes (no I/O, no asyncio). :class:`ProtoBag` is a lazy attribute bag over
one ``CompressedAttributes`` message (optionally recording references, for Check);
:func:`decode_report` turns a ``ReportRequest`` into one bag per attribute set
(:func:`decode_report_steps` is the same as a generator yielding every few milliseconds of work,
for a caller on an event loop). :class:`~mixerd.api.mixer_v1.wire.RequestLimits` bound what one
request may ask for; they are checked before anything is decoded.
Malformed messages raise :class:`~mixerd.api.mixer_v1.wire.BadRequest` naming the field; a
caller that claims more global words than mixerd knows raises
:class:`~mixerd.api.mixer_v1.wire.DictionaryMismatch`.

**Typed maps and the manifest** (:class:`WireTypes`). Each attribute travels in the typed map of
its manifest type (STRING, DNS_NAME, EMAIL_ADDRESS, URI in ``strings``; STRING_MAP in
``string_maps``; IP_ADDRESS in ``bytes`` ...). Mixer's bag took a value from whichever map it came
in, and the expression then failed to evaluate it, so a rule whose match read it did not apply:
sending ``request.headers`` as a string slipped past ``request.headers["x-user"] == "blocked"``,
and ``response.code`` as a string compared unequal to every number without an error. Given the
manifest in force, mixerd rejects such a request instead (INVALID_ARGUMENT naming the attribute,
the manifest's type and the type sent); nothing is converted, and attributes the manifest does
not know (or declares VALUE_TYPE_UNSPECIFIED) may come in any map.
"""

from __future__ import annotations

import datetime as _dt
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Final

from mixerd._proto.mixer.v1 import attributes_pb2, report_pb2
from mixerd.api.caller import CALLER_PRINCIPAL
from mixerd.api.mixer_v1.wire import (
    EPOCH,
    INDEPENDENT_ENCODING,
    BadRequest,
    LimitExceeded,
    RequestLimits,
    check_dictionary,
    global_words,
    index_problem,
    to_timedelta,
)
from mixerd.attribute import (
    Bag,
    IPAddress,
    PartialAttributes,
    ReferenceTracker,
    TrackingBag,
    ValueType,
    entries_read,
    remember,
)

__all__ = [
    "DeltaBag",
    "ProtoBag",
    "WireTypes",
    "check_limits",
    "decode_report",
    "decode_report_steps",
]

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


_IPS: Final[dict[bytes, IPAddress]] = {}
"""Report decoding's addresses by their bytes: a proxy's batch repeats a few addresses over and
over, and an :class:`IPAddress` is immutable (at most ``_IPS_MAX``, then emptied)."""
_IPS_MAX: Final = 4096


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
    return EPOCH + _timedelta(0, ts.seconds, ts.nanos // 1000)


# Mixer's probe order, and each typed map's field name for error messages.
_FIELDS: Final = ("strings", "string_maps", "int64s", "doubles", "bools", "timestamps", "durations", "bytes")

_FIELD_OF: Final[Mapping[ValueType, str]] = {
    ValueType.STRING: "strings",
    ValueType.DNS_NAME: "strings",
    ValueType.EMAIL_ADDRESS: "strings",
    ValueType.URI: "strings",
    ValueType.STRING_MAP: "string_maps",
    ValueType.INT64: "int64s",
    ValueType.DOUBLE: "doubles",
    ValueType.BOOL: "bools",
    ValueType.TIMESTAMP: "timestamps",
    ValueType.DURATION: "durations",
    ValueType.IP_ADDRESS: "bytes",
}
"""The typed map each value type travels in (Mixer's ``attributes.proto``)."""

_SENT_AS: Final[Mapping[str, str]] = {
    "strings": "a STRING",
    "string_maps": "a STRING_MAP",
    "int64s": "an INT64",
    "doubles": "a DOUBLE",
    "bools": "a BOOL",
    "timestamps": "a TIMESTAMP",
    "durations": "a DURATION",
    "bytes": "bytes (IP_ADDRESS)",
}


class WireTypes:
    """For one attribute manifest, the attributes each typed map must not carry (those the
    manifest puts in another map). Built once per config; ``misplaced[field]`` is a frozenset, so
    checking an attribute costs one set lookup."""

    __slots__ = ("manifest", "misplaced")

    def __init__(self, manifest: Mapping[str, ValueType]) -> None:
        self.manifest = manifest
        """The manifest these sets were computed from (compared by identity to reuse them)."""
        wrong: dict[str, set[str]] = {f: set() for f in _FIELDS}
        for name, value_type in manifest.items():
            home = _FIELD_OF.get(value_type)
            if home is None:
                continue  # VALUE_TYPE_UNSPECIFIED: any map
            for f in _FIELDS:
                if f != home:
                    wrong[f].add(name)
        self.misplaced: Mapping[str, frozenset[str]] = {f: frozenset(v) for f, v in wrong.items()}

    def problem(self, name: str, field: str) -> str | None:
        """Why ``name`` may not come in ``field``, or ``None``."""
        if name not in self.misplaced[field]:
            return None
        expected = self.manifest[name]
        return (
            f"attribute {name!r} is {expected.name} in the attribute manifest, but was sent as "
            f"{_SENT_AS[field]}"
        )


_ANY_TYPES: Final = WireTypes({})


def _diagnose(msg: Any, g: Sequence[str], w: Sequence[str], where: str, types: WireTypes) -> BadRequest:
    """Find the first problem of a message the fast index builder rejected, and describe it."""
    seen: dict[str, str] = {}
    for field in _FIELDS:
        container = getattr(msg, field)
        for key in sorted(container):
            problem = index_problem(key, g, w)
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
            problem = types.problem(name, field)
            if problem is not None:
                return BadRequest(here, problem)
            if field == "strings":
                problem = index_problem(value, g, w)
                if problem is not None:
                    return BadRequest(here, "value " + problem)
            elif field == "string_maps":
                entries = value.entries
                for k in sorted(entries):
                    problem = index_problem(k, g, w)
                    if problem is not None:
                        return BadRequest(here, "key " + problem)
                    problem = index_problem(entries[k], g, w)
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


def _index(
    msg: Any,
    g: Sequence[str],
    w: Sequence[str],
    where: str,
    types: WireTypes = _ANY_TYPES,
    values: dict[str, Any] | None = None,
    wanted: frozenset[str] = frozenset(),
    rest: dict[str, Any] | None = None,
    entries: Mapping[str, frozenset[int]] | None = None,
) -> dict[str, Any]:
    """Validate ``msg`` and map each attribute name to its value or to a (kind, raw) tuple.

    Strings and numbers are stored as is (reading them is the check). Timestamps, durations,
    IP addresses and string maps are checked here and converted on first use. Each attribute is
    checked to come in the typed map of its ``types`` (one set lookup). Any problem sends the
    message to :func:`_diagnose`, which names it; the fast path does no bookkeeping beyond what
    the conversion does anyway (an out-of-range index raises ``IndexError`` by itself).
    ``mixerd.caller.principal`` is left out: only mixerd sets it (:mod:`mixerd.api.caller`).

    With ``rest`` (Report), those four kinds are converted at once for the names in ``wanted``
    and put in ``rest`` as (kind, raw) tuples for the others. ``entries`` (string maps not in
    ``wanted`` -> the word indices of the keys read, :func:`_key_indices`) makes such a map a dict
    of just those keys' entries in ``values``, the whole map going into ``rest`` as well (every
    entry is checked all the same). The attributes go into ``values`` (a new dict if None), which
    is returned.
    """
    # Reading a value out of a upb map costs several times more than iterating its keys, and
    # getitem in a plain loop is the cheapest way to read (cheaper than items() or dict()).
    if values is None:
        values = {}
    eager = rest is not None
    count = 0
    subsets: dict[str, dict[str, str]] | None = None
    misplaced = types.misplaced
    try:
        m = msg.strings
        n = len(m)
        if n:
            count = n
            wrong = misplaced["strings"]
            for k in m:
                v = m[k]
                name = g[k] if k >= 0 else w[~k]
                if name in wrong:
                    raise IndexError
                values[name] = g[v] if v >= 0 else w[~v]
        m = msg.string_maps
        n = len(m)
        if n:
            count += n
            lo = -len(w)
            hi = len(g)
            wrong = misplaced["string_maps"]
            for k in m:
                pairs = m[k].entries
                name = g[k] if k >= 0 else w[~k]
                if name in wrong:
                    raise IndexError
                keys = None if entries is None or name in wanted else entries.get(name)
                if keys is not None:
                    # only some entries are read: convert those (the same last one winning as
                    # in eager decoding when two indices name one key), keep the map for later
                    subset: dict[str, str] = {}
                    for a in pairs:
                        b = pairs[a]
                        if not (lo <= a < hi and lo <= b < hi):
                            raise IndexError
                        if a in keys:
                            subset[g[a] if a >= 0 else w[~a]] = g[b] if b >= 0 else w[~b]
                    if subsets is None:
                        subsets = {}
                    subsets[name] = subset
                    rest[name] = (_STRING_MAP, pairs)  # type: ignore[index]
                    continue
                for a in pairs:
                    b = pairs[a]
                    if not (lo <= a < hi and lo <= b < hi):
                        raise IndexError
                if not eager:
                    values[name] = (_STRING_MAP, pairs)
                elif name in wanted:
                    values[name] = {
                        g[a] if a >= 0 else w[~a]: g[b] if b >= 0 else w[~b] for a, b in pairs.items()
                    }
                else:
                    rest[name] = (_STRING_MAP, pairs)  # type: ignore[index]
        for field in ("int64s", "doubles", "bools"):
            m = getattr(msg, field)
            n = len(m)
            if n:
                count += n
                wrong = misplaced[field]
                for k in m:
                    name = g[k] if k >= 0 else w[~k]
                    if name in wrong:
                        raise IndexError
                    values[name] = m[k]
        m = msg.timestamps
        n = len(m)
        if n:
            count += n
            wrong = misplaced["timestamps"]
            for k in m:
                t = m[k]
                if not (_TIMESTAMP_MIN <= t.seconds <= _TIMESTAMP_MAX and 0 <= t.nanos < _NANOS):
                    raise IndexError
                name = g[k] if k >= 0 else w[~k]
                if name in wrong:
                    raise IndexError
                if not eager:
                    values[name] = (_TIMESTAMP, t)
                elif name in wanted:
                    values[name] = EPOCH + _timedelta(0, t.seconds, t.nanos // 1000)
                else:
                    rest[name] = (_TIMESTAMP, t)  # type: ignore[index]
        m = msg.durations
        n = len(m)
        if n:
            count += n
            wrong = misplaced["durations"]
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
                name = g[k] if k >= 0 else w[~k]
                if name in wrong:
                    raise IndexError
                if not eager:
                    values[name] = (_DURATION, d)
                elif name in wanted:
                    values[name] = _timedelta(0, seconds, nanos // 1000 if nanos >= 0 else -(-nanos // 1000))
                else:
                    rest[name] = (_DURATION, d)  # type: ignore[index]
        m = msg.bytes
        n = len(m)
        if n:
            count += n
            wrong = misplaced["bytes"]
            for k in m:
                b = m[k]
                if len(b) not in (0, 4, 16):
                    raise IndexError
                name = g[k] if k >= 0 else w[~k]
                if name in wrong:
                    raise IndexError
                if not eager:
                    values[name] = (_IP, b)
                elif name in wanted:
                    ip = _IPS.get(b)
                    if ip is None:
                        ip = remember(_IPS, b, IPAddress(b), _IPS_MAX)
                    values[name] = ip
                else:
                    rest[name] = (_IP, b)  # type: ignore[index]
    except IndexError:
        raise _diagnose(msg, g, w, where, types) from None
    if rest:
        if len(values) + len(rest) != count or not values.keys().isdisjoint(rest):
            raise _diagnose(msg, g, w, where, types)
        rest.pop(CALLER_PRINCIPAL, None)
        if subsets is not None:
            values.update(subsets)  # (after the check: these names are in rest too)
    elif len(values) != count:
        raise _diagnose(msg, g, w, where, types)
    values.pop(CALLER_PRINCIPAL, None)  # mixerd's to set, from the connection; never the caller's
    return values


# --- ProtoBag ----------------------------------------------------------------------------------


class _CompressedValues(Bag):
    """The attributes of one message, converted on first read; records nothing."""

    __slots__ = ("_g", "_values", "_w")

    def __init__(self, values: dict[str, Any], g: Sequence[str], w: Sequence[str]) -> None:
        self._values = values
        self._g = g
        self._w = w

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get(name, default)
        if type(value) is tuple and value is not default:
            value = self._values[name] = _convert_raw(value, self._g, self._w)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        values = self._values
        for name, value in list(values.items()):
            if type(value) is tuple:
                values[name] = _convert_raw(value, self._g, self._w)
        return dict(values)


class ProtoBag(TrackingBag):
    """An attribute bag over one ``CompressedAttributes`` message.

    Building the bag checks every dictionary index (and the shape of every timestamp, duration
    and IP address) once, so a malformed message raises :class:`BadRequest` before anything is
    dispatched. Values that need converting (timestamps, durations, IP addresses, string maps)
    are converted when first read.

    Reference tracking is :class:`~mixerd.attribute.TrackingBag`'s, over the lazily converted
    values: with ``track=True`` every ``get`` is recorded in :attr:`tracker` (``ABSENCE`` or
    ``EXACT``; a string map's name goes into ``tracker.whole_maps`` and the map comes back as a
    :class:`~mixerd.attribute.TrackedStringMap` recording ``name[key]`` lookups).
    ``track=False`` reads without recording; the tracker then stays empty.

    ``default_words`` is the word list used when the message has none of its own (Report's
    request-level ``default_words``). ``where`` prefixes error messages. ``types`` (the
    manifest in force) rejects attributes sent in another typed map than their type's.
    """

    __slots__ = ()

    _inner: _CompressedValues

    def __new__(cls, *args: Any, track: bool = True, **kwargs: Any) -> ProtoBag:
        # the arguments are __init__'s; only ``track`` picks the class
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
        types: WireTypes | None = None,
    ) -> None:
        g = global_words(global_word_count)
        own = attributes.words
        w: Sequence[str] = tuple(own) if own else default_words
        values = _index(attributes, g, w, where, _ANY_TYPES if types is None else types)
        super().__init__(_CompressedValues(values, g, w), tracker)

    def to_dict(self) -> dict[str, Any]:
        """Every attribute, converted (string maps as plain dicts), without recording references."""
        return self._inner.to_dict()

    def __repr__(self) -> str:
        return f"ProtoBag({self.to_dict()!r})"


class _UntrackedProtoBag(ProtoBag):
    """A :class:`ProtoBag` built with ``track=False``: ``get`` records nothing."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:
        return self._inner.get(name, default)


# --- limits ------------------------------------------------------------------------------------

_DEFAULT_LIMITS: Final = RequestLimits()


def _set_size(msg: Any, limits: RequestLimits, where: str) -> int:
    """Attributes plus string-map entries of one message, checked against ``limits`` (cheap:
    container lengths only, nothing is decoded)."""
    attributes = (
        len(msg.strings)
        + len(msg.int64s)
        + len(msg.doubles)
        + len(msg.bools)
        + len(msg.timestamps)
        + len(msg.durations)
        + len(msg.bytes)
    )
    maps = msg.string_maps
    size = attributes
    if maps:
        attributes += len(maps)
        size = attributes
        if attributes <= limits.attributes:
            most = limits.map_entries
            for k in maps:
                n = len(maps[k].entries)
                if n > most:
                    raise LimitExceeded(
                        f"{where}.string_maps", "entries in one string map", n, most, "--max-map-entries"
                    )
                size += n
    if attributes > limits.attributes:
        raise LimitExceeded(where, "attributes", attributes, limits.attributes, "--max-attributes")
    return size


def check_limits(
    msg: attributes_pb2.CompressedAttributes, limits: RequestLimits, where: str = "attributes"
) -> None:
    """Raise :class:`LimitExceeded` when one message (Check's attributes) is over ``limits``."""
    words = len(msg.words)
    if words > limits.words:
        raise LimitExceeded(f"{where}.words", "words", words, limits.words, "--max-request-words")
    size = _set_size(msg, limits, where)
    if size > limits.decoded_values:
        raise LimitExceeded(
            where,
            "attributes and map entries",
            size,
            limits.decoded_values,
            "--max-decoded-values",
            resource=True,
        )


def _check_report_limits(req: report_pb2.ReportRequest, limits: RequestLimits) -> list[int]:
    """Check a Report against ``limits`` before decoding anything; the size of each set."""
    sets = req.attributes
    n = len(sets)
    if n > limits.report_sets:
        raise LimitExceeded("attributes", "attribute sets", n, limits.report_sets, "--max-report-sets")
    words = len(req.default_words)
    sizes = []
    total = 0
    for i, msg in enumerate(sets):
        words += len(msg.words)
        size = _set_size(msg, limits, f"attributes[{i}]")
        sizes.append(size)
        total += size
    if words > limits.words:
        raise LimitExceeded("words", "words", words, limits.words, "--max-request-words")
    if total > limits.decoded_values:
        raise LimitExceeded(
            "attributes",
            "attributes and map entries",
            total,
            limits.decoded_values,
            "--max-decoded-values",
            resource=True,
        )
    return sizes


# --- Report ------------------------------------------------------------------------------------

_CHUNK: Final = 5000
"""Decoding work (attributes and map entries, plus one per set) between two yields of
:func:`decode_report_steps`: a few milliseconds."""


def decode_report(
    req: report_pb2.ReportRequest,
    limits: RequestLimits = _DEFAULT_LIMITS,
    types: WireTypes | None = None,
    *,
    caller: str | None = None,
    wanted: frozenset[str] | None = None,
) -> list[Mapping[str, Any]]:
    """The attribute bags of a ``ReportRequest``, one per attribute set, in order.

    Each bag is a plain ``dict`` of converted values (nobody tracks references in a Report, and
    a dict is the cheapest mapping to read), except for DELTA_ENCODING reports whose sets would
    add up to far more than the request holds (see :class:`DeltaBag`). A set without words of
    its own uses ``default_words``. With ``INDEPENDENT_ENCODING`` each set stands alone; with
    ``DELTA_ENCODING`` (the proto default) set *i* is the attributes of sets 0..i applied in
    order, later values replacing earlier ones.

    Memory and time are linear in the request. ``limits`` are checked before anything is
    decoded. ``caller`` (the SPIFFE ID of the connection's client certificate) becomes every
    set's ``mixerd.caller.principal``.

    ``wanted`` (the names the config in force reads) makes each set of an
    ``INDEPENDENT_ENCODING`` report (what Envoy sends) a
    :class:`~mixerd.attribute.PartialAttributes`: string maps, timestamps, durations and IP
    addresses of other names are checked but left undecoded until its ``complete()``; of a string
    map ``wanted`` names only entries of (:func:`~mixerd.attribute.map_entry`), only those entries
    are decoded.

    Raises :class:`DictionaryMismatch` for a too-large ``global_word_count``,
    :class:`LimitExceeded` for a request over ``limits`` and :class:`BadRequest` (naming
    ``attributes[i]...``) for a malformed set, or one with an attribute in another typed map than
    ``types`` give it.
    """
    steps = decode_report_steps(req, limits, types, caller=caller, wanted=wanted)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: list[Mapping[str, Any]] = done.value
            return result


def decode_report_steps(
    req: report_pb2.ReportRequest,
    limits: RequestLimits = _DEFAULT_LIMITS,
    types: WireTypes | None = None,
    *,
    caller: str | None = None,
    wanted: frozenset[str] | None = None,
) -> Generator[None, None, list[Mapping[str, Any]]]:
    """:func:`decode_report` as a generator that yields after every few milliseconds of work and
    returns the bags (a caller on an event loop lets other tasks run at each yield)."""
    sets = req.attributes
    if not sets:
        check_dictionary(req.global_word_count)
        return []
    gwc = req.global_word_count
    g = global_words(gwc)
    sizes = _check_report_limits(req, limits)
    default = tuple(req.default_words)
    typed = _ANY_TYPES if types is None else types
    work = 0
    decoded: list[Mapping[str, Any]] = []
    if wanted is not None and req.repeated_attributes_semantics == INDEPENDENT_ENCODING:
        convert_default = _converter(g, default)
        needs = entries_read(wanted)
        default_keys = _key_indices(needs, g, default) if needs else None
        for i, msg in enumerate(sets):
            own = msg.words
            rest: dict[str, Any] = {}
            partial = PartialAttributes()
            if own:
                w = tuple(own)
                keys = _key_indices(needs, g, w) if needs else None
                _index(msg, g, w, f"attributes[{i}]", typed, partial, wanted, rest, keys)
                partial.convert = _converter(g, w)
            else:
                _index(msg, g, default, f"attributes[{i}]", typed, partial, wanted, rest, default_keys)
                partial.convert = convert_default
            partial.rest = rest
            partial.decoded_for = wanted
            if caller is not None:
                partial[CALLER_PRINCIPAL] = caller
            decoded.append(partial)
            work += sizes[i] + 1
            if work >= _CHUNK:
                work = 0
                yield
        return decoded
    for i, msg in enumerate(sets):
        own = msg.words
        w = tuple(own) if own else default
        values = _materialize(_index(msg, g, w, f"attributes[{i}]", typed), g, w)
        if caller is not None:
            values[CALLER_PRINCIPAL] = caller
        decoded.append(values)
        work += sizes[i] + 1
        if work >= _CHUNK:
            work = 0
            yield
    if req.repeated_attributes_semantics == INDEPENDENT_ENCODING:
        return decoded
    # DELTA_ENCODING: set i is sets 0..i merged. Copying the merged dict for every set costs the
    # sum of their sizes, which grows with the square of the request (each set may add one new
    # attribute); copy only while that stays within a small multiple of the request itself.
    counts: list[int] = []
    names: set[str] = set()
    total = 0
    for delta in decoded:
        names.update(delta)
        counts.append(len(names))
        total += len(names)
        work += len(delta) + 1
        if work >= _CHUNK:
            work = 0
            yield
    if total <= max(_COPY_FLOOR, _COPY_FACTOR * sum(sizes)):
        out: list[Mapping[str, Any]] = []
        accumulated: dict[str, Any] = {}
        for i, delta in enumerate(decoded):
            accumulated.update(delta)
            out.append(dict(accumulated))
            work += counts[i] + 1
            if work >= _CHUNK:
                work = 0
                yield
        return out
    history = _DeltaHistory()
    for i, delta in enumerate(decoded):
        history.add(i, delta)
        work += len(delta) + 1
        if work >= _CHUNK:
            work = 0
            yield
    return [DeltaBag(history, i, counts[i]) for i in range(len(decoded))]


_COPY_FLOOR: Final = 65_536
_COPY_FACTOR: Final = 8


class _DeltaHistory:
    """Every value each name took in a DELTA_ENCODING report, with the set that gave it."""

    __slots__ = ("order", "versions")

    def __init__(self) -> None:
        self.order: list[str] = []
        """Names in the order they first appeared."""
        self.versions: dict[str, tuple[list[int], list[Any]]] = {}
        """name -> (the sets that set it, ascending; the values they set)."""

    def add(self, i: int, delta: Mapping[str, Any]) -> None:
        """Record set ``i`` (sets are added in order)."""
        versions = self.versions
        for name, value in delta.items():
            v = versions.get(name)
            if v is None:
                versions[name] = ([i], [value])
                self.order.append(name)
            else:
                v[0].append(i)
                v[1].append(value)


class DeltaBag(Mapping[str, Any]):
    """Set *i* of a DELTA_ENCODING report: the values of sets 0..i, later ones winning.

    All the sets of a report share one :class:`_DeltaHistory`, so the bags together take
    memory linear in the request (a dict per set would take the square); a lookup is a bisection
    over the sets that changed that name.
    """

    __slots__ = ("_count", "_history", "_i")

    def __init__(self, history: _DeltaHistory, i: int, count: int) -> None:
        self._history = history
        self._i = i
        self._count = count

    def get(self, name: str, default: Any = None) -> Any:
        v = self._history.versions.get(name)
        if v is None:
            return default
        sets, values = v
        if sets[0] > self._i:
            return default
        if len(sets) == 1:
            return values[0]
        return values[bisect_right(sets, self._i) - 1]

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        v = self._history.versions.get(name)  # type: ignore[call-overload]
        return v is not None and v[0][0] <= self._i

    def __iter__(self) -> Iterator[str]:
        return islice(self._history.order, self._count)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"DeltaBag({dict(self)!r})"


_MISSING: Final = object()


def _convert_raw(lazy: tuple[int, Any], g: Sequence[str], w: Sequence[str]) -> Any:
    """The value of an entry :func:`_index` left raw (already checked): a string map, timestamp,
    duration or IP address."""
    kind, raw = lazy
    if kind == _STRING_MAP:
        return {g[a] if a >= 0 else w[~a]: g[b] if b >= 0 else w[~b] for a, b in raw.items()}
    if kind == _TIMESTAMP:
        return _to_datetime(raw)
    if kind == _DURATION:
        return to_timedelta(raw)
    return IPAddress(raw)


_GLOBAL_KEYS: Final[dict[tuple[int, frozenset[str]], frozenset[int]]] = {}
"""The global word indices of a set of map keys, by the number of global words and the keys."""
_GLOBAL_KEYS_MAX: Final = 64


def _key_indices(
    needs: Mapping[str, frozenset[str]], g: Sequence[str], w: Sequence[str]
) -> dict[str, frozenset[int]]:
    """For each string map of which only some keys are read (``needs``: map -> keys), every word
    index (global, or of ``w``) that names one of its keys: a map entry is decoded when its key's
    index is one of these. Computed once per request for its default words (a word may appear
    more than once, and in both lists)."""
    out: dict[str, frozenset[int]] = {}
    for name, keys in needs.items():
        found = _GLOBAL_KEYS.get((len(g), keys))
        if found is None:
            found = frozenset(i for i, word in enumerate(g) if word in keys)
            remember(_GLOBAL_KEYS, (len(g), keys), found, _GLOBAL_KEYS_MAX)
        local = [~i for i, word in enumerate(w) if word in keys]
        out[name] = found.union(local) if local else found
    return out


def _converter(g: Sequence[str], w: Sequence[str]) -> Callable[[tuple[int, Any]], Any]:
    """:func:`_convert_raw` for one set's words."""
    return lambda lazy: _convert_raw(lazy, g, w)


def _materialize(values: dict[str, Any], g: Sequence[str], w: Sequence[str]) -> dict[str, Any]:
    """Convert the values :func:`_index` left raw, in place: a plain dict is the cheapest bag to
    read (every lookup a C call), and every Report attribute set is read many times."""
    for name, value in values.items():
        if type(value) is tuple:
            values[name] = _convert_raw(value, g, w)
    return values
