"""Where configuration comes from: the :class:`Store` protocol and an in-memory store.

A store is *list-then-watch*, like Mixer's stores and a Kubernetes informer:

* ``await store.list()`` is the current state, ``{Key: Resource}``;
* ``store.watch()`` is an async iterator of :class:`ChangeBatch` values, one per coalesced change,
  each a tuple of :class:`Event` (UPDATE with the new resource, or DELETE) plus the store's load
  problems after the change (files that do not parse, duplicate keys ...);
* ``store.problems()`` is the current load problems; ``await store.close()`` ends every watch.

To miss nothing, subscribe first and list second::

    changes = store.watch()
    state = await store.list()
    use(build_snapshot(state, adapters=catalog, problems=store.problems()))
    async for batch in changes:
        apply_batch(state, batch)  # events are idempotent: replaying one that list() saw is harmless
        use(build_snapshot(state, adapters=catalog, problems=batch.problems))

A Kubernetes CRD store fits the same protocol: ``list`` = LIST of the config kinds, ``watch`` =
WATCH events grouped into batches.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mixerd.config.model import IgnoredResource, Key, Resource, ResourceError, Severity

__all__ = [
    "ChangeBatch",
    "Event",
    "EventType",
    "MemoryStore",
    "Published",
    "Store",
    "apply_batch",
    "diff_states",
    "merge_resources",
    "settle",
]


class EventType(enum.Enum):
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: Key
    resource: Resource | None = None
    """The new resource (UPDATE); ``None`` for DELETE."""


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    events: tuple[Event, ...]
    problems: tuple[ResourceError, ...] = ()
    """The store's load problems after this change (the full current list)."""


class Store(Protocol):
    """A source of configuration resources."""

    async def list(self) -> dict[Key, Resource]:
        """The current resources."""

    def problems(self) -> tuple[ResourceError, ...]:
        """Current load problems (unparsable files, duplicate keys ...), to show with a snapshot."""

    def watch(self) -> AsyncIterator[ChangeBatch]:
        """A new subscription: yields one batch per coalesced change until the store is closed."""

    async def close(self) -> None:
        """Stop watching; every subscription ends."""


def apply_batch(state: dict[Key, Resource], batch: ChangeBatch) -> None:
    """Apply a batch's events to a ``{Key: Resource}`` state, in place."""
    for event in batch.events:
        if event.type is EventType.DELETE or event.resource is None:
            state.pop(event.key, None)
        else:
            state[event.key] = event.resource


def diff_states(old: Mapping[Key, Resource], new: Mapping[Key, Resource]) -> tuple[Event, ...]:
    """The events that turn ``old`` into ``new``, sorted by key."""
    events: list[Event] = []
    for key in sorted(old.keys() | new.keys()):
        after = new.get(key)
        if after is None:
            events.append(Event(EventType.DELETE, key))
        elif old.get(key) != after:
            events.append(Event(EventType.UPDATE, key, after))
    return tuple(events)


def merge_resources(resources: Iterable[Resource]) -> tuple[dict[Key, Resource], list[ResourceError]]:
    """Index resources by key; a key seen twice keeps the last one, with a warning."""
    out: dict[Key, Resource] = {}
    warnings: list[ResourceError] = []
    for r in resources:
        previous = out.pop(r.key, None)
        if previous is not None:
            warnings.append(duplicate_warning(previous, r))
        out[r.key] = r
    return out, warnings


async def settle(dirty: asyncio.Event, quiet: float, max_delay: float) -> None:
    """Debounce: after ``dirty`` was set, wait until it stays unset for ``quiet`` seconds, but no
    longer than ``max_delay`` in all (``dirty`` is left clear). A burst of changes is then applied
    once."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    while True:
        dirty.clear()
        remaining = max_delay - (loop.time() - first)
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(dirty.wait(), timeout=min(quiet, remaining))
        except TimeoutError:
            return


def duplicate_warning(previous: Resource, latest: Resource) -> ResourceError:
    where = f" ({previous.source} and {latest.source})" if previous.source and latest.source else ""
    return ResourceError(
        latest.key,
        "",
        f"defined more than once{where}; the last definition is used",
        Severity.WARNING,
        latest.source,
    )


class _Subscription:
    """One ``watch()`` iterator: a queue the store publishes into."""

    __slots__ = ("_bus", "_queue")

    def __init__(self, bus: _Bus) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[ChangeBatch | None] = asyncio.Queue()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> ChangeBatch:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay ended
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Unsubscribe early."""
        self._bus.unsubscribe(self)
        self._queue.put_nowait(None)

    def put(self, item: ChangeBatch | None) -> None:
        self._queue.put_nowait(item)


class _Bus:
    """Fan-out of batches to every subscription (used from the event loop's thread only)."""

    __slots__ = ("_closed", "_subs")

    def __init__(self) -> None:
        self._subs: list[_Subscription] = []
        self._closed = False

    def subscribe(self) -> _Subscription:
        sub = _Subscription(self)
        if self._closed:
            sub.put(None)
        else:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, batch: ChangeBatch) -> None:
        for sub in self._subs:
            sub.put(batch)

    def close(self) -> None:
        self._closed = True
        for sub in self._subs:
            sub.put(None)
        self._subs.clear()


class Published:
    """What a store serves (resources by key, load problems, ignored documents) and the fan-out of
    its changes: :meth:`commit` a new state and subscribers get the differences as one batch."""

    __slots__ = ("bus", "ignored", "problems", "state")

    def __init__(self) -> None:
        self.state: dict[Key, Resource] = {}
        self.problems: tuple[ResourceError, ...] = ()
        self.ignored: tuple[IgnoredResource, ...] = ()
        self.bus = _Bus()

    def commit(
        self,
        resources: Iterable[Resource],
        problems: Iterable[ResourceError] = (),
        ignored: Iterable[IgnoredResource] = (),
        *,
        publish: bool = True,
    ) -> ChangeBatch | None:
        """Serve ``resources`` (a key seen twice keeps the last, with a warning) and ``problems``
        from now on; the batch of differences (published unless ``publish`` is false), or None
        when nothing changed."""
        new_state, duplicates = merge_resources(resources)
        all_problems = tuple(problems) + tuple(duplicates)
        events = diff_states(self.state, new_state)
        changed = all_problems != self.problems
        self.state = new_state
        self.problems = all_problems
        self.ignored = tuple(ignored)
        if not events and not changed:
            return None
        batch = ChangeBatch(events, all_problems)
        if publish:
            self.bus.publish(batch)
        return batch


class MemoryStore:
    """A store held in memory (tests, embedding). Each mutating call publishes one batch.

    Mutate it from the event loop's thread.
    """

    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self._state, self._problems = self._merge(resources)
        self._bus = _Bus()

    @staticmethod
    def _merge(resources: Iterable[Resource]) -> tuple[dict[Key, Resource], tuple[ResourceError, ...]]:
        state, warnings = merge_resources(resources)
        return state, tuple(warnings)

    async def list(self) -> dict[Key, Resource]:
        return dict(self._state)

    def problems(self) -> tuple[ResourceError, ...]:
        return self._problems

    def watch(self) -> AsyncIterator[ChangeBatch]:
        return self._bus.subscribe()

    async def close(self) -> None:
        self._bus.close()

    def set(self, *resources: Resource) -> None:
        """Add or update resources (one batch)."""
        new = dict(self._state)
        for r in resources:
            new[r.key] = r
        self._publish(new, self._problems)

    def delete(self, *keys: Key) -> None:
        """Remove resources (one batch); unknown keys are ignored."""
        new = {k: v for k, v in self._state.items() if k not in keys}
        self._publish(new, self._problems)

    def replace(self, resources: Iterable[Resource], problems: Iterable[ResourceError] = ()) -> None:
        """Replace the whole state (one batch with the differences)."""
        new, duplicates = self._merge(resources)
        self._publish(new, tuple(problems) + duplicates)

    def _publish(self, new: dict[Key, Resource], problems: tuple[ResourceError, ...]) -> None:
        events = diff_states(self._state, new)
        changed = problems != self._problems
        self._state = new
        self._problems = problems
        if events or changed:
            self._bus.publish(ChangeBatch(events, problems))
