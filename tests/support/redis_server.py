"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir, without
persistence, and stopped, killed, frozen (or restarted on the same port) on demand.

Tests take it through the ``redis_server`` / ``redis_server_module`` fixtures of tests/conftest.py,
or call :func:`start_redis` themselves (and ``stop()`` it). A missing ``redis-server`` fails the
test (CI installs it), it never skips.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.proc import stop_process

__all__ = ["RedisProcess", "find_redis_server", "start_redis"]

START_TIMEOUT = 10.0


def find_redis_server() -> str:
    """The path of ``redis-server``; fails the test with how to install it when missing."""
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/sbin/redis-server", "/usr/bin/redis-server") if Path(p).exists()), None
    )
    if path is None:
        pytest.fail(
            "redis-server is not installed: install it (apt-get install redis-server) to run the Redis tests",
            pytrace=False,
        )
    return path


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:port``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._binary = find_redis_server()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisProcess:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        # a freshly stopped server's port can take a moment to be free again
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._proc = subprocess.Popen(
                [
                    self._binary,
                    "--port", str(self.port),
                    "--bind", self.host,
                    "--dir", str(self.directory),
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--logfile", str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _ping(self.port):
                    return self
                time.sleep(0.01)
            if self._proc.poll() is None or time.monotonic() >= deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)  # exited at once (port still busy): try again

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit (a frozen one is thawed first)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        stop_process(proc, timeout=5)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL: no shutdown, connections reset) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections stay open and nothing answers, as with a hung host."""
        assert self._proc is not None and self.running, "redis-server is not running"
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        assert self._proc is not None and self.running, "redis-server is not running"
        self._proc.send_signal(signal.SIGCONT)

    def command(self, *words: str, timeout: float = 5.0) -> bytes:
        """One command over a raw socket (RESP), returning the raw reply."""
        payload = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(payload.encode())
            return s.recv(65536)

    def flush(self) -> None:
        """Delete every key (``FLUSHALL``)."""
        if not self.command("FLUSHALL", timeout=2).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


def start_redis(directory: Path, port: int | None = None) -> RedisProcess:
    """Start a ``redis-server`` keeping its files in ``directory``."""
    return RedisProcess(directory, port).start()
