"""The fluentd adapter: Mixer's params cases, what an entry becomes (tag, EventTime, record), and
the handler against a forward-protocol receiver on 127.0.0.1: batching, push interval, acks,
reconnection, and every kind of drop counted."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
from collections.abc import Mapping
from typing import Any

import msgpack
import pytest

from mixerd.adapter import Env, ManualClock
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.fluentd import (
    INFO,
    FluentdHandler,
    encode_event,
    event_time,
    message,
    parse_config,
    record_of,
    split_address,
)
from mixerd.attribute import IPAddress
from mixerd.templates import LogEntryInstance
from tests.support.fluent_forward import EventTime, ForwardReceiver
from tests.support.net import free_port

T0 = dt.datetime(2017, 8, 21, 10, 4, 0, 123456, tzinfo=dt.UTC)
NAME = "accesslog.instance.istio-system"


def entry(
    severity: str = "info", name: str = NAME, timestamp: dt.datetime | None = T0, **variables: Any
) -> LogEntryInstance:
    return LogEntryInstance(name, variables=variables, timestamp=timestamp, severity=severity)


class Drops:
    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []

    def __call__(self, count: int, reason: str) -> None:
        self.items.append((count, reason))

    def total(self, reason: str) -> int:
        return sum(n for n, r in self.items if r == reason)


def build(
    config: Mapping[str, Any], drops: Drops | None = None, clock: ManualClock | None = None
) -> FluentdHandler:
    builder = INFO.builder(config, {})
    assert builder.validate() == []
    env = Env("fluentd.handler.istio-system", clock=clock or ManualClock(T0), on_drop=drops)
    handler = builder.build(env)
    assert isinstance(handler, FluentdHandler)
    handler.retry_initial = handler._backoff = 0.02
    return handler


async def settle(handler: FluentdHandler, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while handler.queued:
        if loop.time() > deadline:
            raise AssertionError(f"{handler.queued} entries still queued")
        await asyncio.sleep(0.005)


# -- params -----------------------------------------------------------------------------------------


def test_defaults_are_mixers() -> None:
    cfg, errors = parse_config({})
    assert errors == []
    assert (cfg.address, cfg.host, cfg.port, cfg.integer_duration) == (
        "localhost:24224",
        "localhost",
        24224,
        False,
    )
    assert (cfg.instance_buffer_size, cfg.max_batch_size_bytes) == (1024, 8 * 1024 * 1024)
    assert cfg.push_interval == cfg.push_timeout == dt.timedelta(minutes=1)
    assert cfg.require_ack is False


@pytest.mark.parametrize(
    ("case", "config", "errors"),
    [  # Mixer's TestBuilder cases
        ("Empty Address", {"address": "", "integerDuration": False}, ["address: address is empty"]),
        (
            "Bad Address",
            {"address": "dummy"},
            ["address: address is malformed: address 'dummy': missing port"],
        ),
        ("Good Address", {"address": "1.2.3.4:1234"}, []),
        (
            "Overrides",
            {
                "address": ":0",
                "integerDuration": True,
                "maxBatchSizeBytes": 40000,
                "instanceBufferSize": 3,
                "pushIntervalDuration": "3m",
                "pushTimeoutDuration": "10s",
            },
            [],
        ),
        (
            "Bad Batch Size",
            {"address": ":0", "maxBatchSizeBytes": -14},
            ["maxBatchSizeBytes: must be >= 0, got -14"],
        ),
        (
            "Bad Instance Buffer Size",
            {"address": ":0", "instanceBufferSize": -5},
            ["instanceBufferSize: must be >= 0, got -5"],
        ),
        (
            "Bad Push Interval",
            {"address": ":0", "pushIntervalDuration": "-14ms"},
            ["pushIntervalDuration: must not be negative"],
        ),
        (
            "Bad Push Timeout",
            {"address": ":0", "push_timeout_duration": "-18ms"},
            ["push_timeout_duration: must not be negative"],
        ),
        (
            "Bad Port",
            {"address": "fluentd:forward"},
            ["address: address is malformed: address 'fluentd:forward': bad port 'forward'"],
        ),
        ("Unknown Field", {"tag": "x"}, ["tag: unknown field"]),
        ("Ack", {"requireAck": "yes"}, ["requireAck: expected true or false, got 'yes'"]),
    ],
)
def test_builder_cases(case: str, config: dict[str, Any], errors: list[str]) -> None:
    assert [str(e) for e in INFO.builder(config, {}).validate()] == errors


def test_zero_means_default() -> None:
    cfg, _ = parse_config({"instanceBufferSize": 0, "maxBatchSizeBytes": 0, "pushIntervalDuration": "0s"})
    assert (cfg.instance_buffer_size, cfg.max_batch_size_bytes) == (1024, 8 * 1024 * 1024)
    assert cfg.push_interval == dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("address", "expected"),
    [(":0", ("localhost", 0)), ("fluentd:24224", ("fluentd", 24224)), ("[::1]:24224", ("::1", 24224))],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


# -- encoding -----------------------------------------------------------------------------------------

COMPLEX = {  # Mixer's "Complex Log" case
    "String": "a string",
    "Int64": 123,
    "Double": 1.23,
    "Bool": True,
    "Time": T0,
    "Duration": dt.timedelta(seconds=1),
    "StringMap": {"A": "B", "C": "D"},
    "IPAddress": IPAddress(bytes(4)),
    "Bytes": b"b",
}


@pytest.mark.parametrize(
    ("variables", "integer_duration", "tag", "record"),
    [
        ({"String": "a string"}, False, NAME, {"String": "a string", "severity": "WARNING"}),
        ({"tag": "fluent-tag"}, False, "fluent-tag", {"severity": "WARNING", "name": NAME}),
        (
            COMPLEX,
            False,
            NAME,
            {
                "Bool": True,
                "Bytes": b"b",
                "Double": 1.23,
                "Duration": "1s",
                "IPAddress": "0.0.0.0",
                "Int64": 123,
                "String": "a string",
                "StringMap": {"A": "B", "C": "D"},
                "Time": "2017-08-21T10:04:00.123456Z",
                "severity": "WARNING",
            },
        ),
        ({"Duration": dt.timedelta(milliseconds=10)}, True, NAME, {"Duration": 10, "severity": "WARNING"}),
        ({"Duration": dt.timedelta(microseconds=1999)}, True, NAME, {"Duration": 1, "severity": "WARNING"}),
        ({"Duration": dt.timedelta(microseconds=-1999)}, True, NAME, {"Duration": -1, "severity": "WARNING"}),
        (
            {"Duration": dt.timedelta(seconds=90.5)},
            False,
            NAME,
            {"Duration": "1m30.5s", "severity": "WARNING"},
        ),
        (
            {"ip": IPAddress(b"\x00" * 10 + b"\xff\xff" + bytes([10, 1, 2, 3]))},
            False,
            NAME,
            {"ip": "10.1.2.3", "severity": "WARNING"},
        ),
        ({"severity": "overwritten"}, False, NAME, {"severity": "WARNING"}),
        ({"tag": 7, "x": None}, False, "7", {"x": None, "severity": "WARNING", "name": NAME}),
    ],
)
def test_record_of(
    variables: dict[str, Any], integer_duration: bool, tag: str, record: dict[str, Any]
) -> None:
    assert record_of(NAME, "WARNING", variables, integer_duration) == (tag, record)


@pytest.mark.parametrize(
    ("when", "seconds", "nanos"),
    [
        (T0, 1503309840, 123456000),
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), 0, 0),
        (dt.datetime(1960, 1, 1, tzinfo=dt.UTC), 0, 0),
        (dt.datetime(2017, 8, 21, 12, 4, tzinfo=dt.timezone(dt.timedelta(hours=2))), 1503309840, 0),
    ],
)
def test_event_time(when: dt.datetime, seconds: int, nanos: int) -> None:
    raw = event_time(when)
    assert raw[:2] == b"\xd7\x00" and struct.unpack(">II", raw[2:]) == (seconds, nanos)
    assert msgpack.unpackb(raw) == msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def test_message_mode_bytes() -> None:
    wire = message("t", encode_event(T0, {"a": 1}))
    assert msgpack.unpackb(wire, raw=False) == [
        "t",
        msgpack.ExtType(0, struct.pack(">II", 1503309840, 123456000)),
        {"a": 1},
    ]


# -- against a forward-protocol receiver -------------------------------------------------------------


async def test_records_arrive_with_tag_time_and_variables() -> None:
    async with ForwardReceiver() as fluent:
        handler = build({"address": fluent.address, "pushIntervalDuration": "10ms"})
        handler.handle_logentry(
            [
                entry("WARNING", String="a string", code=200, latency=dt.timedelta(milliseconds=5)),
                entry("info", tag="fluent-tag", path="/x"),
                entry("ERROR", timestamp=None, ip=IPAddress(bytes([10, 0, 0, 1]))),
            ]
        )
        events = await fluent.wait_events(3)
        assert [(e.tag, e.time, e.record) for e in events] == [
            (
                NAME,
                EventTime(1503309840, 123456000),
                {"String": "a string", "code": 200, "latency": "5ms", "severity": "WARNING"},
            ),
            (
                "fluent-tag",
                EventTime(1503309840, 123456000),
                {"path": "/x", "severity": "info", "name": NAME},
            ),
            (
                NAME,
                EventTime(1503309840, 123456000),
                {"ip": "10.0.0.1", "severity": "ERROR"},
            ),  # the clock's time
        ]
        assert {m.mode for m in fluent.messages} == {"message"} and fluent.errors == []
        await handler.close()
        assert handler.sent == 3 and handler.dropped == 0


async def test_batches_split_at_max_batch_size_bytes() -> None:
    one = len(message(NAME, encode_event(T0, {"n": 0, "pad": "x" * 40, "severity": "info"})))
    async with ForwardReceiver() as fluent:
        handler = build(
            {"address": fluent.address, "maxBatchSizeBytes": 2 * one + 10, "pushIntervalDuration": "1h"}
        )
        handler.handle_logentry([entry(n=i, pad="x" * 40) for i in range(9)])
        # two events fit in a batch: the four full batches go out without waiting for the interval
        events = await fluent.wait_events(8)
        assert [e.record["n"] for e in events] == list(range(8))
        assert handler.batches == 4 and handler.queued == 1
        await handler.close()  # the last partial batch on close
        assert [e.record["n"] for e in await fluent.wait_events(9)] == list(range(9))
        assert handler.batches == 5 and fluent.connections == 1


async def test_push_interval_sends_a_partial_batch() -> None:
    async with ForwardReceiver() as fluent:
        handler = build({"address": fluent.address, "pushIntervalDuration": "30ms"})
        handler.handle_logentry([entry(n=1)])
        await fluent.wait_events(1)
        handler.handle_logentry([entry(n=2)])
        assert [e.record["n"] for e in await fluent.wait_events(2)] == [1, 2]
        await handler.close()


async def test_a_full_queue_and_a_too_large_entry_are_dropped_and_counted() -> None:
    drops = Drops()
    async with ForwardReceiver() as fluent:
        handler = build(
            {
                "address": fluent.address,
                "instanceBufferSize": 3,
                "maxBatchSizeBytes": 100,
                "pushIntervalDuration": "10ms",
            },
            drops,
        )
        handler.handle_logentry([entry(n=i) for i in range(5)])  # the task has not run yet: 2 over
        assert drops.items == [(1, "queue_full"), (1, "queue_full")]
        await fluent.wait_events(3)
        handler.handle_logentry([entry(big="x" * 200), entry(n=9)])
        assert [e.record["n"] for e in await fluent.wait_events(4)] == [0, 1, 2, 9]
        assert drops.total("too_large") == 1
        await handler.close()
        assert handler.dropped == 3


async def test_require_ack_sends_forward_mode_with_chunks_per_tag() -> None:
    async with ForwardReceiver() as fluent:
        handler = build({"address": fluent.address, "requireAck": True, "pushIntervalDuration": "1h"})
        handler.handle_logentry([entry(n=1), entry(n=2, tag="other"), entry(n=3)])
        await handler.close()
        events = await fluent.wait_events(3)
        assert sorted((e.tag, e.record["n"]) for e in events) == [(NAME, 1), (NAME, 3), ("other", 2)]
        assert [(m.mode, m.tag, m.events) for m in fluent.messages] == [
            ("forward", NAME, 2),
            ("forward", "other", 1),
        ]
        assert all(
            m.option is not None and m.option["size"] == m.events and m.option["chunk"]
            for m in fluent.messages
        )
        assert handler.sent == 3 and fluent.errors == []


async def test_require_ack_resends_what_was_not_acknowledged() -> None:
    async with ForwardReceiver(ack=False) as fluent:
        handler = build(
            {
                "address": fluent.address,
                "requireAck": True,
                "pushIntervalDuration": "10ms",
                "pushTimeoutDuration": "50ms",
            }
        )
        handler.handle_logentry([entry(n=1)])
        await fluent.wait_events(1)
        assert handler.sent == 0  # written, never acknowledged
        fluent.ack = True
        await settle(handler)
        events = await fluent.wait_events(2)
        assert [e.record["n"] for e in events] == [1, 1]  # at-least-once: sent again on a new connection
        assert handler.sent == 1 and handler.push_failures >= 1 and fluent.connections >= 2
        await handler.close()


async def test_reconnects_after_fluentd_closes_the_connection() -> None:
    async with ForwardReceiver() as fluent:
        handler = build({"address": fluent.address, "pushIntervalDuration": "10ms"})
        handler.handle_logentry([entry(n=1)])
        await fluent.wait_events(1)
        fluent.drop_connections()
        await asyncio.sleep(0.05)
        handler.handle_logentry([entry(n=2)])
        assert [e.record["n"] for e in await fluent.wait_events(2)] == [1, 2]
        assert fluent.connections == 2 and handler.connects == 2
        await handler.close()


async def test_entries_wait_while_fluentd_is_down_then_arrive() -> None:
    port = free_port()
    drops = Drops()
    handler = build({"address": f"127.0.0.1:{port}", "pushIntervalDuration": "10ms"}, drops)
    handler.handle_logentry([entry(n=1), entry(n=2)])
    for _ in range(200):
        if handler.push_failures >= 2:
            break
        await asyncio.sleep(0.01)
    assert handler.push_failures >= 2 and handler.queued == 2
    fluent = await ForwardReceiver().start(port)
    try:
        assert [e.record["n"] for e in await fluent.wait_events(2)] == [1, 2]
        await settle(handler)
        assert drops.items == []
        await handler.close()
    finally:
        await fluent.close()


async def test_close_with_fluentd_down_counts_what_is_left() -> None:
    drops = Drops()
    handler = build({"address": f"127.0.0.1:{free_port()}", "pushIntervalDuration": "10ms"}, drops)
    handler.flush_timeout = 0.2
    handler.handle_logentry([entry(n=i) for i in range(4)])
    await handler.close()
    assert drops.items == [(4, "shutdown")]
    handler.handle_logentry([entry(n=5)])
    assert drops.items[-1] == (1, "shutdown")


async def test_nothing_is_started_before_the_first_entry() -> None:
    handler = build({"address": f"127.0.0.1:{free_port()}"})
    assert handler._task is None
    await handler.close()


async def test_through_the_harness_with_the_stock_accesslog_shape() -> None:
    async with ForwardReceiver() as fluent:
        h = AdapterHarness(
            INFO,
            config={"address": fluent.address, "integerDuration": True, "pushIntervalDuration": "10ms"},
            instances={
                "accesslog": (
                    "logentry",
                    {
                        "severity": '"Info"',
                        "timestamp": "request.time",
                        "variables": {
                            "method": 'request.method | ""',
                            "responseCode": "response.code | 0",
                            "latency": 'response.duration | "0ms"',
                            "sourceIp": 'source.ip | ip("0.0.0.0")',
                        },
                    },
                )
            },
        )
        bag = {
            "request.time": T0,
            "request.method": "GET",
            "response.code": 200,
            "response.duration": dt.timedelta(milliseconds=42),
            "source.ip": IPAddress(bytes([10, 1, 2, 3])),
        }
        await h.report("accesslog", [bag])
        [event] = await fluent.wait_events(1)
        assert event.tag == "accesslog.instance.istio-system"
        assert event.time == EventTime(1503309840, 123456000)
        assert event.record == {
            "latency": 42,
            "method": "GET",
            "responseCode": 200,
            "severity": "Info",
            "sourceIp": "10.1.2.3",
        }
        await h.close()


# -- the test receiver itself: every mode a forward client may send ------------------------------------


async def test_receiver_decodes_every_mode_and_acks_chunks() -> None:
    import gzip

    t = msgpack.ExtType(0, struct.pack(">II", 1503309840, 5))
    packed = b"".join(msgpack.packb([t, {"i": i}]) for i in range(2))
    wire = b"".join(
        [
            msgpack.packb(["a", 1503309840, {"m": 1}]),
            msgpack.packb(["b", [[t, {"f": 1}], [t, {"f": 2}]], {"chunk": "c1", "size": 2}]),
            msgpack.packb(["c", packed, {"chunk": "c2"}], use_bin_type=True),
            msgpack.packb(["d", gzip.compress(packed), {"compressed": "gzip", "size": 2}], use_bin_type=True),
        ]
    )
    async with ForwardReceiver() as fluent:
        reader, writer = await asyncio.open_connection("127.0.0.1", fluent.port)
        writer.write(wire)
        await writer.drain()
        unpacker = msgpack.Unpacker(raw=False)
        acks: list[Any] = []
        while len(acks) < 2:
            unpacker.feed(await asyncio.wait_for(reader.read(1024), 5))
            acks.extend(unpacker)
        assert acks == [{"ack": "c1"}, {"ack": "c2"}]
        events = await fluent.wait_events(7)
        assert [(e.tag, e.record) for e in events] == [
            ("a", {"m": 1}),
            ("b", {"f": 1}),
            ("b", {"f": 2}),
            ("c", {"i": 0}),
            ("c", {"i": 1}),
            ("d", {"i": 0}),
            ("d", {"i": 1}),
        ]
        assert events[0].time == 1503309840 and events[1].time == EventTime(1503309840, 5)
        assert [m.mode for m in fluent.messages] == ["message", "forward", "packed", "compressed"]
        assert fluent.errors == []
        writer.close()
        await writer.wait_closed()
