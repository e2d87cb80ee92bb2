"""The decision cache: Check answers reused for requests that cannot be told apart by what the
answer depended on.

A Check answer carries its *referenced attributes* (Mixer's ``ReferencedAttributes``): the
attributes, and keys of string-map attributes, the rules read, each as present (EXACT) or absent
(ABSENCE). Two requests that agree on every one of them get the same answer from the same config,
so the answer can be reused. That is how Mixer's proxies cached (``mixerclient/check_cache.cc``):

* a *shape* is the set of references of one answer: absent names, and present names whose values
  form the key; the cache keeps the shapes it has seen (a config has few: one per path through
  its rules), and a lookup tries each shape against the request;
* an entry lives for the answer's ``valid_duration`` and is used at most ``valid_use_count``
  times (handlers choose these: the list checker's ``cachingInterval``, the denier's
  ``validDuration``);
* only the *precondition* is cached: the verdict and its validity, the deciding rule and handler,
  and what attribute generators added. Header operations are evaluated for every request (they
  typically copy per-request values such as a request id) and quotas are always charged.

Never stale, by construction:

* a cache belongs to one routing table: a config change builds a new table, and with it an empty
  cache (the key includes the config generation);
* only answers that every handler gave are stored: a handler failure, a deadline, an evaluation
  error (fail-open skip or fail-closed denial) and answers with a REGEX reference are not;
* a string map whose whole value was used (iterated, compared, copied into an instance) is part of
  the key with its whole value; a map read only by key is keyed on those keys;
* attributes a front-end sets in a layer of its own, read without being recorded (the caller's
  SPIFFE ID over a Mixer API Check: a proxy's cache is per connection, this one is not), are part
  of the key whether or not a rule read them: the ``context`` of a lookup.

The module is sans-IO: time comes from a :class:`~mixerd.adapter.Clock`'s monotonic seconds.
"""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import CheckResult, Clock
from mixerd.attribute import MISSING, Condition, FrozenReferences

__all__ = ["DEFAULT_CACHE_ENTRIES", "CachedCheck", "CheckCache", "Shape"]

DEFAULT_CACHE_ENTRIES: Final = 10_000
"""Entries per config (Mixer's proxies kept 10,000)."""

_MAX_SHAPES: Final = 64
"""Distinct shapes tried per lookup: each costs a few dictionary reads, and a config whose answers
take more shapes than this gains little from a cache (new shapes are then not learnt)."""

_Ref = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Shape:
    """What an answer depended on: names (``(name, map_key)``) that must be absent, and names that
    must be present; ``whole`` lists present string maps keyed on their whole value."""

    absent: tuple[_Ref, ...]
    present: tuple[_Ref, ...]
    whole: frozenset[str]

    @staticmethod
    def of(references: FrozenReferences, whole_values: frozenset[str]) -> Shape | None:
        """The shape of an answer with these references; None when it cannot be cached (REGEX)."""
        absent: list[_Ref] = []
        present: list[_Ref] = []
        for ref, condition in references:
            if condition is Condition.ABSENCE:
                absent.append(ref)
            elif condition is Condition.EXACT:
                present.append(ref)
            else:
                return None
        return Shape(tuple(sorted(absent, key=_order)), tuple(sorted(present, key=_order)), whole_values)

    def key(self, bag: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The request's values for this shape, or None when the request does not fit it (a name
        that must be absent is present or the reverse)."""
        get = bag.get
        for name, map_key in self.absent:
            value = get(name, MISSING)
            if map_key is not None and value is not MISSING:
                value = value.get(map_key, MISSING) if isinstance(value, Mapping) else MISSING
            if value is not MISSING:
                return None
        values: list[Any] = []
        for name, map_key in self.present:
            value = get(name, MISSING)
            if value is MISSING:
                return None
            t = type(value)
            if map_key is not None:
                value = value.get(map_key, MISSING) if isinstance(value, Mapping) else MISSING
                if value is MISSING:
                    return None
                t = type(value)
            elif t not in _SCALARS and isinstance(value, Mapping):
                # A map read by key is keyed on those keys (their own references); one whose
                # whole value was used is keyed on all of it.
                value = frozenset(value.items()) if name in self.whole else ()
            # The type is part of the key: 1, 1.0 and True are equal in Python, not to a rule.
            values.append((t, value))
        return tuple(values)


_SCALARS: Final = frozenset({str, int, float, bool, bytes, _dt.datetime, _dt.timedelta})
"""Value types that are certainly not string maps (tested before the slower ``isinstance``)."""


def _order(ref: _Ref) -> tuple[str, bool, str]:
    name, map_key = ref
    return name, map_key is not None, map_key or ""


@dataclass(slots=True, eq=False)
class CachedCheck:
    """One cached precondition: the answer and what it needs to be given again. Compared and
    hashed by identity: front-ends key what they derive from an entry (an encoded answer) on it."""

    result: CheckResult
    reason: str
    rule: str
    handler: str
    references: FrozenReferences
    whole_maps: frozenset[str]
    """String maps fetched whole (the Mixer API encoder reports only their keys)."""
    generated: Mapping[str, Any]
    """What the attribute generators added to the request (a function of the referenced values)."""
    expires: float
    """Monotonic second the entry stops being valid."""
    uses: int
    """Uses left."""
    namespace: str = ""
    """The request namespace the answer was given in (a function of the referenced attributes
    and of what the generators added)."""


class CheckCache:
    """A bounded LRU of Check preconditions for one routing table (see module docstring)."""

    __slots__ = ("_clock", "_entries", "_max_entries", "_shapes")

    def __init__(self, clock: Clock, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries <= 0:
            raise ValueError("a check cache needs at least one entry")
        self._clock = clock
        self._max_entries = max_entries
        self._shapes: dict[Shape, int] = {}
        """Each shape seen, with its number (keys hold the number: an int hashes at once)."""
        self._entries: OrderedDict[tuple[int, Any, tuple[Any, ...]], CachedCheck] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, bag: Mapping[str, Any], context: Any = ()) -> tuple[CachedCheck, CheckResult] | None:
        """The cached precondition for ``bag`` and the answer to give now (validity counted down
        to what is left), or None. ``bag`` must read without recording references; ``context``
        (hashable) is what else the answer may depend on (see module docstring)."""
        entries = self._entries
        if not entries:
            return None
        for shape, number in self._shapes.items():
            key = shape.key(bag)
            if key is None:
                continue
            k = (number, context, key)
            try:
                entry = entries[k]
            except KeyError:
                continue
            except TypeError:  # an unhashable value (never from a typed bag): not cacheable
                return None
            left = entry.expires - self._clock.monotonic()
            if left <= 0 or entry.uses <= 0:
                del entries[k]
                return None
            entry.uses -= 1
            entries.move_to_end(k)
            r = entry.result
            return entry, CheckResult(r.status, _dt.timedelta(seconds=left), entry.uses + 1, r.output)
        return None

    def store(
        self,
        bag: Mapping[str, Any],
        result: CheckResult,
        *,
        reason: str,
        rule: str,
        handler: str,
        references: FrozenReferences,
        whole_maps: frozenset[str],
        whole_values: frozenset[str],
        generated: Mapping[str, Any],
        context: Any = (),
        namespace: str = "",
    ) -> bool:
        """Remember ``result`` for requests like ``bag`` (read without recording references);
        False when it cannot be cached (no validity, a REGEX reference, too many shapes)."""
        seconds = result.valid_duration.total_seconds()
        if seconds <= 0 or result.valid_use_count <= 0:
            return False
        shape = Shape.of(references, whole_values)
        if shape is None:
            return False
        number = self._shapes.get(shape)
        if number is None:
            if len(self._shapes) >= _MAX_SHAPES:
                return False
            number = self._shapes[shape] = len(self._shapes)
        key = shape.key(bag)
        if key is None:  # the references do not describe this bag: never cache what is not understood
            return False
        k = (number, context, key)
        try:
            hash(k)
        except TypeError:
            return False
        entries = self._entries
        entries[k] = CachedCheck(
            result,
            reason,
            rule,
            handler,
            references,
            whole_maps,
            dict(generated),
            self._clock.monotonic() + seconds,
            result.valid_use_count,
            namespace,
        )
        entries.move_to_end(k)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)
        return True
