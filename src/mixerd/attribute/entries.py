"""Names of string-map entries: how a reader says it reads some entries of a map, not all of it.

Who reads attribute sets says which attributes it reads with a set of names (a handler's
``attributes_read``, a routing table's :meth:`~mixerd.runtime.RoutingTable.attributes_read`). In
such a set, :func:`map_entry` (``request.headers[x-request-id]``) names one entry of a string-map
attribute: the reader looks that key up and never reads the map otherwise (never iterates it,
takes its size or passes it on). The plain name (``request.headers``) says the map is read whole.
A Report decodes only the named entries of a map nobody reads whole.

Attribute names never contain ``[`` (an expression indexes a map with it), so a name holding one
is an entry name: the map's name is what precedes the first ``[``, the key what lies between it
and the final ``]`` (a key may hold brackets itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from mixerd.attribute.memo import remember

__all__ = ["entries_read", "map_entry", "merge_reads"]


def map_entry(name: str, key: str) -> str:
    """The name of entry ``key`` of string map ``name`` in a set of names read."""
    return f"{name}[{key}]"


def _split(name: str) -> tuple[str, str] | None:
    """``(map, key)`` of an entry name, None for an attribute name."""
    i = name.find("[")
    if i <= 0 or not name.endswith("]"):
        return None
    return name[:i], name[i + 1 : -1]


def merge_reads(names: Iterable[str]) -> frozenset[str]:
    """``names`` without the entry names of maps that are also read whole (reading the whole map
    reads every entry)."""
    out = set(names)
    for name in list(out):
        split = _split(name)
        if split is not None and split[0] in out:
            out.discard(name)
    return frozenset(out)


_NO_ENTRIES: Final[Mapping[str, frozenset[str]]] = {}
_ENTRIES: Final[dict[frozenset[str], Mapping[str, frozenset[str]]]] = {}
_ENTRIES_MAX: Final = 64


def entries_read(names: frozenset[str]) -> Mapping[str, frozenset[str]]:
    """The maps of which ``names`` reads only some entries: map name -> the keys read. Maps that
    ``names`` also reads whole are left out. Memoized (``names`` is a routing table's, the same
    object for every request under it)."""
    found = _ENTRIES.get(names)
    if found is not None:
        return found
    keys: dict[str, set[str]] = {}
    for name in names:
        split = _split(name)
        if split is not None and split[0] not in names:
            keys.setdefault(split[0], set()).add(split[1])
    result = {m: frozenset(k) for m, k in keys.items()} if keys else _NO_ENTRIES
    return remember(_ENTRIES, names, result, _ENTRIES_MAX)
