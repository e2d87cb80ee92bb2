"""Where the pod cache gets its content: a static pods file, or the Kubernetes API (list + watch)."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from mixerd.adapter import Env
from mixerd.adapters.kubernetesenv.cache import (
    CONTROLLER_KINDS,
    ControllerInfo,
    PodCache,
    PodInfo,
    parse_object,
)
from mixerd.config.k8s.api import ClusterConfig, KubeClient, Reflector, Resource

__all__ = ["RESOURCES", "ApiSource", "FileSource", "load_pods_file"]

RESOURCES: Final = (
    Resource("Pod", "/api/v1/pods"),
    Resource("ReplicaSet", "/apis/apps/v1/replicasets"),
    Resource("ReplicationController", "/api/v1/replicationcontrollers"),
)
"""What the API source mirrors, across all namespaces."""

_KINDS: Final = ("Pod", *sorted(CONTROLLER_KINDS))

# The newest cache per source, so that a handler replacing another one (a config change) serves
# the old content until its own first list arrives instead of answering "unknown".
_LATEST: weakref.WeakValueDictionary[str, PodCache] = weakref.WeakValueDictionary()


# --- file -----------------------------------------------------------------------------------------


def _objects(node: Any, where: str, default_kind: str) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    if node is None:
        return
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _objects(item, f"{where}[{i}]", default_kind)
        return
    if not isinstance(node, Mapping):
        raise ValueError(f"{where}: expected a Kubernetes object, got {type(node).__name__}")
    kind = str(node.get("kind") or "")
    if isinstance(node.get("items"), list) and (kind.endswith("List") or "metadata" not in node):
        item_kind = kind.removesuffix("List") if kind not in ("", "List") else default_kind
        yield from _objects(node["items"], f"{where}.items", item_kind)
        return
    yield where, node, default_kind


def load_pods_file(path: str | Path) -> list[PodInfo | ControllerInfo]:
    """Pods, ReplicaSets and ReplicationControllers of a YAML file (other kinds are skipped).

    ``ValueError`` (with the document and position) for anything malformed, ``OSError`` if the
    file cannot be read.
    """
    text = Path(path).read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: list[PodInfo | ControllerInfo] = []
    try:
        for n, doc in enumerate(yaml.load_all(text, Loader=loader)):
            for where, obj, default_kind in _objects(doc, f"document {n + 1}", "Pod"):
                try:
                    item = parse_object(obj, default_kind)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
                if item is not None:
                    out.append(item)
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return out


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class FileSource:
    """The pods of a YAML file, loaded at build time and reloaded when the file changes."""

    def __init__(self, path: str, cache: PodCache, env: Env, check_every: float) -> None:
        self.path = path
        self.cache = cache
        self._log = env.logger
        self._stat = _stat(path)
        cache.replace(_KINDS, load_pods_file(path))
        self.loads = 1
        self._log.info("loaded %d pods from %s", len(cache), path)
        env.every(check_every, self._periodic, "reload-pods-file", initial_delay=check_every)

    @property
    def synced(self) -> bool:
        return True

    async def wait_synced(self, timeout: float | None = None) -> bool:
        return True

    async def _periodic(self) -> None:
        await self.reload_if_changed()

    async def reload_if_changed(self) -> bool:
        """Reload when the file's mtime, size or inode changed; ``True`` if it was reloaded. A file
        that cannot be read or parsed is logged and the current pods stay."""
        stat = _stat(self.path)
        if stat is None or stat == self._stat:
            return False
        try:
            items = await asyncio.to_thread(load_pods_file, self.path)
        except (OSError, ValueError) as exc:
            self._log.error("keeping the current pods: cannot reload %s: %s", self.path, exc)
            self._stat = stat
            return False
        self._stat = stat
        self.cache.replace(_KINDS, items)
        self.loads += 1
        self._log.info("reloaded %d pods from %s", len(self.cache), self.path)
        return True


# --- Kubernetes API ---------------------------------------------------------------------------------


class ApiSource:
    """Mirrors pods, ReplicaSets and ReplicationControllers of a cluster into the cache.

    Until the first pod list arrives the cache is empty (or holds what the handler this one
    replaces knew), so lookups find nothing and the bindings' defaults apply; Mixer blocked its
    ``Build`` until synced, which an asyncio runtime cannot do. :meth:`wait_synced` waits for it.
    """

    def __init__(
        self,
        config: ClusterConfig,
        cache: PodCache,
        env: Env,
        *,
        watch_seconds: int,
        resources: Sequence[Resource] = RESOURCES,
        backoff: tuple[float, float] = (1.0, 30.0),
        request_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.cache = cache
        self._log: logging.Logger = env.logger
        self._request_timeout = request_timeout
        previous = _LATEST.get(config.server)
        if previous is not None and previous is not cache:
            cache.copy_from(previous)
        _LATEST[config.server] = cache
        self.reflectors = tuple(
            Reflector(
                r,
                on_list=self._on_list,
                on_event=self._on_event,
                watch_seconds=watch_seconds,
                logger=self._log,
                backoff=backoff,
            )
            for r in resources
        )
        self.skipped = 0
        """Objects that could not be read (logged and left out)."""
        env.spawn(self._run, "kubernetes-watch")

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until every resource has been listed once; ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout):
                for r in self.reflectors:
                    await r.synced.wait()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        client = KubeClient(self.config, request_timeout=self._request_timeout)
        self._log.info("watching pods at %s (%s)", self.config.server, self.config.source)
        try:
            async with asyncio.TaskGroup() as group:
                for r in self.reflectors:
                    group.create_task(r.run(client), name=f"watch {r.resource.kind}")
        finally:
            await client.close()

    def _parse(self, kind: str, obj: Mapping[str, Any]) -> PodInfo | ControllerInfo | None:
        try:
            return parse_object(obj, kind)
        except ValueError as exc:
            self.skipped += 1
            self._log.warning("skipping a %s that cannot be read: %s", kind, exc)
            return None

    def _on_list(self, kind: str, items: Sequence[Mapping[str, Any]]) -> None:
        parsed = [p for p in (self._parse(kind, i) for i in items) if p is not None]
        self.cache.replace([kind], parsed)

    def _on_event(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        item = self._parse(kind, obj)
        if item is None:
            return
        if event_type == "DELETED":
            self.cache.delete(item)
        elif event_type in ("ADDED", "MODIFIED"):
            self.cache.upsert(item)
