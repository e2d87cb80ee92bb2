"""The access-log converter against ``tests/data/accesslog_cases.yaml``, plus its pieces."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.core.v3 import address_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format

from mixerd.api.accesslog.convert import (
    StreamContext,
    StreamState,
    TcpBytes,
    convert_http,
    is_intermediate,
    parse_reporter_kinds,
    stream_context,
)
from mixerd.api.envoy.attributes import RESPONSE_FLAGS, parse_cluster, response_flags
from mixerd.attribute import DictBag, IPAddress, builtin_manifest, parse_duration, parse_timestamp, type_of

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "accesslog_cases.yaml").read_text())["cases"]


def _typed(value: Any) -> Any:
    if isinstance(value, dict) and "@type" in value:
        kind, text = value["@type"], str(value["value"])
        if kind == "ip":
            return IPAddress.parse(text)
        if kind == "timestamp":
            return parse_timestamp(text)
        if kind == "duration":
            return parse_duration(text)
        raise AssertionError(f"unknown typed value {value!r}")
    return value


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cases(case: dict[str, Any]) -> None:
    state = StreamState(case.get("reporter_kinds"))
    for i, step in enumerate(case["messages"]):
        body = dict(step["message"])
        if i == 0 and "identifier" in case:
            body["identifier"] = case["identifier"]
        message = json_format.ParseDict(body, als_pb2.StreamAccessLogsMessage())
        converted = state.convert(message)
        assert converted.skipped == step["skipped"]
        assert all(isinstance(b, DictBag) for b in converted.bags)
        got = [dict(b) for b in converted.bags]
        want = [{k: _typed(v) for k, v in bag.items()} for bag in step["bags"]]
        assert len(got) == len(want), f"message {i}"
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            assert sorted(g) == sorted(w), f"message {i} entry {j}: attribute names differ"
            for name in w:
                assert g[name] == w[name], f"message {i} entry {j}: {name}"
                assert type(g[name]) is type(w[name]) or isinstance(w[name], dict), name


def test_the_identifier_is_kept_per_stream_not_per_entry() -> None:
    node = {"id": "n", "cluster": "c", "metadata": {"big": "x" * 10_000}}
    first = json_format.ParseDict(
        {"identifier": {"node": node, "logName": "l"}, "httpLogs": {"logEntry": [{}]}},
        als_pb2.StreamAccessLogsMessage(),
    )
    second = json_format.ParseDict({"httpLogs": {"logEntry": [{}, {}]}}, als_pb2.StreamAccessLogsMessage())
    state = StreamState()
    state.convert(first)
    ctx = state.context
    bags = state.convert(second).bags
    assert state.context is ctx == StreamContext("l", "n", "c", None, "")
    assert [b["accesslog.node.id"] for b in bags] == ["n", "n"]
    assert all(len(repr(dict(b))) < 2000 for b in bags)


def test_response_flags_table_matches_the_proto() -> None:
    fields = accesslog_pb2.ResponseFlags.DESCRIPTOR.fields
    # One row per field, in field order (Envoy prints flags in that order).
    assert [f.name for f in fields] == [row[0] for row in RESPONSE_FLAGS]
    assert len({row[1] for row in RESPONSE_FLAGS}) == len(RESPONSE_FLAGS)
    common = accesslog_pb2.AccessLogCommon()
    assert response_flags(common) == "-"
    common.response_flags.SetInParent()
    assert response_flags(common) == "-"
    for field, short, _ in RESPONSE_FLAGS:
        c = accesslog_pb2.AccessLogCommon()
        if field == "unauthorized_details":
            c.response_flags.unauthorized_details.reason = 1
        else:
            setattr(c.response_flags, field, True)
        assert response_flags(c) == short
    everything = accesslog_pb2.AccessLogCommon()
    for field, _, _ in RESPONSE_FLAGS:
        if field == "unauthorized_details":
            everything.response_flags.unauthorized_details.SetInParent()
        else:
            setattr(everything.response_flags, field, True)
    assert response_flags(everything) == ",".join(row[1] for row in RESPONSE_FLAGS)
    # Envoy's own examples.
    c = accesslog_pb2.AccessLogCommon()
    c.response_flags.upstream_request_timeout = True
    c.response_flags.delay_injected = True
    c.response_flags.fault_injected = True
    assert response_flags(c) == "UT,DI,FI"


@pytest.mark.parametrize(
    ("cluster", "want"),
    [
        ("outbound|80||r.ns.svc.cluster.local", ("outbound", "r.ns.svc.cluster.local", "r", "ns")),
        ("inbound|9080|http|rat.prod.svc.local", ("inbound", "rat.prod.svc.local", "rat", "prod")),
        ("outbound|443||api.example.com", ("outbound", "api.example.com", "api.example.com", None)),
        ("inbound|9080||", ("inbound", None, None, None)),
        ("outbound|80|v1|a.b", ("outbound", "a.b", "a.b", None)),
        ("backend", (None, None, "backend", None)),
        ("a|b|c|d", (None, None, "a|b|c|d", None)),
        ("", (None, None, None, None)),
    ],
)  # fmt: skip
def test_parse_cluster(cluster: str, want: tuple[str | None, ...]) -> None:
    assert parse_cluster(cluster) == want


def test_parse_reporter_kinds() -> None:
    assert parse_reporter_kinds("") == {}
    assert parse_reporter_kinds(" gw = Outbound , side=inbound,") == {"gw": "outbound", "side": "inbound"}
    for bad in ("gw", "gw=sideways", "=inbound"):
        with pytest.raises(ValueError, match="LOG_NAME=inbound"):
            parse_reporter_kinds(bad)


def test_stream_context_reporter_uid_only_for_istio_node_ids() -> None:
    ident = als_pb2.StreamAccessLogsMessage.Identifier(log_name="x")
    ident.node.id = "router~10.1.2.3~ingress-7d.istio-system~istio-system.svc.cluster.local"
    assert stream_context(ident).reporter_uid == "kubernetes://ingress-7d.istio-system"
    ident.node.id = "plain-node"
    assert stream_context(ident, {"x": "outbound"}) == StreamContext("x", "plain-node", "", "outbound", "")


def test_tcp_bytes_is_bounded_and_forgets_closed_connections() -> None:
    t = TcpBytes(capacity=2)
    assert t.delta("a", 10, 1, closing=False) == (10, 1)
    assert t.delta("b", 5, 5, closing=False) == (5, 5)
    assert t.delta("c", 1, 1, closing=False) == (1, 1)
    assert len(t) == 2  # "a" was evicted: its next report counts from zero again
    assert t.delta("a", 15, 2, closing=False) == (15, 2)  # ... and evicted "b"
    assert t.delta("c", 4, 4, closing=True) == (3, 3)
    assert t.delta("b", 7, 9, closing=True) == (7, 9)
    assert len(t) == 1
    assert t.delta("", 3, 4, closing=False) == (3, 4)
    t2 = TcpBytes()
    t2.delta("x", 100, 100, closing=False)
    assert t2.delta("x", 90, 150, closing=True) == (0, 50)  # a counter that went back never goes negative
    assert len(t2) == 0


def test_intermediate_and_final_types() -> None:
    c = accesslog_pb2.AccessLogCommon()
    assert not is_intermediate(c)
    for t in ("DownstreamStart", "DownstreamPeriodic", "UpstreamPoolReady", "UpstreamPeriodic"):
        c.access_log_type = accesslog_pb2.AccessLogType.Value(t)
        assert is_intermediate(c), t
    for t in ("DownstreamEnd", "UpstreamEnd", "NotSet"):
        c.access_log_type = accesslog_pb2.AccessLogType.Value(t)
        assert not is_intermediate(c), t


def test_unparseable_addresses_are_left_out() -> None:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.downstream_remote_address.CopyFrom(
        address_pb2.Address(socket_address=address_pb2.SocketAddress(address="not-an-ip", port_value=1))
    )
    e.common_properties.downstream_local_address.pipe.path = "/tmp/sock"
    out = convert_http(e, StreamContext())
    assert "source.ip" not in out and "source.port" not in out and "destination.ip" not in out


def test_times_keep_microseconds() -> None:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.start_time.FromDatetime(dt.datetime(2030, 1, 2, 3, 4, 5, 678901))
    e.common_properties.duration.FromMicroseconds(1_234_567)
    out = convert_http(e, StreamContext())
    assert out["request.time"] == dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert out["response.duration"] == dt.timedelta(microseconds=1_234_567)
    assert out["response.time"] == out["request.time"] + out["response.duration"] == out["context.time"]


def test_every_attribute_produced_is_declared_with_its_type() -> None:
    manifest = builtin_manifest()
    seen: set[str] = set()
    for case in CASES:
        state = StreamState(case.get("reporter_kinds"))
        for i, step in enumerate(case["messages"]):
            body = dict(step["message"])
            if i == 0 and "identifier" in case:
                body["identifier"] = case["identifier"]
            for bag in state.convert(json_format.ParseDict(body, als_pb2.StreamAccessLogsMessage())).bags:
                for name, value in bag.items():
                    assert name in manifest, f"{name} is not in the stock or mixerd manifest"
                    assert type_of(value) == manifest[name], name
                    seen.add(name)
    assert len(seen) >= 56
