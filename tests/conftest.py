"""Fixtures shared by every test suite (helpers to import are in tests/support/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import artifacts
from tests.support.postgres_server import PostgresProcess, start_postgres
from tests.support.redis_server import RedisClusterServers, RedisProcess, SentinelServers, start_redis


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers started by tests (in process or as ``mixerd serve``) keep their console store in a
    temporary ``$XDG_STATE_HOME``, never in the working directory."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh ``redis-server`` for one test."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One ``redis-server`` for a whole test module (call ``flush()`` between tests that need it empty)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries for a whole test module (``flush()`` it between tests;
    tests that move slots leave the cluster consistent, so later ones ask where a slot is)."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelServers]:
    """A primary, a replica and three Sentinels, fresh for each test (failovers change them)."""
    servers = SentinelServers(tmp_path / "sentinel")
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresProcess]:
    """One PostgreSQL server for the whole run (tests create a database each with
    ``create_database()``); deleted at the end."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.destroy()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Where the screenshots (and other files for people) of this run are."""
    if not artifacts.saved:
        return
    terminalreporter.section("test artifacts")
    terminalreporter.write_line(f"{len(artifacts.saved)} files under {artifacts.ARTIFACTS}:")
    for path in artifacts.saved:
        terminalreporter.write_line(f"  {path.relative_to(artifacts.ARTIFACTS)}")
