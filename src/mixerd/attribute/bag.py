"""Attribute bags: read-only name -> value mappings, with reference tracking.

A :class:`Bag` is a ``Mapping[str, Any]`` whose ``get(name, default)`` is the hot path: compiled
expressions call it for every attribute they read. "Absent" is distinct from every value: a
missing attribute is simply not in the mapping (``get`` returns the default).

Reference tracking answers "which attributes did this decision depend on?", the recipe a proxy
uses to cache a Check result (Mixer's ``ReferencedAttributes``). It is one mechanism:

* a :class:`ReferenceTracker` records each lookup as ABSENCE or EXACT; string-map lookups made
  through a tracked map are recorded per key as ``name[key]``;
* :class:`TrackingBag` is the only bag that records: it wraps any attribute mapping (wire
  front-ends wrap their lazy bags, or subclass it, as Mixer's API ``ProtoBag`` does);
* a bag that reads through a tracking bag (:class:`OverlayBag`) exposes the same ``tracker``
  (the :class:`ReferenceTracking` protocol), and :func:`tracker_of` finds it for any mapping;
* reads that must not count as references (re-reading attributes to explain an error) happen
  inside ``tracker.untracked()``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mixerd.attribute.types import IPAddress

__all__ = [
    "MISSING",
    "Bag",
    "Condition",
    "DictBag",
    "FrozenReferences",
    "OverlayBag",
    "Reference",
    "ReferenceTracker",
    "ReferenceTracking",
    "TrackedStringMap",
    "TrackingBag",
    "sorted_references",
    "tracker_of",
    "untracked_view",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()
"""Sentinel returned by ``bag.get(name, MISSING)`` for an absent attribute."""


class Condition(enum.IntEnum):
    """How a result depended on an attribute (Mixer's ``ReferencedAttributes.Condition``)."""

    CONDITION_UNSPECIFIED = 0
    ABSENCE = 1
    EXACT = 2
    REGEX = 3


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """One referenced attribute: ``name`` (and ``map_key`` for a string-map entry) with its condition."""

    name: str
    map_key: str | None
    condition: Condition

    def __str__(self) -> str:
        text = self.name if self.map_key is None else f"{self.name}[{self.map_key}]"
        return ("-" if self.condition is Condition.ABSENCE else "") + text


class ReferenceTracker:
    """Collects the attributes one evaluation looked at.

    ``whole_maps`` lists string-map attributes that were fetched as a whole. Mixer's proxy-facing
    bag does not report those (only their keys), so wire encoders skip them; the expression test
    suite does list them.
    """

    __slots__ = ("_refs", "whole_maps", "whole_values")

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str | None], Condition] = {}
        self.whole_maps: set[str] = set()
        self.whole_values: set[str] = set()
        """String maps whose whole value was used (iterated, measured or compared), not only
        read by key: an answer depends on all of their entries."""

    def record(self, name: str, present: bool) -> None:
        self._refs[(name, None)] = Condition.EXACT if present else Condition.ABSENCE

    def record_key(self, name: str, key: str, present: bool) -> None:
        self._refs[(name, key)] = Condition.EXACT if present else Condition.ABSENCE

    def snapshot(self) -> dict[tuple[str, str | None], Condition]:
        """A copy of the state, to :meth:`restore` later.

        (Mixer restores the post-preprocessing state before each quota of a Check.)
        """
        return dict(self._refs)

    def restore(self, state: dict[tuple[str, str | None], Condition]) -> None:
        self._refs = dict(state)

    def clear(self) -> None:
        self._refs.clear()
        self.whole_maps.clear()
        self.whole_values.clear()

    @contextlib.contextmanager
    def untracked(self) -> Iterator[None]:
        """Reads made inside the block leave no reference behind (and no whole-map mark).

        For reads that are not part of a decision, such as re-reading attributes to explain
        why an evaluation failed: the proxy must not cache on attributes nobody decided on.
        """
        refs = dict(self._refs)
        maps = set(self.whole_maps)
        values = set(self.whole_values)
        try:
            yield
        finally:
            self._refs = refs
            self.whole_maps = maps
            self.whole_values = values

    def frozen(self) -> FrozenReferences:
        """The references so far as a hashable value (cheap; see :func:`sorted_references`)."""
        return tuple(self._refs.items())

    def references(self) -> list[Reference]:
        """All references, sorted by name and key."""
        return sorted_references(self.frozen())

    def log(self) -> list[str]:
        """Mixer's test-suite form: sorted ``name`` / ``-name`` / ``map[key]`` / ``-map[key]`` strings."""
        return sorted(str(r) for r in self.references())

    def __len__(self) -> int:
        return len(self._refs)


FrozenReferences = tuple[tuple[tuple[str, str | None], Condition], ...]
"""What :meth:`ReferenceTracker.frozen` returns: ``((name, map_key), condition)`` pairs."""


def sorted_references(frozen: FrozenReferences) -> list[Reference]:
    """:class:`Reference` objects for a frozen reference set, sorted by name and key."""
    refs = (Reference(n, k, c) for (n, k), c in frozen)
    # A whole attribute (map_key None) sorts before its map keys; None and str don't compare.
    return sorted(refs, key=lambda r: (r.name, r.map_key is not None, r.map_key or "", r.condition))


class ReferenceTracking(Protocol):
    """A bag whose reads are recorded: ``tracker`` is the :class:`ReferenceTracker` they go to
    (``None`` when the bag reads through an untracked one, as an :class:`OverlayBag` may)."""

    @property
    def tracker(self) -> ReferenceTracker | None: ...


def tracker_of(bag: Mapping[str, Any]) -> ReferenceTracker | None:
    """The tracker that records reads of ``bag`` (see :class:`ReferenceTracking`), or ``None``."""
    tracker = getattr(bag, "tracker", None)
    return tracker if isinstance(tracker, ReferenceTracker) else None


def untracked_view(bag: Mapping[str, Any]) -> Mapping[str, Any]:
    """``bag`` as a mapping whose reads record nothing: the same values, without the tracking
    layers (a :class:`TrackingBag`'s inner mapping; an :class:`OverlayBag` over its parent's
    untracked view). For readers that are not part of a decision, such as the console's record
    of it; cheaper than reading inside ``tracker.untracked()``. String maps come back plain."""
    if isinstance(bag, TrackingBag):
        return bag._inner
    if isinstance(bag, OverlayBag):
        view = OverlayBag(untracked_view(bag._parent))
        view._local = bag._local
        return view
    return bag


class Bag(Mapping[str, Any]):
    """Base class of bags: a read-only mapping whose ``get`` is the primitive (and the fast path).

    Subclasses implement ``get``, ``__contains__``, ``__iter__`` and ``__len__``; indexing goes
    through ``get``, so it records references exactly as ``get`` does.
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, MISSING)
        if value is MISSING:
            raise KeyError(name)
        return value

    def names(self) -> list[str]:
        return list(self)


class DictBag(Bag):
    """A bag over a plain dict (which it does not copy)."""

    __slots__ = ("_values", "get")

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: Mapping[str, Any] = {} if values is None else values
        self.get = self._values.get  # type: ignore[method-assign]

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"DictBag({dict(self._values)!r})"


class OverlayBag(Bag):
    """A writable layer over a parent bag, for attributes that mixerd derives itself.

    :meth:`merge` never replaces a name the parent already has: attributes sent by the proxy win
    over generated ones (Mixer's ``MutableBag.Merge``).
    """

    __slots__ = ("_local", "_parent")

    def __init__(self, parent: Mapping[str, Any]) -> None:
        self._parent = parent
        self._local: dict[str, Any] = {}

    @property
    def tracker(self) -> ReferenceTracker | None:
        """The parent's tracker: reads of the parent's attributes through this bag record there."""
        return tracker_of(self._parent)

    def get(self, name: str, default: Any = None) -> Any:
        # Local first: a generated attribute is read without asking (and, for a tracking
        # parent, without recording an absence in) the caller's bag. ``merge`` never adds a
        # name the parent has, so the order does not change any value.
        value = self._local.get(name, MISSING)
        if value is MISSING:
            return self._parent.get(name, default)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._parent or name in self._local

    def __iter__(self) -> Iterator[str]:
        yield from self._parent
        for name in self._local:
            if name not in self._parent:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def added(self) -> Mapping[str, Any]:
        """The attributes this layer adds to its parent."""
        return self._local

    def set(self, name: str, value: Any) -> None:
        self._local[name] = value

    def merge(self, values: Mapping[str, Any]) -> None:
        """Add every name of ``values`` that is not visible yet."""
        for name, value in values.items():
            if name not in self:
                self._local[name] = value


class TrackedStringMap(Mapping[str, str]):
    """A read-only view of a string map that records each key lookup as ``name[key]``."""

    __slots__ = ("_map", "_name", "_tracker")

    def __init__(self, name: str, values: Mapping[str, str], tracker: ReferenceTracker) -> None:
        self._name = name
        self._map = values
        self._tracker = tracker

    def get(self, key: str, default: Any = None) -> Any:
        value = self._map.get(key, MISSING)
        self._tracker.record_key(self._name, key, value is not MISSING)
        return default if value is MISSING else value

    def __getitem__(self, key: str) -> str:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        present = key in self._map
        self._tracker.record_key(self._name, key, present)
        return present

    # Using the whole map (its keys, size or every entry) makes the answer depend on all of it.

    def __iter__(self) -> Iterator[str]:
        self._tracker.whole_values.add(self._name)
        return iter(self._map)

    def __len__(self) -> int:
        self._tracker.whole_values.add(self._name)
        return len(self._map)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            self._tracker.whole_values.add(self._name)
            return dict(self._map) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TrackedStringMap({self._name!r}, {dict(self._map)!r})"


_PLAIN: Final = frozenset({str, int, float, bool, _dt.datetime, _dt.timedelta, IPAddress})
"""Exact types of attribute values that are certainly not string maps (a cheap test first)."""


class TrackingBag(Bag):
    """Wraps any attribute mapping and records every ``get`` in a :class:`ReferenceTracker`.

    A string-map value comes back as a :class:`TrackedStringMap` (its key lookups are recorded
    as ``name[key]``) and its name goes into ``tracker.whole_maps``.
    """

    __slots__ = ("_inner", "tracker")

    _inner: Mapping[str, Any]
    tracker: ReferenceTracker

    def __init__(self, inner: Mapping[str, Any], tracker: ReferenceTracker | None = None) -> None:
        self._inner = inner
        self.tracker = ReferenceTracker() if tracker is None else tracker

    def get(self, name: str, default: Any = None) -> Any:
        value = self._inner.get(name, MISSING)
        tracker = self.tracker
        if value is MISSING:
            tracker.record(name, False)
            return default
        tracker.record(name, True)
        t = type(value)
        if t in _PLAIN or (t is not dict and not isinstance(value, Mapping)):
            return value
        tracker.whole_maps.add(name)
        return TrackedStringMap(name, value, tracker)

    def __contains__(self, name: object) -> bool:
        return name in self._inner

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)
