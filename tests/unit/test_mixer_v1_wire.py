"""Mixer v1 wire conversions: compressed attributes, Report decoding, Check responses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, report_pb2
from mixerd.adapter import code_name
from mixerd.api.mixer_v1.client import (
    build_check_request,
    build_report_request,
    decode_check_response,
    decode_referenced,
    decode_route_directive,
    encode_attributes,
)
from mixerd.api.mixer_v1.decode import ProtoBag, decode_report
from mixerd.api.mixer_v1.encode import (
    encode_precondition,
    encode_quota_result,
    encode_referenced,
)
from mixerd.api.mixer_v1.wire import (
    DELTA_ENCODING,
    GLOBAL_WORD_COUNT,
    INDEPENDENT_ENCODING,
    BadRequest,
    DictionaryMismatch,
    check_dictionary,
)
from mixerd.attribute import (
    GLOBAL_DICTIONARY,
    GLOBAL_INDEX,
    MISSING,
    Condition,
    IPAddress,
    Reference,
    ReferenceTracker,
    TrackedStringMap,
    ValueType,
)
from mixerd.cli.attrs import typed_attributes
from mixerd.config import HeaderAction
from mixerd.runtime import HeaderOperation, RouteDirective

CA = attributes_pb2.CompressedAttributes
SM = attributes_pb2.StringMap


def gi(word: str) -> int:
    return GLOBAL_INDEX[word]


EVERY_TYPE: dict[str, Any] = {
    "request.path": "/reviews/1",
    "custom.name": "productpage-v1-123",  # not a global word
    "response.code": 200,
    "request.size": -(1 << 63),
    "custom.ratio": 0.25,
    "connection.mtls": True,
    "custom.flag": False,
    "request.time": dt.datetime(2019, 11, 14, 1, 2, 3, 456789, tzinfo=dt.UTC),
    "response.time": dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.UTC),
    "response.duration": dt.timedelta(milliseconds=12, microseconds=7),
    "custom.negative": dt.timedelta(seconds=-1, microseconds=-500),
    "source.ip": IPAddress.parse("10.1.2.3"),
    "destination.ip": IPAddress(bytes([192, 168, 0, 1])),
    "origin.ip": IPAddress.parse("2001:db8::1"),
    "request.headers": {":path": "/reviews/1", "x-user": "jason", ":method": "GET"},
    "destination.labels": {},
}


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_every_type() -> None:
    msg = encode_attributes(EVERY_TYPE)
    wire = CA.FromString(msg.SerializeToString())
    bag = ProtoBag(wire)
    assert bag.to_dict() == EVERY_TYPE
    assert sorted(bag) == sorted(EVERY_TYPE)
    assert len(bag) == len(EVERY_TYPE)
    for name, value in EVERY_TYPE.items():
        assert bag[name] == value
        assert type(bag.get(name)) is (TrackedStringMap if isinstance(value, Mapping) else type(value))


def test_values_land_in_the_typed_map_of_their_python_type() -> None:
    msg = encode_attributes(EVERY_TYPE)
    assert set(msg.strings) == {gi("request.path"), msg_index(msg, "custom.name")}
    assert set(msg.int64s) == {gi("response.code"), gi("request.size")}
    assert set(msg.doubles) == {msg_index(msg, "custom.ratio")}
    assert len(msg.bools) == 2 and msg.bools[gi("connection.mtls")] is True
    assert len(msg.timestamps) == 2 and len(msg.durations) == 2
    assert msg.bytes[gi("source.ip")] == IPAddress.parse("10.1.2.3").packed
    assert msg.bytes[gi("destination.ip")] == bytes([192, 168, 0, 1])
    assert set(msg.string_maps) == {gi("request.headers"), gi("destination.labels")}
    ts = msg.timestamps[gi("response.time")]
    assert (ts.seconds, ts.nanos) == (-1, 500_000_000)
    d = msg.durations[msg_index(msg, "custom.negative")]
    assert (d.seconds, d.nanos) == (-1, -500_000)


def msg_index(msg: Any, word: str) -> int:
    return -list(msg.words).index(word) - 1


def test_encoding_uses_the_global_dictionary_then_the_message_dictionary() -> None:
    msg = encode_attributes({"request.path": "/x", "app.name": "/x", "request.method": "GET"})
    assert list(msg.words) == ["/x", "app.name"]
    assert dict(msg.strings) == {gi("request.path"): -1, -2: -1, gi("request.method"): gi("GET")}


def test_encoding_with_a_shared_word_list_leaves_the_message_words_empty() -> None:
    words = ["already-there"]
    msg = encode_attributes({"app.name": "already-there", "app.other": "new"}, words=words)
    assert list(msg.words) == []
    assert words == ["already-there", "app.name", "app.other", "new"]
    assert dict(msg.strings) == {-2: -1, -3: -4}
    assert ProtoBag(msg, default_words=words).to_dict() == {"app.name": "already-there", "app.other": "new"}


def test_manifest_converts_text_to_declared_types() -> None:
    manifest = {
        "source.ip": ValueType.IP_ADDRESS,
        "response.code": ValueType.INT64,
        "custom.ratio": ValueType.DOUBLE,
        "connection.mtls": ValueType.BOOL,
        "request.time": ValueType.TIMESTAMP,
        "response.duration": ValueType.DURATION,
        "destination.service.host": ValueType.DNS_NAME,
    }
    values = {
        "source.ip": "10.0.0.1",
        "response.code": "404",
        "custom.ratio": 3,
        "connection.mtls": "true",
        "request.time": "2020-01-01T00:00:00Z",
        "response.duration": "1.5s",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "not.in.manifest": 7,
    }
    decoded = ProtoBag(encode_attributes(values, manifest)).to_dict()
    assert decoded == {
        "source.ip": IPAddress.parse("10.0.0.1"),
        "response.code": 404,
        "custom.ratio": 3.0,
        "connection.mtls": True,
        "request.time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        "response.duration": dt.timedelta(seconds=1.5),
        "destination.service.host": "reviews.default.svc.cluster.local",
        "not.in.manifest": 7,
    }
    assert type(decoded["custom.ratio"]) is float


@pytest.mark.parametrize(
    ("vtype", "text"),
    [
        (ValueType.INT64, "404"),
        (ValueType.INT64, "0x10"),  # base prefixes, as attribute.coerce reads them
        (ValueType.INT64, "010"),  # ambiguous: rejected by both
        (ValueType.INT64, " 7 "),
        (ValueType.BOOL, "true"),
        (ValueType.BOOL, "YES"),
        (ValueType.BOOL, "0"),
        (ValueType.BOOL, "maybe"),
        (ValueType.DOUBLE, "1e3"),
        (ValueType.STRING, 12),
        (ValueType.IP_ADDRESS, " 010.0.0.1"),
        (ValueType.IP_ADDRESS, "fe80::1%eth0"),
        (ValueType.DURATION, "1m30s"),
        (ValueType.DURATION, 2),
        (ValueType.TIMESTAMP, "2020-01-01T00:00:00+01:00"),
    ],
)
def test_client_encoding_and_command_line_agree(vtype: ValueType, text: Any) -> None:
    """``encode_attributes`` with a manifest converts values as ``mixerd check`` does (attribute.coerce)."""
    manifest = {"x": vtype}
    try:
        expected: Any = typed_attributes({"x": text}, manifest)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Any = ProtoBag(encode_attributes({"x": text}, manifest)).to_dict()
    except ValueError as exc:
        got = str(exc)
    if isinstance(expected, str):
        assert isinstance(got, str), got
        assert got.startswith("attribute x: ") and got.endswith(f"is not a valid {vtype.name}")
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("values", "manifest", "message"),
    [
        ({"x": object()}, None, "attribute x: cannot send a object value"),
        ({"x": 1 << 63}, None, "attribute x: 9223372036854775808 does not fit in 64 bits"),
        ({"x": {"k": 1}}, None, "attribute x: a string map holds strings, not 'k': 1"),
        ({"x": b"\x01\x02"}, None, "attribute x: an IP address has 4 or 16 bytes, not 2"),
        ({"x": "ten"}, {"x": ValueType.INT64}, "attribute x: 'ten' is not a valid INT64"),
        ({"x": True}, {"x": ValueType.INT64}, "attribute x: True is not a valid INT64"),
        ({"x": None}, {"x": ValueType.STRING}, "attribute x: None is not a valid STRING"),
        ({"x": "nope"}, {"x": ValueType.IP_ADDRESS}, "attribute x: 'nope' is not a valid IP_ADDRESS"),
    ],
)
def test_encoding_rejects_values_it_cannot_send(
    values: dict[str, Any], manifest: dict[str, ValueType] | None, message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        encode_attributes(values, manifest)


def test_naive_datetimes_are_sent_as_utc() -> None:
    msg = encode_attributes({"request.time": dt.datetime(2020, 1, 1, 12)})
    assert ProtoBag(msg)["request.time"] == dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)


def test_sub_second_negative_duration() -> None:
    msg = CA(durations={gi("response.duration"): Duration(nanos=-5_000)})
    assert ProtoBag(msg)["response.duration"] == dt.timedelta(microseconds=-5)
    assert encode_attributes({"response.duration": dt.timedelta(microseconds=-5)}) == msg


def test_nanoseconds_are_truncated_to_microseconds() -> None:
    msg = CA(
        timestamps={gi("request.time"): Timestamp(seconds=10, nanos=1_999)},
        durations={gi("response.duration"): Duration(seconds=-2, nanos=-1_999)},
    )
    bag = ProtoBag(msg)
    assert bag["request.time"] == dt.datetime(1970, 1, 1, 0, 0, 10, 1, tzinfo=dt.UTC)
    assert bag["response.duration"] == -dt.timedelta(seconds=2, microseconds=1)


# --- dictionaries ------------------------------------------------------------------------------


def test_negative_indices_name_message_words() -> None:
    msg = CA(
        words=["app.name", "ratings", "x-user", "jason"],
        strings={-1: -2, gi("request.path"): gi("GET")},
        int64s={gi("response.code"): 503},
        string_maps={gi("request.headers"): SM(entries={-3: -4, gi(":path"): gi("GET")})},
    )
    assert ProtoBag(msg).to_dict() == {
        "app.name": "ratings",
        "request.path": "GET",
        "response.code": 503,
        "request.headers": {"x-user": "jason", ":path": "GET"},
    }


def test_global_word_count_limits_the_global_indices() -> None:
    msg = CA(strings={gi("request.method"): gi("inbound")})  # 19 -> 219
    assert ProtoBag(msg, global_word_count=220)["request.method"] == "inbound"
    assert ProtoBag(msg, global_word_count=0)["request.method"] == "inbound"  # 0: not given
    with pytest.raises(BadRequest) as err:
        ProtoBag(msg, global_word_count=111)
    assert str(err.value) == (
        "attributes.strings[request.method]: value index 219 is outside the global dictionary "
        "(the caller knows 111 words)"
    )
    assert err.value.field == "attributes.strings[request.method]"
    with pytest.raises(BadRequest, match=r"^attributes\.strings: index 201 is outside the global dictionary"):
        ProtoBag(CA(strings={gi("context.reporter.kind"): gi("GET")}), global_word_count=111)


def test_encoding_for_an_older_client_avoids_words_it_does_not_know() -> None:
    msg = encode_attributes({"request.method": "inbound", "request.path": "GET"}, global_word_count=111)
    assert list(msg.words) == ["inbound"]
    assert dict(msg.strings) == {gi("request.method"): -1, gi("request.path"): gi("GET")}
    assert ProtoBag(msg, global_word_count=111)["request.method"] == "inbound"


def test_check_dictionary() -> None:
    check_dictionary(0)
    check_dictionary(GLOBAL_WORD_COUNT)
    assert GLOBAL_WORD_COUNT == 222
    with pytest.raises(DictionaryMismatch) as err:
        check_dictionary(223)
    assert (
        str(err.value)
        == "inconsistent global dictionary versions used: mixer knows 222 words, caller knows 223"
    )
    with pytest.raises(DictionaryMismatch):
        ProtoBag(CA(), global_word_count=300)
    with pytest.raises(DictionaryMismatch):
        decode_report(report_pb2.ReportRequest(global_word_count=223))
    with pytest.raises(DictionaryMismatch):
        encode_attributes({}, global_word_count=223)


# --- malformed messages ------------------------------------------------------------------------

MALFORMED: list[tuple[str, Any, str]] = [
    (
        "name index past the message dictionary",
        CA(words=["a", "b", "c"], strings={-5: gi("GET")}),
        "attributes.strings: index -5 is outside the message dictionary (3 words)",
    ),
    (
        "name index past the global dictionary",
        CA(int64s={222: 1}),
        "attributes.int64s: index 222 is outside the global dictionary (222 words)",
    ),
    (
        "string value index",
        CA(words=["a"], strings={gi("request.path"): -2}),
        "attributes.strings[request.path]: value index -2 is outside the message dictionary (1 words)",
    ),
    (
        "string map key index",
        CA(string_maps={gi("request.headers"): SM(entries={-1: gi("GET")})}),
        "attributes.string_maps[request.headers]: key index -1 is outside the message dictionary (0 words)",
    ),
    (
        "string map value index",
        CA(string_maps={gi("request.headers"): SM(entries={gi(":path"): 500})}),
        "attributes.string_maps[request.headers]: value index 500 is outside the global dictionary "
        "(222 words)",
    ),
    (
        "string map name index",
        CA(string_maps={-3: SM()}),
        "attributes.string_maps: index -3 is outside the message dictionary (0 words)",
    ),
    (
        "doubles name index",
        CA(doubles={-1: 1.0}),
        "attributes.doubles: index -1 is outside the message dictionary (0 words)",
    ),
    (
        "bools name index",
        CA(bools={999: True}),
        "attributes.bools: index 999 is outside the global dictionary (222 words)",
    ),
    (
        "timestamps name index",
        CA(timestamps={-1: Timestamp()}),
        "attributes.timestamps: index -1 is outside the message dictionary (0 words)",
    ),
    (
        "durations name index",
        CA(durations={-1: Duration()}),
        "attributes.durations: index -1 is outside the message dictionary (0 words)",
    ),
    (
        "bytes name index",
        CA(bytes={-1: b"\x01\x02\x03\x04"}),
        "attributes.bytes: index -1 is outside the message dictionary (0 words)",
    ),
    (
        "same name in two typed maps",
        CA(strings={gi("response.code"): gi("200")}, int64s={gi("response.code"): 200}),
        "attributes.int64s: attribute 'response.code' appears in both strings and int64s",
    ),
    (
        "same name twice in one map (global and message word)",
        CA(words=["request.path"], strings={gi("request.path"): gi("GET"), -1: gi("GET")}),
        "attributes.strings: attribute 'request.path' appears twice",
    ),
    (
        "bad IP length",
        CA(bytes={gi("source.ip"): b"\x01\x02\x03\x04\x05"}),
        "attributes.bytes[source.ip]: an IP address has 4 or 16 bytes, not 5",
    ),
    (
        "timestamp beyond year 9999",
        CA(timestamps={gi("request.time"): Timestamp(seconds=253_402_300_800)}),
        "attributes.timestamps[request.time]: seconds 253402300800 is outside the supported range "
        "(years 1 to 9999)",
    ),
    (
        "timestamp with negative nanos",
        CA(timestamps={gi("request.time"): Timestamp(seconds=1, nanos=-1)}),
        "attributes.timestamps[request.time]: nanos -1 is outside 0..999999999",
    ),
    (
        "duration with a sign mismatch",
        CA(durations={gi("response.duration"): Duration(seconds=1, nanos=-1)}),
        "attributes.durations[response.duration]: seconds 1 and nanos -1 have different signs",
    ),
    (
        "negative duration with positive nanos",
        CA(durations={gi("response.duration"): Duration(seconds=-1, nanos=1)}),
        "attributes.durations[response.duration]: seconds -1 and nanos 1 have different signs",
    ),
    (
        "duration with too many nanos",
        CA(durations={gi("response.duration"): Duration(nanos=1_000_000_000)}),
        "attributes.durations[response.duration]: nanos 1000000000 is outside -999999999..999999999",
    ),
    (
        "duration beyond 10000 years",
        CA(durations={gi("response.duration"): Duration(seconds=315_576_000_001)}),
        "attributes.durations[response.duration]: seconds 315576000001 is outside the supported range "
        "(+-10000 years)",
    ),
]


@pytest.mark.parametrize(
    ("msg", "message"), [(m, e) for _, m, e in MALFORMED], ids=[c for c, _, _ in MALFORMED]
)
def test_malformed_messages_are_rejected_when_the_bag_is_built(msg: Any, message: str) -> None:
    for track in (True, False):
        with pytest.raises(BadRequest) as err:
            ProtoBag(msg, track=track)
        assert str(err.value) == message
        assert isinstance(err.value, ValueError)


def test_report_errors_name_the_attribute_set() -> None:
    req = report_pb2.ReportRequest(
        attributes=[CA(int64s={gi("response.code"): 1}), CA(bools={-1: True})],
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )
    with pytest.raises(BadRequest, match=r"^attributes\[1\]\.bools: index -1 is outside"):
        decode_report(req)
    req.repeated_attributes_semantics = DELTA_ENCODING
    with pytest.raises(BadRequest, match=r"^attributes\[1\]\.bools: index -1 is outside"):
        decode_report(req)


# --- Report ------------------------------------------------------------------------------------


def test_report_default_words_serve_sets_without_words() -> None:
    req = report_pb2.ReportRequest(
        attributes=[
            CA(strings={-1: -2}),
            CA(words=["own.attr", "own-value"], strings={-1: -2}),
        ],
        default_words=["shared.attr", "shared-value"],
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )
    bags = decode_report(req)
    assert [dict(b) for b in bags] == [{"shared.attr": "shared-value"}, {"own.attr": "own-value"}]


def test_report_independent_sets_stand_alone() -> None:
    sets: list[dict[str, Any]] = [{"request.path": "/a", "response.code": 200}, {"request.path": "/b"}]
    req = report_pb2.ReportRequest.FromString(build_report_request(sets).SerializeToString())
    assert req.repeated_attributes_semantics == INDEPENDENT_ENCODING
    assert all(len(m.words) == 0 for m in req.attributes)
    bags = decode_report(req)
    assert [dict(b) for b in bags] == sets
    assert all(type(b) is dict for b in bags)  # plain dicts: the cheapest bags to read


def test_report_delta_sets_accumulate() -> None:
    first = encode_attributes({"request.path": "/a", "response.code": 200, "request.headers": {"a": "1"}})
    second = encode_attributes({"response.code": 404, "request.id": "r2"})
    third = encode_attributes({"request.headers": {"b": "2"}})
    req = report_pb2.ReportRequest(attributes=[first, second, third])
    assert req.repeated_attributes_semantics == DELTA_ENCODING  # the proto default
    bags = decode_report(req)
    assert [dict(b) for b in bags] == [
        {"request.path": "/a", "response.code": 200, "request.headers": {"a": "1"}},
        {"request.path": "/a", "response.code": 404, "request.headers": {"a": "1"}, "request.id": "r2"},
        {"request.path": "/a", "response.code": 404, "request.headers": {"b": "2"}, "request.id": "r2"},
    ]


def test_report_delta_with_default_words() -> None:
    words: list[str] = []
    sets = [encode_attributes(v, words=words) for v in ({"app.a": "x"}, {"app.b": "y"})]
    req = report_pb2.ReportRequest(attributes=sets, default_words=words)
    assert [dict(b) for b in decode_report(req)] == [{"app.a": "x"}, {"app.a": "x", "app.b": "y"}]


def test_empty_report() -> None:
    assert decode_report(report_pb2.ReportRequest()) == []


def test_report_of_many_sets_shares_one_word_list() -> None:
    sets = [{"request.id": f"id-{i}", "source.name": "same-pod"} for i in range(50)]
    req = build_report_request(sets, global_word_count=150)
    assert req.global_word_count == 150
    assert list(req.default_words).count("same-pod") == 1
    assert [dict(b) for b in decode_report(req)] == sets


# --- reference tracking ------------------------------------------------------------------------


def test_tracking_records_absence_exact_and_map_keys() -> None:
    bag = ProtoBag(encode_attributes({"request.path": "/", "request.headers": {"x-user": "jason"}}))
    assert bag.get("request.path") == "/"
    assert bag.get("source.name") is None
    assert bag.get("source.name", MISSING) is MISSING
    headers = bag.get("request.headers")
    assert isinstance(headers, TrackedStringMap)
    assert headers.get("x-user") == "jason"
    assert headers.get("x-missing") is None
    assert "request.path" in bag and "source.name" not in bag  # not recorded
    assert bag.tracker.log() == [
        "-request.headers[x-missing]",
        "-source.name",
        "request.headers",
        "request.headers[x-user]",
        "request.path",
    ]
    assert bag.tracker.whole_maps == {"request.headers"}
    assert bag.get("request.headers") == headers
    with pytest.raises(KeyError):
        bag["not.there"]
    assert "-not.there" in bag.tracker.log()


def test_untracked_bags_record_nothing() -> None:
    bag = ProtoBag(encode_attributes({"request.headers": {"a": "b"}, "request.path": "/"}), track=False)
    assert bag.get("request.path") == "/"
    assert bag.get("nope", "dflt") == "dflt"
    assert bag.get("request.headers") == {"a": "b"}
    assert bag["request.headers"]["a"] == "b"
    assert len(bag.tracker) == 0 and not bag.tracker.whole_maps
    assert isinstance(bag, ProtoBag)


def test_untracked_get_with_a_tuple_default() -> None:
    bag = ProtoBag(CA(), track=False)
    default = (1, 2)
    assert bag.get("missing", default) is default


def test_bag_can_share_a_tracker() -> None:
    tracker = ReferenceTracker()
    bag = ProtoBag(CA(), tracker=tracker)
    bag.get("request.path")
    assert bag.tracker is tracker and tracker.log() == ["-request.path"]


def test_referenced_attributes_skip_whole_maps_and_encode_map_keys() -> None:
    bag = ProtoBag(encode_attributes({"request.path": "/", "request.headers": {"x-user": "jason"}}))
    bag.get("request.path")
    bag.get("destination.labels")
    bag.get("request.headers")["x-user"]
    bag.get("request.headers").get(":path")
    bag.get("app.name")
    got = encode_referenced(bag.tracker.references(), bag.tracker.whole_maps, GLOBAL_WORD_COUNT)
    match = check_pb2.ReferencedAttributes.AttributeMatch
    expected = check_pb2.ReferencedAttributes(
        words=["app.name", "x-user"],
        attribute_matches=[
            match(name=-1, condition=check_pb2.ReferencedAttributes.ABSENCE),
            match(name=gi("destination.labels"), condition=check_pb2.ReferencedAttributes.ABSENCE),
            match(
                name=gi("request.headers"),
                condition=check_pb2.ReferencedAttributes.ABSENCE,
                map_key=gi(":path"),
            ),
            match(name=gi("request.headers"), condition=check_pb2.ReferencedAttributes.EXACT, map_key=-2),
            match(name=gi("request.path"), condition=check_pb2.ReferencedAttributes.EXACT),
        ],
    )
    assert got == expected
    assert decode_referenced(got) == [
        "-app.name",
        "-destination.labels",
        "-request.headers[:path]",
        "request.headers[x-user]",
        "request.path",
    ]


def test_referenced_attributes_respect_the_callers_word_count() -> None:
    refs = [
        Reference("context.reporter.kind", None, Condition.EXACT),
        Reference("request.path", None, Condition.EXACT),
    ]
    match = check_pb2.ReferencedAttributes.AttributeMatch
    exact = check_pb2.ReferencedAttributes.EXACT
    assert encode_referenced(refs, (), 150) == check_pb2.ReferencedAttributes(
        words=["context.reporter.kind"],
        attribute_matches=[match(name=-1, condition=exact), match(name=gi("request.path"), condition=exact)],
    )
    # A count of 0 lets no global word through (Mixer does the same).
    assert encode_referenced(refs, (), 0) == check_pb2.ReferencedAttributes(
        words=["context.reporter.kind", "request.path"],
        attribute_matches=[match(name=-1, condition=exact), match(name=-2, condition=exact)],
    )


def test_a_map_key_never_uses_index_zero() -> None:
    # Global word 0 is "source.ip"; map_key 0 would mean "the whole map" on the wire.
    refs = [Reference("request.headers", "source.ip", Condition.EXACT)]
    got = encode_referenced(refs, {"request.headers"}, GLOBAL_WORD_COUNT)
    assert list(got.words) == ["source.ip"]
    assert got.attribute_matches[0].map_key == -1
    assert decode_referenced(got) == ["request.headers[source.ip]"]


def test_absent_whole_map_is_kept() -> None:
    bag = ProtoBag(CA())
    bag.get("request.headers")
    got = encode_referenced(bag.tracker.references(), bag.tracker.whole_maps, GLOBAL_WORD_COUNT)
    assert decode_referenced(got) == ["-request.headers"]


def test_snapshot_and_restore_go_through_the_bags_tracker() -> None:
    bag = ProtoBag(encode_attributes({"request.path": "/"}))
    bag.get("request.path")
    snap = bag.tracker.snapshot()
    bag.get("source.name")
    bag.tracker.restore(snap)
    assert bag.tracker.log() == ["request.path"]


# --- Check responses ---------------------------------------------------------------------------


def test_precondition_and_quota_results() -> None:
    referenced = encode_referenced([Reference("request.path", None, Condition.EXACT)], (), GLOBAL_WORD_COUNT)
    directive = RouteDirective(
        request_header_operations=(HeaderOperation(":path", "/v2", HeaderAction.REPLACE),),
        response_header_operations=(
            HeaderOperation("x-debug", operation=HeaderAction.REMOVE),
            HeaderOperation("x-trace", "1", HeaderAction.APPEND),
        ),
        direct_response_code=302,
        direct_response_body="moved",
    )
    pre = encode_precondition(
        status_code=7,
        message="denied",
        valid_duration=dt.timedelta(seconds=5, milliseconds=5),
        valid_use_count=100,
        referenced=referenced,
        route_directive=directive,
    )
    assert pre.status.code == 7 and pre.status.message == "denied"
    assert (pre.valid_duration.seconds, pre.valid_duration.nanos) == (5, 5_000_000)
    assert pre.valid_use_count == 100
    assert pre.referenced_attributes == referenced
    assert pre.route_directive == check_pb2.RouteDirective(
        request_header_operations=[check_pb2.HeaderOperation(name=":path", value="/v2")],
        response_header_operations=[
            check_pb2.HeaderOperation(name="x-debug", operation=check_pb2.HeaderOperation.Operation.REMOVE),
            check_pb2.HeaderOperation(name="x-trace", value="1", operation=check_pb2.HeaderOperation.APPEND),
        ],
        direct_response_code=302,
        direct_response_body="moved",
    )
    assert decode_route_directive(pre.route_directive) == directive
    assert not encode_precondition().HasField("route_directive")

    quota = encode_quota_result(
        status_code=8, message="quota exhausted", valid_duration=dt.timedelta(minutes=1), granted_amount=0
    )
    assert (quota.status.code, quota.status.message, quota.granted_amount) == (8, "quota exhausted", 0)
    assert quota.valid_duration.seconds == 60
    assert not quota.HasField("referenced_attributes")


def test_header_actions_have_the_wire_numbers() -> None:
    wire = check_pb2.HeaderOperation.Operation
    assert {a.name: int(a) for a in HeaderAction} == {n: wire.Value(n) for n in wire.keys()}  # noqa: SIM118


def test_decode_check_response() -> None:
    resp = check_pb2.CheckResponse(
        precondition=encode_precondition(
            status_code=7,
            message="PERMISSION_DENIED:denier.handler.istio-system:not allowed",
            valid_duration=dt.timedelta(seconds=90),
            valid_use_count=1000,
            referenced=encode_referenced(
                [
                    Reference("destination.service.host", None, Condition.EXACT),
                    Reference("request.headers", "x-user", Condition.ABSENCE),
                ],
                (),
                GLOBAL_WORD_COUNT,
            ),
            route_directive=RouteDirective(direct_response_code=403, direct_response_body="no"),
        )
    )
    resp.quotas["requestcount"].CopyFrom(
        encode_quota_result(valid_duration=dt.timedelta(milliseconds=250), granted_amount=1)
    )
    decoded = decode_check_response(check_pb2.CheckResponse.FromString(resp.SerializeToString()))
    assert decoded == {
        "status": "PERMISSION_DENIED",
        "message": "PERMISSION_DENIED:denier.handler.istio-system:not allowed",
        "valid_duration": "1m30s",
        "valid_use_count": 1000,
        "referenced": ["-request.headers[x-user]", "destination.service.host"],
        "route_directive": {"direct_response_code": 403, "direct_response_body": "no"},
        "quotas": {
            "requestcount": {
                "status": "OK",
                "message": "",
                "granted_amount": 1,
                "valid_duration": "250ms",
                "referenced": [],
            }
        },
    }


def test_decode_referenced_rejects_bad_indices_and_shows_regex() -> None:
    match = check_pb2.ReferencedAttributes.AttributeMatch
    regex = check_pb2.ReferencedAttributes(
        attribute_matches=[
            match(name=gi("request.path"), condition=check_pb2.ReferencedAttributes.REGEX, regex="^/a")
        ]
    )
    assert decode_referenced(regex) == ["request.path~/^/a/"]
    bad = check_pb2.ReferencedAttributes(attribute_matches=[match(name=-1)])
    with pytest.raises(ValueError, match="index -1 is outside the message dictionary"):
        decode_referenced(bad)


def test_status_code_names() -> None:
    assert [code_name(c) for c in (0, 3, 7, 8, 13, 14, 16, 99)] == [
        "OK",
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "INTERNAL",
        "UNAVAILABLE",
        "UNAUTHENTICATED",
        "99",
    ]


# --- requests ----------------------------------------------------------------------------------


def test_build_check_request() -> None:
    req = build_check_request(
        {"request.path": "/", "source.name": "pod"},
        quotas={"requestcount": 1, "bulk": (10, True)},
        dedup_id="abc-1",
    )
    wire = check_pb2.CheckRequest.FromString(req.SerializeToString())
    assert wire.global_word_count == GLOBAL_WORD_COUNT == len(GLOBAL_DICTIONARY)
    assert wire.deduplication_id == "abc-1"
    assert (wire.quotas["requestcount"].amount, wire.quotas["requestcount"].best_effort) == (1, False)
    assert (wire.quotas["bulk"].amount, wire.quotas["bulk"].best_effort) == (10, True)
    bag = ProtoBag(wire.attributes, global_word_count=wire.global_word_count)
    assert dict(bag) == {"request.path": "/", "source.name": "pod"}


def test_repr_shows_the_values() -> None:
    assert repr(ProtoBag(encode_attributes({"response.code": 1}))) == "ProtoBag({'response.code': 1})"


@pytest.mark.parametrize("overlay", [False, True], ids=["bag", "overlay"])
def test_error_explanations_do_not_leak_into_referenced_attributes(overlay: bool) -> None:
    """When an evaluation fails, the compiler re-reads attributes to explain why; those reads are
    not references. The proxy gets exactly what the evaluation itself read (as Mixer sends)."""
    from mixerd.attribute import OverlayBag
    from mixerd.lang import EvaluationError, compile

    manifest = {"custom.flag": ValueType.BOOL, "custom.n": ValueType.INT64, "custom.m": ValueType.INT64}
    # Evaluation reads custom.flag (false), skips custom.n, then fails on custom.m (a string);
    # the explanation walks custom.flag, custom.n, custom.m.
    expr = compile("conditional(custom.flag, custom.n, custom.m + 1)", manifest)

    def referenced(values: dict[str, Any]) -> tuple[Any, list[str]]:
        bag = ProtoBag(encode_attributes(values))
        try:
            result: Any = expr.evaluate(OverlayBag(bag) if overlay else bag)
        except EvaluationError as exc:
            result = exc
        wire = encode_referenced(bag.tracker.references(), bag.tracker.whole_maps, GLOBAL_WORD_COUNT)
        return result, decode_referenced(wire)

    failed, failed_refs = referenced({"custom.flag": False, "custom.m": "20"})
    assert isinstance(failed, EvaluationError) and "error converting value" in failed.message
    ok, ok_refs = referenced({"custom.flag": False, "custom.m": 20})
    assert ok == 21
    assert failed_refs == ok_refs == ["custom.flag", "custom.m"]
