"""A fake Kubernetes API server (aiohttp, 127.0.0.1) for custom resources: list, watch, Events.

No real cluster runs on our machines, so this server follows the API conventions a client relies
on (https://kubernetes.io/docs/reference/using-api/api-concepts/):

* one global ``resourceVersion`` counter: every create, update and delete takes the next value and
  is kept in an event history;
* list (``GET /apis/G/V[/namespaces/NS]/PLURAL``): the collection at the current version, sorted,
  paginated with ``limit`` and an opaque ``continue`` token (later pages are served from the
  first page's snapshot, as from a consistent read); ``{"kind": "<Kind>List", "metadata":
  {"resourceVersion", "continue"}, "items"}``;
* watch (``?watch=1&resourceVersion=RV``): a chunked stream of JSON lines ``{"type", "object"}``,
  first every change after RV from the history, then changes as they happen; ``BOOKMARK`` events
  (only to watchers that sent ``allowWatchBookmarks=true``) carry just the current version; a RV
  older than the history (:meth:`FakeKubeApi.compact`) gets an ``ERROR`` event with a ``410``
  Status (or HTTP ``410`` when :attr:`FakeKubeApi.gone_as_http`); ``timeoutSeconds`` ends it;
* a collection whose CRD is not installed answers ``404`` with a ``NotFound`` Status;
* every request needs ``Authorization: Bearer <token>`` (``401`` otherwise); TLS when started with
  a server context (see :mod:`tests.support.certs`);
* ``POST /api/v1/namespaces/NS/events`` stores the Event (``generateName`` honoured).

Test controls: :meth:`put`, :meth:`delete`, :meth:`bookmark`, :meth:`compact`,
:meth:`end_watches` (end every watch normally), :meth:`drop_watches` (cut every watch connection
mid-stream), :attr:`fail_lists` (answer ``500``
to the next N lists), :attr:`hold_lists` (lists wait until it is set). :class:`FakeKubeThread`
runs it in a thread of its own for tests that drive a ``mixerd`` subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

__all__ = ["Crd", "FakeKubeApi", "FakeKubeThread", "load_fixture_lists", "write_kubeconfig"]

T = TypeVar("T")


@dataclass(frozen=True)
class Crd:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class _Change:
    rv: int
    type: str
    crd: Crd
    obj: dict[str, Any]


class _Watcher:
    def __init__(self, crd: Crd, namespace: str | None, bookmarks: bool) -> None:
        self.crd = crd
        self.namespace = namespace
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None

    def wants(self, crd: Crd, obj: dict[str, Any]) -> bool:
        if crd != self.crd:
            return False
        return self.namespace is None or obj["metadata"].get("namespace") == self.namespace


class FakeKubeApi:
    """The server's state and HTTP handlers; use it from its event loop."""

    def __init__(self, crds: Iterable[Crd], *, token: str = "fake-token", page_size: int = 500) -> None:
        self.crds = {(c.group, c.version, c.plural): c for c in crds}
        self.token = token
        self.page_size = page_size
        """Largest page served, whatever ``limit`` asks (small values exercise pagination)."""
        self.rv = 1000
        self.objects: dict[Crd, dict[tuple[str, str], dict[str, Any]]] = {c: {} for c in self.crds.values()}
        self.history: list[_Change] = []
        self.oldest = self.rv
        """Watches from a version below this get 410 Gone."""
        self.watchers: list[_Watcher] = []
        self.events: list[dict[str, Any]] = []
        """Events POSTed by the client."""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        """(method, path, query) of every authenticated request."""
        self.unauthorized = 0
        self.lists: Counter[str] = Counter()
        """Complete lists per path (first pages)."""
        self.fail_lists = 0
        """Answer this many of the next lists with 500."""
        self.gone_as_http = False
        """Answer a too-old watch with HTTP 410 instead of an ERROR event."""
        self.hold_lists: asyncio.Event | None = None
        self._snapshots: dict[str, list[dict[str, Any]]] = {}
        self._names = itertools.count(1)
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- the test's side ---------------------------------------------------------------------------

    def install(self, crd: Crd) -> None:
        self.crds[(crd.group, crd.version, crd.plural)] = crd
        self.objects.setdefault(crd, {})

    def crd_for(self, api_version: str, kind: str) -> Crd:
        for crd in self.crds.values():
            if f"{crd.group}/{crd.version}" == api_version and crd.kind == kind:
                return crd
        raise KeyError(f"no CRD installed for {api_version} {kind}")

    def put(self, obj: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
        """Create or update an object (its CRD must be installed); watchers see ADDED or MODIFIED
        (with ``notify=False`` open watches miss it, as when a watch falls behind)."""
        obj = copy.deepcopy(obj)
        crd = self.crd_for(obj["apiVersion"], obj["kind"])
        meta = obj.setdefault("metadata", {})
        ident = (meta.get("namespace", "") if crd.namespaced else "", meta["name"])
        if not crd.namespaced:
            meta.pop("namespace", None)
        previous = self.objects[crd].get(ident)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if previous is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["generation"] = 1
        else:
            meta["uid"] = previous["metadata"]["uid"]
            changed = previous.get("spec") != obj.get("spec")
            meta["generation"] = previous["metadata"]["generation"] + (1 if changed else 0)
        self.objects[crd][ident] = obj
        self._record(_Change(self.rv, "MODIFIED" if previous else "ADDED", crd, obj), notify)
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str, *, notify: bool = True) -> None:
        crd = self.crd_for(api_version, kind)
        obj = self.objects[crd].pop((namespace if crd.namespaced else "", name))
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._record(_Change(self.rv, "DELETED", crd, obj), notify)

    def load(self, objects: Iterable[dict[str, Any]]) -> None:
        for obj in objects:
            self.put(obj)

    def bookmark(self) -> int:
        """Send a BOOKMARK with the current version to every watcher that allows them; how many."""
        sent = 0
        for w in self.watchers:
            if w.bookmarks:
                obj = {
                    "kind": w.crd.kind,
                    "apiVersion": f"{w.crd.group}/{w.crd.version}",
                    "metadata": {"resourceVersion": str(self.rv)},
                }
                w.queue.put_nowait({"type": "BOOKMARK", "object": obj})
                sent += 1
        return sent

    def compact(self, *, expire_watches: bool = True) -> None:
        """Forget the history: every version so far is too old to watch from. With
        ``expire_watches`` every open watch ends with a 410 ERROR event (as after an etcd
        compaction the API server cannot continue them)."""
        self.history.clear()
        self.oldest = self.rv + 1
        if expire_watches:
            for w in self.watchers:
                w.queue.put_nowait(
                    {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
                )

    def end_watches(self) -> int:
        """End every open watch normally (as its ``timeoutSeconds`` would); how many."""
        for w in self.watchers:
            w.queue.put_nowait(None)
        return len(self.watchers)

    def delivered(self) -> bool:
        """Every event queued for an open watch was written to its connection."""
        return all(w.queue.empty() for w in self.watchers)

    def drop_watches(self) -> int:
        """Cut every open watch connection without ending the chunked stream; how many."""
        dropped = 0
        for w in list(self.watchers):
            if w.transport is not None:
                w.transport.abort()
                dropped += 1
        return dropped

    def watches(self, plural: str) -> list[dict[str, str]]:
        """Query strings of the watch requests made for ``plural``."""
        return [
            q for m, p, q in self.requests if p.endswith("/" + plural) and q.get("watch") in ("1", "true")
        ]

    def _record(self, change: _Change, notify: bool = True) -> None:
        self.history.append(change)
        for w in self.watchers if notify else ():
            if w.wants(change.crd, change.obj):
                w.queue.put_nowait({"type": change.type, "object": change.obj})

    # -- HTTP ----------------------------------------------------------------------------------------

    def _route(self, request: web.Request) -> tuple[Crd | None, str | None, web.Response | None]:
        m = request.match_info
        crd = self.crds.get((m["group"], m["version"], m["plural"]))
        if crd is None:
            message = f"the server could not find the requested resource ({m['plural']}.{m['group']})"
            return None, None, web.json_response(_status(404, "NotFound", message), status=404)
        return crd, m.get("namespace"), None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.unauthorized += 1
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        self.requests.append((request.method, request.path, dict(request.query)))
        result: web.StreamResponse = await handler(request)
        return result

    async def _get(self, request: web.Request) -> web.StreamResponse:
        crd, namespace, error = self._route(request)
        if error is not None:
            return error
        assert crd is not None
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, crd, namespace)
        return await self._list(request, crd, namespace)

    async def _list(self, request: web.Request, crd: Crd, namespace: str | None) -> web.Response:
        if self.hold_lists is not None:
            await self.hold_lists.wait()
        if self.fail_lists > 0:
            self.fail_lists -= 1
            return web.json_response(_status(500, "InternalError", "etcd is having a bad day"), status=500)
        limit = min(int(request.query.get("limit") or self.page_size), self.page_size)
        token = request.query.get("continue", "")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token))
                snapshot, rv, offset = self._snapshots[state["id"]], state["rv"], state["offset"]
            except (ValueError, KeyError):
                return web.json_response(_status(400, "BadRequest", "invalid continue token"), status=400)
            if rv < self.oldest - 1:  # a snapshot the history no longer reaches
                return web.json_response(
                    _status(410, "Expired", "the provided continue parameter is too old"), status=410
                )
        else:
            self.lists[request.path] += 1
            snapshot = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self.objects[crd].items())
                if namespace is None or ns == namespace
            ]
            rv, offset = self.rv, 0
        page = snapshot[offset : offset + limit]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if offset + limit < len(snapshot):
            ident = str(next(self._names))
            self._snapshots[ident] = snapshot
            state = {"id": ident, "rv": rv, "offset": offset + limit}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            meta["remainingItemCount"] = len(snapshot) - offset - limit
        body = {
            "apiVersion": f"{crd.group}/{crd.version}",
            "kind": f"{crd.kind}List",
            "metadata": meta,
            "items": page,
        }
        return web.json_response(body)

    async def _watch(self, request: web.Request, crd: Crd, namespace: str | None) -> web.StreamResponse:
        raw = request.query.get("resourceVersion", "")
        since = int(raw) if raw.isdigit() else self.rv
        too_old = since < self.oldest - 1
        if too_old and self.gone_as_http:
            return web.json_response(
                _status(410, "Expired", f"too old resource version: {since}"), status=410
            )
        watcher = _Watcher(crd, namespace, request.query.get("allowWatchBookmarks") == "true")
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        await resp.prepare(request)
        watcher.transport = request.transport  # type: ignore[assignment]
        if too_old:
            error = {"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {since}")}
            await resp.write(json.dumps(error).encode() + b"\n")
            await resp.write_eof()
            return resp
        for change in self.history:
            if change.rv > since and watcher.wants(change.crd, change.obj):
                watcher.queue.put_nowait({"type": change.type, "object": change.obj})
        self.watchers.append(watcher)
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(
                        watcher.queue.get(), timeout=max(0.0, deadline - loop.time())
                    )
                except TimeoutError:
                    break
                if item is None:
                    break
                await resp.write(json.dumps(item).encode() + b"\n")
                if item["type"] == "ERROR":
                    break
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.watchers.remove(watcher)
        return resp

    async def _create_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'event.')}{next(self._names):05d}"
        meta["namespace"] = request.match_info["namespace"]
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta["uid"] = str(uuid.uuid4())
        self.events.append(body)
        return web.json_response(body, status=201)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self._create_event)
        app.router.add_get("/apis/{group}/{version}/{plural}", self._get)
        app.router.add_get("/apis/{group}/{version}/namespaces/{namespace}/{plural}", self._get)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for w in self.watchers:
            w.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()


class FakeKubeThread:
    """A :class:`FakeKubeApi` served from a thread of its own (for a ``mixerd`` subprocess)."""

    def __init__(self, api: FakeKubeApi, ssl_context: ssl.SSLContext | None = None) -> None:
        self.api = api
        self._ssl = ssl_context
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-kube", daemon=True)

    def __enter__(self) -> FakeKubeThread:
        self._thread.start()
        self.call_async(self.api.start(self._ssl))
        return self

    def __exit__(self, *exc: object) -> None:
        self.call_async(self.api.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's loop and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def call_async(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def write_kubeconfig(
    path: Path, server: str, *, token: str, ca_pem: bytes | None = None, **user: str
) -> Path:
    """A kubeconfig with one cluster, user and (current) context; ``user`` adds user fields."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": cluster}],
        "users": [{"name": "mixerd", "user": {"token": token, **user}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "mixerd"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def load_fixture_lists(directory: Path) -> list[dict[str, Any]]:
    """The items of every ``*.json`` List under ``directory`` (API-server-shaped fixtures)."""
    items: list[dict[str, Any]] = []
    for file in sorted(directory.glob("*.json")):
        doc = json.loads(file.read_text())
        items.extend(doc["items"])
    return items
