"""The console UI's server side without a browser: the shells, their headers, static files, the
loopback guard, missing browser libraries, a server whose console is off. The pages in a real
browser are tests/integration/test_console_ui.py."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from mixerd.server.console_ui import UI_ROOT, ConsoleUI, console_off_routes, read_vendor_lock
from mixerd.server.settings import Settings

PAGES = [
    "/ui/",
    "/ui/transactions",
    "/ui/transactions/txn-1",
    "/ui/graph",
    "/ui/decisions",
    "/ui/services/shop/cart",
]


def _root(tmp_path: Path, *, vendor: bool) -> Path:
    """A copy of the UI files, with stand-ins for the browser libraries or without them."""
    root = tmp_path / "ui"
    shutil.copytree(UI_ROOT, root, ignore=shutil.ignore_patterns("vendor"))
    if vendor:
        for f in read_vendor_lock(root / "vendor.lock.json").values():
            path = root / "static" / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"/* {f.package} */\n")
    return root


async def _client(ui: ConsoleUI) -> TestClient:  # type: ignore[type-arg]
    app = web.Application()
    ui.add_routes(app)
    client: TestClient = TestClient(TestServer(app))  # type: ignore[type-arg]
    await client.start_server()
    return client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    c = await _client(ConsoleUI(Settings(), root=_root(tmp_path, vendor=True)))
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.parametrize("path", PAGES)
async def test_each_page_is_a_self_contained_shell(client: TestClient, path: str) -> None:  # type: ignore[type-arg]
    resp = await client.get(path)
    body = await resp.text()
    assert resp.status == 200, body
    assert resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-store"
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert '<main id="main"' in body and 'href="#main"' in body
    # everything the page loads comes from mixerd, versioned by content
    sources = re.findall(r'(?:src|href)="([^"#]+)"', body)
    sources += re.search(r'data-libraries="([^"]*)"', body).group(1).split()  # type: ignore[union-attr]
    assert sources and all(s.startswith("/ui/") for s in sources), sources
    assert all("?v=" in s for s in sources if s.startswith("/ui/static/")), sources


async def test_page_data_cannot_break_out_of_its_script(client: TestClient) -> None:  # type: ignore[type-arg]
    evil = "</script><script>alert(1)</script>"
    resp = await client.get("/ui/transactions/" + evil.replace("/", "%2F"))
    body = await resp.text()
    assert resp.status == 200
    assert "<script>alert(1)" not in body
    data = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', body, re.S)
    assert data is not None and json.loads(data.group(1)) == {"id": evil}


async def test_static_files(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/ui/static/app.js?v=abc")
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    resp = await client.get("/ui/static/app.css")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"
    for path in (
        "/ui/static/..%2F..%2Fconsole_ui.py",
        "/ui/static/%2e%2e/vendor.lock.json",
        "/ui/static/nope.js",
    ):
        assert (await client.get(path)).status == 404, path


def test_asset_urls_change_with_the_file(tmp_path: Path) -> None:
    ui = ConsoleUI(Settings(), root=_root(tmp_path, vendor=False))
    before = ui.asset_url("app.js")
    assert re.fullmatch(r"/ui/static/app\.js\?v=[0-9a-f]{12}", before)
    path = tmp_path / "ui" / "static" / "app.js"
    path.write_text(path.read_text() + "\n// changed\n")
    assert ui.asset_url("app.js") != before


async def test_pages_needing_missing_libraries_say_how_to_fetch_them(tmp_path: Path) -> None:
    client = await _client(ConsoleUI(Settings(), root=_root(tmp_path, vendor=False)))
    try:
        for path in ("/ui/graph", "/ui/services/shop/cart"):
            resp = await client.get(path)
            body = await resp.text()
            assert resp.status == 503
            assert "<code>make install</code>" in body and "scripts/fetch_ui_vendor.py" in body
        graph = await (await client.get("/ui/graph")).text()
        assert "cytoscape 3.34.4" in graph and "uplot" not in graph
        for path in ("/ui/", "/ui/transactions", "/ui/decisions", "/ui/transactions/x"):
            assert (await client.get(path)).status == 200, path
        resp = await client.get("/ui/static/vendor/cytoscape-3.34.4/cytoscape.min.js")
        assert resp.status == 404 and "make install" in await resp.text()
    finally:
        await client.close()


@pytest.mark.parametrize(("remote", "allowed", "status"), [("10.1.2.3", False, 403), ("10.1.2.3", True, 200)])
async def test_pages_are_for_loopback_clients_unless_console_remote(
    tmp_path: Path, remote: str, allowed: bool, status: int
) -> None:
    ui = ConsoleUI(Settings(console_remote=allowed), root=_root(tmp_path, vendor=True))
    app = web.Application()
    ui.add_routes(app)
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (remote, 40000) if name == "peername" else default
    )
    request = make_mocked_request("GET", "/ui/decisions", app=app, transport=transport)
    match = await app.router.resolve(request)
    request._match_info = match
    resp = await match.handler(request)
    assert isinstance(resp, web.Response) and resp.status == status
    if status == 403:
        assert "--console-remote" in (resp.text or "")


async def test_a_server_without_console_says_so() -> None:
    app = web.Application()
    console_off_routes(app)
    client: TestClient = TestClient(TestServer(app))  # type: ignore[type-arg]
    await client.start_server()
    try:
        resp = await client.get("/ui/graph")
        assert resp.status == 404 and "--console-store off" in await resp.text()
        resp = await client.get("/api/v1/transactions")
        assert resp.status == 404 and "--console-store off" in (await resp.json())["error"]
    finally:
        await client.close()


def test_the_lock_pins_versions_and_checksums() -> None:
    lock = json.loads((UI_ROOT / "vendor.lock.json").read_text())
    assert set(lock["packages"]) == {"cytoscape", "cytoscape-dagre", "uplot"}
    for name, pkg in lock["packages"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg["version"]), name
        assert pkg["tarball"] == f"{lock['registry']}/{name}/-/{name}-{pkg['version']}.tgz"
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", pkg["integrity"]), name
        assert "LICENSE" in pkg["files"]
        for spec in pkg["files"].values():
            assert spec["from"].startswith("package/") and re.fullmatch(r"[0-9a-f]{64}", spec["sha256"])
