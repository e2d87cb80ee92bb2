"""The API's JSON for transactions and decisions (mixerd.console.views)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mixerd.console.model import Decision, Frontend, Hop, LogRecord, Peer, Reporter, Span, Verdict
from mixerd.console.store.base import TransactionRecords, TransactionSummary
from mixerd.console.timefmt import ms, rfc3339
from mixerd.console.views import (
    decision_json,
    decisions_json,
    transaction_json,
    transaction_summary_json,
    transactions_json,
)

T0 = int(dt.datetime(2026, 12, 4, 19, 13, 20, tzinfo=dt.UTC).timestamp()) * 1_000_000
TXN = "7d1b2c2e-1f4a-4b7e-9c1d-2a3b4c5d6e7f"
RID = "7d1b2c2e-1f4a-9b7e-9c1d-2a3b4c5d6e7f"  # the same id, marked sampled by Envoy

OUTSIDE = Peer(workload="unknown")
EDGE = Peer(
    "shop", "edge", "edge", "v1", "edge.shop.svc.cluster.local", "spiffe://cluster.local/ns/shop/sa/edge"
)
A = Peer("shop", "a-v1", "a", "v1", "a.shop.svc.cluster.local", "spiffe://cluster.local/ns/shop/sa/a")
B = Peer("shop", "b-v2", "b", "v2", "b.shop.svc.cluster.local", "spiffe://cluster.local/ns/shop/sa/b")


def _hop(reporter: Reporter, src: Peer, dst: Peer, start_ms: float, end_ms: float, **kw: object) -> Hop:
    start, end = T0 + round(start_ms * 1000), T0 + round(end_ms * 1000)
    fields: dict[str, object] = {
        "protocol": "http",
        "method": "GET",
        "host": dst.service or "shop.example",
        "path": "/",
        "request_id": RID,
    }
    fields.update(kw)
    return Hop(
        start_us=start,
        duration_us=end - start,
        reporter=reporter,
        source=src,
        destination=dst,
        transaction_id=TXN,
        **fields,  # type: ignore[arg-type]
    )


def _records() -> TransactionRecords:
    hops = [
        # B's inbound first: the store's order must not matter
        _hop(Reporter.DESTINATION, A, B, 11.5, 20.25, response_code=403, response_flags="UAEX", path="/b"),
        _hop(Reporter.DESTINATION, OUTSIDE, EDGE, 0, 100, response_code=403, path="/buy"),
        _hop(Reporter.SOURCE, EDGE, A, 5, 95, response_code=403, path="/a"),
        _hop(Reporter.DESTINATION, EDGE, A, 6, 94, response_code=403, path="/a"),
        _hop(Reporter.SOURCE, A, B, 10, 21, response_code=403, path="/b"),
    ]
    deny = Decision(
        time_us=T0 + 12_000,
        frontend=Frontend.EXT_AUTHZ_GRPC,
        verdict=Verdict.DENY,
        status_code=7,
        message="b is closed",
        transaction_id=TXN,
        source=A,
        destination=Peer("shop", "b-v2", "b", "v2", "b.shop.svc.cluster.local"),
        rule="close-b.rule.shop",
        handler="denyall.denier.shop",
        attributes=("destination.workload.name", "request.path"),
        request_id=RID,
        method="GET",
        host="b.shop.svc.cluster.local",
        path="/b",
        duration_us=800,
    )
    allow = Decision(
        time_us=T0 + 1_000,
        frontend=Frontend.RATELIMIT,
        verdict=Verdict.ALLOW,
        status_code=0,
        message="",
        transaction_id=TXN,
        source=OUTSIDE,
        destination=EDGE,
        quotas={"requestcount.instance.shop": 1},
        request_id=RID,
    )
    spans = [
        Span(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "bbbbbbbbbbbbbbbb",
            "aaaaaaaaaaaaaaaa",
            "check-b",
            "a",
            T0 + 9000,
            13_000,
            TXN,
            "client",
            "error",
            {"k": "v"},
        ),
        Span(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "aaaaaaaaaaaaaaaa",
            "",
            "GET /a",
            "a",
            T0 + 7000,
            86_000,
            TXN,
            "server",
            "ok",
        ),
    ]
    logs = [
        LogRecord(
            T0 + 22_000, "a", "WARN", "b refused", "4bf92f3577b34da6a3ce929d0e0e4736", "aaaaaaaaaaaaaaaa", TXN
        ),
        LogRecord(T0 + 8_000, "a", "INFO", "buying", "", "", TXN, {"user": "alice"}),
    ]
    return TransactionRecords(TXN, hops, [deny, allow], spans, logs)


def _src(p: Peer) -> dict[str, str]:
    return {
        "namespace": p.namespace,
        "workload": p.workload,
        "app": p.app,
        "version": p.version,
        "principal": p.principal,
    }


def _dst(p: Peer) -> dict[str, str]:
    return {
        "namespace": p.namespace,
        "workload": p.workload,
        "app": p.app,
        "version": p.version,
        "service": p.service,
    }


def test_time_format() -> None:
    assert rfc3339(T0 + 123_456) == "2026-12-04T19:13:20.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert ms(1234) == 1.234 and ms(0) == 0.0


def test_transaction_detail() -> None:
    got = transaction_json(_records())
    json.dumps(got)  # serializable as is
    assert got == {
        "id": TXN,
        "start": "2026-12-04T19:13:20.000Z",
        "duration_ms": 100.0,
        "hops": [
            {
                "start": "2026-12-04T19:13:20.000Z",
                "duration_ms": 100.0,
                "depth": 0,
                "parent": None,
                "source": _src(OUTSIDE),
                "destination": _dst(EDGE),
                "request": {
                    "method": "GET",
                    "host": EDGE.service,
                    "path": "/buy",
                    "protocol": "http",
                    "id": RID,
                },
                "response": {"code": 403, "flags": ""},
                "reporters": ["destination"],
                "timings": {"destination": {"start": "2026-12-04T19:13:20.000Z", "duration_ms": 100.0}},
                "error": False,
                "denied": False,
            },
            {
                "start": "2026-12-04T19:13:20.005Z",
                "duration_ms": 90.0,
                "depth": 1,
                "parent": 0,
                "source": _src(EDGE),
                "destination": _dst(A),
                "request": {"method": "GET", "host": A.service, "path": "/a", "protocol": "http", "id": RID},
                "response": {"code": 403, "flags": ""},
                "reporters": ["source", "destination"],
                "timings": {
                    "source": {"start": "2026-12-04T19:13:20.005Z", "duration_ms": 90.0},
                    "destination": {"start": "2026-12-04T19:13:20.006Z", "duration_ms": 88.0},
                },
                "error": False,
                "denied": False,
            },
            {
                "start": "2026-12-04T19:13:20.010Z",
                "duration_ms": 11.0,
                "depth": 2,
                "parent": 1,
                "source": _src(A),
                "destination": _dst(B),
                "request": {"method": "GET", "host": B.service, "path": "/b", "protocol": "http", "id": RID},
                # what A got; B's proxy logged the UAEX flag
                "response": {"code": 403, "flags": ""},
                "reporters": ["source", "destination"],
                "timings": {
                    "source": {"start": "2026-12-04T19:13:20.010Z", "duration_ms": 11.0},
                    "destination": {"start": "2026-12-04T19:13:20.011Z", "duration_ms": 8.75},
                },
                "error": False,
                "denied": True,
            },
        ],
        "decisions": [
            {
                "time": "2026-12-04T19:13:20.001Z",
                "duration_ms": 0.0,
                "frontend": "ratelimit",
                "verdict": "allow",
                "status": {"code": 0, "name": "OK", "message": ""},
                "rule": "",
                "handler": "",
                "quotas": {"requestcount.instance.shop": 1},
                "attributes": [],
                "transaction_id": TXN,
                "source": _src(OUTSIDE),
                "destination": _dst(EDGE),
                "request": {"method": "", "host": "", "path": "", "id": RID},
                "hop": 0,
            },
            {
                "time": "2026-12-04T19:13:20.012Z",
                "duration_ms": 0.8,
                "frontend": "ext_authz_grpc",
                "verdict": "deny",
                "status": {"code": 7, "name": "PERMISSION_DENIED", "message": "b is closed"},
                "rule": "close-b.rule.shop",
                "handler": "denyall.denier.shop",
                "quotas": {},
                "attributes": ["destination.workload.name", "request.path"],
                "transaction_id": TXN,
                "source": _src(A),
                "destination": _dst(B),
                "request": {"method": "GET", "host": B.service, "path": "/b", "id": RID},
                "hop": 2,
            },
        ],
        "spans": [
            {
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "aaaaaaaaaaaaaaaa",
                "parent_span_id": "",
                "name": "GET /a",
                "service": "a",
                "kind": "server",
                "status": "ok",
                "start": "2026-12-04T19:13:20.007Z",
                "duration_ms": 86.0,
                "attributes": {},
            },
            {
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "bbbbbbbbbbbbbbbb",
                "parent_span_id": "aaaaaaaaaaaaaaaa",
                "name": "check-b",
                "service": "a",
                "kind": "client",
                "status": "error",
                "start": "2026-12-04T19:13:20.009Z",
                "duration_ms": 13.0,
                "attributes": {"k": "v"},
            },
        ],
        "logs": [
            {
                "time": "2026-12-04T19:13:20.008Z",
                "service": "a",
                "severity": "INFO",
                "body": "buying",
                "trace_id": "",
                "span_id": "",
                "attributes": {"user": "alice"},
            },
            {
                "time": "2026-12-04T19:13:20.022Z",
                "service": "a",
                "severity": "WARN",
                "body": "b refused",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "aaaaaaaaaaaaaaaa",
                "attributes": {},
            },
        ],
    }


def test_a_decision_links_to_no_hop_when_none_fits() -> None:
    records = _records()
    late = Decision(
        time_us=T0 + 500_000,
        frontend=Frontend.MIXER_CHECK,
        verdict=Verdict.ALLOW,
        status_code=0,
        message="",
        transaction_id=TXN,
        source=A,
        destination=B,
    )
    other_request = Decision(
        time_us=T0 + 12_000,
        frontend=Frontend.MIXER_CHECK,
        verdict=Verdict.ALLOW,
        status_code=0,
        message="",
        transaction_id=TXN,
        source=A,
        destination=B,
        request_id="another",
    )
    anywhere = Decision(
        time_us=T0 + 50_000,
        frontend=Frontend.EXT_AUTHZ_HTTP,
        verdict=Verdict.ALLOW,
        status_code=0,
        message="",
        transaction_id=TXN,
        source=Peer(),
        destination=Peer(),
    )
    got = transaction_json(TransactionRecords(TXN, records.hops, [late, other_request, anywhere], [], []))
    # by time: another request id fits no hop; an unknown destination goes to the call whose
    # callee-side interval holds the time with the nearest start (A's inbound record at 6 ms);
    # long after every hop fits none
    assert [d["hop"] for d in got["decisions"]] == [None, 1, None]


def test_the_clock_skew_tolerance_is_a_parameter() -> None:
    hops = [
        _hop(Reporter.SOURCE, A, B, 10, 50),
        _hop(Reporter.DESTINATION, A, B, 13, 52),
    ]
    assert len(transaction_json(TransactionRecords(TXN, hops, [], [], []))["hops"]) == 1
    assert len(transaction_json(TransactionRecords(TXN, hops, [], [], []), skew_us=1000)["hops"]) == 2


def test_a_transaction_without_hops_spans_its_other_records() -> None:
    records = _records()
    got = transaction_json(TransactionRecords(TXN, [], records.decisions, records.spans, records.logs))
    assert got["hops"] == []
    assert got["start"] == "2026-12-04T19:13:20.001Z"  # the allow decision
    assert got["duration_ms"] == 92.0  # to the end of span "GET /a" at 93 ms
    assert [d["hop"] for d in got["decisions"]] == [None, None]


def test_an_empty_transaction() -> None:
    assert transaction_json(TransactionRecords("x", [], [], [], [])) == {
        "id": "x",
        "start": None,
        "duration_ms": 0.0,
        "hops": [],
        "decisions": [],
        "spans": [],
        "logs": [],
    }


def test_transaction_list() -> None:
    summary = TransactionSummary(
        id=TXN,
        start_us=T0 + 250,
        end_us=T0 + 100_750,
        root=EDGE,
        hops=3,
        services=("a.shop.svc.cluster.local", "b.shop.svc.cluster.local"),
        error=False,
        denied=True,
    )
    assert transactions_json([summary, summary])["transactions"][1] == transaction_summary_json(summary)
    assert transaction_summary_json(summary) == {
        "id": TXN,
        "start": "2026-12-04T19:13:20.000Z",
        "duration_ms": 100.5,
        "root": {"namespace": "shop", "workload": "edge", "service": "edge.shop.svc.cluster.local"},
        "hops": 3,
        "services": ["a.shop.svc.cluster.local", "b.shop.svc.cluster.local"],
        "error": False,
        "denied": True,
    }
    assert transactions_json([]) == {"transactions": []}


@pytest.mark.parametrize(
    ("code", "name"), [(0, "OK"), (8, "RESOURCE_EXHAUSTED"), (16, "UNAUTHENTICATED"), (17, ""), (-1, "")]
)
def test_decision_status_names(code: int, name: str) -> None:
    decision = Decision(
        time_us=T0,
        frontend=Frontend.RATELIMIT,
        verdict=Verdict.QUOTA_EXHAUSTED,
        status_code=code,
        message="",
        transaction_id="",
        source=Peer(),
        destination=Peer(),
    )
    assert decision_json(decision)["status"] == {"code": code, "name": name, "message": ""}
    assert decisions_json([decision]) == {"decisions": [decision_json(decision)]}
    assert "hop" not in decision_json(decision)
