"""Problems of cluster resources as Kubernetes Events (``--k8s-write-status``), deduplicated.

No I/O: :meth:`EventRecorder.pending` turns the current problems into core ``v1`` Event bodies
for the objects they belong to, leaving out what was already written: one Event per object,
generation and message, written again only after the problem went away and came back (or the
object changed). ``kubectl describe`` then shows why a resource is not applied.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.config.k8s.mirror import ObjectRef
from mixerd.config.model import Key, ResourceError, Severity

__all__ = ["COMPONENT", "REASON", "EventRecorder", "PendingEvent"]

COMPONENT: Final = "mixerd"
REASON: Final = "InvalidConfig"
MAX_MESSAGE: Final = 1024
"""Event messages longer than this are cut (the API server limits them to about 1 kB)."""
_EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS: Final = "default"


@dataclass(frozen=True, slots=True)
class PendingEvent:
    ident: tuple[str, int, str]
    """(object uid, generation, message): what marks it written."""
    path: str
    """The Events collection to POST to."""
    body: dict[str, Any]


class EventRecorder:
    """Remembers which problems were written as Events."""

    def __init__(self, instance: str = "") -> None:
        self.instance = instance
        """``source.host``: which mixerd wrote it (the pod's name)."""
        self._written: set[tuple[str, int, str]] = set()

    def pending(
        self,
        problems: Iterable[ResourceError],
        refs: Mapping[Key, ObjectRef],
        now: _dt.datetime | None = None,
    ) -> list[PendingEvent]:
        """The Events to write for ``problems`` (errors of resources read from the cluster)."""
        now = now or _dt.datetime.now(_dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        current: set[tuple[str, int, str]] = set()
        out: list[PendingEvent] = []
        for problem in problems:
            if problem.severity is not Severity.ERROR or not isinstance(problem.key_or_file, Key):
                continue
            ref = refs.get(problem.key_or_file)
            if ref is None or not ref.uid:
                continue
            message = f"{problem.path}: {problem.message}" if problem.path else problem.message
            if len(message) > MAX_MESSAGE:
                message = message[: MAX_MESSAGE - 3] + "..."
            ident = (ref.uid, ref.generation, message)
            if ident in current:
                continue
            current.add(ident)
            if ident in self._written:
                continue
            namespace = ref.namespace or _EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{ref.name}.", "namespace": namespace},
                "involvedObject": ref.as_involved_object(),
                "reason": REASON,
                "message": f"not applied: {message}",
                "type": "Warning",
                "source": {"component": COMPONENT, **({"host": self.instance} if self.instance else {})},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            out.append(PendingEvent(ident, f"/api/v1/namespaces/{namespace}/events", body))
        self._written &= current  # a problem that went away is written again if it comes back
        return out

    def written(self, event: PendingEvent) -> None:
        """Mark ``event`` as written (after the API server accepted it)."""
        self._written.add(event.ident)

    @property
    def written_count(self) -> int:
        return len(self._written)
