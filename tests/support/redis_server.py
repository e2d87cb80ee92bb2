"""Real Redis servers for tests, on loopback ports in temp dirs, without persistence.

* :class:`RedisProcess`: one ``redis-server`` (or ``redis-sentinel``), stopped, killed, frozen or
  restarted on the same port on demand, with :meth:`~RedisProcess.query` for commands.
* :class:`RedisClusterServers`: a Redis Cluster of three primaries, built with ``CLUSTER
  ADDSLOTSRANGE`` and ``CLUSTER MEET``, with slot migration for redirect tests.
* :class:`SentinelServers`: a primary, a replica and three Sentinels that fail over quickly.

Tests take them through the fixtures of tests/conftest.py (``redis_server``,
``redis_server_module``, ``redis_cluster``, ``redis_sentinel``) or start them themselves (and
stop them). A missing binary fails the test with how to install it (``make system-deps``); it
never skips.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port, wait_for
from tests.support.proc import stop_process

__all__ = [
    "RedisClusterServers",
    "RedisProcess",
    "RedisReplyError",
    "SentinelServers",
    "find_redis_binary",
    "find_redis_server",
    "start_redis",
]

START_TIMEOUT = 10.0


def find_redis_binary(name: str, package: str) -> str:
    """The path of a Redis program; fails the test with how to install it when missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make system-deps` (or apt-get install {package}) "
            "to run the Redis tests",
            pytrace=False,
        )
    return path


def find_redis_server() -> str:
    """The path of ``redis-server``; fails the test with how to install it when missing."""
    return find_redis_binary("redis-server", "redis-server")


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) to :meth:`RedisProcess.query`."""


def _read_reply(f: Any) -> Any:
    """One RESP2 reply: strings (bulk strings decoded as UTF-8), ints, lists, None."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"connection closed mid-reply ({line!r})")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else f.read(size + 2)[:-2].decode("utf-8", "surrogateescape")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(f) for _ in range(size)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:port``; with ``sentinel`` a Sentinel (``redis-sentinel``)
    reading ``sentinel.conf`` in its directory, which the caller writes first. ``args`` are more
    config options (``--cluster-enabled``, ``yes``...)."""

    def __init__(
        self, directory: Path, port: int | None = None, *, args: Sequence[str] = (), sentinel: bool = False
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.args = tuple(args)
        self.sentinel = sentinel
        self._binary = (
            find_redis_binary("redis-sentinel", "redis-sentinel") if sentinel else find_redis_server()
        )
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
            common = [
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.directory),
                "--daemonize", "no",
                "--logfile", str(log),
            ]  # fmt: skip
            if self.sentinel:
                cmd = [self._binary, str(self.directory / "sentinel.conf"), *common]
            else:
                cmd = [self._binary, *common, "--save", "", "--appendonly", "no"]
            with open(self.directory / "stderr.log", "ab") as err:  # config errors go there
                self._proc = subprocess.Popen(
                    [*cmd, *self.args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _ping(self.port):
                    return self
                time.sleep(0.01)
            if self._proc.poll() is None or time.monotonic() >= deadline:
                tail = "".join(
                    f.read_text(errors="replace")[-2000:]
                    for f in (self.directory / "stderr.log", log)
                    if f.exists()
                )
                self.stop()
                raise RuntimeError(f"{Path(self._binary).name} on port {self.port} did not start:\n{tail}")
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

    def query(self, *words: str | int, timeout: float = 5.0, asking: bool = False) -> Any:
        """One command on a new connection, its reply parsed (see :func:`_read_reply`); an error
        reply raises :class:`RedisReplyError`. ``asking`` sends ``ASKING`` first, on the same
        connection, to read a cluster node's importing slot."""
        payload = b""
        for command in [("ASKING",), words] if asking else [words]:
            encoded = [str(w).encode() for w in command]
            payload += f"*{len(encoded)}\r\n".encode() + b"".join(
                b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded
            )
        with socket.create_connection((self.host, self.port), timeout=timeout) as s, s.makefile("rb") as f:
            s.sendall(payload)
            if asking:
                _read_reply(f)
            return _read_reply(f)

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict."""
        text = self.query("INFO", section)
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
        )

    def flush(self) -> None:
        """Delete every key (``FLUSHALL``)."""
        if not self.command("FLUSHALL", timeout=2).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


def start_redis(directory: Path, port: int | None = None) -> RedisProcess:
    """Start a ``redis-server`` keeping its files in ``directory``."""
    return RedisProcess(directory, port).start()


# -- Redis Cluster --------------------------------------------------------------------------------

CLUSTER_SLOTS = 16384


class RedisClusterServers:
    """A Redis Cluster of ``size`` primaries (no replicas) on loopback: each owns an equal range of
    the 16384 slots. Each node's bus port is a free port of its own (``cluster-port``), not
    port + 10000, which may be taken or beyond 65535."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        # a generous node timeout: a busy 2-core machine must never make a healthy node look failed
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "15000",
        )
        self.bus_ports = [free_port() for _ in range(size)]
        self.nodes = [
            RedisProcess(directory / f"node{i}", args=(*options, "--cluster-port", str(bus)))
            for i, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        """The ``redisServerUrl`` of the cluster (every node as a startup node)."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self, timeout: float = 15.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        per_node = CLUSTER_SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            # distinct config epochs, as redis-cli --cluster create sets them
            node.query("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            last = CLUSTER_SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per_node - 1
            node.query("CLUSTER", "ADDSLOTSRANGE", i * per_node, last)
        for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            self.nodes[0].query("CLUSTER", "MEET", node.host, node.port, bus)
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Until every node knows every node and says ``cluster_state:ok`` (a new primary waits
        2 s before it does), and all of them agree on who owns each slot."""

        def ok() -> bool:
            for node in self.nodes:
                info = dict(
                    line.split(":", 1) for line in node.query("CLUSTER", "INFO").splitlines() if ":" in line
                )
                if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(
                    len(self.nodes)
                ):
                    return False
            return len({str(self.slot_owners(node)) for node in self.nodes}) == 1

        wait_for(ok, timeout=timeout, interval=0.1, what="cluster_state:ok on every node")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def node_id(self, node: RedisProcess) -> str:
        return str(node.query("CLUSTER", "MYID"))

    def keyslot(self, key: str) -> int:
        return int(self.nodes[0].query("CLUSTER", "KEYSLOT", key))

    def slot_owners(self, asked: RedisProcess | None = None) -> list[tuple[int, int, int]]:
        """``(first slot, last slot, port of the primary)`` as ``asked`` (default: the first
        node) sees them, sorted."""
        reply = (asked or self.nodes[0]).query("CLUSTER", "SLOTS")
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in reply)

    def owner(self, slot: int) -> RedisProcess:
        """The primary that owns ``slot``."""
        for first, last, port in self.slot_owners():
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"slot {slot} has no owner")

    def owner_of(self, key: str) -> RedisProcess:
        return self.owner(self.keyslot(key))

    def keys(self) -> dict[int, list[str]]:
        """Every key, by the port of the node that holds it."""
        return {node.port: sorted(node.query("KEYS", "*")) for node in self.nodes}

    def start_migration(self, slot: int, target: RedisProcess) -> RedisProcess:
        """Mark ``slot`` as migrating to ``target`` and move its keys there (one ``MIGRATE`` for
        all of them, atomic), but leave the source its owner: clients asking the source for a key
        of the slot get ``ASK`` redirects. Returns the source."""
        source = self.owner(slot)
        assert source is not target, "the slot is on the target already"
        target.query("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        source.query("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        keys = source.query("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            reply = source.query("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            assert reply == "OK", reply
        return source

    def finish_migration(self, slot: int, target: RedisProcess) -> None:
        """Make ``target`` the owner of ``slot`` on every node (clients asking another node get
        ``MOVED``), and wait until all of them agree."""
        target_id = self.node_id(target)
        for node in [target, *(n for n in self.nodes if n is not target)]:
            node.query("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_for(
            lambda: all(self._owner_as_seen_by(node, slot) == target.port for node in self.nodes),
            timeout=10,
            what=f"every node to see slot {slot} on {target.address}",
        )

    def _owner_as_seen_by(self, node: RedisProcess, slot: int) -> int | None:
        return next((port for first, last, port in self.slot_owners(node) if first <= slot <= last), None)

    def migrate(self, slot: int, target: RedisProcess) -> RedisProcess:
        """Move ``slot`` and its keys to ``target`` (a live resharding step); returns the source."""
        source = self.start_migration(slot, target)
        self.finish_migration(slot, target)
        return source


# -- Sentinel -----------------------------------------------------------------------------------

MASTER_NAME = "mymaster"


class SentinelServers:
    """A primary, a replica and ``sentinels`` Sentinels (quorum 2) monitoring them as
    ``mymaster``, tuned to fail over quickly: the primary is down after ``down_after_ms`` without
    an answer, and a failover that could not elect a leader is retried after twice
    ``failover_timeout_ms``. The Sentinels are told about each other and the replica in their
    config (``known-sentinel``, ``known-replica``), so they are ready at once instead of after
    the hello messages they exchange every 2 s."""

    def __init__(
        self,
        directory: Path,
        *,
        sentinels: int = 3,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        replication = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
        self.servers = [RedisProcess(directory / name, args=replication) for name in ("a", "b")]
        self.replica_of = {self.servers[1].port: self.servers[0].port}
        self.sentinels = [RedisProcess(directory / f"sentinel{i}", sentinel=True) for i in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._ids = [secrets.token_hex(20) for _ in self.sentinels]

    @property
    def url(self) -> str:
        """The ``redisServerUrl`` of the primary through the Sentinels."""
        return "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{MASTER_NAME}"

    def start(self, timeout: float = 15.0) -> SentinelServers:
        primary, replica = self.servers
        primary.start()
        replica.start()
        replica.query("REPLICAOF", primary.host, primary.port)
        for i, sentinel in enumerate(self.sentinels):
            sentinel.directory.mkdir(parents=True, exist_ok=True)
            others = [
                f"sentinel known-sentinel {MASTER_NAME} {o.host} {o.port} {self._ids[j]}"
                for j, o in enumerate(self.sentinels)
                if j != i
            ]
            (sentinel.directory / "sentinel.conf").write_text(
                "\n".join(
                    [
                        f"sentinel myid {self._ids[i]}",
                        f"sentinel monitor {MASTER_NAME} {primary.host} {primary.port} 2",
                        f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                        f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                        f"sentinel parallel-syncs {MASTER_NAME} 1",
                        f"sentinel known-replica {MASTER_NAME} {replica.host} {replica.port}",
                        *others,
                        "",
                    ]
                )
            )
            sentinel.start()
        self.wait_ready(primary, timeout)
        return self

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()

    def server(self, port: int) -> RedisProcess:
        return next(s for s in self.servers if s.port == port)

    def reported_primary(self, sentinel: RedisProcess) -> int | None:
        """The port of the primary as ``sentinel`` reports it (None when it cannot answer)."""
        try:
            reply = sentinel.query("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, timeout=1)
        except (OSError, RedisReplyError):
            return None
        return int(reply[1]) if reply else None

    def primary(self) -> RedisProcess:
        """The primary every Sentinel reports (fails when they disagree)."""
        ports = {self.reported_primary(s) for s in self.sentinels}
        assert len(ports) == 1 and None not in ports, f"the Sentinels disagree on the primary: {ports}"
        port = ports.pop()
        assert port is not None
        return self.server(port)

    def replica(self) -> RedisProcess:
        primary = self.primary()
        return next(s for s in self.servers if s is not primary)

    def wait_ready(self, primary: RedisProcess, timeout: float = 15.0) -> None:
        """Until the replica has synced with ``primary`` and every Sentinel reports ``primary``,
        sees the replica and the other Sentinels as healthy and has a quorum to fail over."""
        replica = next(s for s in self.servers if s is not primary)

        def healthy(entries: list[list[str]]) -> bool:
            flags = [dict(zip(e[::2], e[1::2], strict=True))["flags"] for e in entries]
            return all(not any(bad in f for bad in ("down", "disconnected")) for f in flags)

        def ready() -> bool:
            link = replica.info("replication")
            if link.get("role") != "slave" or link.get("master_link_status") != "up":
                return False
            if int(link.get("master_port", 0)) != primary.port:
                return False
            for sentinel in self.sentinels:
                if self.reported_primary(sentinel) != primary.port:
                    return False
                replicas = sentinel.query("SENTINEL", "REPLICAS", MASTER_NAME)
                others = sentinel.query("SENTINEL", "SENTINELS", MASTER_NAME)
                if len(replicas) != 1 or len(others) != len(self.sentinels) - 1:
                    return False
                if not (healthy(replicas) and healthy(others)):
                    return False
                if not str(sentinel.query("SENTINEL", "CKQUORUM", MASTER_NAME)).startswith("OK"):
                    return False
            return True

        wait_for(
            ready, timeout=timeout, interval=0.1, what=f"Sentinel ready with {primary.address} as primary"
        )

    def wait_for_failover(self, old: RedisProcess, timeout: float = 15.0) -> RedisProcess:
        """Until every Sentinel reports a primary other than ``old`` and that server says it is a
        primary; returns it."""

        def switched() -> RedisProcess | None:
            ports = {self.reported_primary(s) for s in self.sentinels}
            if len(ports) != 1 or None in ports or old.port in ports:
                return None
            new = self.server(ports.pop() or 0)
            return new if new.query("ROLE", timeout=1)[0] == "master" else None

        return wait_for(switched, timeout=timeout, interval=0.05, what=f"a failover away from {old.address}")

    def wait_replicated(self, primary: RedisProcess, timeout: float = 15.0) -> None:
        """Until the replica has every write ``primary`` had taken when this was called.
        Replication is asynchronous and ``SENTINEL FAILOVER`` does not wait for it: a write
        the replica has not received when it is promoted is lost."""
        target = int(primary.info("replication")["master_repl_offset"])
        replica = next(s for s in self.servers if s is not primary)
        wait_for(
            lambda: int(replica.info("replication").get("slave_repl_offset", -1)) >= target,
            timeout=timeout,
            interval=0.01,
            what=f"the replica to reach {primary.address}'s replication offset {target}",
        )

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: a failover without waiting for the primary to fail."""
        assert self.sentinels[0].query("SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
