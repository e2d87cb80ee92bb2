"""``mixerd serve --workers N``: N worker processes behind one supervisor.

Each worker is ``mixerd serve`` run again by the supervisor (a fresh interpreter started with
:mod:`subprocess`, never a fork: gRPC forbids forking a process that has started it), told its
role by the internal ``--internal-worker`` flag and its settings by an environment variable. The
workers open the gRPC and HTTP authorization ports with ``SO_REUSEPORT``, so the kernel spreads
connections among them, and each watches the config itself (the files, re-read on change and every
``--config-resync``), the way one process does: a change reaches every worker with no message from
the supervisor, and a restarted worker reads the config in force.

The supervisor imports neither the runtime nor gRPC. It

* stops (exit status 1) when a worker cannot start serving the first time (a port taken ...);
* restarts a worker that exits later (backoff from 0.5 s doubling to 30 s, reset after a worker has run
  for 30 s; the exit status is logged);
* on SIGTERM/SIGINT sends SIGTERM to every worker, each of which drains its calls and flushes its
  reports as one process does, and waits for them (SIGKILL after ``--drain-timeout`` + 15 s);
* owns the memquota counters (:mod:`mixerd.adapters.memquota.shared`) on a Unix socket, so
  quotas count exactly across workers;
* serves the monitoring port (and ``--prometheus-address``, ``--console-address``): ``/metrics``
  is every worker's exposition merged (:func:`merge_expositions`), ``/readyz`` is ready when every
  worker is, ``/debug/workers`` lists them, and every other path (``/debug/*``, ``/version``, the
  console API and UI) is answered by one ready worker, named in the ``X-Mixerd-Worker`` response
  header (a request header ``X-Mixerd-Worker: <index>`` picks the worker). Workers serve their
  monitoring app on a Unix socket in a private directory (mode 0700); the client's address
  travels in ``X-Mixerd-Peer``, so the loopback-only pages keep refusing remote clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mixerd.server.settings import Settings, parse_address

__all__ = [
    "EXIT_START_FAILED",
    "MAX_GAUGES",
    "PEER_HEADER",
    "WORKER_HEADER",
    "WORKER_SETTINGS_ENV",
    "Supervisor",
    "WorkerRole",
    "merge_expositions",
    "peer_middleware",
]

_log = logging.getLogger("mixerd.workers")

PEER_HEADER: Final = "X-Mixerd-Peer"
"""The client's address, set by the supervisor on every request it passes to a worker."""
WORKER_HEADER: Final = "X-Mixerd-Worker"
"""On answers the supervisor passes on: which worker answered (``<index> pid <pid>``)."""
WORKER_SETTINGS_ENV: Final = "MIXERD_INTERNAL_WORKER_SETTINGS"
"""How the supervisor hands its settings to a worker (JSON, :meth:`Settings.to_json`)."""

MAX_GAUGES: Final = frozenset({"mixerd_config_errors", "mixerd_config_generation"})
"""Gauges that describe the config every worker loads: merged by taking the largest value. Every
other gauge (queue lengths, open connections ...) is a load and is summed."""

EXIT_START_FAILED: Final = 3
"""A worker's exit status when it could not start serving (a port taken, a TLS file, protobuf):
on a first start the supervisor stops and exits 1 instead of restarting it forever."""

_BACKOFF_START: Final = 0.5
_BACKOFF_MAX: Final = 30.0
_KILL_AFTER: Final = 15.0
"""Seconds past --drain-timeout after which a worker that has not exited is killed."""


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What makes a ``mixerd serve`` process a worker: its index and the supervisor's directory."""

    index: int
    count: int
    directory: str

    @property
    def monitoring_socket(self) -> str:
        return os.path.join(self.directory, f"worker-{self.index}.sock")

    @property
    def quota_socket(self) -> str:
        return os.path.join(self.directory, "quota.sock")

    def flag(self) -> str:
        return f"{self.index}/{self.count}:{self.directory}"

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        try:
            numbers, directory = text.split(":", 1)
            index, count = (int(n) for n in numbers.split("/"))
        except ValueError:
            raise ValueError(f"--internal-worker: expected INDEX/COUNT:DIRECTORY, got {text!r}") from None
        return cls(index, count, directory)


@web.middleware
async def peer_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """In a worker: the request's remote address is the client's, as the supervisor saw it."""
    peer = request.headers.get(PEER_HEADER)
    if peer is not None:
        request = request.clone(remote=peer)
    return await handler(request)


# -- /metrics: merging the workers' expositions (pure) ------------------------------------------


def merge_expositions(bodies: Iterable[str]) -> bytes:
    """One exposition from several (Prometheus text format): the samples of counters, histograms
    and summaries are summed by name and labels (``_created`` takes the earliest); gauges are
    summed, except :data:`MAX_GAUGES` (the largest value). Help and type come from the first body
    that has the family."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for body in bodies:
        for family in text_string_to_metric_families(body):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            by_key = values[family.name]
            largest = family.type in ("info", "stateset") or (
                family.type == "gauge" and family.name in MAX_GAUGES
            )
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = by_key.get(key)
                if old is None or math.isnan(old):
                    by_key[key] = sample.value
                elif sample.name.endswith("_created"):
                    by_key[key] = min(old, sample.value)
                elif largest:
                    by_key[key] = max(old, sample.value)
                else:
                    by_key[key] = old + sample.value
    registry = CollectorRegistry(auto_describe=False)

    class _Merged:
        def collect(self) -> Iterable[Metric]:
            for name in sorted(families):
                family = families[name]
                family.samples = [Sample(s, dict(labels), v) for (s, labels), v in values[name].items()]
                yield family

    registry.register(_Merged())
    return generate_latest(registry)


# -- the supervisor ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Worker:
    role: WorkerRole
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    last_exit: str = ""
    session: aiohttp.ClientSession | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        p = self.process
        return p.pid if p is not None and p.returncode is None else None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Runs ``count`` workers with ``settings`` until SIGTERM/SIGINT (see the module doc)."""

    def __init__(
        self, settings: Settings, count: int, *, banner: Callable[[Supervisor], str] | None = None
    ) -> None:
        self.settings = settings
        self.count = count
        self.directory = ""
        self.workers: list[_Worker] = []
        self.monitoring_port = 0
        self.prometheus_port = 0
        self.console_port = 0
        self.grpc_port = parse_address(settings.grpc_address)[1]
        self.http_authz_port = (
            parse_address(settings.http_authz_address)[1] if settings.http_authz_address else 0
        )
        self._banner = banner
        self._stopping = asyncio.Event()
        self._failed = False
        self._runners: list[web.BaseRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._quota_server: asyncio.AbstractServer | None = None
        self._quota_owner: Any = None
        self._tls: dict[str, Any] = {}
        self._registry = CollectorRegistry(auto_describe=True)
        self._running = Gauge(
            "mixerd_workers", "Worker processes running (mixerd serve --workers).", registry=self._registry
        )
        self._restarts = Counter(
            "mixerd_worker_restarts", "Worker processes restarted after they exited.", registry=self._registry
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def check(self) -> None:
        """``ValueError`` for settings several workers cannot serve."""
        s = self.settings
        for flag, address in (
            ("--grpc-address", s.grpc_address),
            ("--http-authz-address", s.http_authz_address),
        ):
            if address and parse_address(address)[1] == 0:
                raise ValueError(
                    f"{flag} {address}: with --workers the workers share the port, so it must be a fixed "
                    "port, not 0"
                )

    async def run(self) -> int:
        self.check()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_hup)
        self.directory = tempfile.mkdtemp(prefix="mixerd-workers-")
        os.chmod(self.directory, 0o700)
        try:
            return await self._run()
        finally:
            for runner in self._runners:
                await runner.cleanup()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._quota_server is not None:
                self._quota_server.close()
                self._quota_owner.stop_sweeping()
            for worker in self.workers:
                if worker.session is not None:
                    await worker.session.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _run(self) -> int:
        from mixerd.server.tls import open_sources

        self._tls = open_sources(self.settings)
        for source in {id(s): s for s in self._tls.values()}.values():
            self._tasks.append(asyncio.get_running_loop().create_task(source.watch()))
        await self._own_quotas()
        self.workers = [_Worker(WorkerRole(i, self.count, self.directory)) for i in range(self.count)]
        for worker in self.workers:
            worker.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=worker.role.monitoring_socket),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
            )
            worker.task = asyncio.get_running_loop().create_task(self._keep(worker))
        await self._start_http()
        if self._banner is not None:
            print(self._banner(self), flush=True)
        await self._stopping.wait()
        _log.info("stopping: draining %d workers", self.count)
        await self._stop_workers()
        return 1 if self._failed else 0

    async def _own_quotas(self) -> None:
        try:
            from mixerd.adapters.memquota.shared import QuotaOwner
        except ImportError:  # the memquota adapter is optional
            return
        self._quota_owner = QuotaOwner()
        self._quota_server = await self._quota_owner.serve(os.path.join(self.directory, "quota.sock"))

    def _forward_hup(self) -> None:
        for worker in self.workers:
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)

    async def _spawn(self, worker: _Worker) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env[WORKER_SETTINGS_ENV] = self.settings.to_json()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.role.monitoring_socket)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mixerd.cli.main",
            "serve",
            "--internal-worker",
            worker.role.flag(),
            env=env,
            start_new_session=True,  # signals from the terminal reach the supervisor, which relays them
        )

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker, restarting it with backoff whenever it exits, until stopping."""
        backoff = _BACKOFF_START
        while not self._stopping.is_set():
            worker.started = time.monotonic()
            try:
                worker.process = await self._spawn(worker)
            except OSError as exc:
                _log.error("worker %d: cannot start: %s", worker.role.index, exc)
            else:
                self._running.inc()
                code = await worker.process.wait()
                self._running.dec()
                if self._stopping.is_set():
                    return
                worker.last_exit = _exit_text(code)
                if code == EXIT_START_FAILED and worker.restarts == 0:
                    _log.error(
                        "worker %d could not start (its message is above); stopping", worker.role.index
                    )
                    self._failed = True
                    self._stopping.set()
                    return
                if time.monotonic() - worker.started > _BACKOFF_MAX:
                    backoff = _BACKOFF_START
                _log.warning(
                    "worker %d (pid %d) %s; restarting it in %.1fs",
                    worker.role.index,
                    worker.process.pid,
                    worker.last_exit,
                    backoff,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            worker.restarts += 1
            self._restarts.inc()
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = self.settings.drain_timeout + _KILL_AFTER
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            try:
                await asyncio.wait_for(process.wait(), deadline)
            except TimeoutError:
                _log.error(
                    "worker %d (pid %d) did not stop in %.0fs: killed",
                    worker.role.index,
                    process.pid,
                    deadline,
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            code = await process.wait()
            if code not in (0, -signal.SIGTERM):  # SIGTERM: stopped while it was still starting
                _log.warning("worker %d (pid %d) %s", worker.role.index, process.pid, _exit_text(code))
        for worker in self.workers:
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.task

    # -- asking the workers ------------------------------------------------------------------------

    async def _get(self, worker: _Worker, path: str, timeout: float = 5.0) -> tuple[int, str]:
        assert worker.session is not None
        async with worker.session.get(
            f"http://worker{path}", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return response.status, await response.text()

    async def _ready(self, worker: _Worker) -> tuple[bool, str]:
        if worker.pid is None:
            return False, f"not running ({worker.last_exit or 'starting'})"
        try:
            status, text = await self._get(worker, "/readyz", 2.0)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False, "starting"
        return status == 200, text.strip()

    async def _gather_metrics(self, path: str) -> list[str]:
        async def one(worker: _Worker) -> str:
            if worker.pid is None:
                return ""
            try:
                status, text = await self._get(worker, path)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                _log.warning("worker %d: %s unavailable: %s", worker.role.index, path, exc)
                return ""
            return text if status == 200 else ""

        return list(await asyncio.gather(*(one(w) for w in self.workers)))

    # -- HTTP --------------------------------------------------------------------------------------

    async def _listen(self, app: web.Application, address: str, listener: str) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = parse_address(address)
        source = self._tls.get(listener)
        context = source.server_context() if source is not None else None
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context)
        await site.start()
        self._runners.append(runner)
        sockets = getattr(site._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def _start_http(self) -> None:
        s = self.settings
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/adapters/metrics", self._adapter_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/debug/workers", self._workers_page)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self.monitoring_port = await self._listen(app, s.monitoring_address, "monitoring")
        if s.console_enabled and s.console_address:
            console = web.Application()
            console.router.add_route("*", "/{tail:.*}", self._proxy)
            self.console_port = await self._listen(console, s.console_address, "monitoring")
        if s.prometheus_address:
            prom = web.Application()
            prom.router.add_get("/metrics", self._adapter_metrics)
            self.prometheus_port = await self._listen(prom, s.prometheus_address, "prometheus")

    async def _metrics(self, request: web.Request) -> web.Response:
        query = "?adapters=0" if request.query.get("adapters", "1") == "0" else ""
        bodies = await self._gather_metrics("/metrics" + query)
        bodies.append(generate_latest(self._registry).decode())
        return web.Response(body=merge_expositions(bodies), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _adapter_metrics(self, request: web.Request) -> web.Response:
        bodies = await self._gather_metrics("/adapters/metrics")
        return web.Response(body=merge_expositions(bodies), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._stopping.is_set():
            return web.Response(status=503, text="not ready: stopping\n")
        answers = await asyncio.gather(*(self._ready(w) for w in self.workers))
        lines = [f"worker {w.role.index}: {text}" for w, (_, text) in zip(self.workers, answers, strict=True)]
        if all(ok for ok, _ in answers):
            return web.Response(text=f"ready: {self.count} workers\n" + "\n".join(lines) + "\n")
        return web.Response(status=503, text="not ready\n" + "\n".join(lines) + "\n")

    async def _workers_page(self, request: web.Request) -> web.Response:
        from mixerd.server.settings import is_loopback

        if not self.settings.debug_remote and not is_loopback(request.remote):
            return web.Response(
                status=403, text="/debug/* is served to loopback clients only (--debug-remote)\n"
            )
        answers = await asyncio.gather(*(self._ready(w) for w in self.workers))
        bodies = await self._gather_metrics("/metrics?adapters=0")
        rows = []
        for worker, (ready, text), body in zip(self.workers, answers, bodies, strict=True):
            rows.append(
                {
                    "index": worker.role.index,
                    "pid": worker.pid,
                    "ready": ready,
                    "state": text,
                    "restarts": worker.restarts,
                    "last_exit": worker.last_exit or None,
                    "requests": _requests_total(body),
                }
            )
        return web.json_response({"workers": rows})

    def _answering(self, request: web.Request) -> _Worker | web.Response:
        """The worker asked for by an ``X-Mixerd-Worker: <index>`` request header, else the first
        one running."""
        asked = request.headers.get(WORKER_HEADER)
        if asked is not None:
            if not asked.strip().isdigit() or int(asked) >= self.count:
                return web.Response(
                    status=400, text=f"{WORKER_HEADER}: expected a worker index from 0 to {self.count - 1}\n"
                )
            worker = self.workers[int(asked)]
            if worker.pid is None:
                return web.Response(status=503, text=f"worker {asked} is not running\n")
            return worker
        for worker in self.workers:
            if worker.pid is not None:
                return worker
        return web.Response(status=503, text="no worker is running\n")

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        worker = self._answering(request)
        if isinstance(worker, web.Response):
            return worker
        assert worker.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers[PEER_HEADER] = request.remote or ""
        try:
            async with worker.session.request(
                request.method,
                f"http://worker{request.rel_url}",
                headers=headers,
                data=await request.read() if request.can_read_body else None,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP_HEADERS:
                        response.headers.add(name, value)
                response.headers[WORKER_HEADER] = f"{worker.role.index} pid {worker.pid}"
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"worker {worker.role.index} did not answer: {exc}\n")


_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "host",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        PEER_HEADER.lower(),
        WORKER_HEADER.lower(),
    }
)


def _requests_total(body: str) -> float:
    total = 0.0
    if not body:
        return total
    for family in text_string_to_metric_families(body):
        if family.name == "mixerd_requests":
            total += sum(s.value for s in family.samples if s.name == "mixerd_requests_total")
    return total
