"""Run ``mixerd serve`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MixerdProcess", "free_port", "start_mixerd", "wait_for"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # keep polling; report the last failure
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class MixerdProcess:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    monitoring_port: int
    prometheus_port: int
    http_authz_port: int
    log_path: Path
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http(self, path: str, port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.monitoring_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mixerd did not exit within 20s of SIGTERM:\n" + self.log()) from None
        return self.proc.returncode


def start_mixerd(
    tmp: Path, config: list[Path] | None, *args: str, env: dict[str, str] | None = None
) -> MixerdProcess:
    ports = {k: free_port() for k in ("grpc", "monitoring", "prometheus", "http_authz")}
    log_path = tmp / f"mixerd-{ports['grpc']}.log"
    cmd = [
        sys.executable, "-m", "mixerd.cli.main", "serve",
        "--grpc-address", f"127.0.0.1:{ports['grpc']}",
        "--monitoring-address", f"127.0.0.1:{ports['monitoring']}",
        "--prometheus-address", f"127.0.0.1:{ports['prometheus']}",
        "--http-authz-address", f"127.0.0.1:{ports['http_authz']}",
        "--config-debounce", "0.1",
        *args,
    ]  # fmt: skip
    for c in config or []:
        cmd += ["--config", str(c)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    mp = MixerdProcess(
        proc, ports["grpc"], ports["monitoring"], ports["prometheus"], ports["http_authz"], log_path
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mixerd exited with {proc.returncode}:\n{mp.log()}")
        return mp.http("/readyz").startswith("ready")

    try:
        wait_for(ready, timeout=30, what="mixerd /readyz")
    except AssertionError:
        mp.stop()
        raise
    return mp
