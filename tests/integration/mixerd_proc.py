"""Run ``mixerd serve`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, wait_for
from tests.support.proc import stop_process

__all__ = ["MixerdProcess", "start_mixerd"]


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

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` on /metrics whose labels include ``labels``
        (0 when there is none, as for a counter nothing has incremented yet)."""
        total = 0.0
        for family in text_string_to_metric_families(self.http("/metrics")):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if not stop_process(self.proc, timeout=timeout):
            raise AssertionError(f"mixerd did not exit within {timeout:g}s of SIGTERM:\n" + self.log())
        return self.proc.returncode


def start_mixerd(
    tmp: Path,
    config: list[Path] | None,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> MixerdProcess:
    """Start ``mixerd serve`` on free loopback ports; with ``wait_ready`` return once /readyz says ready."""
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

    if not wait_ready:
        return mp

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
