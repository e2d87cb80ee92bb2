"""Shared pieces of the benchmarks: processes, ports, h2load, CPU accounting."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(os.environ.get("MIXERD_CONFORMANCE_DIR") or REPO.parent / "shared" / "conformance")
MIXERD = [sys.executable, "-m", "mixerd.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start(
    cmd: Sequence[str], port: int, *, log: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        list(cmd), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    wait_port(port, proc=proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message


@dataclass
class H2Load:
    requests: int
    succeeded: int
    seconds: float
    rps: float
    status_2xx: int

    @property
    def ok(self) -> bool:
        return self.succeeded == self.requests and self.status_2xx == self.requests


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed: apt-get install {package} (or run `make system-deps`)")
    return path


def h2load(
    url: str,
    body: Path,
    *,
    requests: int,
    clients: int = 4,
    streams: int = 16,
    threads: int = 1,
    extra: Sequence[str] = (),
) -> H2Load:
    """Send ``requests`` gRPC POSTs with a pre-framed body; parse h2load's summary."""
    cmd = [
        need("h2load", "nghttp2-client"),
        "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t", str(threads),
        "-d", str(body),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        *extra,
        url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
    c = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and r and c):
        raise RuntimeError("could not read h2load's output:\n" + out)
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return H2Load(int(r.group(1)), int(r.group(2)), seconds, float(m.group(3)), int(c.group(1)))


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


SUMMARY_MARK = "@@mixerd-bench-row "
"""Prefix of the one machine-readable line :func:`summary_row` prints (``run.py`` collects them)."""


def summary_row(path: str, figure: str, goal: str, met: bool | None, *, note: str = "") -> None:
    """Print one row of the issue tables (path, figure measured in this run, goal, met or not;
    ``None`` for a figure without a goal of its own) as a marked JSON line, which
    ``benchmarks/run.py`` gathers into its closing table. The 1-minute load average is recorded
    with it: the machine may be shared."""
    row = {
        "path": path,
        "figure": figure,
        "goal": goal,
        "met": None if met is None else bool(met),
        "load": round(os.getloadavg()[0], 2),
    }
    if note:
        row["note"] = note
    print(SUMMARY_MARK + json.dumps(row), flush=True)


def h2load_latencies(log: Path) -> list[float]:
    """Per-request latencies in seconds from an h2load ``--log-file`` (start, status, microseconds)."""
    if not log.exists():
        return []
    return sorted(
        int(fields[2]) / 1e6
        for fields in (line.split("\t") for line in log.read_text().splitlines())
        if len(fields) >= 3 and fields[2].isdigit()
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text exposition as ``{'name{labels}': value}`` (labels as written)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (VmRSS of /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
