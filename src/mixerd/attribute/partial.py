"""An attribute set decoded only as far as one config reads it.

A Report's attribute sets are read by the instances and match conditions of the config in force,
which usually read a fraction of what a proxy sends (the stock Istio config reads neither the
request headers nor the request and response times). Decoding converts the values that cost
something to convert (string maps, timestamps, durations, IP addresses) only for the names that
config reads; the others are kept undecoded in the set, and :meth:`PartialAttributes.complete`
converts them when a config that reads more comes into force before the set is dispatched. Of a
string map the config reads only some entries of (:mod:`mixerd.attribute.entries`), only those
entries are decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mixerd.attribute.entries import entries_read

__all__ = ["PartialAttributes"]

_NONE: frozenset[str] = frozenset()


class PartialAttributes(dict[str, Any]):
    """A plain ``dict`` of attribute values (every lookup a C call) plus the undecoded rest.

    ``decoded_for`` is the set of names whose values are all in the dict (the names the config
    read when the set was decoded, entry names included); ``rest`` maps each other name the set
    carries to its raw value, which ``convert`` turns into the attribute value. The dict and
    ``rest`` share only the string maps ``decoded_for`` reads some entries of: the dict holds
    those entries (those the set has), ``rest`` the whole map.
    """

    __slots__ = ("convert", "decoded_for", "rest")

    decoded_for: frozenset[str]
    rest: Mapping[str, Any]
    convert: Callable[[Any], Any]

    def complete(self) -> None:
        """Convert the rest into the dict (then every name the set carries is in it)."""
        rest = self.rest
        if rest:
            convert = self.convert
            for name, raw in rest.items():
                self[name] = convert(raw)
            self.rest = {}

    def covers(self, names: frozenset[str]) -> bool:
        """Whether every name of ``names`` (attributes read whole, map entries) that the set
        carries is decoded."""
        if names is self.decoded_for:
            return True
        rest = self.rest
        if not rest.keys().isdisjoint(names):
            return False
        entries = entries_read(names)
        if not entries:
            return True
        decoded = entries_read(self.decoded_for)
        return all(name not in rest or keys <= decoded.get(name, _NONE) for name, keys in entries.items())
