"""The dogstatsd adapter: Mixer's validation cases, exact lines (values, tags from dimensions,
sampling, prefix) read from a UDP listener on 127.0.0.1, buffering, and the harness path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from mixerd.adapter import Env, InstanceInfo, ManualClock
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.dogstatsd import INFO, DogstatsdHandler, format_tags, parse_config
from mixerd.attribute import IPAddress, ValueType
from mixerd.templates import MetricInstance
from tests.support.udp_listener import UdpListener

RC = "requestcount.instance.istio-system"
RD = "requestduration.instance.istio-system"
SIZE = "requestsize.instance.istio-system"


def metric(name: str, value: ValueType = ValueType.INT64, template: str = "metric") -> InstanceInfo:
    return InstanceInfo(name, template, {"value": value})


INSTANCES = {RC: metric(RC), RD: metric(RD, ValueType.DURATION), SIZE: metric(SIZE)}
METRICS = {
    RC: {"name": "request.count", "type": "COUNTER"},
    RD: {"name": "request.duration", "type": "DISTRIBUTION"},
    SIZE: {"name": "request.size", "type": "GAUGE"},
}


def build(config: Mapping[str, Any], instances: Mapping[str, InstanceInfo] = INSTANCES) -> DogstatsdHandler:
    builder = INFO.builder(config, instances)
    assert builder.validate() == []
    handler = builder.build(Env("dogstatsd.handler.istio-system", clock=ManualClock()))
    assert isinstance(handler, DogstatsdHandler)
    return handler


def test_defaults_are_mixers() -> None:
    cfg, errors = parse_config({}, {})
    assert errors == []
    assert (cfg.address, cfg.prefix, cfg.buffer_length, cfg.sample_rate) == (
        "localhost:8125",
        "istio.",
        0,
        1.0,
    )
    assert dict(cfg.global_tags) == {} and dict(cfg.metrics) == {}


@pytest.mark.parametrize(
    ("config", "instances", "expected"),
    [
        ({"metrics": METRICS}, INSTANCES, []),
        ({"bufferLength": -1}, {}, ["bufferLength: buffer length must be >= 0"]),
        ({"sampleRate": 1.5}, {}, ["sampleRate: sampling rate must be between 0 and 1, got 1.5"]),
        ({"sampleRate": -0.1}, {}, ["sampleRate: sampling rate must be between 0 and 1, got -0.1"]),
        ({"address": ""}, {}, ["address: address is empty"]),
        ({"address": "agent"}, {}, ["address: address is malformed: address 'agent': missing port"]),
        (
            {},
            {RC: metric(RC)},
            [f"metrics: {RC} is a valid metric but is not configured to be handled by the datadog adapter"],
        ),
        (
            {"metrics": {RC: {"type": "COUNTER"}}},
            {},
            [
                f"metrics.{RC}: {RC} is not a valid metric that can be emitted "
                "(no rule sends this metric instance here)"
            ],
        ),
        (
            {"metrics": {RC: {"type": "GAUGE"}}},
            {RC: metric(RC, ValueType.DOUBLE)},
            [f"metrics.{RC}.type: Counters and Gauges must be an Int64 but metric {RC} is a DOUBLE"],
        ),
        (
            {"metrics": {RC: {"type": "DISTRIBUTION"}}},
            {RC: metric(RC, ValueType.STRING)},
            [
                f"metrics.{RC}.type: Histograms must be either a Duration or an Int64 but metric {RC} is a STRING"
            ],
        ),
        (
            {"metrics": {RC: {"name": "x"}}},
            {RC: metric(RC)},
            [f"metrics.{RC}.type: required: COUNTER, GAUGE or DISTRIBUTION"],
        ),
        (
            {"metrics": {RC: {"type": "COUNTER", "unit": "s"}}},
            {RC: metric(RC)},
            [f"metrics.{RC}.unit: unknown field"],
        ),
        ({"metrics": [RC]}, {}, ["metrics: expected a map of metric instance name -> info, got list"]),
        ({"prefix": "x", "colour": 1}, {}, ["colour: unknown field"]),
    ],
)
def test_validation(config: dict[str, Any], instances: dict[str, InstanceInfo], expected: list[str]) -> None:
    assert [str(e) for e in INFO.builder(config, instances).validate()] == expected


def test_prefix_gets_its_dot() -> None:
    assert parse_config({"prefix": "mesh"}, {})[0].prefix == "mesh."
    assert parse_config({"prefix": "mesh."}, {})[0].prefix == "mesh."
    assert parse_config({"prefix": ""}, {})[0].prefix == ""


LINE_CASES: list[tuple[str, str, Any, dict[str, Any], str | None]] = [
    ("counter", RC, 456, {}, "istio.request.count:456|c"),
    ("gauge", SIZE, 123, {}, "istio.request.size:123.000000|g"),
    ("duration", RD, dt.timedelta(milliseconds=146), {}, "istio.request.duration:146.000000|ms"),
    ("sub-ms duration", RD, dt.timedelta(microseconds=1500), {}, "istio.request.duration:1.500000|ms"),
    (
        "dimensions are tags, sorted",
        RC,
        1,
        {"response_code": 200, "destination": "reviews", "ok": True, "ip": IPAddress(bytes([10, 1, 2, 3]))},
        "istio.request.count:1|c|#destination:reviews,ip:10.1.2.3,ok:true,response_code:200",
    ),
    ("newlines leave tags", RC, 1, {"path": "/a\nb"}, "istio.request.count:1|c|#path:/ab"),
    ("float counter", RC, 1.5, {}, None),
    ("string gauge", SIZE, "7", {}, None),
    ("string distribution", RD, "slow", {}, None),
]


@pytest.mark.parametrize(
    ("case", "name", "value", "dims", "expected"), LINE_CASES, ids=[c[0] for c in LINE_CASES]
)
async def test_lines(case: str, name: str, value: Any, dims: dict[str, Any], expected: str | None) -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "metrics": METRICS})
        handler.handle_metric([MetricInstance(name, value, dims)])
        if expected is None:
            assert handler.errors == 1 and handler.sender.queued_lines == 0
        else:
            assert await udp.wait_lines(1) == [expected]
        await handler.close()


async def test_int_distribution_is_a_histogram() -> None:
    async with UdpListener() as udp:
        handler = build(
            {
                "address": udp.address,
                "prefix": "",
                "metrics": {SIZE: {"name": "size", "type": "DISTRIBUTION"}},
            },
            {SIZE: metric(SIZE)},
        )
        handler.handle_metric([MetricInstance(SIZE, 3459)])
        assert await udp.wait_lines(1) == ["size:3459.000000|h"]
        await handler.close()


async def test_global_and_metric_tags_with_dimensions_over_them() -> None:
    async with UdpListener() as udp:
        config = {
            "address": udp.address,
            "globalTags": {"env": "prod", "cluster": "east"},
            "metrics": {RC: {"name": "requests", "type": "COUNTER", "tags": {"team": "a", "source": "tag"}}},
        }
        handler = build(config, {RC: metric(RC)})
        handler.handle_metric([MetricInstance(RC, 2, {"source": "productpage"})])
        assert await udp.wait_lines(1) == [
            "istio.requests:2|c|#cluster:east,env:prod,source:productpage,team:a"
        ]
        await handler.close()


def test_format_tags() -> None:
    assert format_tags({}, {}) == ""
    assert format_tags({"b": "1"}, {"a": "2"}) == "|#b:1,a:2"


@pytest.mark.parametrize(
    ("rate", "draws", "expected"),
    [
        (0.5, [0.5, 0.51, 0.1], ["istio.request.count:1|c|@0.5", "istio.request.count:3|c|@0.5"]),
        (0.0, [0.0, 0.1, 0.9], ["istio.request.count:1|c|@0"]),
        (1.0, [0.9, 0.9, 0.9], [f"istio.request.count:{i}|c" for i in (1, 2, 3)]),
    ],
)
async def test_sampling(rate: float, draws: list[float], expected: list[str]) -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "sampleRate": rate, "metrics": METRICS})
        it = iter(draws)
        handler.random = lambda: next(it)
        handler.handle_metric([MetricInstance(RC, i) for i in (1, 2, 3)])
        assert await udp.wait_lines(len(expected)) == expected
        await handler.close()


async def test_unbuffered_sends_one_line_per_datagram() -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "metrics": METRICS})
        handler.handle_metric([MetricInstance(RC, i) for i in range(3)])
        assert await udp.wait_datagrams(3) == [b"istio.request.count:%d|c" % i for i in range(3)]
        await handler.close()


async def test_buffered_sends_buffer_length_lines_together() -> None:
    async with UdpListener() as udp:
        handler = build({"address": udp.address, "bufferLength": 2, "metrics": METRICS})
        handler.handle_metric([MetricInstance(RC, i) for i in range(5)])
        # two full datagrams at once, the fifth line after the 100 ms flush
        assert await udp.wait_datagrams(3) == [
            b"istio.request.count:0|c\nistio.request.count:1|c",
            b"istio.request.count:2|c\nistio.request.count:3|c",
            b"istio.request.count:4|c",
        ]
        await handler.close()


async def test_harness_dimensions_from_attributes() -> None:
    async with UdpListener() as udp:
        h = AdapterHarness(
            INFO,
            config={
                "address": udp.address,
                "metrics": {
                    RC: {"name": "request.count", "type": "COUNTER"},
                    RD: {"name": "request.duration", "type": "DISTRIBUTION"},
                },
            },
            instances={
                "requestcount": (
                    "metric",
                    {"value": "1", "dimensions": {"destination": 'destination.service.host | "unknown"'}},
                ),
                "requestduration": ("metric", {"value": 'response.duration | "0ms"'}),
            },
        )
        await h.report("requestcount", [{"destination.service.host": "ratings"}])
        await h.report("requestduration", [{"response.duration": dt.timedelta(milliseconds=7)}])
        assert await udp.wait_lines(2) == [
            "istio.request.count:1|c|#destination:ratings",
            "istio.request.duration:7.000000|ms",
        ]
        await h.close()
