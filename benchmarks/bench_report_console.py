"""Report throughput of the stock Istio telemetry config with the console on and off, in one run.

Two ``mixerd serve`` processes run side by side on the rendered stock telemetry config
(prometheus + kubernetesenv, a static pods file):

- **off**: the stock config alone, ``--console-store off``;
- **on**: the stock config plus its documented console addition, ``docs/examples/console-istio.yaml``
  (the ``consolehop`` instance of the ``attributes`` template, the ``console`` handler, the
  ``record-hops`` rule for HTTP and gRPC calls; its ``transaction-id`` rule acts on Checks only), writing to SQLite in a
  temporary directory.

Both get the same Report requests: batches of 100 compressed attribute sets shaped like
``bench_report_stock.py``'s, every request with ids of its own: a transaction is three calls,
each reported by both proxies (six sets share a B3 trace id, the correlation key; each call's two
share a request id), and its six hops come in six different requests spread over 21, as reports
from different sidecars arrive; ids are random, times are now, 1,000 sets per second of traffic.
A gRPC client in this process sends them with 8 requests in flight; the rounds alternate off, on,
off, on ... so both servers see the same machine load, and each server's CPU (all its threads,
the console's SQLite writer included) is measured from the first request until its report queue
and its console queue are empty.

Figures: attribute sets per server CPU-second for each, their ratio per round (goal: on >= 0.85x
off), and the console's end-to-end ingestion (hops in the database per wall second, from the
first request until the last hop is written).

    python benchmarks/bench_report_console.py [--requests N] [--rounds N] [--profile] [--split] [--decode]
        [--hops]

``--profile`` then runs the console-on path in this process under cProfile: decode (of what the
config reads, as the server decodes), dispatch and the console adapter on the event loop, then the
writer's batches into SQLite. ``--split`` times the event loop's share in this process, without a
profiler, in four runtimes side by side (rounds alternate between them; sets decoded beforehand, as
the server decodes them for each): the stock config; the console addition with the handler doing nothing
(the rule's match and the instance); the handler making hops but not queueing them; all of it.
The differences are what each step costs per attribute set; then the writer's batches per hop.
``--decode`` times decoding the same requests in this process (``decode_report`` with the wire types
and the ``wanted`` names each runtime's Report front-end passes), rounds alternating: the stock
config, the console addition as it would read if its handler needed ``request.headers`` whole, and
the console addition as configured.
``--hops`` times the console handler alone over the attribute sets it gets: making the hops
(``hop_from_attributes``), then queueing and rolling them up (``Writer.add_hop``), CPU per hop.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
import io
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util
from _util import CONFORMANCE, MIXERD, REPO, cpu_seconds, free_port, start, stop, table
from bench_report_stock import PODS, STOCK, attribute_set, metric

from mixerd.api.mixer_v1.client import build_report_request

CONSOLE_ISTIO = REPO / "docs" / "examples" / "console-istio.yaml"
SETS = 100
SPREAD = 4
IN_FLIGHT = 8
POLL = 0.1
"""Seconds between looks at a server's /metrics while its report queue drains: each look costs it
CPU (~2.5 ms rendering the page)."""
CONSOLE_POLL = 0.5
"""Seconds between looks while the console-on server's writer empties its queue (it writes a batch
every second): looking every ``POLL`` there charged that server ~10 more page renders a round than
the other, ~1 us a set that the console does not cost."""
GOAL = 0.85


def console_addition() -> str:
    """The documented console addition to the stock config."""
    return CONSOLE_ISTIO.read_text()


def config_dir(path: Path, console: bool) -> Path:
    """A new directory holding the stock config, and the console addition if ``console``."""
    path.mkdir()
    for name in STOCK:
        shutil.copyfile(CONFORMANCE / "stock-telemetry-config" / "rendered" / name, path / name)
    if console:
        (path / "console.yaml").write_text(console_addition())
    return path


def _id(*parts: object) -> str:
    """32 random-looking hex digits, the same for the same parts."""
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def report_sets(run: str, r: int, t0: dt.datetime) -> list[dict[str, Any]]:
    """The ``r``-th request's attribute sets: set ``i`` is hop ``k = i % 6`` of the transaction
    (``r - SPREAD * k``, ``i // 6``). So a transaction's six hops (three calls, each reported by
    both proxies) come in six requests spread over ``5 * SPREAD + 1`` consecutive ones, as reports
    from different sidecars do, never two in one request."""
    out = []
    for i in range(SETS):
        k = i % 6
        origin = (run, r - SPREAD * k, i // 6)
        s = attribute_set(i)
        if "request.headers" in s:
            call = _id(*origin, k // 2)
            t = t0 + dt.timedelta(milliseconds=(r - SPREAD * k) * SETS + i)
            s["request.headers"] = {
                **s["request.headers"],
                "x-request-id": f"{call[:8]}-{call[8:12]}-4{call[13:16]}-{call[16:20]}-{call[20:]}",
                "x-b3-traceid": _id(*origin),
                "x-b3-spanid": call[:16],
                "x-b3-sampled": "1",
            }
            s["request.time"] = t
            s["response.time"] = t + dt.timedelta(milliseconds=7)
        out.append(s)
    return out


def bodies(run: str, requests: int) -> list[bytes]:
    """``requests`` Report requests with ids of their own (``run`` tells runs apart)."""
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=requests * SETS / 1000)
    return [build_report_request(report_sets(run, r, t0)).SerializeToString() for r in range(requests)]


async def send(port: int, payloads: list[bytes]) -> int:
    """Send every payload as a Report, ``IN_FLIGHT`` at a time over two connections; the number
    answered OK."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    calls = [c.unary_unary("/istio.mixer.v1.Mixer/Report") for c in channels]
    todo = iter(payloads)
    ok = 0

    async def worker(k: int) -> None:
        nonlocal ok
        for body in todo:
            await calls[k % 2](body, timeout=60)
            ok += 1

    try:
        await asyncio.gather(*(worker(k) for k in range(IN_FLIGHT)))
    finally:
        for c in channels:
            await c.close()
    return ok


def main_thread_cpu(pid: int) -> float:
    """User + system CPU seconds of a process's main thread (the event loop's) so far."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, tmp: Path, config: Path, console_store: str) -> None:
        self.name = name
        self.port, self.mon = free_port(), free_port()
        cmd = [*MIXERD, "serve", "--config", str(config), "--grpc-address", f"127.0.0.1:{self.port}",
               "--monitoring-address", f"127.0.0.1:{self.mon}",
               "--prometheus-address", f"127.0.0.1:{free_port()}", "--http-authz-address", "",
               "--console-store", console_store, "--log-level", "warning"]  # fmt: skip
        env = {"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)}
        self.proc = start(cmd, self.port, log=tmp / f"mixerd-{name}.log", env=env)
        self.url = f"http://127.0.0.1:{self.mon}/metrics?adapters=0"

    def metric(self, name: str) -> float:
        return metric(self.url, name)

    def drain(self, expected_sets: float, console: bool) -> None:
        while self.metric("mixerd_report_attribute_sets_total") < expected_sets:
            time.sleep(POLL)
        while self.metric('mixerd_report_queued{api="mixer"}') > 0:
            time.sleep(POLL)
        while console and self.metric("mixerd_console_queued") > 0:
            time.sleep(CONSOLE_POLL)

    def run(self, payloads: list[bytes], console: bool) -> dict[str, float]:
        before = self.metric("mixerd_report_attribute_sets_total")
        cpu0, main0, t0 = cpu_seconds(self.proc.pid), main_thread_cpu(self.proc.pid), time.monotonic()
        sent = asyncio.run(send(self.port, payloads))
        self.drain(before + sent * SETS, console)
        cpu, wall = cpu_seconds(self.proc.pid) - cpu0, time.monotonic() - t0
        main = main_thread_cpu(self.proc.pid) - main0
        sets = sent * SETS
        return {"sets": sets, "cpu": cpu, "main": main, "wall": wall, "per_cpu": sets / cpu}

    def stop(self) -> None:
        stop(self.proc)


def _split(r: dict[str, float]) -> str:
    """CPU per set: the event loop's thread + the other threads (the console's writer ...)."""
    return f"{r['main'] / r['sets'] * 1e6:.0f} + {(r['cpu'] - r['main']) / r['sets'] * 1e6:.0f}"


def stored_hops(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT coalesce(sum(hops), 0) FROM hop_groups").fetchone()[0])


def served(tmp: Path, requests: int, rounds: int) -> int:
    stock, with_console = config_dir(tmp / "stock", False), config_dir(tmp / "console", True)
    db = tmp / "store" / "console.db"

    t = time.perf_counter()
    warm = bodies("warm-up", 20)
    rounds_payloads = [bodies(f"round {k}", requests) for k in range(rounds)]
    print(
        f"{rounds} x {requests} distinct Report requests of {SETS} sets built in {time.perf_counter() - t:.1f} s"
    )

    off = Server("off", tmp, stock, "off")
    on = Server("on", tmp, with_console, f"sqlite:///{db}")
    rows = []
    ratios = []
    try:
        for server, console in ((off, False), (on, True)):  # warm-up: imports, caches, the schema
            server.run(warm, console)
        time.sleep(0.5)
        hops0 = stored_hops(db)
        for k, payloads in enumerate(rounds_payloads, 1):
            a = off.run(payloads, False)
            hops_before = stored_hops(db)
            b = on.run(payloads, True)
            hops = stored_hops(db) - hops_before
            ratio = b["per_cpu"] / a["per_cpu"]
            ratios.append(ratio)
            rows.append([k, f"{a['per_cpu']:,.0f}", f"{b['per_cpu']:,.0f}", f"{ratio:.2f}",
                         _split(a), _split(b), f"{hops:,}", f"{hops / b['wall']:,.0f}"])  # fmt: skip
        errors = on.metric("mixerd_report_errors_total") + off.metric("mixerd_report_errors_total")
        dropped = on.metric('mixerd_console_dropped_total{kind="hop"}')
        total_hops = stored_hops(db) - hops0
    finally:
        off.stop()
        on.stop()
    print(
        table(
            rows,
            ("round", "off: sets/CPU-s", "on: sets/CPU-s", "on/off", "off: us/set (loop+threads)",
             "on: us/set (loop+threads)", "hops stored", "hops/s (wall)"),
        )
    )  # fmt: skip
    lo, hi, mid = min(ratios), max(ratios), statistics.median(ratios)
    print(f"\nconsole on / off: median {mid:.2f} (range {lo:.2f}-{hi:.2f}); goal >= {GOAL}: "
          f"{'met' if mid >= GOAL else 'NOT met'}")  # fmt: skip
    print(f"hops stored {total_hops:,} of {rounds * requests * SETS:,} sets (TCP ones make none); "
          f"console hops dropped: {dropped:.0f}; report errors: {errors:.0f}")  # fmt: skip
    _util.summary_row(
        "issue 10: Report with the console on / off (CPU per set)", f"{mid:.2f}", f">= {GOAL}", mid >= GOAL
    )
    return 0


async def in_process(tmp: Path, requests: int) -> None:
    """The console-on path under cProfile: dispatch on the event loop, then the writer."""
    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(PODS)
    from mixerd._proto.mixer.v1 import report_pb2
    from mixerd.api.mixer_v1.decode import decode_report
    from mixerd.config import FileStore
    from mixerd.console.store.sqlite import SQLiteStore
    from mixerd.console.writer import Writer
    from mixerd.runtime import Runtime
    from mixerd.server.console import CONSOLE

    config = config_dir(tmp / "profile", True)
    store = SQLiteStore(tmp / "profile.db")
    await store.open()
    writer = Writer(store, max_queue=10**7, batch_size=2000)  # flushed by hand below
    runtime = Runtime(
        FileStore([config], resync_interval=None, watch_events=False), services={CONSOLE: writer}
    )
    await runtime.start()
    requests_ = [report_pb2.ReportRequest.FromString(b) for b in bodies("profile", requests)]
    wanted = runtime.dispatcher.report_attributes()  # decoded as the Report front-end decodes
    for r in requests_[:10]:
        await runtime.dispatcher.report(decode_report(r, wanted=wanted))
    writer._seal()
    await writer._flush(True)

    profiler = cProfile.Profile()
    t0 = time.process_time()
    profiler.enable()
    for r in requests_:
        await runtime.dispatcher.report(decode_report(r, wanted=wanted))
    profiler.disable()
    dispatch = time.process_time() - t0
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    n = len(requests_) * SETS
    print(
        f"\ndispatch with the console adapter (no gRPC), under cProfile: {dispatch / n * 1e6:.1f} us per set"
    )
    print(out.getvalue())

    # the writer: batches into SQLite on the store's thread, profiled there
    wprof = cProfile.Profile()
    cpu = [0.0]

    def in_thread(fn: Any, *args: Any) -> Any:
        t = time.thread_time()
        wprof.enable()
        try:
            return fn(*args)
        finally:
            wprof.disable()
            cpu[0] += time.thread_time() - t

    original = store._write_batch
    store._write_batch = lambda *a: in_thread(original, *a)  # type: ignore[method-assign]
    hops = len(writer._pending.hops) + sum(len(b.hops) for b in writer._outbox)
    t0 = time.process_time()
    writer._seal()
    await writer._flush(True)
    loop_cpu = time.process_time() - t0 - cpu[0]
    out = io.StringIO()
    pstats.Stats(wprof, stream=out).sort_stats("tottime").print_stats(25)
    print(
        f"writer: {hops:,} hops, {cpu[0] / hops * 1e6:.1f} us per hop on the SQLite thread "
        f"(threads: {threading.active_count()}), {loop_cpu / hops * 1e6:.1f} us elsewhere"
    )
    print(out.getvalue())
    await runtime.close()
    await store.close()


async def split(tmp: Path, requests: int, rounds: int = 7) -> None:
    """The event loop's console cost per attribute set, step by step (see ``--split``), with the
    cyclic collector tuned as ``mixerd serve`` tunes it."""
    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(PODS)
    import gc

    from mixerd.cli.serve import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)
    from mixerd._proto.mixer.v1 import report_pb2
    from mixerd.adapters.console.handler import ConsoleHandler
    from mixerd.api.mixer_v1.decode import decode_report
    from mixerd.config import FileStore
    from mixerd.console.store.sqlite import SQLiteStore
    from mixerd.console.writer import Writer
    from mixerd.runtime import Runtime
    from mixerd.server.console import CONSOLE

    handle = ConsoleHandler.handle_logentry
    handle_set = ConsoleHandler.handle_attributes
    steps = ("stock config", "+ match and instance", "+ hops made", "+ hops queued and rolled up")
    runtimes = []
    for k, step in enumerate(steps):
        config = config_dir(tmp / f"split-{k}", k > 0)
        store = SQLiteStore(tmp / f"split-{k}.db")
        await store.open()
        writer = Writer(store, max_queue=10**8, batch_size=10**8)  # flushed by hand below
        if k == 2:
            writer.add_hop = lambda hop: None  # type: ignore[method-assign]
        # handlers take their method when the routing table is built: patch before it is
        ConsoleHandler.handle_logentry = (lambda self, instances: None) if k == 1 else handle  # type: ignore[method-assign]
        ConsoleHandler.handle_attributes = (lambda self, bags: None) if k == 1 else handle_set  # type: ignore[method-assign]
        runtime = Runtime(
            FileStore([config], resync_interval=None, watch_events=False), services={CONSOLE: writer}
        )
        await runtime.start()
        runtimes.append((step, runtime, writer, store))
    ConsoleHandler.handle_logentry = handle  # type: ignore[method-assign]
    ConsoleHandler.handle_attributes = handle_set  # type: ignore[method-assign]
    requests_ = [report_pb2.ReportRequest.FromString(b) for b in bodies("split", requests)]
    loop_us: dict[str, list[float]] = {step: [] for step in steps}
    writer_us: list[float] = []
    for _ in range(rounds):
        for step, runtime, writer, _store in runtimes:
            # decoded as the Report front-end decodes: what the runtime's config reads
            wanted = runtime.dispatcher.report_attributes()
            decoded = [decode_report(r, wanted=wanted) for r in requests_]
            t0 = time.process_time()
            for bags in decoded:
                await runtime.dispatcher.report(bags)
            loop_us[step].append((time.process_time() - t0) / (requests * SETS) * 1e6)
            if writer._pending.hops:
                hops = len(writer._pending.hops)
                t0 = time.process_time()
                writer._seal()
                await writer._flush(True)
                writer_us.append((time.process_time() - t0) / hops * 1e6)
    print(f"\nthe event loop's share, in process ({rounds} alternating rounds of {requests * SETS:,} sets):")
    previous = 0.0
    rows = []
    for step in steps:
        median = statistics.median(loop_us[step])
        rows.append([step, f"{median:.1f}", f"{median - previous:+.1f}" if previous else ""])
        previous = median
    print(table(rows, ("runtime", "us per set (median)", "step")))
    print(
        f"writer (batches into SQLite, every thread): {statistics.median(writer_us):.1f} us per hop (median;"
        f" rounds: {' '.join(f'{u:.1f}' for u in writer_us)})"
    )
    for _step, runtime, _writer, store in runtimes:
        await runtime.close()
        await store.close()


async def decode_split(tmp: Path, requests: int, rounds: int = 9) -> None:
    """Report decoding per attribute set under the stock config and the console addition (see
    ``--decode``)."""
    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(PODS)
    from mixerd._proto.mixer.v1 import report_pb2
    from mixerd.api.mixer_v1.decode import WireTypes, decode_report
    from mixerd.config import FileStore
    from mixerd.runtime import Runtime

    wanted: dict[str, frozenset[str] | None] = {}
    types: dict[str, WireTypes] = {}
    for k, name in enumerate(("stock config", "console addition")):
        config = config_dir(tmp / f"decode-{k}", k > 0)
        runtime = Runtime(FileStore([config], resync_interval=None, watch_events=False))
        await runtime.start()
        wanted[name] = runtime.dispatcher.report_attributes()
        types[name] = WireTypes(runtime.dispatcher.table.manifest)
        await runtime.close()
    console = wanted["console addition"]
    assert console is not None
    variants = {
        "stock config": (types["stock config"], wanted["stock config"]),
        "console, request.headers whole": (types["console addition"], console | {"request.headers"}),
        "console, its header entries": (types["console addition"], console),
    }
    requests_ = [report_pb2.ReportRequest.FromString(b) for b in bodies("decode", requests)]
    us: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, (wire, names) in variants.items():
            t0 = time.process_time()
            for r in requests_:
                decode_report(r, types=wire, wanted=names)
            us[v].append((time.process_time() - t0) / (requests * SETS) * 1e6)
    print(f"\nReport decoding in process ({rounds} alternating rounds of {requests * SETS:,} sets):")
    base = statistics.median(us["stock config"])
    rows = []
    for v, times in us.items():
        median = statistics.median(times)
        rows.append([v, f"{median:.2f}", f"{median - base:+.2f}" if v != "stock config" else "",
                     " ".join(f"{t:.2f}" for t in times)])  # fmt: skip
    print(table(rows, ("wanted names", "us per set (median)", "vs stock", "every round")))


async def hops(tmp: Path, requests: int, rounds: int = 7) -> None:
    """The console handler alone, CPU per hop (see ``--hops``): the attribute sets the handler gets
    from a runtime with the console addition, then ``hop_from_attributes`` over them and
    ``Writer.add_hop`` over its hops (a store that is never written to), rounds alternating."""
    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(PODS)
    import gc

    from mixerd.cli.serve import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)
    from mixerd._proto.mixer.v1 import report_pb2
    from mixerd.adapters.console.handler import ConsoleHandler, hop_from_attributes
    from mixerd.api.mixer_v1.decode import decode_report
    from mixerd.config import FileStore
    from mixerd.console.store.sqlite import SQLiteStore
    from mixerd.console.writer import Writer
    from mixerd.runtime import Runtime
    from mixerd.server.console import CONSOLE

    config = config_dir(tmp / "hops", True)
    store = SQLiteStore(tmp / "hops.db")
    await store.open()
    bags: list[Any] = []
    handle_set = ConsoleHandler.handle_attributes
    ConsoleHandler.handle_attributes = lambda self, sets: bags.extend(sets)  # type: ignore[method-assign]
    try:
        runtime = Runtime(
            FileStore([config], resync_interval=None, watch_events=False),
            services={CONSOLE: Writer(store)},
        )
        await runtime.start()
    finally:
        ConsoleHandler.handle_attributes = handle_set  # type: ignore[method-assign]
    for r in [report_pb2.ReportRequest.FromString(b) for b in bodies("hops", requests)]:
        await runtime.dispatcher.report(decode_report(r))
    await runtime.close()
    await store.close()
    now = dt.datetime.now(dt.UTC)
    made: list[float] = []
    added: list[float] = []
    for _ in range(rounds):
        t0 = time.process_time()
        made_hops = [hop_from_attributes(bag, now) for bag in bags]
        made.append((time.process_time() - t0) / len(bags) * 1e6)
        writer = Writer(store, max_queue=10**8, batch_size=10**8)  # never started: nothing written
        add = writer.add_hop
        t0 = time.process_time()
        for hop in made_hops:
            add(hop)
        added.append((time.process_time() - t0) / len(bags) * 1e6)
    print(f"\nthe console handler alone ({rounds} rounds of {len(bags):,} attribute sets):")
    for step, values in (("hop_from_attributes", made), ("Writer.add_hop", added)):
        print(
            f"{step}: {statistics.median(values):.2f} us per hop (median; rounds "
            f"{' '.join(f'{v:.2f}' for v in values)})"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests",
        type=int,
        default=300,
        help="Report requests of 100 sets per round [default: %(default)s]",
    )
    ap.add_argument("--rounds", type=int, default=3, help="off/on rounds (0: none) [default: %(default)s]")
    ap.add_argument("--profile", action="store_true", help="also profile the console-on path in-process")
    ap.add_argument(
        "--split",
        action="store_true",
        help="also time the event loop's console cost step by step, in-process",
    )
    ap.add_argument(
        "--decode",
        action="store_true",
        help="also time Report decoding for the stock config and the console addition, in-process",
    )
    ap.add_argument(
        "--hops",
        action="store_true",
        help="also time the console handler alone, in-process: making the hops of the sets it gets, "
        "then queueing and rolling them up (CPU per hop)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-console-report-"))
    try:
        rc = served(tmp, args.requests, args.rounds) if args.rounds else 0
        if args.profile:
            asyncio.run(in_process(tmp, 200))
        if args.split:
            asyncio.run(split(tmp, 100))
        if args.decode:
            asyncio.run(decode_split(tmp, 100))
        if args.hops:
            asyncio.run(hops(tmp, 100))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
