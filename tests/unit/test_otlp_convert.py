"""OTLP spans and log records -> the console's records: tables of cases for each rule of
mixerd.api.otlp.convert."""

from __future__ import annotations

from typing import Any

import pytest

from mixerd._proto.otlp.collector.logs.v1 import logs_service_pb2
from mixerd._proto.otlp.collector.trace.v1 import trace_service_pb2
from mixerd._proto.otlp.common.v1 import common_pb2
from mixerd._proto.otlp.logs.v1 import logs_pb2
from mixerd._proto.otlp.trace.v1 import trace_pb2
from mixerd.api.otlp.convert import (
    DROPPED_ATTRIBUTES,
    MAX_ATTRIBUTES,
    MAX_BODY_CHARS,
    MAX_KEY_CHARS,
    MAX_VALUE_CHARS,
    TRUNCATED,
    BadRecord,
    Origin,
    convert_log,
    convert_span,
    count_logs,
    count_spans,
    log_records,
    origin,
    render,
    trace_records,
    transaction_id,
)
from mixerd.console.model import LogRecord, Span

TRACE = bytes(range(1, 17))
TRACE_HEX = "0102030405060708090a0b0c0d0e0f10"
SPAN = bytes([0xAB] * 8)
SPAN_HEX = "abababababababab"
PARENT = bytes(range(0xF0, 0xF8))
PARENT_HEX = "f0f1f2f3f4f5f6f7"
T0 = 1_700_000_000_000_000_000  # ns
RECEIVED = 1_800_000_000_000_000  # us


# -- builders --------------------------------------------------------------------------------


def av(value: Any) -> common_pb2.AnyValue:
    """A Python value as an OTLP AnyValue (None: an empty one)."""
    out = common_pb2.AnyValue()
    if value is None:
        pass
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, list):
        out.array_value.values.extend(av(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(kvs(value))
    else:
        raise TypeError(value)
    return out


def kvs(attrs: dict[str, Any] | list[tuple[str, Any]]) -> list[common_pb2.KeyValue]:
    items = attrs.items() if isinstance(attrs, dict) else attrs
    return [common_pb2.KeyValue(key=k, value=av(v)) for k, v in items]


def span(**fields: Any) -> trace_pb2.Span:
    attrs = fields.pop("attributes", {})
    status = fields.pop("status", None)
    s = trace_pb2.Span(
        trace_id=fields.pop("trace_id", TRACE),
        span_id=fields.pop("span_id", SPAN),
        name=fields.pop("name", "GET /reviews"),
        start_time_unix_nano=fields.pop("start", T0),
        end_time_unix_nano=fields.pop("end", T0 + 2_500_000),
        **fields,
    )
    s.attributes.extend(kvs(attrs))
    if status is not None:
        s.status.code, s.status.message = status
    return s


def log(**fields: Any) -> logs_pb2.LogRecord:
    attrs = fields.pop("attributes", {})
    body = fields.pop("body", "hello")
    r = logs_pb2.LogRecord(**fields)
    r.body.CopyFrom(av(body))
    r.attributes.extend(kvs(attrs))
    return r


WHERE = Origin(service="reviews", scope="io.opentelemetry.flask")


def one_span(**fields: Any) -> Span:
    return convert_span(span(**fields), WHERE)


def one_log(where: Origin = WHERE, **fields: Any) -> LogRecord:
    return convert_log(log(**fields), where, RECEIVED)


# -- values ----------------------------------------------------------------------------------


def kvlist(pairs: list[tuple[str, Any]]) -> common_pb2.AnyValue:
    out = common_pb2.AnyValue()
    out.kvlist_value.values.extend(kvs(pairs))
    return out


VALUES = [
    ("plain string", av("abc"), "abc"),
    ("non-ASCII string", av("grüße ✓"), "grüße ✓"),
    ("empty string", av(""), ""),
    ("true", av(True), "true"),
    ("false", av(False), "false"),
    ("int", av(-5), "-5"),
    ("int64 max", av(2**63 - 1), "9223372036854775807"),
    ("double", av(0.5), "0.5"),
    ("integral double", av(3.0), "3.0"),
    ("large double", av(1e100), "1e+100"),
    ("NaN", av(float("nan")), "NaN"),
    ("+inf", av(float("inf")), "Infinity"),
    ("-inf", av(float("-inf")), "-Infinity"),
    ("bytes", av(b"\x00\xff"), "AP8="),
    ("array", av([1, "a", True, 0.5, None]), '[1,"a",true,0.5,null]'),
    ("empty array", av([]), "[]"),
    ("kvlist", av({"k": "v", "n": {"x": 1}}), '{"k":"v","n":{"x":1}}'),
    ("kvlist, a repeated key keeps the first", kvlist([("k", 1), ("k", 2)]), '{"k":1}'),
    ("nested bytes and non-finite", av([b"\x01", float("nan"), float("-inf")]), '["AQ==","NaN","-Infinity"]'),
    ("nested non-ASCII", av(["ü"]), '["ü"]'),
    ("empty value", av(None), ""),
]


@pytest.mark.parametrize(("value", "text"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES])
def test_any_value_rendering(value: common_pb2.AnyValue, text: str) -> None:
    assert render(value) == text
    s = span()
    s.attributes.add(key="a", value=value)
    assert convert_span(s, Origin()).attributes == {"a": text}


def test_profiles_string_index_is_ignored() -> None:
    value = common_pb2.AnyValue(string_value_strindex=3)
    assert render(value) == ""
    s = span()
    s.attributes.add(key_strindex=4, value=av("x"))  # no key: profiles only
    assert convert_span(s, WHERE).attributes == {"otel.scope.name": "io.opentelemetry.flask"}


# -- attributes and bounds -------------------------------------------------------------------


def test_attributes_are_flattened_with_scope_and_status_description() -> None:
    s = one_span(attributes={"http.method": "GET", "http.status_code": 503}, status=(2, "upstream reset"))
    assert s.attributes == {
        "http.method": "GET",
        "http.status_code": "503",
        "otel.scope.name": "io.opentelemetry.flask",
        "otel.status_description": "upstream reset",
    }


def test_at_most_max_attributes_are_kept_and_the_rest_counted() -> None:
    attrs = [(f"k{i:03}", i) for i in range(MAX_ATTRIBUTES + 6)]
    s = convert_span(span(attributes=attrs), Origin())
    assert len(s.attributes) == MAX_ATTRIBUTES + 1
    assert s.attributes["k000"] == "0" and f"k{MAX_ATTRIBUTES - 1:03}" in s.attributes
    assert f"k{MAX_ATTRIBUTES:03}" not in s.attributes
    assert s.attributes[DROPPED_ATTRIBUTES] == "6"


def test_long_values_and_keys_are_cut_with_a_marker() -> None:
    long_key = "k" * (MAX_KEY_CHARS + 10)
    s = convert_span(
        span(attributes={"v": "x" * 5000, "short": "y" * MAX_VALUE_CHARS, long_key: "1"}, name="n" * 3000),
        Origin(),
    )
    assert s.attributes["v"] == "x" * MAX_VALUE_CHARS + TRUNCATED
    assert s.attributes["short"] == "y" * MAX_VALUE_CHARS
    assert s.attributes["k" * MAX_KEY_CHARS + TRUNCATED] == "1"
    assert s.name == "n" * MAX_VALUE_CHARS + TRUNCATED
    big_array = one_span(attributes={"a": list(range(2000))}).attributes["a"]
    assert big_array.endswith(TRUNCATED) and len(big_array) == MAX_VALUE_CHARS + len(TRUNCATED)


def test_repeated_and_empty_keys() -> None:
    s = convert_span(span(attributes=[("a", 1), ("a", 2), ("", "x")]), Origin())
    assert s.attributes == {"a": "1"}


# -- spans -----------------------------------------------------------------------------------

KINDS = [(0, ""), (1, "internal"), (2, "server"), (3, "client"), (4, "producer"), (5, "consumer"), (9, "9")]


@pytest.mark.parametrize(("kind", "name"), KINDS)
def test_span_kind(kind: int, name: str) -> None:
    assert one_span(kind=kind).kind == name


@pytest.mark.parametrize(("code", "status"), [(0, ""), (1, "ok"), (2, "error"), (7, "")])
def test_span_status(code: int, status: str) -> None:
    assert one_span(status=(code, "")).status == status


def test_a_whole_span() -> None:
    s = one_span(parent_span_id=PARENT, kind=2, attributes={"transaction.id": "tx-1"}, status=(1, ""))
    assert s == Span(
        trace_id=TRACE_HEX,
        span_id=SPAN_HEX,
        parent_span_id=PARENT_HEX,
        name="GET /reviews",
        service="reviews",
        start_us=T0 // 1000,
        duration_us=2500,
        transaction_id="tx-1",
        kind="server",
        status="ok",
        attributes={"transaction.id": "tx-1", "otel.scope.name": "io.opentelemetry.flask"},
    )


TIMES = [
    ("whole microseconds", T0, T0 + 2_500_000, T0 // 1000, 2500),
    ("nanoseconds rounded down", T0 + 1_999, T0 + 3_998, T0 // 1000 + 1, 1),
    ("end before start", T0, T0 - 5, T0 // 1000, 0),
    ("no end", T0, 0, T0 // 1000, 0),
    ("no times", 0, 0, 0, 0),
]


@pytest.mark.parametrize(
    ("start", "end", "start_us", "duration_us"), [t[1:] for t in TIMES], ids=[t[0] for t in TIMES]
)
def test_span_times(start: int, end: int, start_us: int, duration_us: int) -> None:
    s = one_span(start=start, end=end)
    assert (s.start_us, s.duration_us) == (start_us, duration_us)


PARENTS = [(b"", ""), (bytes(8), ""), (PARENT, PARENT_HEX)]


@pytest.mark.parametrize(("parent", "hex_id"), PARENTS, ids=["empty", "zeros", "set"])
def test_parent_span_id(parent: bytes, hex_id: str) -> None:
    assert one_span(parent_span_id=parent).parent_span_id == hex_id


BAD_SPANS = [
    ("trace id missing", {"trace_id": b""}, "trace_id is missing"),
    ("trace id short", {"trace_id": TRACE[:15]}, "trace_id is not 16 bytes long"),
    ("trace id long", {"trace_id": TRACE + b"\x00"}, "trace_id is not 16 bytes long"),
    ("trace id zeros", {"trace_id": bytes(16)}, "trace_id is all zeros"),
    ("span id missing", {"span_id": b""}, "span_id is missing"),
    ("span id of 16 bytes", {"span_id": TRACE}, "span_id is not 8 bytes long"),
    ("span id zeros", {"span_id": bytes(8)}, "span_id is all zeros"),
    ("parent id short", {"parent_span_id": b"\x01\x02\x03\x04"}, "parent_span_id is not 8 bytes long"),
]


@pytest.mark.parametrize(("fields", "reason"), [b[1:] for b in BAD_SPANS], ids=[b[0] for b in BAD_SPANS])
def test_span_with_a_bad_id_is_rejected(fields: dict[str, bytes], reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        one_span(**fields)
    assert str(caught.value) == reason


# -- transaction ids -------------------------------------------------------------------------

TRANSACTIONS: list[tuple[str, dict[str, Any] | list[tuple[str, Any]], str]] = [
    ("transaction.id", {"transaction.id": "tx-1"}, "tx-1"),
    ("transaction_id", {"transaction_id": "tx-2"}, "tx-2"),
    ("x-transaction-id", {"x-transaction-id": "tx-3"}, "tx-3"),
    ("semconv captured header (a list)", {"http.request.header.x-transaction-id": ["tx-4", "other"]}, "tx-4"),
    ("captured header as a plain string", {"http.request.header.x-transaction-id": "tx-5"}, "tx-5"),
    (
        "preference order, whatever the order sent",
        [("http.request.header.x-transaction-id", ["h"]), ("x-transaction-id", "x"), ("transaction.id", "t")],
        "t",
    ),
    ("an unusable preferred value falls back", [("transaction.id", "-"), ("x-transaction-id", "x")], "x"),
    ("integer value", {"transaction.id": 42}, "42"),
    ("trimmed", {"transaction.id": "  tx-6 "}, "tx-6"),
    ("placeholder -", {"transaction.id": "-"}, ""),
    ("placeholder null", {"x-transaction-id": "NULL"}, ""),
    ("empty", {"transaction.id": ""}, ""),
    ("empty list", {"http.request.header.x-transaction-id": []}, ""),
    ("too long", {"transaction.id": "x" * 257}, ""),
    ("control characters", {"transaction.id": "a\nb"}, ""),
    ("boolean", {"transaction.id": True}, ""),
    ("other names do not count", {"x-request-id": "r-1", "TRANSACTION.ID": "T"}, ""),
]


@pytest.mark.parametrize(
    ("attrs", "expected"), [t[1:] for t in TRANSACTIONS], ids=[t[0] for t in TRANSACTIONS]
)
def test_transaction_id_from_attributes(attrs: Any, expected: str) -> None:
    assert transaction_id(kvs(attrs)) == expected
    assert one_span(attributes=attrs).transaction_id == expected


def test_span_transaction_id_precedence_over_the_resource() -> None:
    where = Origin(service="s", transaction_id="from-resource")
    assert (
        convert_span(span(attributes={"x-transaction-id": "from-span"}), where).transaction_id == "from-span"
    )
    assert convert_span(span(), where).transaction_id == "from-resource"


# -- origins and requests --------------------------------------------------------------------


def trace_request() -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(kvs({"service.name": "reviews", "transaction.id": "tx-r"}))
    a = rs.scope_spans.add()
    a.scope.name = "flask"
    a.spans.extend([span(name="a"), span(name="b")])
    b = rs.scope_spans.add()
    b.spans.extend([span(name="c")])
    other = request.resource_spans.add()  # no service.name
    other.scope_spans.add().spans.extend([span(name="d")])
    return request


def test_trace_records_carry_their_origin() -> None:
    request = trace_request()
    assert count_spans(request) == 4
    got = [(where, s.name) for where, s in trace_records(request)]
    assert got == [
        (Origin("reviews", "tx-r", "flask"), "a"),
        (Origin("reviews", "tx-r", "flask"), "b"),
        (Origin("reviews", "tx-r", ""), "c"),
        (Origin("", "", ""), "d"),
    ]
    converted = [convert_span(s, where) for where, s in trace_records(request)]
    assert [(c.service, c.transaction_id) for c in converted] == [
        ("reviews", "tx-r"),
        ("reviews", "tx-r"),
        ("reviews", "tx-r"),
        ("", ""),
    ]


def test_service_name_of_another_type_is_rendered() -> None:
    resource = trace_pb2.ResourceSpans().resource
    resource.attributes.extend(kvs({"service.name": 7}))
    assert origin(resource, common_pb2.InstrumentationScope()).service == "7"


def test_log_records_carry_their_origin() -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(kvs({"service.name": "ratings"}))
    sl = rl.scope_logs.add()
    sl.log_records.extend([log(body="a"), log(body="b")])
    assert count_logs(request) == 2
    assert [(w.service, r.body.string_value) for w, r in log_records(request)] == [
        ("ratings", "a"),
        ("ratings", "b"),
    ]


# -- logs ------------------------------------------------------------------------------------


def test_a_whole_log_record_with_trace_context() -> None:
    r = one_log(
        time_unix_nano=T0 + 1_500,
        observed_time_unix_nano=T0 + 9_000_000,
        severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
        severity_text="Warning",
        trace_id=TRACE,
        span_id=SPAN,
        body="disk almost full",
        attributes={"disk": "/var"},
    )
    assert r == LogRecord(
        time_us=T0 // 1000 + 1,
        service="reviews",
        severity="Warning",
        body="disk almost full",
        trace_id=TRACE_HEX,
        span_id=SPAN_HEX,
        transaction_id="",
        attributes={"disk": "/var", "otel.scope.name": "io.opentelemetry.flask"},
    )


@pytest.mark.parametrize(
    ("time", "observed", "time_us"),
    [(T0, T0 + 5_000, T0 // 1000), (0, T0 + 5_000, T0 // 1000 + 5), (0, 0, RECEIVED)],
    ids=["time", "observed only (file-log receiver)", "neither: when received"],
)
def test_log_time(time: int, observed: int, time_us: int) -> None:
    assert one_log(time_unix_nano=time, observed_time_unix_nano=observed).time_us == time_us


SEVERITIES = [
    ("text wins", "warn", 17, "warn"),
    ("INFO", "", 9, "INFO"),
    ("INFO2", "", 10, "INFO2"),
    ("ERROR", "", 17, "ERROR"),
    ("FATAL4", "", 24, "FATAL4"),
    ("TRACE", "", 1, "TRACE"),
    ("unspecified", "", 0, ""),
    ("unknown number", "", 99, "99"),
]


@pytest.mark.parametrize(
    ("text", "number", "severity"), [s[1:] for s in SEVERITIES], ids=[s[0] for s in SEVERITIES]
)
def test_log_severity(text: str, number: int, severity: str) -> None:
    assert one_log(severity_text=text, severity_number=number).severity == severity


BODIES = [
    ("string", "GET /api 200", "GET /api 200"),
    ("structured", {"msg": "hi", "n": 2}, '{"msg":"hi","n":2}'),
    ("number", 3, "3"),
    ("none", None, ""),
    ("long", "x" * (MAX_BODY_CHARS + 1), "x" * MAX_BODY_CHARS + TRUNCATED),
]


@pytest.mark.parametrize(("body", "text"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES])
def test_log_body(body: Any, text: str) -> None:
    assert one_log(body=body).body == text


LOG_IDS = [
    ("no trace context", b"", b"", "", ""),
    ("zeros", bytes(16), bytes(8), "", ""),
    ("trace only", TRACE, b"", TRACE_HEX, ""),
    ("both", TRACE, SPAN, TRACE_HEX, SPAN_HEX),
]


@pytest.mark.parametrize(
    ("trace", "span_id", "trace_hex", "span_hex"), [i[1:] for i in LOG_IDS], ids=[i[0] for i in LOG_IDS]
)
def test_log_trace_context(trace: bytes, span_id: bytes, trace_hex: str, span_hex: str) -> None:
    r = one_log(trace_id=trace, span_id=span_id)
    assert (r.trace_id, r.span_id) == (trace_hex, span_hex)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": TRACE[:8]}, "trace_id is not 16 bytes long"),
        ({"span_id": SPAN[:4]}, "span_id is not 8 bytes long"),
    ],
)
def test_log_with_a_bad_id_is_rejected(fields: dict[str, bytes], reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        one_log(**fields)


BODY_TRANSACTIONS = [
    ("logfmt", "ts=2024-01-01T00:00:00Z level=info transaction_id=abc123 msg=done", "abc123"),
    ("dotted key", "transaction.id=t.1 done", "t.1"),
    ("header spelling, any case", "X-Transaction-Id: 7f3c-9a path=/x", "7f3c-9a"),
    ("quoted value", 'transaction_id="q-1" user=bob', "q-1"),
    ("JSON line", '{"level":"info","x-transaction-id":"j-1","msg":"ok"}', "j-1"),
    ("JSON with spaces", '{"transaction_id": "j-2"}', "j-2"),
    ("structured body", {"transaction_id": "s-1", "msg": "ok"}, "s-1"),
    ("first of several", "transaction_id=- then x-transaction-id=real", "real"),
    ("part of a longer key", "my_transaction_id=zzz old.transaction_id=yyy", ""),
    ("placeholder", "x-transaction-id=- done", ""),
    ("empty value", "transaction_id= next", ""),
    ("too long", "transaction_id=" + "a" * 300, ""),
    ("absent", "GET /reviews 200 12ms", ""),
]


@pytest.mark.parametrize(
    ("body", "expected"), [b[1:] for b in BODY_TRANSACTIONS], ids=[b[0] for b in BODY_TRANSACTIONS]
)
def test_log_transaction_id_from_the_body(body: Any, expected: str) -> None:
    assert one_log(body=body).transaction_id == expected


def test_log_transaction_id_precedence() -> None:
    body = "transaction_id=from-body"
    assert one_log(body=body, attributes={"transaction_id": "from-attr"}).transaction_id == "from-attr"
    assert one_log(Origin(transaction_id="from-resource"), body=body).transaction_id == "from-resource"
    assert one_log(body=body).transaction_id == "from-body"
