"""Run the benchmarks in this folder one after the other (``make bench``) and close with one table.

Each ``bench_*.py`` prints its own figures; the scripts that measure a row of the issue tables
(issue 13's paths, issue 10's console ratio, issue 12's authorization ratio) also print one
marked line per row (``_util.summary_row``). This runner passes every script's output through,
collects those lines, and at the end prints them as one table (path, figure, goal, met or
missed, load average when measured) and writes them as JSON to ``benchmarks/last-run.json``
(``--json`` elsewhere; not in git). A script that fails is listed, and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _util import SUMMARY_MARK, table  # noqa: E402

VERDICT = {True: "met", False: "MISSED", None: "-"}


def names() -> list[str]:
    return [s.stem.removeprefix("bench_") for s in sorted(HERE.glob("bench_*.py"))]


def run_one(script: Path, index: int, total: int) -> tuple[int, float, list[dict[str, Any]]]:
    """Run one script, echoing its output, and return its exit status, seconds and summary rows."""
    name = script.stem.removeprefix("bench_")
    print(f"\n=== [{index}/{total}] {name} (load average {os.getloadavg()[0]:.1f}) " + "=" * 40, flush=True)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith(SUMMARY_MARK):
            try:
                row = json.loads(line[len(SUMMARY_MARK) :])
            except json.JSONDecodeError:
                print(f"(unreadable summary line from {name})", flush=True)
                continue
            rows.append({"script": name, **row})
    rc = proc.wait()
    seconds = time.monotonic() - t0
    print(f"--- {name}: exit {rc}, {seconds:.0f}s, {len(rows)} summary row(s)", flush=True)
    return rc, seconds, rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="run only these benchmarks (bench_NAME.py); all when none. Available: " + ", ".join(names()),
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=HERE / "last-run.json",
        help="where the summary rows are written [default: benchmarks/last-run.json]",
    )
    args = ap.parse_args(argv)
    unknown = sorted(set(args.names) - set(names()))
    if unknown:
        ap.error(f"no such benchmark: {', '.join(unknown)} (available: {', '.join(names())})")
    scripts = [s for s in sorted(HERE.glob("bench_*.py")) if not args.names or s.stem[6:] in args.names]

    started = time.time()
    failed: list[str] = []
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for i, script in enumerate(scripts, 1):
        rc, seconds, found = run_one(script, i, len(scripts))
        rows += found
        runs.append({"script": script.stem[6:], "exit": rc, "seconds": round(seconds, 1)})
        if rc:
            failed.append(script.stem[6:])

    print("\n=== summary " + "=" * 60)
    if rows:
        print(
            table(
                [(r["path"], r["figure"], r["goal"], VERDICT[r["met"]], f"{r['load']:.1f}") for r in rows],
                ("path", "figure (this run)", "goal", "", "load"),
            )
        )
    else:
        print("(no summary rows: the benchmarks run print none)")
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
        "rows": rows,
        "runs": runs,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(rows)} rows written to {args.json}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
