"""The console UI in a real browser: Debian's chromium driven by Playwright (no browser download).

One in-process server (gRPC + HTTP on loopback, SQLite in a temporary directory) runs the embedded
default config and holds the shop of :mod:`tests.support.console_seed`: a checkout transaction of
three calls (istio-ingressgateway -> frontend -> cart-v1, frontend -> payments) whose last call
was denied by policy, and background traffic through cart v1 and its canary v2. The pages must
show that: the waterfall, the graph and its edge table, the live feed, the canary comparison.

Each test waits for conditions (Playwright's auto-waiting), never for fixed times; a page that
logs a console error or throws fails its test. Screenshots go to ``test-artifacts/console-ui/``
(listed in the terminal summary). Chromium missing fails the tests with how to install it.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from mixerd.config import MemoryStore, parse_text
from mixerd.server.app import Server, default_config_text
from mixerd.server.console_ui import UI_ROOT, ConsoleUI
from mixerd.server.settings import Settings
from tests.support import console_seed as shop
from tests.support.artifacts import artifact

pytestmark = pytest.mark.asyncio(loop_scope="module")

TZ = "Asia/Kolkata"  # UTC+05:30 all year: local times differ visibly from UTC
SIZE = {"width": 1280, "height": 800}
UHD = {"width": 3840, "height": 2160}
EXPECTED_NODES = {
    "wl_istio-system_istio-ingressgateway",
    "wl_shop_frontend",
    "wl_shop_cart-v1",
    "wl_shop_cart-v2",
    "wl_shop_payments",
}
EXPECTED_EDGES = {
    ("wl_istio-system_istio-ingressgateway", "wl_shop_frontend"),
    ("wl_shop_frontend", "wl_shop_cart-v1"),
    ("wl_shop_frontend", "wl_shop_cart-v2"),
    ("wl_shop_frontend", "wl_shop_payments"),
}


def _chromium() -> str:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail(
        "Debian's chromium is not installed: the console UI tests drive it through Playwright. "
        "Run `make system-deps` (as root), or `apt-get install chromium`."
    )


def _settings(tmp: Path) -> Settings:
    return Settings(
        grpc_address="127.0.0.1:0",
        monitoring_address="127.0.0.1:0",
        prometheus_address="",
        http_authz_address="",
        console_store=f"sqlite:///{tmp}/console.db".replace("////", "///"),
    )


async def _until(
    session: aiohttp.ClientSession, url: str, ready: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    """Poll ``url`` until ``ready(body)``: the writer flushes to the store every 0.5 s."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url) as resp:
            body = await resp.json()
        if resp.status == 200 and ready(body):
            return body
        assert time.monotonic() < deadline, f"{url} never became ready: {body}"
        await asyncio.sleep(0.05)


@dataclass
class Shop:
    server: Server
    base: str
    decision_time: _dt.datetime


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    srv = Server(
        _settings(tmp_path_factory.mktemp("ui")),
        store=MemoryStore(parse_text(default_config_text()).resources),
    )
    await srv.start()
    base = f"http://127.0.0.1:{srv.listeners.monitoring_port}"
    try:
        denied = await shop.check_blocked(srv)
        assert denied.precondition.status.code == 7
        async with aiohttp.ClientSession() as session:
            body = await _until(session, f"{base}/api/v1/decisions?verdict=deny", lambda b: b["decisions"])
            when = _dt.datetime.fromisoformat(body["decisions"][0]["time"].replace("Z", "+00:00"))
            await shop.seed_shop(srv, when)
            await _until(
                session,
                f"{base}/api/v1/transactions/{shop.TXN}",
                lambda b: [len(b[k]) for k in ("hops", "decisions", "spans", "logs")] == [3, 1, 2, 2],
            )
            await _until(
                session,
                f"{base}/api/v1/graph?namespaces=shop&duration=1h",
                lambda b: len(b["elements"]["edges"]) == 4,
            )
            await _until(
                session,
                f"{base}/api/v1/services/shop/cart/metrics",
                lambda b: sorted(b["versions"]) == ["v1", "v2"],
            )
        yield Shop(srv, base, when)
    finally:
        await srv.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Tab:
    page: Page
    base: str
    problems: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    """Console messages a test provokes on purpose (substrings)."""

    async def open(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def shot(self, name: str, *, full: bool = True) -> Path:
        path = artifact("console-ui", f"{name}.png")
        await self.page.evaluate("window.scrollTo(0, 0)")
        await self.page.screenshot(path=str(path), full_page=full)
        return path


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, seeded: Shop) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=SIZE, timezone_id=TZ, locale="en-GB")
    page = await context.new_page()
    t = Tab(page, seeded.base)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and not any(e in message.text for e in t.expected):
            t.problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: t.problems.append(f"uncaught: {exc}"))
    try:
        yield t
    finally:
        await context.close()
    assert not t.problems, t.problems


def _local(utc: _dt.datetime) -> str:
    return utc.astimezone(_dt.timezone(_dt.timedelta(hours=5, minutes=30))).strftime("%H:%M:%S")


async def test_the_waterfall_shows_three_calls_in_order_and_the_denial_with_its_rule(
    tab: Tab, seeded: Shop
) -> None:
    page = tab.page
    await tab.open(f"/ui/transactions/{shop.TXN}")
    waterfall = page.locator("#waterfall[data-state=ready]")
    await expect(waterfall).to_be_visible()

    hops = page.locator(".wf-row.hop")
    await expect(hops).to_have_count(3)
    firsts = [re.sub(r"\s+", " ", t) for t in await hops.locator(".l1").all_inner_texts()]
    assert [re.sub(r" (denied|error)$", "", f) for f in firsts] == [
        "istio-ingressgateway → frontend v1",
        "frontend v1 → cart-v1",
        "frontend v1 → payments v1",
    ], firsts
    # nested: the two calls frontend made are children of the first
    depths = await hops.evaluate_all("rows => rows.map(r => r.style.getPropertyValue('--depth'))")
    assert depths == ["0", "1", "1"]
    assert firsts[2].endswith(" denied")
    classes = await hops.evaluate_all("rows => rows.map(r => r.className)")
    assert ["denied" in c for c in classes] == [False, False, True]
    await expect(hops.nth(2).locator(".badge.denied")).to_have_text("denied")

    # the decision sits right under its call, naming the rule and the handler; the apps' spans
    # and log lines (over OTLP) under the calls into them, at their times
    rows = await page.locator(".wf-row").evaluate_all(
        "rows => rows.map(r => r.dataset.kind + ' ' + r.querySelector('.wf-label').innerText.split('\\n')[0])"
    )
    assert [r.split()[0] for r in rows] == ["hop", "span", "span", "hop", "log", "hop", "decision", "log"], (
        rows
    )
    assert "cart" in rows[4] and "frontend" in rows[7], rows
    await expect(page.locator(".wf-row.log").first).to_contain_text("cart loaded: 2 items")
    await expect(page.locator(".wf-row.span").first).to_contain_text("POST /checkout")
    decision = page.locator(".wf-row.decision")
    await expect(decision).to_have_attribute("data-rule", shop.DENY_RULE)
    await expect(decision).to_contain_text(shop.DENY_RULE)
    await expect(decision).to_contain_text("blocked-users.handler.istio-system")
    await expect(decision).to_contain_text("PERMISSION_DENIED")

    # client- and server-side timing: both reporters' bars, the gap in the tooltip
    first_bar = hops.nth(0).locator(".wf-bar")
    await expect(first_bar.locator(".inner")).to_have_count(1)
    assert "network and proxy: 2.00 ms" in (await first_bar.get_attribute("title") or "")
    await expect(hops.nth(0).locator(".wf-dur")).to_have_text("120 ms · server 118 ms")

    # times in the viewer's zone, UTC on hover
    started = page.locator("#summary time")
    start_utc = _dt.datetime.fromisoformat(
        (await started.get_attribute("datetime") or "").replace("Z", "+00:00")
    )
    await expect(started).to_have_text(re.compile("^" + re.escape(_local(start_utc))))
    assert (await started.get_attribute("title") or "").endswith(" UTC")
    await expect(page.locator("#tz")).to_have_text(re.compile(r"^Times in Asia/\w+ \(UTC\+05:30\)$"))

    # keyboard: Tab reaches the calls, Enter shows all of a call's fields
    await hops.nth(2).focus()
    await page.keyboard.press("Enter")
    detail = hops.nth(2).locator(".wf-detail")
    await expect(detail.locator("dt")).to_contain_text(
        ["source.workload", "response.code", "response.flags", "denied"]
    )
    await expect(detail.locator("dt:text-is('denied') + dd")).to_have_text("true")
    await expect(detail.locator("dt:text-is('response.code') + dd")).to_have_text("403")
    await expect(detail).to_contain_text("timings.destination.duration_ms")
    await expect(hops.nth(2)).to_have_attribute("aria-expanded", "true")
    await tab.shot("waterfall")
    await page.set_viewport_size(UHD)
    await tab.shot("waterfall-4k")


async def test_the_graph_has_the_shops_nodes_and_edges_and_keeps_positions(tab: Tab, seeded: Shop) -> None:
    page = tab.page
    await tab.open("/ui/graph?namespaces=shop&duration=1h")
    cy = page.locator("#cy[data-state=ready]")
    await expect(cy).to_be_visible()
    model = await page.evaluate(
        """() => ({
          nodes: cy.nodes().map(n => n.id()),
          edges: cy.edges().map(e => [e.data('source'), e.data('target'), e.data('label')]),
        })"""
    )
    assert set(model["nodes"]) == EXPECTED_NODES
    assert {(s, t) for s, t, _ in model["edges"]} == EXPECTED_EDGES
    for _, _, label in model["edges"]:
        assert re.fullmatch(r"\S+/s · p95 \S+ m?s\n\S+ err · \S+/s denied", label), label

    # the table under the graph lists the same edges
    rows = page.locator("#edges tr[data-edge-id]")
    await expect(rows).to_have_count(4)
    table = await rows.evaluate_all("rows => rows.map(r => [r.dataset.source, r.dataset.target])")
    assert {tuple(x) for x in table} == EXPECTED_EDGES
    canary = page.locator("#edges tr[data-target='wl_shop_cart-v2']")
    await expect(canary).to_contain_text("failure")  # 503s on the canary edge: over Kiali's 10%
    # the denied call counts in the deny rate (flagged by the callee's proxy only)
    denied = next(label for _, t, label in model["edges"] if t == "wl_shop_payments")
    assert not denied.endswith(" 0/s denied"), denied
    await tab.shot("graph")

    # a node dragged by the user stays there across a refresh and a reload
    box = await cy.bounding_box()
    assert box is not None
    before = await page.evaluate("() => cy.$id('wl_shop_payments').renderedPosition()")
    x, y = box["x"] + before["x"], box["y"] + before["y"]
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + 30, y - 60, steps=6)
    await page.mouse.up()
    dragged = await page.evaluate("() => cy.$id('wl_shop_payments').position()")
    loads = int(await cy.get_attribute("data-loads") or "0")
    await page.click("#g-reload")
    await expect(page.locator(f"#cy[data-loads='{loads + 1}']")).to_be_attached()
    assert await page.evaluate("() => cy.$id('wl_shop_payments').position()") == dragged
    await page.reload()
    await expect(page.locator("#cy[data-state=ready]")).to_be_visible()
    kept = await page.evaluate("() => cy.$id('wl_shop_payments').position()")
    assert (round(kept["x"]), round(kept["y"])) == (round(dragged["x"]), round(dragged["y"]))

    # clicking a node or an edge in the graph shows it beside the graph
    async def click(element: str, where: str) -> None:
        point = await page.evaluate("([id, where]) => cy.getElementById(id)[where]()", [element, where])
        box = await cy.bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])

    panel = page.locator("#panel")
    await click("wl_shop_cart-v2", "renderedPosition")
    await expect(panel.locator("a[href='/ui/services/shop/cart']")).to_be_visible()
    # An edge is selected through Cytoscape's own tap event: a mouse click at its midpoint can land
    # on its label or a node wherever the layout put them (hit-testing is Cytoscape's business).
    await page.evaluate("(id) => cy.getElementById(id).emit('tap')", "wl_shop_frontend->wl_shop_cart-v2")
    await expect(panel).to_contain_text("503: 6")
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()

    # the table's Details button (for keyboards) lists the edge's recent transactions
    await page.locator("#edges tr[data-target='wl_shop_payments'] button").click()
    await expect(panel.locator(f"a[href='/ui/transactions/{shop.TXN}']")).to_be_visible()
    await expect(panel).to_contain_text("403: 1")
    await tab.shot("graph-edge-selected")


async def test_a_decision_made_after_the_feed_opened_appears_within_2s(tab: Tab, seeded: Shop) -> None:
    page = tab.page
    await tab.open("/ui/decisions?verdict=deny")
    await expect(page.locator("#live[data-state=open]")).to_be_visible()
    await expect(page.locator("#feed[data-state=ready] tbody tr")).to_have_count(1)  # the seeded denial

    started = time.monotonic()
    await shop.check_blocked(seeded.server, txn="txn-ui-live-1")
    row = page.locator("#feed tr[data-transaction='txn-ui-live-1']")
    await expect(row).to_be_visible(timeout=2000)
    assert time.monotonic() - started < 2.0
    await expect(page.locator("#feed tbody tr").first).to_have_attribute("data-transaction", "txn-ui-live-1")
    await expect(row).to_contain_text(shop.DENY_RULE)
    await expect(row.locator("a")).to_have_attribute("href", "/ui/transactions/txn-ui-live-1")

    # paused: new decisions wait aside, and come in on resume
    await page.click("#d-pause")
    await expect(page.locator("#live")).to_have_attribute("data-state", "paused")
    await shop.check_blocked(seeded.server, txn="txn-ui-live-2")
    await expect(page.locator("#status")).to_contain_text("paused: 1 new waiting")
    await expect(page.locator("#feed tr[data-transaction='txn-ui-live-2']")).to_have_count(0)
    await page.click("#d-pause")
    await expect(page.locator("#feed tbody tr").first).to_have_attribute("data-transaction", "txn-ui-live-2")
    await expect(page.locator("#feed tbody tr")).to_have_count(3)
    await tab.shot("decisions")


async def test_the_service_page_compares_the_two_versions(tab: Tab, seeded: Shop) -> None:
    page = tab.page
    await tab.open("/ui/services/shop/cart")
    charts = page.locator("#charts[data-state=ready]")
    await expect(charts).to_be_visible()
    await expect(charts).to_have_attribute("data-versions", "v1,v2")
    await expect(page.locator("#split tr[data-version]")).to_have_count(2)
    await expect(page.locator("#split tr[data-version='v2']")).to_contain_text("%")
    # every chart has one series per version (the rate chart also the sum of both)
    for chart in ("c-rate", "c-err", "c-p50", "c-p95", "c-p99"):
        labels = await page.locator(f"#{chart} .u-legend .u-series th").all_inner_texts()
        names = [label.strip() for label in labels][1:]
        assert names[:2] == ["v1", "v2"], (chart, labels)
    await tab.shot("service-canary")


async def test_the_overview_and_the_search_link_to_the_rest(tab: Tab, seeded: Shop) -> None:
    page = tab.page
    await tab.open("/ui/")
    await expect(page.locator("body[data-state=ready]")).to_be_attached()
    await expect(page.locator("#edges tbody tr")).to_have_count(4)
    await expect(page.locator(f"#rules a[href='/ui/decisions?rule={shop.DENY_RULE}']")).to_be_visible()
    await expect(page.locator("#slow a[href='/ui/services/shop/cart']")).to_be_visible()
    await expect(page.locator(f"#failed a[href='/ui/transactions/{shop.TXN}']")).to_be_visible()
    await tab.shot("overview")
    await page.set_viewport_size(UHD)
    await tab.shot("overview-4k")
    await page.set_viewport_size(SIZE)

    await tab.open("/ui/transactions?status=denied&min_duration_ms=100")
    await expect(page.locator("#results tbody tr")).to_have_count(1)
    await expect(page.locator("#results tbody tr")).to_have_attribute("data-id", shop.TXN)
    await tab.open("/ui/transactions?service=cart&namespace=shop&range=1h")
    await expect(page.locator("#results tbody tr").first).to_have_attribute(
        "data-id", shop.TXN
    )  # newest first
    await tab.shot("transactions")

    tab.expected.append("status of 404 (Not Found)")  # the browser logs the API's 404 for the unknown id
    await page.fill("#f-id", "no-such-transaction")
    await page.press("#f-id", "Enter")
    await expect(page.locator("#results .notice")).to_contain_text("No transaction with the key")
    await page.fill("#f-id", shop.TXN)
    await page.press("#f-id", "Enter")
    await page.wait_for_url(f"**/ui/transactions/{shop.TXN}")
    await expect(page.locator(".wf-row.hop")).to_have_count(3)


_PAINT = """() => new Promise(resolve => {
  const nav = performance.getEntriesByType('navigation')[0];
  const read = () => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return fcp && {fcp: fcp.startTime, html: nav.responseEnd - nav.requestStart};
  };
  if (read()) return resolve(read());
  new PerformanceObserver(() => resolve(read())).observe({type: 'paint', buffered: true});
})"""


async def test_every_page_paints_its_shell_and_is_keyboard_reachable(tab: Tab, seeded: Shop) -> None:
    """The shells never touch the store (ConsoleUI has no store), so their first paint does not
    depend on how much is stored. How fast it is, is measured by benchmarks/bench_console_ui.py
    (with 1,000,000 hops; the README's table), not asserted here: a timed assertion would fail
    whenever the machine is busy. Each page is loaded four times and the paint times go to
    first-paint.txt among the artifacts; every load must paint, and Tab reaches the skip link."""
    page = tab.page
    paths = [
        "/ui/",
        "/ui/transactions",
        f"/ui/transactions/{shop.TXN}",
        "/ui/graph",
        "/ui/decisions",
        "/ui/services/shop/cart",
    ]
    lines = []
    for path in paths:
        figures = []
        for _ in range(4):
            await tab.open(path)
            figures.append(await page.evaluate(_PAINT))
        cold, warm = figures[0], min(figures[1:], key=lambda f: f["fcp"])
        lines.append(
            f"{path}: first contentful paint {cold['fcp']:.0f} ms cold, "
            f"{', '.join(format(f['fcp'], '.0f') for f in figures[1:])} ms warm; "
            f"HTML served in {warm['html']:.1f} ms"
        )
        assert all(f["fcp"] > 0 for f in figures), (path, figures)
        # keyboard: the first Tab reaches the skip link
        await page.keyboard.press("Tab")
        await expect(page.locator("a.skip")).to_be_focused()
    artifact("console-ui", "first-paint.txt").write_text("\n".join(lines) + "\n")


async def test_pages_without_their_browser_libraries_say_how_to_fetch_them(
    browser: Browser, tmp_path: Path
) -> None:
    root = tmp_path / "ui"
    shutil.copytree(UI_ROOT, root, ignore=shutil.ignore_patterns("vendor"))
    settings = _settings(tmp_path)
    srv = Server(settings, store=MemoryStore(parse_text(default_config_text()).resources))
    srv.console_ui = ConsoleUI(settings, root=root)
    await srv.start()
    base = f"http://127.0.0.1:{srv.listeners.monitoring_port}"
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/ui/graph", "/ui/services/shop/cart"):
                async with session.get(base + path) as resp:
                    text = await resp.text()
                assert resp.status == 503, text
                assert "make install" in text and "fetch_ui_vendor.py" in text
            async with session.get(base + "/ui/transactions") as resp:
                assert resp.status == 200  # pages without libraries work
            async with session.get(base + "/api/v1/graph") as resp:
                assert resp.status == 200  # and the API does not care
        context = await browser.new_context(viewport=SIZE)
        page = await context.new_page()
        await page.goto(base + "/ui/graph")
        await expect(page.locator(".page-error")).to_contain_text("cytoscape 3.34.4")
        await page.screenshot(path=str(artifact("console-ui", "vendor-missing.png")))
        await context.close()
    finally:
        await srv.stop()
