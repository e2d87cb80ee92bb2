"""Process wiring: the runtime, the gRPC server, the HTTP listeners, signals and shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mixerd import __version__
from mixerd.adapter import WORKER_COUNT
from mixerd.attribute import builtin_manifest
from mixerd.config import FileStore, MemoryStore, Resource, ResourceError, Store, build_snapshot, parse_text
from mixerd.runtime import Runtime
from mixerd.server.console import Console
from mixerd.server.console_ui import ConsoleUI, console_off_routes
from mixerd.server.settings import Settings, is_loopback, parse_address
from mixerd.server.tls import CertificateSource, open_sources
from mixerd.server.workers import WorkerRole, peer_middleware

if TYPE_CHECKING:
    from mixerd.api.ext_authz import HttpAuthzServer

__all__ = ["Server", "default_config_text", "protobuf_backend"]

_log = logging.getLogger("mixerd.server")


def protobuf_backend() -> str:
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


def default_config_text() -> str:
    """The embedded default config: a small policy and telemetry setup that shows each kind of rule."""
    return resources.files("mixerd.server").joinpath("data/default-config.yaml").read_text("utf-8")


def _quota_client(worker: WorkerRole) -> tuple[str, Any] | None:
    """The shared-service name and client of the supervisor's memquota counters, for this worker
    (None without the memquota adapter)."""
    try:
        from mixerd.adapters.memquota.shared import SHARED_SERVICE, QuotaClient
    except ImportError:  # the memquota adapter is optional
        return None
    return SHARED_SERVICE, QuotaClient(worker.quota_socket)


async def _rescan(rescan: Callable[[], Awaitable[object]]) -> None:
    _log.info("SIGHUP: reading the config files")
    await rescan()


def _prometheus_exporter() -> Any:
    try:
        from mixerd.adapters.prometheus import EXPORTER
    except ImportError:  # the prometheus adapter is optional
        return None
    return EXPORTER


@dataclass
class _Listeners:
    grpc_port: int = 0
    monitoring_port: int = 0
    prometheus_port: int = 0
    http_authz_port: int = 0
    console_port: int = 0
    """Only with ``--console-address`` (else the console API is on the monitoring port)."""


class Server:
    """A running mixerd: call :meth:`start`, then :meth:`wait` or :meth:`stop`."""

    def __init__(
        self, settings: Settings, *, store: Store | None = None, worker: WorkerRole | None = None
    ) -> None:
        self.settings = settings
        self.worker = worker
        """Set in a worker of ``mixerd serve --workers N``: shared ports, monitoring on a Unix socket
        for the supervisor, memquota counters in the supervisor."""
        self.store = store or self._make_store()
        self.console = Console(settings) if settings.console_enabled else None
        services = self.console.services() if self.console is not None else None
        self._quota_client: Any = None
        if worker is not None:
            services = {**(services or {}), WORKER_COUNT: worker.count}
            shared = _quota_client(worker)
            if shared is not None:
                name, self._quota_client = shared
                services[name] = self._quota_client
        """The console (store, writer, decision feed, API), None with ``--console-store off``."""
        self.console_ui = ConsoleUI(settings) if self.console is not None else None
        """The console's web pages (``/ui/``), served beside its API."""
        self.runtime = Runtime(
            self.store,
            default_namespace=settings.default_namespace,
            check_deadline=settings.check_deadline,
            check_cache_entries=settings.check_cache_entries,
            drain_timeout=settings.drain_timeout,
            fail_closed=settings.fail_closed,
            services=services,
        )
        if self.console is not None:
            self.console.register_metrics(self.runtime.metrics)
        self.grpc: grpc.aio.Server | None = None
        self.listeners = _Listeners()
        self.tls: dict[str, CertificateSource] = {}
        """The certificates of the listeners that serve TLS, by listener (``grpc``, ``monitoring``,
        ``prometheus``, ``http_authz``); listeners with the same files share one."""
        self._stopped = asyncio.Event()
        self.serving = False
        """Every listener is open (``/readyz`` waits for it as well as for the config)."""
        self._services: list[Any] = []
        self._runners: list[web.BaseRunner] = []
        self._http_authz: HttpAuthzServer | None = None
        self._watchers: list[asyncio.Task[None]] = []

    def _make_store(self) -> Store:
        s = self.settings
        if s.config_url:
            return self._kube_store()
        if s.config:
            return FileStore(list(s.config), debounce=s.config_debounce, resync_interval=s.config_resync)
        parsed = parse_text(default_config_text(), file="<embedded default config>")
        store = MemoryStore()
        store.replace(parsed.resources, parsed.errors)
        return store

    def _kube_store(self) -> Store:
        from mixerd.config.k8s.store import KubeStore  # only a k8s:// config needs the client

        s = self.settings

        def validate(resources: Sequence[Resource], problems: Sequence[ResourceError]) -> list[ResourceError]:
            """What the runtime would report (Events for ``--k8s-write-status``)."""
            snapshot = build_snapshot(
                resources,
                adapters=self.runtime.catalog,
                default_namespace=s.default_namespace,
                base_manifest=builtin_manifest(),
                problems=problems,
                snapshot_id=0,
            )
            return list(snapshot.errors)

        return KubeStore(
            s.config_url,
            default_namespace=s.default_namespace,
            debounce=s.config_debounce,
            write_events=s.k8s_write_status,
            validate=validate,
            missing_retry=s.k8s_missing_retry,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def client_auth(self, listener: str) -> bool:
        """Whether ``listener`` requires client certificates (so its callers have an identity)."""
        source = self.tls.get(listener)
        return source is not None and source.files.client_auth

    async def start(self) -> None:
        """Load the TLS files and the config, then open every listener. Raises ``OSError`` (a port
        is taken), ``ValueError`` (a bad setting; ``TlsError``: a TLS file that cannot be served,
        named in the message) or ``RuntimeError`` (slow protobuf backend)."""
        if protobuf_backend() != "upb":
            message = (
                f"protobuf is running on its '{protobuf_backend()}' backend, about 100x slower than upb. "
                "Install a protobuf wheel for this platform (pip install --force-reinstall protobuf)"
            )
            if not self.settings.allow_slow_protobuf:
                raise RuntimeError(message + ", or pass --allow-slow-protobuf to start anyway.")
            _log.warning("%s", message)
        self.tls = open_sources(self.settings)
        for source in {id(s): s for s in self.tls.values()}.values():
            _log.info(
                "%s: serving TLS certificate %s (%s)",
                source.users,
                source.files.cert,
                source.material.describe(),
            )
            self._watchers.append(asyncio.get_running_loop().create_task(source.watch()))
        if self.console is not None:
            await self.console.start()
        # The monitoring listener opens first: while the config loads (a cluster's initial list can
        # take a while, or wait for an unreachable API server) /readyz answers "not ready".
        await self._start_monitoring()
        await self.runtime.start()
        await self._start_grpc()
        await self._start_http()
        self.serving = True

    async def _start_grpc(self) -> None:
        from mixerd.server.services import build_services

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_concurrent_streams", 1024),
                # Workers share the port (the kernel spreads connections among them); one process
                # alone must fail on a port that is taken.
                ("grpc.so_reuseport", 1 if self.worker is not None else 0),
            ]
        )
        self._services = build_services(
            self.runtime,
            self.settings,
            self.console.sink if self.console is not None else None,
            caller_identity=self.client_auth("grpc"),
        )
        for service in self._services:
            service.register(server)
        host, port = parse_address(self.settings.grpc_address)
        address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        source = self.tls.get("grpc")
        if source is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, source.grpc_credentials())
        if bound == 0:
            raise OSError(f"could not listen on {self.settings.grpc_address} (gRPC)")
        await server.start()
        self.grpc = server
        self.listeners.grpc_port = bound

    async def _listen(self, app: web.Application, address: str, listener: str) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        if self.worker is not None and listener == "monitoring":
            # The supervisor serves the monitoring port and asks each worker on its Unix socket.
            unix = web.UnixSite(runner, self.worker.monitoring_socket)
            await unix.start()
            self._runners.append(runner)
            return 0
        host, port = parse_address(address)
        source = self.tls.get(listener)
        context = source.server_context() if source is not None else None
        site = web.TCPSite(
            runner, host, port, reuse_address=True, reuse_port=self.worker is not None, ssl_context=context
        )
        await site.start()
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def _start_monitoring(self) -> None:
        self.listeners.monitoring_port = await self._listen(
            self._monitoring_app(), self.settings.monitoring_address, "monitoring"
        )

    async def _start_http(self) -> None:
        if self.worker is not None:  # the supervisor serves these ports
            if self.settings.http_authz_address:
                await self._start_http_authz()
            return
        if self.console is not None and self.settings.console_address:
            app = web.Application()
            self._add_console_routes(app)
            self.listeners.console_port = await self._listen(app, self.settings.console_address, "monitoring")
        if self.settings.prometheus_address:
            app = web.Application()
            app.router.add_get("/metrics", self._adapter_metrics)
            self.listeners.prometheus_port = await self._listen(
                app, self.settings.prometheus_address, "prometheus"
            )
        if self.settings.http_authz_address:
            await self._start_http_authz()

    async def _start_http_authz(self) -> None:
        """The forward-auth endpoint on its own HTTP/1.1 server (not aiohttp: see
        :mod:`mixerd.api.ext_authz.http`), sharing the port among workers like gRPC."""
        from mixerd.server.services import http_authz_server

        authz = http_authz_server(self.runtime, self.settings, caller_identity=self.client_auth("http_authz"))
        host, port = parse_address(self.settings.http_authz_address)
        source = self.tls.get("http_authz")
        self.listeners.http_authz_port = await authz.start(
            host,
            port,
            ssl_context=source.server_context() if source is not None else None,
            reuse_port=self.worker is not None,
        )
        self._http_authz = authz

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, let in-flight ones finish (bounded), flush reports, close handlers."""
        self.serving = False  # /readyz: not ready while draining
        if self.grpc is not None or self._runners:  # not after a start that failed before listening
            _log.info("shutting down: draining in-flight calls (up to %.0fs)", grace)
        if self.grpc is not None:
            await self.grpc.stop(grace)
        for service in self._services:
            close = getattr(service, "aclose", None)
            if close is not None:
                await close()
        if self._http_authz is not None:
            await self._http_authz.close(grace)
        if self.console is not None:
            self.console.feed.close()  # ends the live streams, which would hold the HTTP shutdown
        for runner in self._runners:
            await runner.cleanup()
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._watchers.clear()
        await self.runtime.close()
        if self._quota_client is not None:  # after the handlers that ask it
            await self._quota_client.aclose()
        if self.console is not None:  # after the handlers, whose last hops it still writes
            await self.console.aclose()
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    def install_signal_handlers(self, on_signal: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        rescan = getattr(self.store, "rescan", None)
        if rescan is not None:  # SIGHUP: read the config files now (a supervisor relays it to workers)
            loop.add_signal_handler(
                signal.SIGHUP, lambda: self._watchers.append(loop.create_task(_rescan(rescan)))
            )

    # -- HTTP endpoints --------------------------------------------------------------------------

    def _monitoring_app(self) -> web.Application:
        app = web.Application(middlewares=[peer_middleware] if self.worker is not None else [])
        app.router.add_get("/metrics", self._self_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/version", self._version)
        app.router.add_get("/debug/routes", self._routes)
        app.router.add_get("/debug/config", self._config)
        app.router.add_get("/adapters/metrics", self._adapter_metrics)
        if self.console is None:
            console_off_routes(app)
        elif not self.settings.console_address or self.worker is not None:
            self._add_console_routes(app)
        return app

    def _add_console_routes(self, app: web.Application) -> None:
        assert self.console is not None and self.console_ui is not None
        self.console.add_routes(app)
        self.console_ui.add_routes(app)

    async def _self_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.runtime.metrics.registry)
        exporter = _prometheus_exporter()
        if exporter is not None and request.query.get("adapters", "1") != "0":
            body += exporter.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _adapter_metrics(self, request: web.Request) -> web.Response:
        exporter = _prometheus_exporter()
        body = exporter.render() if exporter is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.runtime.ready:
            waiting: tuple[str, ...] = getattr(self.store, "waiting_for", tuple)()
            detail = f" (waiting for the initial list of {', '.join(waiting)})" if waiting else ""
            return web.Response(status=503, text=f"not ready: config not loaded yet{detail}\n")
        if not self.serving:
            return web.Response(status=503, text="not ready: listeners still opening\n")
        return web.Response(text=f"ready: config {self.runtime.dispatcher.table.id}\n")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__, "protobuf": protobuf_backend()})

    def _debug_refused(self, request: web.Request) -> web.Response | None:
        """A 403 for a /debug/* request from off the machine, unless ``--debug-remote`` opens them."""
        if self.settings.debug_remote or is_loopback(request.remote):
            return None
        return web.Response(
            status=403,
            text="/debug/* shows the policy in force and is served to loopback clients only; start mixerd "
            "with --debug-remote (MIXERD_DEBUG_REMOTE=true) to serve it to others\n",
        )

    async def _routes(self, request: web.Request) -> web.Response:
        refused = self._debug_refused(request)
        if refused is not None:
            return refused
        return web.Response(text=self.runtime.dispatcher.table.dump())

    async def _config(self, request: web.Request) -> web.Response:
        refused = self._debug_refused(request)
        if refused is not None:
            return refused
        snap = self.runtime.snapshot
        body: dict[str, Any] = {"generation": self.runtime.generation, "snapshot": None}
        if snap is not None:
            body["snapshot"] = {
                "id": snap.id,
                "rules": sorted(r.key.fqn for r in snap.rules),
                "instances": sorted(snap.instances),
                "handlers": sorted(snap.handlers),
                "security": sorted(str(k) for k in snap.security),
                "errors": [str(e) for e in snap.errors],
                "warnings": [str(w) for w in getattr(snap, "warnings", ())],
            }
        body["routing_errors"] = list(self.runtime.dispatcher.table.errors)
        body["jwks"] = self.runtime.jwks.status()  # jwksUri (redacted) -> "ok (n keys)" or the latest error
        body["apply_error"] = self.runtime.apply_error  # why the latest config change is not in force
        return web.Response(text=json.dumps(body, indent=2) + "\n", content_type="application/json")
