"""Hop joining and call trees against ``tests/data/console_calls.yaml``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.console.calls import Call, build_tree, join_hops, reconstruct
from mixerd.console.model import Hop, Peer, Reporter

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "console_calls.yaml").read_text())["cases"]

T0 = 1_800_000_000_000_000
_REPORTERS = {"s": Reporter.SOURCE, "d": Reporter.DESTINATION, "u": Reporter.UNKNOWN}


def _peer(text: str) -> Peer:
    if "/" not in text:
        return Peer(workload=text)
    namespace, workload = text.split("/")
    return Peer(namespace=namespace, workload=workload, app=workload, version="v1")


def _hop(spec: dict[str, Any]) -> Hop:
    start, end = (T0 + round(ms * 1000) for ms in spec["at"])
    return Hop(
        start_us=start,
        duration_us=end - start,
        reporter=_REPORTERS[spec["r"]],
        source=_peer(spec["from"]),
        destination=_peer(spec["to"]),
        transaction_id="txn",
        response_code=spec.get("code", 200),
        response_flags=spec.get("flags", ""),
        request_id=spec.get("id", ""),
        trace_id=spec.get("trace", ""),
        span_id=spec.get("span", ""),
        parent_span_id=spec.get("parent", ""),
    )


def _describe(calls: list[Call], hops: list[Hop]) -> list[dict[str, int]]:
    index = {id(h): i for i, h in enumerate(hops)}
    out = []
    for call in calls:
        row = {}
        for key, hop in (("c", call.client), ("s", call.server), ("o", call.other)):
            if hop is not None:
                row[key] = index[id(hop)]
        if call.parent is not None:
            row["parent"] = call.parent
        if call.depth:
            row["depth"] = call.depth
        out.append(row)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_calls(case: dict[str, Any], order: str) -> None:
    hops = [_hop(h) for h in case["hops"]]
    given = hops if order == "as listed" else hops[::-1]
    calls = reconstruct(given, skew_us=round(case.get("skew_ms", 5) * 1000))
    assert _describe(calls, hops) == case["calls"]
    for i, call in enumerate(calls):
        if call.parent is not None:
            assert call.parent < i
            assert call.depth == calls[call.parent].depth + 1
        else:
            assert call.depth == 0


def test_every_record_is_in_exactly_one_call() -> None:
    for case in CASES:
        hops = [_hop(h) for h in case["hops"]]
        seen = [id(h) for call in reconstruct(hops) for h in call.records]
        assert sorted(seen) == sorted(id(h) for h in hops), case["name"]


def test_join_orders_by_start_and_leaves_parents_to_the_tree() -> None:
    hops = [_hop(h) for h in CASES[0]["hops"]]
    calls = join_hops(hops)
    assert [c.start_us for c in calls] == sorted(c.start_us for c in calls)
    assert all(c.parent is None and c.depth == 0 for c in calls)
    assert [(c.parent, c.depth) for c in build_tree(calls)] == [(None, 0), (0, 1), (1, 2)]


def test_a_joined_call_takes_each_side_from_its_own_proxy() -> None:
    client = Hop(
        start_us=T0,
        duration_us=40_000,
        reporter=Reporter.SOURCE,
        source=Peer("shop", "a", "a", "v1", principal="spiffe://cluster.local/ns/shop/sa/a"),
        destination=Peer("shop", "unknown", service="b.shop.svc.cluster.local"),
        transaction_id="txn",
        method="GET",
        path="/b",
        response_code=503,
        response_flags="URX",
        request_id="r1",
    )
    server = Hop(
        start_us=T0 + 1000,
        duration_us=38_000,
        reporter=Reporter.DESTINATION,
        source=Peer("shop", "a", "", "", principal="spiffe://cluster.local/ns/shop/sa/a"),
        destination=Peer("shop", "b", "b", "v2", "unknown"),
        transaction_id="txn",
        response_code=500,
        span_id="aaaaaaaaaaaaaaaa",
    )
    # different workload spellings keep them apart, so pair them by hand
    call = Call(client=client, server=server)
    assert call.start_us == T0 and call.duration_us == 40_000 and call.end_us == T0 + 40_000
    assert call.inner is server
    assert call.reporters == ("source", "destination")
    assert call.source == Peer("shop", "a", "a", "v1", principal="spiffe://cluster.local/ns/shop/sa/a")
    assert call.destination == Peer("shop", "b", "b", "v2", "b.shop.svc.cluster.local")
    assert call.request_id == "r1"
    assert call.span_ids == {"aaaaaaaaaaaaaaaa"}
    assert call.error and not call.denied
    assert Call(other=client).reporters == ("source",)


def test_a_call_needs_a_record_and_an_unknown_reporter_record_is_alone() -> None:
    hop = _hop({"r": "u", "from": "shop/a", "to": "shop/b", "at": [0, 1]})
    with pytest.raises(ValueError):
        Call()
    with pytest.raises(ValueError):
        Call(client=hop, other=hop)


def test_a_large_transaction_is_rebuilt_quickly() -> None:
    # one inbound call into A making 3,000 sequential calls to B, each reported by both proxies
    specs = [{"r": "d", "from": "unknown", "to": "shop/a", "at": [0, 31_000]}]
    for k in range(3000):
        start = 10 + 10 * k
        specs.append({"r": "s", "from": "shop/a", "to": "shop/b", "at": [start, start + 8]})
        specs.append({"r": "d", "from": "shop/a", "to": "shop/b", "at": [start + 1, start + 7]})
    hops = [_hop(s) for s in specs]
    began = time.perf_counter()
    calls = reconstruct(hops)
    elapsed = time.perf_counter() - began
    assert len(calls) == 3001
    assert all(c.client is not None and c.server is not None for c in calls[1:])
    assert all(c.parent == 0 for c in calls[1:])
    assert elapsed < 2.0
