"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries (``initdb`` + ``postgres``),
a throw-away cluster in a temp dir, listening on a free loopback port (password auth) and on a
Unix socket in that dir (trust), tuned to start fast and not to sync; stopped (or restarted on the
same port, keeping its data) on demand.

Tests take it through the ``postgres_server`` fixture of tests/conftest.py (one per session) or call
:func:`start_postgres` themselves (and ``stop()`` it). Missing binaries fail the test with how to
install them; it never skips. PostgreSQL refuses to run as root: as root the cluster belongs to
the ``postgres`` OS user (the Debian package creates it) and its processes run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.proc import stop_process

__all__ = ["PASSWORD", "PostgresProcess", "find_postgres_bin", "start_postgres"]

START_TIMEOUT = 30.0
USER = "postgres"
PASSWORD = "pg-test-s3cret"
"""The ``postgres`` role's password for TCP connections (tests check it never shows)."""


def find_postgres_bin(debian_root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The directory holding ``initdb`` and ``postgres`` (the newest Debian version, else PATH);
    fails the test with how to install them when missing."""
    candidates = sorted(
        debian_root.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).parent / "postgres").exists():
        return Path(initdb).parent
    pytest.fail(
        "PostgreSQL server binaries (initdb, postgres) are not installed: run `make system-deps`"
        " (installs Debian's postgresql) to run the PostgreSQL console store tests",
        pytrace=False,
    )


class PostgresProcess:
    """One ``postgres`` server on ``127.0.0.1:port`` and a Unix socket in ``socket_dir``."""

    def __init__(self, port: int | None = None, *, durable: bool = False) -> None:
        """``durable``: PostgreSQL's default fsync and commit settings (benchmarks) instead of
        the tests' fast ones."""
        self.durable = durable
        self.bin = find_postgres_bin()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        # not under pytest's tmp_path: that is private to root, and the server may run as postgres
        self.directory = Path(tempfile.mkdtemp(prefix="mixerd-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory
        self.log = self.directory / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._initdb()

    # -- running the server's programs as the right user -----------------------------------

    def _user_kwargs(self) -> dict[str, Any]:
        if not self._as_postgres:
            return {}
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            pytest.fail(
                f"running as root, and there is no {USER!r} OS user to run PostgreSQL as:"
                " run `make system-deps` (Debian's postgresql package creates it)",
                pytrace=False,
            )
        return {
            "user": pw.pw_uid,
            "group": pw.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": "/tmp"},
        }

    def _initdb(self) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam(USER)
            os.chown(self.directory, pw.pw_uid, pw.pw_gid)
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            os.chown(pwfile, pwd.getpwnam(USER).pw_uid, -1)
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D", str(self.data),
                "-U", USER,
                "--pwfile", str(pwfile),
                "--auth-local", "trust",
                "--auth-host", "scram-sha-256",
                "-E", "UTF8",
                "--locale", "C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
            **self._user_kwargs(),
        )  # fmt: skip
        pwfile.unlink()
        if result.returncode:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    # -- addresses -----------------------------------------------------------------------------

    def url(self, database: str = "postgres", schema: str = "") -> str:
        """A TCP URL with the password; with ``schema``, connections use it (``search_path``)."""
        url = f"postgresql://{USER}:{urllib.parse.quote(PASSWORD)}@{self.host}:{self.port}/{database}"
        return f"{url}?search_path={schema}" if schema else url

    def socket_url(self, database: str = "postgres") -> str:
        """A Unix-socket URL (trust auth, no password)."""
        return f"postgresql://{USER}@/{database}?host={urllib.parse.quote(str(self.socket_dir))}&port={self.port}"

    # -- start / stop ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ready(self) -> bool:
        """The postmaster says so in its pid file (line 8: ``ready``)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def start(self) -> PostgresProcess:
        """Start (or restart, on the same port, with the same data) and wait until it accepts connections."""
        if self.running:
            return self
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with open(self.log, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.bin / "postgres"),
                        "-D", str(self.data),
                        "-p", str(self.port),
                        "-k", str(self.socket_dir),
                        "-c", f"listen_addresses={self.host}",
                        "-c", "max_connections=40",
                        "-c", "log_min_messages=warning",
                        *self._settings(),
                    ],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self._user_kwargs(),
                )  # fmt: skip
            while time.monotonic() < deadline and self._proc.poll() is None:
                if self._ready():
                    return self
                time.sleep(0.02)
            if self._proc.poll() is None or time.monotonic() >= deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"postgres on port {self.port} did not start:\n{tail}")
            time.sleep(0.1)  # exited at once (port still busy after a stop): try again

    def _settings(self) -> list[str]:
        if self.durable:
            return ["-c", "shared_buffers=128MB"]
        fast = (
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "shared_buffers=32MB",
            "autovacuum=off",
        )
        return [arg for setting in fast for arg in ("-c", setting)]

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, not waited for), then wait for the exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, sig=signal.SIGINT, timeout=15)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through ``psql`` on the Unix socket; its output (unaligned, tuples only)."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", USER,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
            **self._user_kwargs(),
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database (its name). Takes a few hundred ms: ``create_schema`` is the
        quick way to give a test tables of its own."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def create_schema(self, prefix: str = "t", database: str = "postgres") -> str:
        """A new, empty schema in ``database`` (its name), for ``url(database, schema)``."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE SCHEMA {name}", database)
        return name

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(port: int | None = None, *, durable: bool = False) -> PostgresProcess:
    """Create a cluster and start a ``postgres`` on it (``destroy()`` it when done)."""
    server = PostgresProcess(port, durable=durable)
    try:
        return server.start()
    except BaseException:
        server.destroy()
        raise
