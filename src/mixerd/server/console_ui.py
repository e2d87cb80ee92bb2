"""The console's web UI, under ``/ui/`` on the same listener as the console API.

Pages are server-rendered Jinja2 shells (``ui/templates/``) that render in a few milliseconds
without touching the store; their scripts (``ui/static/``) then read the JSON API
(``/api/v1/...``, :mod:`mixerd.server.console`) from the browser, so the UI has no data path of its
own. Pages:

- ``/ui/``: overview (busiest edges, most-denied rules, slowest services, recent failures);
- ``/ui/transactions``: search; ``/ui/transactions/{id}``: the waterfall of one transaction;
- ``/ui/graph``: the service graph (Cytoscape.js with the dagre layout) and its edge table;
- ``/ui/decisions``: the live decision feed (Server-Sent Events);
- ``/ui/services/{namespace}/{service}``: RED charts per version (uPlot) and the traffic split.

The browser libraries are not in git: ``scripts/fetch_ui_vendor.py`` (``make install``) fetches
the versions pinned in ``ui/vendor.lock.json`` into ``ui/static/vendor/``. A page whose libraries
are missing answers 503 with a page saying how to fetch them; the other pages and the API work.
Nothing is loaded from another origin (the Content-Security-Policy says so to the browser).

The pages are served to loopback clients only unless ``--console-remote`` is given, like the API.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web

from mixerd import __version__
from mixerd.server.settings import Settings, is_loopback

__all__ = ["UI_ROOT", "ConsoleUI", "VendorFile", "console_off_routes", "read_vendor_lock"]

UI_ROOT: Final = Path(__file__).resolve().parent / "ui"
FETCH_COMMAND: Final = "make install"
FETCH_SCRIPT: Final = "python scripts/fetch_ui_vendor.py"

_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_IMMUTABLE: Final = "public, max-age=31536000, immutable"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class VendorFile:
    package: str
    version: str
    name: str

    @property
    def path(self) -> str:
        """Relative to ``ui/static/``."""
        return f"vendor/{self.package}-{self.version}/{self.name}"


def read_vendor_lock(path: Path) -> dict[str, VendorFile]:
    """The files of ``vendor.lock.json`` by their file name (``cytoscape.min.js``); licences left out."""
    lock = json.loads(path.read_text("utf-8"))
    files: dict[str, VendorFile] = {}
    for package, spec in lock["packages"].items():
        for name in spec["files"]:
            if name != "LICENSE":
                files[name] = VendorFile(package, spec["version"], name)
    return files


_PAGE_LIBRARIES: Final[Mapping[str, tuple[str, ...]]] = {
    "graph": ("cytoscape.min.js", "cytoscape-dagre.min.js"),
    "service": ("uPlot.min.css", "uPlot.iife.min.js"),
}


class ConsoleUI:
    """The ``/ui/`` routes of one server (see the module docstring)."""

    def __init__(self, settings: Settings, *, root: Path = UI_ROOT) -> None:
        self.settings = settings
        self.root = root
        self.static = (root / "static").resolve()
        self.vendor = read_vendor_lock(root / "vendor.lock.json")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["asset"] = self.asset_url
        self.env.globals["version"] = __version__
        self._versions: dict[str, tuple[float, str]] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ui", self._guard(self._redirect))
        r.add_get("/ui/", self._guard(self._overview))
        r.add_get("/ui/transactions", self._guard(self._transactions))
        r.add_get("/ui/transactions/{id}", self._guard(self._transaction))
        r.add_get("/ui/graph", self._guard(self._graph))
        r.add_get("/ui/decisions", self._guard(self._decisions))
        r.add_get("/ui/services/{namespace}/{service}", self._guard(self._service))
        r.add_get("/ui/static/{path:.+}", self._guard(self._static))

    # -- assets ------------------------------------------------------------------------------

    def asset_url(self, path: str) -> str:
        """The URL of a file under ``ui/static/`` with its content's hash as ``?v=``, so browsers
        can keep it for good and still see every change."""
        file = self.static / path
        try:
            mtime = file.stat().st_mtime
        except OSError:
            return f"/ui/static/{path}"
        cached = self._versions.get(path)
        if cached is None or cached[0] != mtime:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
            cached = self._versions[path] = (mtime, digest)
        return f"/ui/static/{path}?v={cached[1]}"

    def missing_vendor(self, names: tuple[str, ...]) -> list[VendorFile]:
        return [self.vendor[n] for n in names if not (self.static / self.vendor[n].path).is_file()]

    # -- pages -------------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.settings.console_remote and not is_loopback(request.remote):
                return self._render(
                    "error.html",
                    status=403,
                    title="Not available",
                    heading="The console is served to this machine only",
                    message="It shows who called what, so mixerd serves it to loopback clients only.",
                    hint="Start mixerd with --console-remote (MIXERD_CONSOLE_REMOTE=true) to serve it to others.",
                )
            return await handler(request)

        return guarded

    def _render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        body = self.env.get_template(template).render(**context)
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    def _page(self, template: str, page: str, title: str, data: dict[str, Any] | None = None) -> web.Response:
        libraries = _PAGE_LIBRARIES.get(page, ())
        missing = self.missing_vendor(libraries)
        if missing:
            return self._render(
                "error.html",
                status=503,
                title="Browser libraries missing",
                heading="This page needs browser libraries that are not installed",
                message="Missing: "
                + ", ".join(f"{f.package} {f.version} ({f.path})" for f in missing)
                + ". They are fetched from the npm registry at install time and checked against "
                "vendor.lock.json; they were not fetched for this installation.",
                command=FETCH_COMMAND,
                after=f" in the mixerd checkout (it runs {FETCH_SCRIPT}), then reload this page.",
                hint="The other console pages and the JSON API under /api/v1/ work without them.",
                nav=page,
            )
        vendor = [self.vendor[n] for n in libraries]
        return self._render(
            template,
            page=page,
            nav=page,
            title=title,
            scripts=[self.asset_url(f.path) for f in vendor if f.name.endswith(".js")],
            styles=[self.asset_url(f.path) for f in vendor if f.name.endswith(".css")],
            data=data or {},
        )

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/ui/")

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        return self._page("overview.html", "overview", "Overview")

    async def _transactions(self, request: web.Request) -> web.StreamResponse:
        return self._page("transactions.html", "transactions", "Transactions")

    async def _transaction(self, request: web.Request) -> web.StreamResponse:
        tid = request.match_info["id"]
        return self._page("transaction.html", "transaction", f"Transaction {tid[:40]}", {"id": tid})

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        return self._page("graph.html", "graph", "Service graph")

    async def _decisions(self, request: web.Request) -> web.StreamResponse:
        return self._page("decisions.html", "decisions", "Decisions")

    async def _service(self, request: web.Request) -> web.StreamResponse:
        ns, svc = request.match_info["namespace"], request.match_info["service"]
        return self._page("service.html", "service", f"{svc} · {ns}", {"namespace": ns, "service": svc})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        path = (self.static / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.static) or not path.is_file():
            if "/vendor/" in f"/{request.match_info['path']}":
                raise web.HTTPNotFound(text=f"not installed: run {FETCH_COMMAND} ({FETCH_SCRIPT})\n")
            raise web.HTTPNotFound()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.name == "LICENSE":
            content_type = "text/plain"
        cache = _IMMUTABLE if "v" in request.query else "no-cache"
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type,
                "Cache-Control": cache,
                "X-Content-Type-Options": "nosniff",
            },
        )


def console_off_routes(app: web.Application) -> None:
    """``/ui/`` and ``/api/v1/`` on a server whose console is off: a page saying so."""

    async def off(request: web.Request) -> web.StreamResponse:
        text = (
            "The mixerd console is off (--console-store off): no transactions, graph or decisions are "
            "recorded. Start mixerd without --console-store off (the default keeps them in SQLite).\n"
        )
        if request.path.startswith("/api/"):
            return web.json_response({"error": text.strip()}, status=404)
        return web.Response(text=text, status=404)

    app.router.add_get("/ui", off)
    app.router.add_get("/ui/{tail:.*}", off)
    app.router.add_get("/api/v1/{tail:.*}", off)
