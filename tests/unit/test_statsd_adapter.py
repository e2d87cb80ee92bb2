"""The statsd adapter: params and validation (Mixer's cases), exact lines for each metric type and
value, name templates, sampling, datagram packing, and what is dropped. Lines are read from a real
UDP listener on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from mixerd.adapter import Env, InstanceInfo, ManualClock
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapter.udp import UdpLineSender, split_host_port
from mixerd.adapters.statsd import (
    INFO,
    MetricType,
    StatsdHandler,
    duration_ms,
    parse_config,
    parse_name_template,
    rate_suffix,
)
from mixerd.attribute import IPAddress, ValueType
from mixerd.templates import MetricInstance
from tests.support.udp_listener import UdpListener

RC = "requestcount.instance.istio-system"
RD = "requestduration.instance.istio-system"


def build(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo] | None = None) -> StatsdHandler:
    builder = INFO.builder(config, instances or {})
    assert builder.validate() == []
    handler = builder.build(Env("statsd.handler.istio-system", clock=ManualClock()))
    assert isinstance(handler, StatsdHandler)
    return handler


# -- params ---------------------------------------------------------------------------------------


def test_defaults_are_mixers() -> None:
    cfg, errors = parse_config({})
    assert errors == []
    assert (cfg.address, cfg.prefix, cfg.flush_bytes, cfg.sampling_rate) == ("localhost:8125", "", 512, 1.0)
    assert cfg.flush_duration == dt.timedelta(milliseconds=300)
    assert dict(cfg.metrics) == {}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, []),
        ({"metrics": {"a": {"type": "COUNTER", "nameTemplate": "{{.apiMethod}}-{{.responseCode}}"}}}, []),
        ({"flush_duration": "0s", "flushBytes": 0, "sampling_rate": 2}, []),
        (
            {"metrics": {"badtemplate": {"type": "COUNTER", "nameTemplate": "{{if 1}}"}}},
            ["metrics.badtemplate.nameTemplate: cannot use template '{{if 1}}': unsupported action {{if 1}}"],
        ),
        (
            {"metrics": {"a": {"type": "GAUGE", "nameTemplate": '{{(.apiMethod) "-" (.responseCode)}}'}}},
            ["metrics.a.nameTemplate: cannot use template"],
        ),
        (
            {"metrics": {"a": {"nameTemplate": "x"}}},
            ["metrics.a.type: required: COUNTER, GAUGE or DISTRIBUTION"],
        ),
        ({"metrics": {"a": {"type": "HISTOGRAM"}}}, ["metrics.a.type: expected one of UNKNOWN, COUNTER"]),
        ({"metrics": {"a": {"type": 1, "colour": "red"}}}, ["metrics.a.colour: unknown field"]),
        ({"metrics": ["a"]}, ["metrics: expected a map of metric instance name -> info, got list"]),
        ({"flushDuration": "-1s"}, ["flushDuration: must not be negative"]),
        ({"samplingRate": -1}, ["samplingRate: sampling rate must be >= 0, got -1"]),
        ({"flushBytes": -1}, ["flushBytes: must be >= 0, got -1"]),
        ({"address": ""}, ["address: address is empty"]),
        ({"address": "statsd"}, ["address: address is malformed: address 'statsd': missing port"]),
        (
            {"address": "statsd:http"},
            ["address: address is malformed: address 'statsd:http': bad port 'http'"],
        ),
        ({"prefix": "p", "colour": "red"}, ["colour: unknown field"]),
    ],
)
def test_validation(config: dict[str, Any], expected: list[str]) -> None:
    errors = [str(e) for e in INFO.builder(config, {}).validate()]
    assert len(errors) == len(expected), errors
    for got, want in zip(errors, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_a_metrics_key_that_is_no_metric_instance_is_refused() -> None:
    infos = {RC: InstanceInfo(RC, "logentry", {})}
    errors = [str(e) for e in INFO.builder({"metrics": {RC: {"type": "COUNTER"}}}, infos).validate()]
    assert errors == [f"metrics.{RC}: instance '{RC}' is a logentry, not a metric"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:8125", ("localhost", 8125)),
        (":8125", ("", 8125)),
        ("[::1]:8125", ("::1", 8125)),
        ("10.0.0.1:0", ("10.0.0.1", 0)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["::1:8125", "[::1]8125", "host:99999", "host:", "host"])
def test_split_host_port_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(address)


# -- name templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "dims", "expected"),
    [
        (
            "{{.apiMethod}}-{{.responseCode}}",
            {"apiMethod": "methodName", "responseCode": 500},
            "methodName-500",
        ),
        ("{{ .a }}.{{.b}}", {"a": True, "b": 1.5}, "true.1.5"),
        ("req {{- .a -}} x", {"a": "A"}, "reqAx"),
        (
            "{{.d}}/{{.ip}}",
            {"d": dt.timedelta(seconds=1.5), "ip": IPAddress(bytes([10, 0, 0, 1]))},
            "1.5s/10.0.0.1",
        ),
        ("{{.missing}}", {}, "<no value>"),
        ("plain", {"a": 1}, "plain"),
    ],
)
def test_name_template_render(template: str, dims: dict[str, Any], expected: str) -> None:
    from mixerd.adapter import stringify

    assert parse_name_template(template).render(dims, stringify) == expected


# -- lines ------------------------------------------------------------------------------------------

LINE_CASES: list[tuple[str, dict[str, Any], Any, dict[str, Any], str | None]] = [
    # (case, metric info, value, dimensions, expected line or None when not sent)
    ("counter", {"type": "COUNTER"}, 456, {}, f"{RC}:456|c"),
    ("gauge", {"type": "GAUGE"}, 123, {}, f"{RC}:123|g"),
    ("negative gauge", {"type": "GAUGE"}, -3, {}, f"{RC}:-3|g"),
    ("duration distribution", {"type": "DISTRIBUTION"}, dt.timedelta(milliseconds=146), {}, f"{RC}:146|ms"),
    ("sub-ms distribution", {"type": "DISTRIBUTION"}, dt.timedelta(microseconds=1500), {}, f"{RC}:1.5|ms"),
    ("int distribution is a counter", {"type": "DISTRIBUTION"}, 3459, {}, f"{RC}:3459|c"),
    (
        "template",
        {"type": "COUNTER", "nameTemplate": "{{.apiMethod}}-{{.responseCode}}"},
        1,
        {"apiMethod": "methodName", "responseCode": 500},
        "methodName-500:1|c",
    ),
    (
        "unsafe characters from dimensions",
        {"type": "COUNTER", "nameTemplate": "{{.path}}"},
        1,
        {"path": "/a:b|c@d\ne"},
        "/a_b_c_d_e:1|c",
    ),
    ("float counter", {"type": "COUNTER"}, 1.0, {}, None),
    ("string gauge", {"type": "GAUGE"}, "bar", {}, None),
    ("duration counter", {"type": "COUNTER"}, dt.timedelta(seconds=1), {}, None),
    ("string distribution", {"type": "DISTRIBUTION"}, "not good", {}, None),
    ("bool counter", {"type": "COUNTER"}, True, {}, None),
]


@pytest.mark.parametrize(
    ("case", "info", "value", "dims", "expected"), LINE_CASES, ids=[c[0] for c in LINE_CASES]
)
async def test_lines(
    case: str, info: dict[str, Any], value: Any, dims: dict[str, Any], expected: str | None
) -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "flushDuration": "5ms", "metrics": {RC: info}})
        handler.handle_metric([MetricInstance(RC, value, dims)])
        if expected is None:
            assert handler.errors == 1
            assert handler.sender.queued_lines == 0
        else:
            assert await udp.wait_lines(1) == [expected]
        await handler.close()
        assert handler._env.drops == (1 if expected is None else 0)


async def test_prefix_and_unconfigured_metrics() -> None:
    async with UdpListener() as udp:
        handler = build(
            {"address": udp.address, "prefix": "istio", "flushDuration": "5ms", "metrics": {RC: {"type": 1}}}
        )
        handler.handle_metric([MetricInstance(RD, 5), MetricInstance(RC, 7)])
        assert await udp.wait_lines(1) == [f"istio.{RC}:7|c"]
        await handler.close()
        await asyncio.sleep(0.02)
        assert udp.lines() == [f"istio.{RC}:7|c"]


@pytest.mark.parametrize(
    ("rate", "draws", "expected"),
    [
        (0.5, [0.1, 0.7, 0.49999], [f"{RC}:1|c|@0.500000", f"{RC}:3|c|@0.500000"]),
        (0.25, [0.25, 0.2, 0.9], [f"{RC}:2|c|@0.250000"]),
        (0.0, [0.0, 0.5, 0.99], []),
        (1.0, [0.99, 0.99, 0.99], [f"{RC}:1|c", f"{RC}:2|c", f"{RC}:3|c"]),
    ],
)
async def test_sampling(rate: float, draws: list[float], expected: list[str]) -> None:
    async with UdpListener() as udp:
        handler = build(
            {
                "address": udp.address,
                "samplingRate": rate,
                "flushDuration": "1h",
                "metrics": {RC: {"type": "COUNTER"}},
            }
        )
        it = iter(draws)
        handler.random = lambda: next(it)
        handler.handle_metric([MetricInstance(RC, i) for i in (1, 2, 3)])
        await handler.close()  # flushes
        if expected:
            assert await udp.wait_lines(len(expected)) == expected
        else:
            assert udp.datagrams == []


def test_rate_and_duration_formats() -> None:
    assert rate_suffix(1.0) == "" and rate_suffix(0.1) == "|@0.100000"
    assert duration_ms(dt.timedelta(seconds=2)) == "2000"
    assert duration_ms(dt.timedelta(microseconds=1)) == "0.001"


async def test_lines_are_packed_into_datagrams_of_flush_bytes() -> None:
    async with UdpListener() as udp:
        handler = build(
            {
                "address": udp.address,
                "flushBytes": 40,
                "flushDuration": "1h",
                "metrics": {"m": {"type": "COUNTER"}},
            }
        )
        # each line is "m:NN|c" (6 bytes): six fit in 40 bytes with their newlines (6*6+5 = 41 > 40: five)
        handler.handle_metric([MetricInstance("m", 10 + i) for i in range(12)])
        await handler.close()
        assert [d.decode() for d in await udp.wait_datagrams(3)] == [
            "m:10|c\nm:11|c\nm:12|c\nm:13|c\nm:14|c",
            "m:15|c\nm:16|c\nm:17|c\nm:18|c\nm:19|c",
            "m:20|c\nm:21|c",
        ]
        assert handler.sender.lines_sent == 12 and handler.sender.packets_sent == 3


async def test_flush_duration_sends_a_partial_datagram() -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "flushDuration": "20ms", "metrics": {RC: {"type": "GAUGE"}}})
        handler.handle_metric([MetricInstance(RC, 1)])
        assert await udp.wait_lines(1) == [f"{RC}:1|g"]
        handler.handle_metric([MetricInstance(RC, 2)])
        assert await udp.wait_lines(2) == [f"{RC}:1|g", f"{RC}:2|g"]
        await handler.close()


async def test_a_line_longer_than_flush_bytes_travels_alone() -> None:
    async with UdpListener() as udp:
        sender = UdpLineSender(Env("t"), udp.address, max_packet_bytes=10, flush_interval=3600)
        for line in (b"a:1|c", b"long.metric.name:1|c", b"b:1|c"):
            sender.add(line)
        await sender.close()
        assert await udp.wait_datagrams(3) == [b"a:1|c", b"long.metric.name:1|c", b"b:1|c"]


async def test_max_lines_per_datagram() -> None:
    async with UdpListener() as udp:
        sender = UdpLineSender(Env("t"), udp.address, max_packet_bytes=1432, flush_interval=3600, max_lines=2)
        for i in range(5):
            sender.add(b"x:%d|c" % i)
        await sender.close()
        assert await udp.wait_datagrams(3) == [b"x:0|c\nx:1|c", b"x:2|c\nx:3|c", b"x:4|c"]


async def test_a_full_queue_drops_the_oldest_datagrams_and_counts_them() -> None:
    drops: list[tuple[int, str]] = []
    env = Env("t", on_drop=lambda n, r: drops.append((n, r)))
    # no running sender (no loop task started: the address resolves only in the task) - use a queue of 2
    async with UdpListener() as udp:
        sender = UdpLineSender(
            env, udp.address, max_packet_bytes=1432, flush_interval=3600, max_lines=1, max_queued_packets=2
        )
        for i in range(5):
            sender.add(b"x:%d|c" % i)  # sealed at once; the sender task has not run yet
        assert drops == [(1, "queue_full")] * 3
        await sender.close()
        assert await udp.wait_datagrams(2) == [b"x:3|c", b"x:4|c"]
        assert sender.dropped == 3


async def test_lines_added_after_close_are_dropped() -> None:
    drops: list[tuple[int, str]] = []
    async with UdpListener() as udp:
        sender = UdpLineSender(
            Env("t", on_drop=lambda n, r: drops.append((n, r))),
            udp.address,
            max_packet_bytes=512,
            flush_interval=3600,
        )
        await sender.close()
        sender.add(b"late:1|c")
        assert drops == [(1, "shutdown")]


async def test_an_unresolvable_host_drops_with_send_failed() -> None:
    drops: list[tuple[int, str]] = []
    env = Env("t", on_drop=lambda n, r: drops.append((n, r)))
    sender = UdpLineSender(env, "no-such-host.invalid:8125", max_packet_bytes=512, flush_interval=0.01)
    sender.add(b"x:1|c")
    for _ in range(500):
        if drops:
            break
        await asyncio.sleep(0.01)
    assert drops == [(1, "send_failed")]
    await sender.close()


# -- through the harness (instances compiled from attributes) ---------------------------------------


async def test_harness_stock_style_instances() -> None:
    async with UdpListener() as udp:
        h = AdapterHarness(
            INFO,
            config={
                "address": udp.address,
                "prefix": "mesh",
                "flushDuration": "5ms",
                "metrics": {
                    RC: {"type": "COUNTER", "nameTemplate": "requests.{{.destination}}.{{.code}}"},
                    RD: {"type": "DISTRIBUTION"},
                },
            },
            instances={
                "requestcount": (
                    "metric",
                    {
                        "value": "1",
                        "dimensions": {
                            "destination": 'destination.service.host | "unknown"',
                            "code": "response.code | 200",
                        },
                    },
                ),
                "requestduration": ("metric", {"value": 'response.duration | "0ms"', "dimensions": {}}),
            },
        )
        bag = {
            "destination.service.host": "reviews",
            "response.code": 503,
            "response.duration": dt.timedelta(milliseconds=12),
        }
        await h.report("requestcount", [bag, {}])
        await h.report("requestduration", [bag])
        lines = await udp.wait_lines(3)
        assert lines == ["mesh.requests.reviews.503:1|c", "mesh.requests.unknown.200:1|c", f"mesh.{RD}:12|ms"]
        await h.close()


def test_instance_types_are_seen_by_the_builder() -> None:
    infos = {RC: InstanceInfo(RC, "metric", {"value": ValueType.INT64})}
    assert INFO.builder({"metrics": {RC: {"type": MetricType.COUNTER.name}}}, infos).validate() == []
