"""A real Prometheus server (Debian's ``prometheus``) for end-to-end tests, on a free loopback port,
scraping one target."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.net import free_port, wait_for
from tests.support.proc import stop_process

__all__ = ["PrometheusServer", "start_prometheus"]

FIRST_SCRAPE_TIMEOUT = 20.0
"""How long the first successful scrape of the target may take (scrape interval and start-up jitter
included), in seconds."""
_NEVER = "0001-01-01T00:00:00Z"
"""``lastScrape`` of a target not scraped yet (Go's zero time)."""


@dataclass
class PrometheusServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    target: str
    """``host:port`` of the scraped endpoint."""

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def target_state(self) -> dict[str, Any] | None:
        """The scrape target as ``/api/v1/targets`` lists it (``health``, ``lastScrape``,
        ``lastError``, ...); None while Prometheus does not list it yet."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        for t in body["data"]["activeTargets"]:
            if t["labels"].get("instance") == self.target:
                return dict(t)
        return None

    def wait_for_first_scrape(self, timeout: float = FIRST_SCRAPE_TIMEOUT) -> None:
        """Wait until Prometheus has scraped the target successfully once."""

        def scraped() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            state = self.target_state()
            if state is None:
                raise LookupError(f"{self.target} is not among Prometheus's active targets yet")
            if state["lastScrape"] == _NEVER or state["health"] != "up":
                # not an error yet; the message reports the state if the wait times out
                raise LookupError(
                    f"{self.target}: health={state['health']!r} lastScrape={state['lastScrape']!r} "
                    f"lastError={state.get('lastError', '')!r}"
                )
            return True

        wait_for(
            scraped,
            timeout=timeout,
            interval=0.1,
            what=f"Prometheus's first successful scrape of {self.target}",
        )

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
    server = PrometheusServer(proc, port, log_path, f"127.0.0.1:{scrape_port}")

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
            return resp.status == 200

    try:
        wait_for(ready, timeout=30, what="prometheus /-/ready")
        server.wait_for_first_scrape()
    except AssertionError:
        server.stop()
        raise
    return server
