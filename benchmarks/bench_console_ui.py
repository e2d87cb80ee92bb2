"""Console UI: how fast each page paints and shows its data with 1,000,000 stored hops.

A SQLite console store is filled with 1,000,000 hops (3-call transactions of 100 services, both
reporters, as bench_console_store.py writes them, over the last minutes) and an hour of 10-s edge
rollups of the 100 services; an in-process server serves it, and Debian's chromium (Playwright)
opens every page: first contentful paint with a cold and a warm browser cache (goal: under
300 ms; the page shells never query the store), and the time until the page shows its data
(the API's answer rendered: for the graph, 100 nodes laid out).

    python benchmarks/bench_console_ui.py [--hops N] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import table
from bench_console_store import PEERS, T0, S, hops, rollups_for_an_hour

from mixerd.config import MemoryStore, parse_text
from mixerd.console.model import Batch, Hop
from mixerd.console.store import open_store
from mixerd.server.app import Server, default_config_text
from mixerd.server.settings import Settings

GOAL_MS = 300

PAINT = """() => new Promise(resolve => {
  const read = () => performance.getEntriesByName('first-contentful-paint')[0];
  if (read()) return resolve(read().startTime);
  new PerformanceObserver(() => resolve(read().startTime)).observe({type: 'paint', buffered: true});
})"""


async def fill(url: str, n: int) -> tuple[str, float]:
    """``n`` hops ending about now, and an hour of rollups up to now; a stored transaction id."""
    store = open_store(url)
    await store.open()
    t = time.perf_counter()
    now = time.time_ns() // 1000
    start = now - 600 * S
    batch: list[Hop] = []
    some = ""
    for group in hops(n, start_us=start):
        batch += group
        some = some or group[0].transaction_id
        if len(batch) >= 10_000:
            await store.write(Batch(hops=batch), [])
            batch = []
    if batch:
        await store.write(Batch(hops=batch), [])
    shift = (now - 3600 * S) // (10 * S) * (10 * S) - T0
    for bucket in rollups_for_an_hour():
        await store.write(Batch(), [dataclasses.replace(r, bucket_us=r.bucket_us + shift) for r in bucket])
    await store.close()
    return some, time.perf_counter() - t


async def measure(base: str, pages: list[tuple[str, str]], shots: Path | None) -> list[list[str]]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: run `make system-deps` (apt-get install chromium)")
    rows = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        for path, ready in pages:
            figures = []
            for _ in range(2):  # a cold, then a warm browser cache
                await page.goto(base + path, wait_until="commit")
                await page.wait_for_selector(ready, state="attached", timeout=60_000)
                failed = await page.query_selector("[data-state=error]")
                if failed is not None:
                    raise SystemExit(f"{path}: the page shows an error: {await failed.inner_text()}")
                shown = await page.evaluate("performance.now()")
                figures.append((await page.evaluate(PAINT), shown))
            (cold, _), (warm, shown) = figures
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                name = path.strip("/").split("?")[0].replace("/", "_") or "overview"
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            verdict = "ok" if warm < GOAL_MS else "SLOW"
            rows.append([path, f"{cold:.0f} ms", f"{warm:.0f} ms ({verdict})", f"{shown:.0f} ms"])
        await browser.close()
    return rows


async def run(n: int, shots: Path | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-ui-"))
    try:
        url = f"sqlite:///{tmp}/console.db".replace("////", "///")
        txn, spent = await fill(url, n)
        print(
            f"filled {n:,} hops and an hour of rollups of {len(PEERS)} services in {spent:.0f} s", flush=True
        )
        settings = Settings(
            grpc_address="127.0.0.1:0",
            monitoring_address="127.0.0.1:0",
            prometheus_address="",
            http_authz_address="",
            console_store=url,
            console_max_rows=0,
        )
        server = Server(settings, store=MemoryStore(parse_text(default_config_text()).resources))
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.listeners.monitoring_port}"
            svc = PEERS[1]
            pages = [
                ("/ui/", "body[data-state=ready]"),
                ("/ui/transactions", "#results[data-state=ready]"),
                (f"/ui/transactions/{txn}", "#waterfall[data-state=ready]"),
                ("/ui/graph?duration=1h", "#cy[data-state=ready]"),
                ("/ui/decisions", "#feed[data-state=ready]"),
                (f"/ui/services/{svc.namespace}/{svc.app}", "#charts[data-state=ready]"),
            ]
            rows = await measure(base, pages, shots)
        finally:
            await server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, ["page", "first paint, cold cache", f"warm (goal < {GOAL_MS} ms)", "data shown"]))
    return 0 if all("SLOW" not in r[2] for r in rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=1_000_000, help="hops in the store")
    parser.add_argument("--screenshots", type=Path, help="save a screenshot of each page in this directory")
    args = parser.parse_args()
    return asyncio.run(run(args.hops, args.screenshots))


if __name__ == "__main__":
    sys.exit(main())
