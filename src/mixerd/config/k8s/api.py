"""A minimal Kubernetes API client: connection config, paginated list, and watch (list + watch loop).

Why not a client library: the adapter needs exactly two calls per resource (``GET <path>?limit=``
to list, ``GET <path>?watch=1&resourceVersion=`` to follow changes) for three resources (pods,
ReplicaSets, ReplicationControllers). The official ``kubernetes`` package is large and synchronous
(a thread per watch); ``kubernetes_asyncio`` is a large generated client that brings its own
dependencies for two endpoints. Both would make this adapter the only part of mixerd importing a
Kubernetes client, which the architecture reserves for config stores. The two calls and the watch
protocol (newline-delimited JSON events ``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``; a
``410 Gone`` means the resource version is too old and the client must list again) are small and
stable, so they are written here on aiohttp, which mixerd already uses.

Connection config (:func:`resolve_config`): the handler's ``kubeconfigPath``, else the
``KUBECONFIG`` environment variable (first path of the list), else the in-cluster service account
(``KUBERNETES_SERVICE_HOST``/``_PORT``, token and CA under
``/var/run/secrets/kubernetes.io/serviceaccount``). From a kubeconfig the current context's
cluster (``server``, ``certificate-authority[-data]``, ``insecure-skip-tls-verify``,
``tls-server-name``) and user (``token``, ``tokenFile``, ``client-certificate[-data]`` +
``client-key[-data]``, ``username``/``password``) are used; ``exec`` and ``auth-provider`` plugins
are not supported (a clear build error). Token files are re-read for every request, so rotated
service-account tokens keep working.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import yaml

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ClusterConfig",
    "GoneError",
    "KubeApiError",
    "KubeClient",
    "KubeConfigError",
    "NotFoundError",
    "Reflector",
    "Resource",
    "in_cluster_config",
    "load_kubeconfig",
    "resolve_config",
]

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_EVENT_BYTES: Final = 16 << 20
"""Largest watch event line accepted (Kubernetes objects are limited to about 1.5 MiB in etcd)."""
LIST_PAGE_SIZE: Final = 500


class KubeConfigError(ValueError):
    """No usable connection config (missing or unsupported kubeconfig, not in a cluster)."""


class KubeApiError(Exception):
    """The API server answered with an error (``status``: its HTTP status), or the connection
    failed (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GoneError(KubeApiError):
    """``410 Gone``: the resource version is too old; list again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


class NotFoundError(KubeApiError):
    """``404 Not Found`` for a collection: its resource type (a CRD) is not installed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    ssl_context: ssl.SSLContext | None = None
    token: str = ""
    token_file: str = ""
    basic_auth: tuple[str, str] | None = None
    server_hostname: str | None = None
    source: str = ""
    """Where this config came from (for logs and errors)."""
    verify: bool = True
    """False when the kubeconfig says ``insecure-skip-tls-verify`` (the server is not authenticated)."""
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.extra_headers}
        token = self.token
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise KubeApiError(f"cannot read token file {self.token_file}: {exc}") from None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.basic_auth is not None:
            user, password = self.basic_auth
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers


# --- config ---------------------------------------------------------------------------------------


def _named(items: Any, name: str, what: str, path: str) -> Mapping[str, Any]:
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, Mapping) else {}
    raise KubeConfigError(f"{path}: no {what} named '{name}'")


def _ssl_context(
    cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path, path: str
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    try:
        if cluster.get("insecure-skip-tls-verify") is True:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            ctx.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode("ascii")
            )
        elif cluster.get("certificate-authority"):
            ctx.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
        cert_file, key_file = user.get("client-certificate"), user.get("client-key")
        if cert_data and key_data:
            with tempfile.TemporaryDirectory(prefix="mixerd-kube-") as tmp:
                cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                for target, data in ((cert_path, cert_data), (key_path, key_data)):
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(base64.b64decode(data))
                ctx.load_cert_chain(str(cert_path), str(key_path))
        elif cert_file and key_file:
            ctx.load_cert_chain(str(base / cert_file), str(base / key_file))
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise KubeConfigError(f"{path}: TLS settings: {exc}") from None
    return ctx


def load_kubeconfig(path: str | Path, context: str | None = None) -> ClusterConfig:
    """The connection config of ``context`` (default: the current context) of a kubeconfig file."""
    path = Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from None
    if not isinstance(doc, Mapping):
        raise KubeConfigError(f"{path}: not a kubeconfig (expected a map)")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise KubeConfigError(f"{path}: no current-context")
    ctx = _named(doc.get("contexts"), ctx_name, "context", str(path))
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster", "")), "cluster", str(path))
    user: Mapping[str, Any] = {}
    if ctx.get("user"):
        user = _named(doc.get("users"), str(ctx["user"]), "user", str(path))
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeConfigError(
                f"{path}: user '{ctx.get('user')}' authenticates with an '{plugin}' plugin, which mixerd "
                "does not run; use a token, a token file or a client certificate"
            )
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise KubeConfigError(f"{path}: cluster '{ctx.get('cluster')}' has no http(s) server URL")
    base = path.parent
    token_file = str(user.get("tokenFile") or "")
    basic = None
    if user.get("username") and user.get("password"):
        basic = (str(user["username"]), str(user["password"]))
    return ClusterConfig(
        server=server,
        ssl_context=_ssl_context(cluster, user, base, str(path)) if server.startswith("https://") else None,
        token=str(user.get("token") or ""),
        token_file=str(base / token_file) if token_file else "",
        basic_auth=basic,
        server_hostname=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        source=f"kubeconfig {path} (context {ctx_name})",
        verify=cluster.get("insecure-skip-tls-verify") is not True,
    )


def in_cluster_config(
    environ: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig:
    """The pod's own service account, as every in-cluster client uses it."""
    environ = os.environ if environ is None else environ
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "no kubeconfig (kubeconfigPath, KUBECONFIG) and not running in a cluster "
            "(KUBERNETES_SERVICE_HOST is not set)"
        )
    token_file = sa_dir / "token"
    if not token_file.exists():
        raise KubeConfigError(f"running in a cluster but {token_file} does not exist")
    ctx = ssl.create_default_context()
    ca = sa_dir / "ca.crt"
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"cannot load the cluster CA {ca}: {exc}") from None
    server_host = f"[{host}]" if ":" in host else host
    return ClusterConfig(
        server=f"https://{server_host}:{port}",
        ssl_context=ctx,
        token_file=str(token_file),
        source="in-cluster service account",
    )


def resolve_config(
    kubeconfig_path: str, environ: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig:
    """``kubeconfigPath``, else ``$KUBECONFIG``, else the in-cluster service account."""
    environ = os.environ if environ is None else environ
    if kubeconfig_path:
        return load_kubeconfig(kubeconfig_path)
    env_paths = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if env_paths:
        return load_kubeconfig(env_paths[0])
    return in_cluster_config(environ, sa_dir)


# --- client ---------------------------------------------------------------------------------------


def _status_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, Mapping) and doc.get("message"):
        return str(doc["message"])
    return body[:200].decode("utf-8", "replace")


class KubeClient:
    """List and watch collections of one API server. Create it inside the event loop; close it."""

    def __init__(self, config: ClusterConfig, *, request_timeout: float = 30.0) -> None:
        self.config = config
        self.request_timeout = request_timeout
        ssl_arg: ssl.SSLContext | bool = config.ssl_context if config.ssl_context is not None else True
        # No connection limit: every watched collection holds one connection open (HTTP/1.1).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_arg, limit=0))

    async def close(self) -> None:
        await self._session.close()

    def _request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.config.headers()}
        if self.config.server_hostname:
            kwargs["server_hostname"] = self.config.server_hostname
        return kwargs

    async def list(self, path: str) -> tuple[list[Mapping[str, Any]], str]:
        """Every item of the collection at ``path`` (paginated) and the list's resource version."""
        items: list[Mapping[str, Any]] = []
        cont = ""
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        while True:
            url = f"{self.config.server}{path}?limit={LIST_PAGE_SIZE}"
            if cont:
                url += f"&continue={quote(cont, safe='')}"
            try:
                async with self._session.get(url, timeout=timeout, **self._request_kwargs()) as resp:
                    body = await resp.read()
                    if resp.status == 410:
                        raise GoneError(f"GET {path}: {_status_message(body)}")
                    if resp.status == 404:
                        raise NotFoundError(f"GET {path}: {_status_message(body)}")
                    if resp.status != 200:
                        raise KubeApiError(
                            f"GET {path}: HTTP {resp.status}: {_status_message(body)}", resp.status
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeApiError(f"GET {path}: {exc or type(exc).__name__}") from None
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise KubeApiError(f"GET {path}: invalid JSON: {exc}") from None
            page = doc.get("items") or []
            if not isinstance(page, list):
                raise KubeApiError(f"GET {path}: 'items' is not a list")
            items.extend(i for i in page if isinstance(i, Mapping))
            meta = doc.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    async def create(self, path: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """POST ``body`` to the collection at ``path``; the created object."""
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with self._session.post(
                f"{self.config.server}{path}", json=body, timeout=timeout, **self._request_kwargs()
            ) as resp:
                data = await resp.read()
                if resp.status not in (200, 201, 202):
                    raise KubeApiError(
                        f"POST {path}: HTTP {resp.status}: {_status_message(data)}", resp.status
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"POST {path}: {exc or type(exc).__name__}") from None
        try:
            doc = json.loads(data)
        except ValueError:
            return {}
        return doc if isinstance(doc, Mapping) else {}

    async def watch(
        self, path: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
        """Yield ``(type, object)`` events after ``resource_version`` until the server ends the
        watch (after about ``timeout_seconds``). :class:`GoneError` when the version is too old."""
        url = (
            f"{self.config.server}{path}?watch=1&allowWatchBookmarks=true"
            f"&resourceVersion={quote(resource_version, safe='')}&timeoutSeconds={timeout_seconds}"
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout, sock_read=timeout_seconds + self.request_timeout
        )
        try:
            async with self._session.get(url, timeout=timeout, **self._request_kwargs()) as resp:
                if resp.status != 200:
                    body = await resp.content.read(64 * 1024)
                    if resp.status == 410:
                        raise GoneError(f"watch {path}: {_status_message(body)}")
                    if resp.status == 404:
                        raise NotFoundError(f"watch {path}: {_status_message(body)}")
                    raise KubeApiError(
                        f"watch {path}: HTTP {resp.status}: {_status_message(body)}", resp.status
                    )
                async for line in _lines(resp.content):
                    try:
                        event = json.loads(line)
                    except ValueError as exc:
                        raise KubeApiError(f"watch {path}: invalid event: {exc}") from None
                    kind = event.get("type") if isinstance(event, Mapping) else None
                    obj = event.get("object") if isinstance(event, Mapping) else None
                    if not isinstance(kind, str) or not isinstance(obj, Mapping):
                        raise KubeApiError(f"watch {path}: malformed event")
                    if kind == "ERROR":
                        code = obj.get("code")
                        message = obj.get("message") or obj.get("reason") or "error"
                        if code == 410:
                            raise GoneError(f"watch {path}: {message}")
                        raise KubeApiError(
                            f"watch {path}: error event {code}: {message}",
                            code if isinstance(code, int) else None,
                        )
                    yield kind, obj
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"watch {path}: {exc or type(exc).__name__}") from None


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for chunk in stream.iter_any():
        start = len(buf)
        buf += chunk
        while True:
            i = buf.find(b"\n", start)
            if i < 0:
                break
            line = bytes(buf[:i]).strip()
            del buf[: i + 1]
            start = 0
            if line:
                yield line
        if len(buf) > MAX_EVENT_BYTES:
            raise KubeApiError(f"a watch event is larger than {MAX_EVENT_BYTES} bytes")
    tail = bytes(buf).strip()
    if tail:
        yield tail


# --- reflector ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    """Kind of the items (list responses leave it out of each item)."""
    path: str
    """Collection path across all namespaces (``/api/v1/pods``)."""


class Reflector:
    """Keeps one collection mirrored: list, then watch from the list's version; on ``410 Gone``
    list again at once, on other errors list again after a growing delay (``backoff``)."""

    def __init__(
        self,
        resource: Resource,
        *,
        on_list: Callable[[str, Sequence[Mapping[str, Any]]], None],
        on_event: Callable[[str, str, Mapping[str, Any]], None],
        watch_seconds: int,
        logger: logging.Logger,
        backoff: tuple[float, float] = (1.0, 30.0),
        missing_retry: float | None = None,
    ) -> None:
        """``missing_retry``: when set, a collection the server does not know (``404``: its CRD is
        not installed) counts as listed and empty, is logged once, and is listed again every
        ``missing_retry`` seconds; without it a 404 is an error like any other."""
        self.resource = resource
        self.missing_retry = missing_retry
        self.missing = False
        """The last list found no such collection (404)."""
        self._on_list = on_list
        self._on_event = on_event
        self.watch_seconds = max(1, watch_seconds)
        self._log = logger
        self._backoff = backoff
        self.synced = asyncio.Event()
        self.lists = 0
        """Completed lists (the first one, then one per re-list)."""
        self.events = 0
        """Watch events applied."""
        self.last_error: str | None = None

    async def run(self, client: KubeClient) -> None:
        delay = self._backoff[0]
        path, kind = self.resource.path, self.resource.kind
        while True:
            try:
                try:
                    items, version = await client.list(path)
                except NotFoundError as exc:
                    if self.missing_retry is None:
                        raise
                    if not self.missing:
                        self._log.info(
                            "%s: not installed on the API server (%s); treated as empty, looking again every %gs",
                            kind,
                            exc,
                            self.missing_retry,
                        )
                    self.missing = True
                    self._on_list(kind, [])
                    self.lists += 1
                    self.synced.set()
                    self.last_error = None
                    delay = self._backoff[0]
                    await asyncio.sleep(self.missing_retry)
                    continue
                if self.missing:
                    self._log.info("%s: now installed", kind)
                    self.missing = False
                self._on_list(kind, items)
                self.lists += 1
                self.synced.set()
                self.last_error = None
                self._log.info("listed %d %s objects (resourceVersion %s)", len(items), kind, version)
                while True:
                    async for event_type, obj in client.watch(path, version, self.watch_seconds):
                        delay = self._backoff[0]  # the server answers: back off from the start next time
                        meta = obj.get("metadata")
                        if isinstance(meta, Mapping) and meta.get("resourceVersion"):
                            version = str(meta["resourceVersion"])
                        if event_type != "BOOKMARK":
                            self._on_event(kind, event_type, obj)
                            self.events += 1
                    delay = self._backoff[0]  # a watch that ended normally
            except GoneError as exc:
                self._log.info("%s: %s; listing again", kind, exc)
                continue
            except KubeApiError as exc:
                self.last_error = str(exc)
                self._log.warning("%s: %s; listing again in %.1fs", kind, exc, delay)
            except Exception as exc:  # a bug must not end the mirror; log it and start over
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log.exception("%s: unexpected error; listing again in %.1fs", kind, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
