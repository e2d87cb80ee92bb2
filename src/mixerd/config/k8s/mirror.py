"""Objects listed and watched from the API server, kept per collection and parsed into resources.

No I/O: the list-then-watch loop (:class:`mixerd.config.k8s.api.Reflector`) feeds it whole lists
(:meth:`Mirror.replace`, after the first list and after every relist) and watch events
(:meth:`Mirror.apply`); both say whether the served config may have changed. Each object is parsed
once per ``resourceVersion`` by :func:`mixerd.config.parse.parse_documents`, the same code that
reads a file, so validation and field paths are those of the file store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mixerd.config.k8s.kinds import KubeKind
from mixerd.config.model import Key, Source
from mixerd.config.parse import DEFAULT_NAMESPACE, ParseResult, parse_documents

__all__ = ["Mirror", "ObjectRef"]


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Enough of an object to point a Kubernetes Event at it."""

    api_version: str
    kind: str
    namespace: str
    """Empty for a cluster-scoped object."""
    name: str
    uid: str
    resource_version: str
    generation: int

    def as_involved_object(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.resource_version:
            out["resourceVersion"] = self.resource_version
        return out


@dataclass(frozen=True, slots=True)
class _Entry:
    resource_version: str
    ref: ObjectRef
    key: Key
    parsed: ParseResult


class Mirror:
    """The objects of every watched collection, each parsed."""

    def __init__(self, default_namespace: str = DEFAULT_NAMESPACE) -> None:
        self.default_namespace = default_namespace
        self._collections: dict[str, dict[tuple[str, str], _Entry]] = {}

    def replace(self, collection: str, kind: KubeKind, items: Iterable[Mapping[str, Any]]) -> bool:
        """A (re)list of ``collection``: its objects are now exactly ``items``. Whether anything changed."""
        old = self._collections.get(collection, {})
        new: dict[tuple[str, str], _Entry] = {}
        for obj in items:
            entry = self._entry(kind, obj, old)
            if entry is not None:
                new[(entry.ref.namespace, entry.ref.name)] = entry
        self._collections[collection] = new
        return _fingerprint(old) != _fingerprint(new)

    def apply(self, collection: str, kind: KubeKind, event_type: str, obj: Mapping[str, Any]) -> bool:
        """A watch event (``ADDED``, ``MODIFIED``, ``DELETED``; others change nothing).
        Whether anything changed."""
        objects = self._collections.setdefault(collection, {})
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            return False
        ident = (str(meta.get("namespace") or ""), str(meta["name"]))
        if event_type == "DELETED":
            return objects.pop(ident, None) is not None
        if event_type not in ("ADDED", "MODIFIED"):
            return False
        entry = self._entry(kind, obj, objects)
        if entry is None:
            return False
        previous = objects.get(ident)
        objects[ident] = entry
        return previous is None or previous.resource_version != entry.resource_version

    def forget(self, collection: str) -> bool:
        """Drop a collection (it is no longer watched). Whether it held objects."""
        return bool(self._collections.pop(collection, None))

    def result(self) -> ParseResult:
        """Every object's parse result, in a stable order (collection, namespace, name)."""
        out = ParseResult()
        for collection in sorted(self._collections):
            objects = self._collections[collection]
            for ident in sorted(objects):
                out = out + objects[ident].parsed
        return out

    def refs(self) -> dict[Key, ObjectRef]:
        """The object behind each resource key (for Events)."""
        return {e.key: e.ref for objects in self._collections.values() for e in objects.values()}

    def count(self) -> int:
        return sum(len(objects) for objects in self._collections.values())

    def _entry(
        self, kind: KubeKind, obj: Mapping[str, Any], known: Mapping[tuple[str, str], _Entry]
    ) -> _Entry | None:
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
            return None
        namespace = str(meta.get("namespace") or "")
        name = str(meta["name"])
        version = str(meta.get("resourceVersion") or "")
        previous = known.get((namespace, name))
        if previous is not None and version and previous.resource_version == version:
            return previous  # unchanged since it was parsed
        doc = dict(obj)
        doc.setdefault("apiVersion", kind.api_version)  # list items of built-in types leave them out
        doc.setdefault("kind", kind.kind)
        source = Source(f"{kind.resource}/{namespace + '/' if namespace else ''}{name}")
        parsed = parse_documents([(doc, source)], default_namespace=self.default_namespace)
        generation = meta.get("generation")
        ref = ObjectRef(
            str(doc["apiVersion"]),
            str(doc["kind"]),
            namespace,
            name,
            str(meta.get("uid") or ""),
            version,
            generation if isinstance(generation, int) and not isinstance(generation, bool) else 0,
        )
        key = Key(str(doc["kind"]), namespace or self.default_namespace, name)
        return _Entry(version, ref, key, parsed)


def _fingerprint(objects: Mapping[tuple[str, str], _Entry]) -> dict[tuple[str, str], str]:
    return {ident: e.resource_version for ident, e in objects.items()}
