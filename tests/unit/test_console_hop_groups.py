"""Hop groups (the SQLite store's rows of hops): one row per transaction id of a batch, every field
back exactly."""

import pickle

import pytest

from mixerd.console.model import Batch, Hop, Peer, Reporter
from mixerd.console.store._codec import (
    HOP_GROUP_COLUMNS,
    HOP_GROUP_FIELDS,
    HOP_GROUP_FORMAT,
    CorruptGroup,
    PackCache,
    SummaryRow,
    group_hops,
    hop_group_body,
    hop_group_rows,
    hop_groups,
    hop_row,
    hops_from_group,
    pack_id,
    summarize,
)

A = Peer("shop", "frontend-v1", "frontend", "v1", "", "cluster.local/ns/shop/sa/frontend")
B = Peer("shop", "cart-v1", "cart", "v1", "cart.shop.svc.cluster.local", "")
ODD = Peer("n\x00s", "w\udcff", "ü", "", "s\x1f", "")


def _hop(
    txn: str,
    start: int,
    source: Peer = A,
    destination: Peer = B,
    reporter: Reporter = Reporter.SOURCE,
    **more: object,
) -> Hop:
    return Hop(start, 5, reporter, source, destination, txn, **more)  # type: ignore[arg-type]


_GOOD = hop_groups([_hop("t", 1), _hop("t", 2, B, A, reporter=Reporter.DESTINATION)])[0][4]
_PEERS = [[A.namespace, A.workload, A.app, A.version, A.service, A.principal],
          [B.namespace, B.workload, B.app, B.version, B.service, B.principal]]  # fmt: skip
_RECORD = [1, 5, 1, 0, 1, "", "", "", "", 0, "", 0, 0, "", "", "", ""]


def test_one_row_per_transaction_in_order_of_first_hop() -> None:
    hops = [_hop("t1", 30), _hop("t2", 10), _hop("", 5), _hop("t1", 20), _hop("", 7), _hop("t2", 40)]
    rows = hop_groups(hops)
    assert [dict(zip(HOP_GROUP_COLUMNS[:4], r[:4], strict=True)) for r in rows] == [
        {"txn": pack_id("t1"), "start_us": 20, "last_us": 30, "hops": 2},
        {"txn": pack_id("t2"), "start_us": 10, "last_us": 40, "hops": 2},
        {"txn": None, "start_us": 5, "last_us": 7, "hops": 2},  # no transaction id: together
    ]
    assert hops_from_group("t1", rows[0][4]) == [hops[0], hops[3]]
    assert hops_from_group("", rows[2][4]) == [hops[2], hops[4]]


def test_each_peer_once_per_row() -> None:
    hops = [_hop("t", 1, A, B), _hop("t", 2, A, B, reporter=Reporter.DESTINATION), _hop("t", 3, B, A)]
    version, peers, records = pickle.loads(hop_groups(hops)[0][4])
    assert version == HOP_GROUP_FORMAT == 2
    assert pickle.loads(peers) == [
        ["shop", "frontend-v1", "frontend", "v1", "", "cluster.local/ns/shop/sa/frontend"],
        ["shop", "cart-v1", "cart", "v1", "cart.shop.svc.cluster.local", ""],
    ]
    assert [r[3:5] for r in records] == [[0, 1], [0, 1], [1, 0]]
    assert all(len(r) == len(HOP_GROUP_FIELDS) for r in records)


def test_groups_with_the_same_peers_share_their_encoding() -> None:
    """The peers of a path of calls are pickled once per batch: every group along it holds the
    same bytes for them."""
    hops = [_hop("t1", 1, A, B), _hop("t2", 2, A, B), _hop("t3", 3, B, A)]
    peers = [pickle.loads(row[4])[1] for row in hop_groups(hops)]
    assert peers[0] == peers[1] != peers[2]
    assert [
        hops_from_group(t, row[4]) for t, row in zip(("t1", "t2", "t3"), hop_groups(hops), strict=True)
    ] == [[h] for h in hops]


def test_a_format_1_body_still_reads() -> None:
    """What versions before format 2 wrote: the peers' lists in the body itself."""
    body = pickle.dumps([1, _PEERS, [_RECORD, [2, 6, 2, 1, 0, *_RECORD[5:]]]], 5)
    assert hops_from_group("t", body) == [
        Hop(1, 5, Reporter.SOURCE, A, B, "t"),
        Hop(2, 6, Reporter.DESTINATION, B, A, "t"),
    ]


def test_an_id_repeated_in_a_group_is_written_once() -> None:
    """The trace id of every hop, the request and span ids of a call's two reports: one string in
    the body, the others references to it (equal strings, not the same objects, going in)."""
    trace, request, span = "ab" * 16, "7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11", "00f067aa0ba902b7"
    ids = {"trace_id": trace, "request_id": request, "span_id": span}
    copies = [{k: "".join(list(v)) for k, v in ids.items()} for _ in range(2)]
    assert copies[0]["trace_id"] is not copies[1]["trace_id"]
    hops = [_hop("t", 1, **copies[0]), _hop("t", 2, reporter=Reporter.DESTINATION, **copies[1])]
    body = hop_groups(hops)[0][4]
    assert body.count(trace.encode()) == body.count(request.encode()) == body.count(span.encode()) == 1
    assert hops_from_group("t", body) == hops


def test_every_value_comes_back_exactly() -> None:
    odd = Hop(
        start_us=-(2**70),
        duration_us=2**70,
        reporter=Reporter.UNKNOWN,
        source=ODD,
        destination=Peer(),
        transaction_id="tx",
        protocol="grpc",
        method="PO\x00ST",
        host="h\udc80",
        path="/ä/\u2028/\x1f",
        response_code=2**40,
        response_flags="UAEX,RL",
        request_bytes=0,
        response_bytes=-1,
        request_id="7C4D6A6E-7B0F-4E0C-9D6A-2A9C3E1F0B11",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="",
        parent_span_id="00f067aa0ba902b7",
    )
    assert hops_from_group("tx", hop_groups([odd])[0][4]) == [odd]


def test_a_format_it_does_not_know_gives_no_hops() -> None:
    assert hops_from_group("t", pickle.dumps([HOP_GROUP_FORMAT + 1, [], [[1]]], 5)) == []


class _Boom:
    def __reduce__(self) -> tuple[object, ...]:
        return (print, ("called",))


def test_a_body_naming_anything_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Only lists, strings and numbers come out of a body: no class or function is looked up."""
    for body in (pickle.dumps([HOP_GROUP_FORMAT, [], [_Boom()]], 5), pickle.dumps(Peer(), 5)):
        with pytest.raises(CorruptGroup, match="may not name"):
            hops_from_group("t", body)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "unreadable body"),
        (_GOOD[: len(_GOOD) // 2], "unreadable body"),  # truncated
        (b"\x00" * 40, "unreadable body"),
        (pickle.dumps("text", 5), "not a hop group"),
        (pickle.dumps([], 5), "not a hop group"),
        (pickle.dumps([0, [], []], 5), "format 0"),
        (pickle.dumps([HOP_GROUP_FORMAT, b"", []], 5)[:-1], "unreadable body"),
        (pickle.dumps([HOP_GROUP_FORMAT, _PEERS, [_RECORD]], 5), "peers are not bytes"),
        (pickle.dumps([HOP_GROUP_FORMAT, b"\x80\x05junk", [_RECORD]], 5), "unreadable peers"),
        (pickle.dumps([HOP_GROUP_FORMAT, pickle.dumps(_Boom(), 5), [_RECORD]], 5), "may not name"),
        (pickle.dumps([HOP_GROUP_FORMAT, pickle.dumps({}, 5), []], 5), "not a list"),
        (pickle.dumps([HOP_GROUP_FORMAT, pickle.dumps(_PEERS, 5), ()], 5), "not a list"),
        (pickle.dumps([HOP_GROUP_FORMAT, pickle.dumps([["a"]], 5), []], 5), "six strings"),
        # format 1 (peers in the body) and format 2 check the rest alike
        (pickle.dumps([1, {}, []], 5), "not a list"),
        (pickle.dumps([1, [["a"]], []], 5), "six strings"),
        (pickle.dumps([1, [[1, "", "", "", "", ""]], []], 5), "six strings"),
        (pickle.dumps([1, _PEERS, [_RECORD[:-1]]], 5), "fields of its format"),
        (pickle.dumps([1, _PEERS, [[*_RECORD[:5], 7, *_RECORD[6:]]]], 5), "fields"),
        (pickle.dumps([1, _PEERS, [[1.5, *_RECORD[1:]]]], 5), "fields"),
        (pickle.dumps([1, _PEERS, [tuple(_RECORD)]], 5), "fields"),
        (pickle.dumps([1, _PEERS, [[*_RECORD[:3], 2, *_RECORD[4:]]]], 5), "peer"),
        (pickle.dumps([1, _PEERS, [[*_RECORD[:4], -1, *_RECORD[5:]]]], 5), "peer"),
        (
            pickle.dumps([HOP_GROUP_FORMAT, pickle.dumps(_PEERS, 5), [[*_RECORD[:3], 2, *_RECORD[4:]]]], 5),
            "peer",
        ),
    ],
)
def test_a_damaged_body_is_refused_whole(body: bytes, reason: str) -> None:
    """A body that is not one a mixerd wrote gives no hops and no exception but CorruptGroup."""
    with pytest.raises(CorruptGroup, match=reason):
        hops_from_group("t", body)


def test_any_byte_damaged_gives_hops_or_corrupt_group() -> None:
    """Every byte of a real body changed (three ways) and every truncation: either hops of the
    right types come back (a changed character in a string) or CorruptGroup, nothing else."""
    bodies = [_GOOD[:i] for i in range(len(_GOOD))]
    bodies += [_GOOD[:i] + bytes([v]) + _GOOD[i + 1 :] for i in range(len(_GOOD)) for v in (0, 0x7F, 0xFF)]
    refused = 0
    for body in bodies:
        try:
            hops = hops_from_group("t", body)
        except CorruptGroup:
            refused += 1
            continue
        for h in hops:
            assert type(h.start_us) is int and type(h.path) is str and type(h.source) is Peer
    assert refused > len(_GOOD)


def test_the_hand_made_good_body_reads() -> None:
    """The table above damages a body that would otherwise read (so each case tests one fault)."""
    peers = pickle.dumps(_PEERS, 5)
    assert hops_from_group("t", pickle.dumps([HOP_GROUP_FORMAT, peers, [_RECORD]], 5)) == [
        Hop(1, 5, Reporter.SOURCE, A, B, "t")
    ]
    assert len(hops_from_group("t", _GOOD)) == 2


def test_a_schema_1_row_becomes_a_group_of_one() -> None:
    h = _hop("7c4d6a6e-7b0f-4e0c-9d6a-2a9c3e1f0b11", 3, request_id="r", trace_id="ab" * 16)
    assert hops_from_group(h.transaction_id, hop_group_body(*hop_row(h))) == [h]


def test_summaries_from_the_groups_match_summaries_from_the_hops() -> None:
    """``summarize`` given the batch's hop groups (the SQLite writer's one pass) answers exactly
    what it answers from the hops alone: roots by earliest start (the first one on a tie), counts
    by reporter, names once per call, errors and denials."""
    outside = Peer("unknown", "unknown", "", "", "", "")
    hops = [
        _hop("t1", 30),
        _hop("t2", 10, outside, B, reporter=Reporter.DESTINATION, response_code=503),
        _hop("", 5),
        _hop("t1", 20, B, A, reporter=Reporter.DESTINATION),
        _hop("t1", 20, A, B, reporter=Reporter.UNKNOWN, response_flags="UAEX"),
        _hop("t2", 40, A, B, response_code=0, response_flags="UF"),
    ]
    batch = Batch(hops=hops)
    plain = summarize(batch)
    grouped = summarize(batch, PackCache(), group_hops(hops))
    assert grouped == plain
    ids = PackCache()
    made: dict[bytes, SummaryRow] = {}
    rows = hop_group_rows(group_hops(hops), ids, made)
    assert rows == hop_group_rows(group_hops(hops), PackCache())
    assert summarize(batch, ids, hop_summaries=made) == plain
    by_id = {s.id: s for s in plain}
    t1, t2 = by_id[pack_id("t1")], by_id[pack_id("t2")]
    assert (t1.start_us, t1.end_us, t1.root) == (20, 35, B)
    assert (t1.src_hops, t1.dst_hops, t1.unk_hops, t1.error, t1.denied) == (1, 1, 1, True, True)
    assert (t2.root, t2.error, t2.denied) == (B, True, False)
    assert t1.namespaces == {"shop"} and "cart" in t1.names and "frontend" in t1.names
