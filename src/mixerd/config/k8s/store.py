"""A :class:`~mixerd.config.store.Store` over Kubernetes custom resources (``--config k8s://``).

For every kind of :data:`~mixerd.config.k8s.kinds.KINDS` (in every namespace, or in each namespace
of ``?namespaces=``) a :class:`~mixerd.config.k8s.api.Reflector` lists the collection (paginated),
then watches it from the list's ``resourceVersion`` with bookmarks. ``410 Gone`` (HTTP or an
``ERROR`` event) lists again at once and publishes the difference; a dropped connection, a 5xx or
an unreachable server lists again after a capped exponential backoff; a kind whose CRD is not
installed (``404`` on list) counts as empty, is logged once and looked for again every
``missing_retry`` seconds.

:meth:`KubeStore.list` returns once every collection has been listed (or found not installed):
until then the server is not ready. Changes are debounced like the file store's
(:func:`mixerd.config.store.settle`) and published as one :class:`~mixerd.config.store.ChangeBatch`.
Objects are parsed by the file store's parser (:mod:`mixerd.config.k8s.mirror`).

With ``validate`` and ``write_events``, every published change is validated and the errors of
resources are written as Kubernetes Events on their objects (:mod:`mixerd.config.k8s.status`).
The bearer token is sent to the API server only; it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixerd.config.k8s.api import SERVICE_ACCOUNT_DIR, KubeApiError, KubeClient, Reflector
from mixerd.config.k8s.api import Resource as Collection
from mixerd.config.k8s.kinds import KINDS, KubeKind
from mixerd.config.k8s.mirror import Mirror
from mixerd.config.k8s.status import EventRecorder
from mixerd.config.k8s.target import KubeTarget, connection, parse_url
from mixerd.config.model import IgnoredResource, Key, Resource, ResourceError
from mixerd.config.parse import DEFAULT_NAMESPACE
from mixerd.config.store import ChangeBatch, Published, settle

__all__ = ["KubeStore", "Validator"]

_log = logging.getLogger(__name__)

Validator = Callable[[Sequence[Resource], Sequence[ResourceError]], Iterable[ResourceError]]
"""Validates resources as the server would (``build_snapshot(...).errors``), for Events."""


@dataclass(frozen=True, slots=True)
class _Watched:
    label: str
    """``plural.group`` (``in NAMESPACE`` when limited to one): for logs and ``waiting_for``."""
    kind: KubeKind
    reflector: Reflector


class KubeStore:
    """Mixer config from a Kubernetes cluster, listed then watched."""

    def __init__(
        self,
        target: KubeTarget | str,
        *,
        default_namespace: str = DEFAULT_NAMESPACE,
        debounce: float = 0.5,
        max_delay: float | None = None,
        kinds: Sequence[KubeKind] = KINDS,
        write_events: bool = False,
        validate: Validator | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
        missing_retry: float = 30.0,
        watch_seconds: int = 300,
        environ: Mapping[str, str] | None = None,
        sa_dir: Path = SERVICE_ACCOUNT_DIR,
        home: Path | None = None,
    ) -> None:
        self.target = parse_url(target) if isinstance(target, str) else target
        self.default_namespace = default_namespace
        self.debounce = debounce
        self.max_delay = max_delay if max_delay is not None else 10 * debounce
        self.kinds = tuple(kinds)
        self.write_events = write_events
        self._validate = validate
        self._backoff = backoff
        self._missing_retry = missing_retry
        self._watch_seconds = watch_seconds
        self._environ = environ
        self._sa_dir = sa_dir
        self._home = home
        self._mirror = Mirror(default_namespace)
        self._recorder = EventRecorder(socket.gethostname())  # in a pod: the pod's name
        self._published = Published()
        self._client: KubeClient | None = None
        self._watched: list[_Watched] = []
        self._by_label: dict[str, _Watched] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._loaded = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._events_failed: set[int | None] = set()
        self.commits = 0
        """How many times the mirror was turned into resources (for tests and metrics)."""
        self.events_written = 0
        """Kubernetes Events written (``write_events``)."""

    def __str__(self) -> str:
        return self.target.url

    # -- Store protocol --------------------------------------------------------------------------

    async def list(self) -> dict[Key, Resource]:
        """The resources once every collection was listed (waits for that, retrying as needed).
        ``KubeConfigError`` (a ``ValueError``) when there is no usable connection config."""
        self._start()
        await self._initial_load()
        return dict(self._published.state)

    def problems(self) -> tuple[ResourceError, ...]:
        return self._published.problems

    def ignored(self) -> tuple[IgnoredResource, ...]:
        return self._published.ignored

    def watch(self) -> AsyncIterator[ChangeBatch]:
        self._start()
        return self._published.bus.subscribe()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()
        self._published.bus.close()

    async def __aenter__(self) -> KubeStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state -----------------------------------------------------------------------------------

    def waiting_for(self) -> tuple[str, ...]:
        """Collections not listed yet (empty once the initial list is complete)."""
        return tuple(w.label for w in self._watched if not w.reflector.synced.is_set())

    def list_errors(self) -> tuple[str, ...]:
        """Why collections are not listed yet: ``label: last error`` (errors name API paths and
        hosts, never credentials; for logs and the command line, not for /readyz)."""
        return tuple(
            f"{w.label}: {w.reflector.last_error}"
            for w in self._watched
            if not w.reflector.synced.is_set() and w.reflector.last_error
        )

    def not_installed(self) -> tuple[str, ...]:
        """Collections the API server does not know (CRD not installed)."""
        return tuple(w.label for w in self._watched if w.reflector.missing)

    def _start(self) -> None:
        if self._tasks or self._closed:
            return
        config = connection(self.target, self._environ, self._sa_dir, self._home)
        _log.info("reading config from %s (%s)", config.server, config.source)
        self._client = KubeClient(config)
        loop = asyncio.get_running_loop()
        namespaces: Sequence[str | None] = self.target.namespaces or (None,)
        for kind in self.kinds:
            for namespace in namespaces if kind.namespaced else (None,):
                label = kind.resource if namespace is None else f"{kind.resource} in {namespace}"
                reflector = Reflector(
                    Collection(label, kind.path(namespace)),
                    on_list=self._on_list,
                    on_event=self._on_event,
                    watch_seconds=self._watch_seconds,
                    logger=_log,
                    backoff=self._backoff,
                    missing_retry=self._missing_retry,
                )
                self._watched.append(_Watched(label, kind, reflector))
        self._by_label = {w.label: w for w in self._watched}
        client = self._client
        for w in self._watched:
            self._tasks.append(loop.create_task(w.reflector.run(client), name=f"mixerd-k8s {w.label}"))
        self._tasks.append(loop.create_task(self._scheduler(), name="mixerd-k8s-store"))

    def _on_list(self, label: str, items: Sequence[Mapping[str, Any]]) -> None:
        w = self._by_label[label]
        if self._mirror.replace(label, w.kind, items):
            self._dirty.set()

    def _on_event(self, label: str, event_type: str, obj: Mapping[str, Any]) -> None:
        w = self._by_label[label]
        if self._mirror.apply(label, w.kind, event_type, obj):
            self._dirty.set()

    async def _initial_load(self) -> None:
        if self._loaded:
            return
        await asyncio.gather(*(w.reflector.synced.wait() for w in self._watched))
        async with self._lock:
            if self._loaded:
                return
            self._commit(publish=False)
            self._loaded = True
            missing = self.not_installed()
            _log.info(
                "initial list of %d collections complete: %d objects",
                len(self._watched),
                self._mirror.count(),
            )
            if missing:
                _log.warning(
                    "%d config kinds are not installed on the API server (their CRDs are missing; they count "
                    "as empty and are looked for every %gs): %s",
                    len(missing),
                    self._missing_retry,
                    ", ".join(missing),
                )

    def _commit(self, *, publish: bool) -> ChangeBatch | None:
        self.commits += 1
        parsed = self._mirror.result()
        return self._published.commit(parsed.resources, parsed.errors, parsed.ignored, publish=publish)

    async def _scheduler(self) -> None:
        try:
            await self._initial_load()
            if self.write_events:
                await self._write_events()
            while not self._closed:
                await self._dirty.wait()
                await settle(self._dirty, self.debounce, self.max_delay)
                async with self._lock:
                    batch = self._commit(publish=True)
                if batch is not None and self.write_events:
                    await self._write_events()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug; the reflectors keep the mirror current
            _log.exception("the Kubernetes config store stopped publishing changes")

    # -- status feedback -------------------------------------------------------------------------

    async def _write_events(self) -> None:
        if self._validate is None or self._client is None:
            return
        try:
            published = self._published
            errors = list(self._validate(list(published.state.values()), published.problems))
        except Exception:
            _log.exception("validating the config for Kubernetes Events failed")
            return
        for event in self._recorder.pending(errors, self._mirror.refs()):
            try:
                await self._client.create(event.path, event.body)
            except KubeApiError as exc:
                if exc.status not in self._events_failed:  # once per kind of failure, not per Event
                    self._events_failed.add(exc.status)
                    _log.warning(
                        "cannot write Kubernetes Events (%s); mixerd needs the 'create' verb on events "
                        "(core API group); will retry on the next config change",
                        exc,
                    )
                continue
            self._recorder.written(event)
            self.events_written += 1
