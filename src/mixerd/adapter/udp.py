"""Lines sent over UDP in batched datagrams, off the request path (the statsd family of protocols).

:class:`UdpLineSender` takes one line at a time from a handler (:meth:`~UdpLineSender.add`, sync,
no I/O) and packs lines into datagrams of at most ``max_packet_bytes`` (lines joined by ``\\n``,
no trailing newline; a single longer line travels alone) and at most ``max_lines`` lines. A
datagram is sealed when the next line would not fit, when it holds ``max_lines`` lines, or every
``flush_interval`` seconds; sealed datagrams wait in a bounded queue (``max_queued_packets``) for a
background task that sends them. The address is resolved in that task (``host:port``, any name
``getaddrinfo`` knows), again after a failure.

Nothing is lost silently: lines in datagrams that could not be queued or sent are reported through
``env.dropped`` (reasons ``queue_full``, ``send_failed``, ``shutdown``). UDP itself says nothing
about delivery, as with Mixer's statsd clients.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any, Final

from mixerd.adapter.env import Env

__all__ = ["DEFAULT_MAX_QUEUED_PACKETS", "UdpLineSender", "split_host_port"]

DEFAULT_MAX_QUEUED_PACKETS: Final = 1024
_WARN_INTERVAL: Final = 60.0


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), like Go's ``net.SplitHostPort`` followed by
    a port number check. An empty host means the local host. Raises ValueError with the reason."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or not address[end + 1 :].startswith(":"):
            raise ValueError(f"address {address!r}: expected [host]:port")
        host, port_text = address[1:end], address[end + 2 :]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"address {address!r}: missing port")
        if ":" in host:
            raise ValueError(f"address {address!r}: too many colons (write an IPv6 host as [host]:port)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {address!r}: bad port {port_text!r}")
    return host, int(port_text)


class UdpLineSender:
    """See the module doc. ``address`` must be valid (check it with :func:`split_host_port` in
    the builder's ``validate()``)."""

    def __init__(
        self,
        env: Env,
        address: str,
        *,
        max_packet_bytes: int,
        flush_interval: float,
        max_lines: int = 0,
        max_queued_packets: int = DEFAULT_MAX_QUEUED_PACKETS,
    ) -> None:
        self._env = env
        self.address = address
        self._host, self._port = split_host_port(address)
        self.max_packet_bytes = max(1, max_packet_bytes)
        self.flush_interval = flush_interval
        self.max_lines = max_lines
        """Lines per datagram at most (0: no limit but the size)."""
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0
        self._packets: collections.deque[tuple[bytes, int]] = collections.deque()
        self._max_packets = max(1, max_queued_packets)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._sock: socket.socket | None = None
        self._target: tuple[Any, ...] | None = None
        self._warned_at: dict[str, float] = {}
        self.packets_sent = 0
        self.lines_sent = 0
        self.dropped = 0
        self.flush_timeout = 5.0
        """Seconds :meth:`close` waits for queued datagrams to be sent."""

    # -- request path --------------------------------------------------------------------------

    def add(self, line: bytes) -> None:
        """Queue one line (without a newline)."""
        if self._closing:
            self._drop(1, "shutdown")
            return
        size = len(line)
        if self._buffer and self._buffer_bytes + 1 + size > self.max_packet_bytes:
            self._seal()
        self._buffer.append(line)
        self._buffer_bytes += size + (1 if len(self._buffer) > 1 else 0)
        if self._buffer_bytes >= self.max_packet_bytes or len(self._buffer) == self.max_lines:
            self._seal()
        if not self._started:
            self._started = True
            self._task = self._env.spawn(self._run, "udp-send")

    @property
    def queued_lines(self) -> int:
        return len(self._buffer) + sum(n for _, n in self._packets)

    def _seal(self) -> None:
        if not self._buffer:
            return
        if len(self._packets) >= self._max_packets:
            _, lost = self._packets.popleft()
            self._drop(lost, "queue_full")
        self._packets.append((b"\n".join(self._buffer), len(self._buffer)))
        self._buffer = []
        self._buffer_bytes = 0
        self._wakeup.set()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._env.dropped(count, reason)
        self._warn(reason, f"{count} lines dropped ({reason.replace('_', ' ')})")

    def _warn(self, key: str, message: str) -> None:
        now = self._env.clock.monotonic()
        last = self._warned_at.get(key)
        if last is None or now - last >= _WARN_INTERVAL:
            self._warned_at[key] = now
            self._env.logger.warning("%s: udp %s: %s", self._env.name, self.address, message)

    # -- sender --------------------------------------------------------------------------------

    async def _resolve(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host or None, self._port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            self._warn("resolve", f"cannot resolve: {exc}")
            return False
        family, type_, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        self._sock = sock
        self._target = sockaddr
        return True

    def _send_all(self) -> None:
        sock, target = self._sock, self._target
        while self._packets:
            data, lines = self._packets.popleft()
            if sock is None or target is None:
                self._drop(lines, "send_failed")
                continue
            try:
                sock.sendto(data, target)
            except OSError as exc:  # includes a full socket buffer (BlockingIOError)
                self._drop(lines, "send_failed")
                self._warn("send", f"send failed: {exc}")
                if not isinstance(exc, BlockingIOError):
                    self._close_socket()  # resolve again before the next datagram
                    sock = target = None
                continue
            self.packets_sent += 1
            self.lines_sent += lines

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.flush_interval
        while True:
            timeout = next_flush - loop.time()
            if timeout > 0 and not self._packets and not self._closing:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass
            self._wakeup.clear()
            if self._closing or loop.time() >= next_flush:
                self._seal()
                next_flush = loop.time() + self.flush_interval
            if self._packets and self._sock is None:
                await self._resolve()
            self._send_all()
            if self._closing and not self._packets and not self._buffer:
                return

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._target = None

    async def close(self) -> None:
        """Send what is queued (waiting at most :attr:`flush_timeout`), then close the socket.
        Lines not sent by then are reported as dropped (``shutdown``)."""
        if self._closing:
            return
        self._seal()
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is None and self._packets:
            try:
                task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:
                task = None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self.flush_timeout)
            except TimeoutError:
                task.cancel()
        lost = self.queued_lines
        if lost:
            self._packets.clear()
            self._buffer = []
            self.dropped += lost
            self._env.dropped(lost, "shutdown")
        self._close_socket()
