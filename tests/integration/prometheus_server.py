"""A real Prometheus server (Debian's ``prometheus``) for end-to-end tests, on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.net import free_port, wait_for
from tests.support.proc import stop_process

__all__ = ["PrometheusServer", "start_prometheus"]


@dataclass
class PrometheusServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def targets_up(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5) as resp:
            body = json.load(resp)
        active = body["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)


def start_prometheus(tmp: Path, scrape_port: int, scrape_interval: str = "1s") -> PrometheusServer:
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError(
            "prometheus is not installed: apt-get install prometheus (or `make system-deps`)"
        )
    port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "- job_name: mixerd\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  static_configs: [{{targets: ['127.0.0.1:{scrape_port}']}}]\n"
    )
    log_path = tmp / "prometheus.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(proc, port, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
            return resp.status == 200

    try:
        wait_for(ready, timeout=30, what="prometheus /-/ready")
    except AssertionError:
        server.stop()
        raise
    time.sleep(0)  # ready also means the scrape loop is configured
    return server
