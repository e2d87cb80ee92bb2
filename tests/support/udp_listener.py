"""A UDP listener on 127.0.0.1 that keeps every datagram: a StatsD / DogStatsD server for tests."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

__all__ = ["UdpListener"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, sink: list[bytes]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.sink.append(data)


class UdpListener:
    """``async with UdpListener() as udp:`` then send to ``udp.address``; ``udp.datagrams`` holds
    what arrived, ``udp.lines()`` the lines of all datagrams in order."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> UdpListener:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.datagrams), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            self._transport.close()

    def lines(self) -> list[str]:
        return [line for d in self.datagrams for line in d.decode().split("\n")]

    async def wait_lines(self, count: int, timeout: float = 5.0) -> list[str]:
        """The lines received once there are at least ``count`` (fails after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.lines())} lines after {timeout}s, wanted {count}: {self.lines()}"
                )
            await asyncio.sleep(0.005)
        return self.lines()

    async def wait_datagrams(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """The datagrams received once there are at least ``count`` (fails after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while len(self.datagrams) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.datagrams)} datagrams after {timeout}s, wanted {count}")
            await asyncio.sleep(0.005)
        return list(self.datagrams)
