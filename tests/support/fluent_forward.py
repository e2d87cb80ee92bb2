"""A Fluentd forward-protocol (v1) receiver on 127.0.0.1 for tests.

It decodes the msgpack event streams of the three modes a client may send, Message
(``[tag, time, record, option?]``), Forward (``[tag, [[time, record], ...], option?]``) and
PackedForward (``[tag, <bin of concatenated [time, record]>, option?]``, gzip when the option says
``compressed: gzip``), with times as integers or EventTime (ext type 0), and answers
``{"ack": <chunk>}`` when the option carries a ``chunk``, as Fluentd's ``in_forward`` does. Every
event is kept as an :class:`Event`; every top-level message as a :class:`Received`.

Faults for tests: ``ack = False`` stops acknowledging, ``pause()``/``resume()`` stop and restart
reading from the connections, ``drop_connections()`` closes them, ``close()`` stops listening.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import struct
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgpack

__all__ = ["Event", "EventTime", "ForwardReceiver", "Received"]


@dataclass(frozen=True, slots=True)
class EventTime:
    seconds: int
    nanoseconds: int

    def datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.seconds, dt.UTC) + dt.timedelta(
            microseconds=self.nanoseconds // 1000
        )


@dataclass(frozen=True, slots=True)
class Event:
    tag: str
    time: EventTime | int
    record: dict[str, Any]


@dataclass(slots=True)
class Received:
    mode: str
    """``message``, ``forward``, ``packed`` or ``compressed``."""
    tag: str
    events: int
    option: dict[str, Any] | None = None


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        sec, nsec = struct.unpack(">II", data)
        return EventTime(sec, nsec)
    return msgpack.ExtType(code, data)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(ext_hook=_ext_hook, raw=False, strict_map_key=False)


@dataclass
class ForwardReceiver:
    ack: bool = True
    events: list[Event] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _reading: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> ForwardReceiver:
        self._reading.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aenter__(self) -> ForwardReceiver:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    # -- protocol ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        unpacker = _unpacker()
        try:
            while True:
                await self._reading.wait()
                data = await reader.read(65536)
                if not data:
                    break
                unpacker.feed(data)
                for obj in unpacker:
                    chunk = self._message(obj)
                    if chunk is not None and self.ack:
                        writer.write(msgpack.packb({"ack": chunk}))
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a malformed stream: note it and drop the connection, as Fluentd does
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._writers.discard(writer)
            writer.close()

    def _message(self, obj: Any) -> str | None:
        if not isinstance(obj, list) or len(obj) not in (2, 3, 4) or not isinstance(obj[0], str):
            raise ValueError(f"not a forward-protocol message: {obj!r}")
        tag, second = obj[0], obj[1]
        option: dict[str, Any] | None = None
        if isinstance(second, EventTime | int):  # Message mode
            if len(obj) < 3:
                raise ValueError("message mode without a record")
            option = obj[3] if len(obj) == 4 else None
            self._event(tag, second, obj[2])
            self.messages.append(Received("message", tag, 1, option))
        elif isinstance(second, list):  # Forward mode
            option = obj[2] if len(obj) == 3 else None
            for entry in second:
                self._event(tag, entry[0], entry[1])
            self.messages.append(Received("forward", tag, len(second), option))
        elif isinstance(second, bytes | str):  # PackedForward / CompressedPackedForward
            option = obj[2] if len(obj) == 3 else None
            payload = second.encode() if isinstance(second, str) else second
            mode = "packed"
            if option and option.get("compressed") == "gzip":
                payload, mode = gzip.decompress(payload), "compressed"
            inner = _unpacker()
            inner.feed(payload)
            count = 0
            for entry in inner:
                self._event(tag, entry[0], entry[1])
                count += 1
            self.messages.append(Received(mode, tag, count, option))
        else:
            raise ValueError(f"unknown forward-protocol mode: {obj!r}")
        if option and "size" in option:
            events = self.messages[-1].events
            if option["size"] != events:
                self.errors.append(f"option size {option['size']} but {events} events")
        return str(option["chunk"]) if option and "chunk" in option else None

    def _event(self, tag: str, when: Any, record: Any) -> None:
        if not isinstance(when, EventTime | int) or not isinstance(record, dict):
            raise ValueError(f"bad event: time {when!r}, record {record!r}")
        self.events.append(Event(tag, when, record))

    # -- waiting -----------------------------------------------------------------------------------

    async def wait_events(self, count: int, timeout: float = 5.0) -> list[Event]:
        """The events received once there are at least ``count`` (fails after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.events)} events after {timeout}s, wanted {count}: {self.events}"
                )
            await asyncio.sleep(0.005)
        return list(self.events)
