"""Report sets decoded only as far as the config in force reads them (``decode_report(wanted=)``),
and completed when a config that reads more comes into force before they are dispatched."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mixerd._proto.mixer.v1 import attributes_pb2, report_pb2
from mixerd.adapter import load_adapters
from mixerd.api.caller import CALLER_PRINCIPAL
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.api.mixer_v1.decode import decode_report
from mixerd.api.mixer_v1.wire import DELTA_ENCODING, INDEPENDENT_ENCODING, BadRequest
from mixerd.attribute import (
    GLOBAL_INDEX,
    IPAddress,
    PartialAttributes,
    entries_read,
    map_entry,
    merge_reads,
)
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime
from tests.unit.test_mixer_v1_wire import EVERY_TYPE, MALFORMED
from tests.unit.test_runtime import SPY, Spy, spy_config, store_of

CA = attributes_pb2.CompressedAttributes
SM = attributes_pb2.StringMap

# What costs something to decode: string maps, timestamps, durations, IP addresses.
COSTLY = {
    name
    for name, value in EVERY_TYPE.items()
    if isinstance(value, dict | dt.datetime | dt.timedelta | IPAddress)
}


def runtime_of(store: MemoryStore) -> Runtime:
    return Runtime(store, adapters={**load_adapters(), "spy": SPY})


def request_of(*sets: dict[str, Any]) -> report_pb2.ReportRequest:
    return report_pb2.ReportRequest.FromString(build_report_request(sets).SerializeToString())


@pytest.mark.parametrize("wanted", [frozenset(), frozenset({"source.ip", "request.headers"})])
def test_only_the_wanted_costly_values_are_decoded_and_complete_gives_the_rest(
    wanted: frozenset[str],
) -> None:
    (bag,) = decode_report(request_of(EVERY_TYPE), wanted=wanted)
    assert type(bag) is PartialAttributes
    assert bag.decoded_for is wanted
    # Strings, numbers and bools are decoded anyway (reading them is their check).
    assert set(bag) == (set(EVERY_TYPE) - COSTLY) | (COSTLY & wanted)
    assert set(bag.rest) == COSTLY - wanted
    assert {k: bag[k] for k in bag} == {k: EVERY_TYPE[k] for k in bag}
    assert bag.covers(wanted)
    assert bag.covers(frozenset({"request.path", "custom.unknown"}))  # names the set lacks
    assert bag.covers(wanted | {"request.time"}) == ("request.time" in wanted)
    bag.complete()
    assert dict(bag) == EVERY_TYPE
    assert not bag.rest
    assert bag.covers(frozenset(EVERY_TYPE))


def test_without_wanted_or_with_delta_encoding_every_value_is_decoded() -> None:
    (bag,) = decode_report(request_of(EVERY_TYPE))
    assert type(bag) is dict and bag == EVERY_TYPE
    req = request_of(EVERY_TYPE)
    req.repeated_attributes_semantics = DELTA_ENCODING
    (bag,) = decode_report(req, wanted=frozenset())
    assert type(bag) is dict and bag == EVERY_TYPE


# Entries read of string maps: keys that are global words (x-request-id), message words
# (x-user), keys the sets lack, a map read whole next to one read by entry.
HEADERS = "request.headers"
ENTRY_WANTED = [
    frozenset({map_entry(HEADERS, "x-user")}),
    frozenset({map_entry(HEADERS, "x-request-id"), map_entry(HEADERS, ":path"), "source.ip"}),
    frozenset({map_entry(HEADERS, "absent"), map_entry("destination.labels", "app")}),
    frozenset({map_entry(HEADERS, "x-user"), "destination.labels", map_entry("source.labels", "k]")}),
    frozenset({map_entry(HEADERS, "x-user"), HEADERS}),  # read whole: no entry need is left
]
ENTRY_SETS: list[dict[str, Any]] = [
    EVERY_TYPE,
    {**EVERY_TYPE, HEADERS: {"x-request-id": "r-1", "x-user": "", "x-b3-traceid": "ab" * 8}},
    {HEADERS: {}, "destination.labels": {"app": "cart", "version": "v1"}, "source.labels": {"k]": "v"}},
    {"request.path": "/no/maps"},
]


@pytest.mark.parametrize("wanted", ENTRY_WANTED, ids=range(len(ENTRY_WANTED)))
@pytest.mark.parametrize("own_words", [False, True], ids=["default words", "own words"])
def test_maps_read_by_entry_decode_those_entries_and_complete_as_eager_decoding(
    wanted: frozenset[str], own_words: bool
) -> None:
    req = request_of(*ENTRY_SETS)
    if own_words:  # each set with words of its own (the default words moved into every set)
        for msg in req.attributes:
            msg.words.extend(req.default_words)
        del req.default_words[:]
    eager = decode_report(req)
    bags = decode_report(req, wanted=wanted)
    needs = entries_read(wanted)
    assert (HEADERS in needs) == (HEADERS not in wanted)
    for bag, full in zip(bags, eager, strict=True):
        assert type(bag) is PartialAttributes
        for name, value in full.items():
            if name in needs:
                assert bag[name] == {k: v for k, v in value.items() if k in needs[name]}
                assert name in bag.rest
            elif name in wanted or not isinstance(value, dict | dt.datetime | dt.timedelta | IPAddress):
                assert bag[name] == value
            else:
                assert name not in bag and name in bag.rest
        assert bag.covers(wanted)
        others = frozenset({map_entry(name, "other") for name in needs})
        assert bag.covers(others) == (not bag.rest.keys() & needs.keys())
        assert bag.covers(frozenset(needs)) == (not bag.rest.keys() & needs.keys())
        bag.complete()
        assert dict(bag) == full and not bag.rest


def test_an_entry_key_sent_under_several_word_indices_is_decoded_as_eager_decoding_does() -> None:
    # x-request-id twice: as its global word and as a message word (any index may name a key).
    entries = {GLOBAL_INDEX["x-request-id"]: GLOBAL_INDEX["GET"], -1: -2, GLOBAL_INDEX[":path"]: -2}
    msg = CA(words=["x-request-id", "second"], string_maps={GLOBAL_INDEX[HEADERS]: SM(entries=entries)})
    req = report_pb2.ReportRequest(attributes=[msg], repeated_attributes_semantics=INDEPENDENT_ENCODING)
    (full,) = decode_report(req)
    (bag,) = decode_report(req, wanted=frozenset({map_entry(HEADERS, "x-request-id")}))
    assert bag[HEADERS] == {"x-request-id": full[HEADERS]["x-request-id"]}


def test_merged_reads_keep_entries_only_of_maps_nobody_reads_whole() -> None:
    a, b = map_entry(HEADERS, "a"), map_entry("source.labels", "app")
    assert merge_reads([a, b, "request.path"]) == {a, b, "request.path"}
    assert merge_reads([a, b, HEADERS]) == {b, HEADERS}
    assert entries_read(frozenset({a, b, "source.labels"})) == {HEADERS: {"a"}}
    assert entries_read(frozenset({map_entry(HEADERS, "[x]"), map_entry(HEADERS, "")})) == {
        HEADERS: {"[x]", ""}
    }


@pytest.mark.parametrize(
    ("msg", "message"), [(m, e) for _, m, e in MALFORMED], ids=[c for c, _, _ in MALFORMED]
)
@pytest.mark.parametrize(
    "wanted",
    [
        frozenset(),
        frozenset(GLOBAL_INDEX),
        frozenset(map_entry(name, key) for name in GLOBAL_INDEX for key in ("GET", ":path", "x-user")),
    ],
    ids=["none read", "all read", "entries read"],
)
def test_attributes_nobody_reads_are_still_checked(msg: Any, message: str, wanted: frozenset[str]) -> None:
    req = report_pb2.ReportRequest(attributes=[msg], repeated_attributes_semantics=INDEPENDENT_ENCODING)
    with pytest.raises(BadRequest) as err:
        decode_report(req, wanted=wanted)
    assert str(err.value) == message.replace("attributes", "attributes[0]", 1)


def test_a_name_sent_in_two_maps_is_refused_when_one_of_them_is_left_undecoded() -> None:
    # Not in the manifest: any map may carry it, but only one.
    msg = CA(words=["custom.when"], strings={-1: GLOBAL_INDEX["GET"]}, timestamps={-1: Timestamp()})
    req = report_pb2.ReportRequest(attributes=[msg], repeated_attributes_semantics=INDEPENDENT_ENCODING)
    with pytest.raises(BadRequest, match=r"attribute 'custom.when' appears in both strings and timestamps"):
        decode_report(req, wanted=frozenset())


def test_a_caller_principal_sent_by_the_caller_is_dropped_even_undecoded() -> None:
    msg = CA(words=[CALLER_PRINCIPAL], timestamps={-1: Timestamp()})
    req = report_pb2.ReportRequest(attributes=[msg], repeated_attributes_semantics=INDEPENDENT_ENCODING)
    (bag,) = decode_report(req, wanted=frozenset(), caller="spiffe://cluster.local/ns/a/sa/b")
    assert isinstance(bag, PartialAttributes)
    assert dict(bag) == {CALLER_PRINCIPAL: "spiffe://cluster.local/ns/a/sa/b"} and not bag.rest


async def test_a_set_decoded_for_a_config_is_completed_for_a_config_that_reads_more() -> None:
    Spy.calls = []
    # The first config's metric reads a string only; the second's reads request.headers.
    reads_path = spy_config(("sink", {"tag": "s"})).replace(
        'request.headers["x-user"]', 'request.path | "none"'
    )
    store = store_of(reads_path)
    rt = runtime_of(store)
    await rt.start()
    try:
        wanted = rt.dispatcher.report_attributes()
        assert "request.path" in wanted and "request.headers" not in wanted
        assert rt.dispatcher.report_attributes() is wanted  # computed once per table
        sets = [{"request.path": "/a", "request.headers": {"x-user": "jason"}}]
        early = decode_report(request_of(*sets), wanted=wanted)
        assert "request.headers" not in early[0]
        assert await rt.dispatcher.report(decode_report(request_of(*sets), wanted=wanted)) == []
        assert Spy.calls[-1] == ("metric", [{"user": "/a"}])

        store.replace(parse_text(spy_config(("sink", {"tag": "s"})), file="more.yaml").resources)
        await rt.reload()
        # the expression looks one key up: that entry is what the config reads of the map
        assert map_entry("request.headers", "x-user") in rt.dispatcher.report_attributes()
        assert await rt.dispatcher.report(early) == []
        assert Spy.calls[-1] == ("metric", [{"user": "jason"}])
    finally:
        await rt.close()


async def test_a_sampled_rule_reads_the_request_id() -> None:
    sampled = spy_config(("sink", {"tag": "s"})).replace(
        "spec: {match: '', actions:",
        "spec: {sampling: {random: {percentSampled: {numerator: 50}}}, match: '', actions:",
    )
    assert "sampling" in sampled
    rt = runtime_of(store_of(sampled))
    await rt.start()
    try:
        assert not rt.status.errors, rt.status.errors
        assert "sampled: random 50/100 by x-request-id" in rt.dispatcher.table.dump()
        wanted = rt.dispatcher.report_attributes()
        assert {"request.id", map_entry("request.headers", "x-request-id")} <= wanted
        assert "request.headers" not in wanted  # only its x-request-id
        assert {"context.reporter.kind", "source.namespace", "destination.namespace"} <= wanted
    finally:
        await rt.close()


def test_addresses_repeated_in_a_batch_keep_their_exact_bytes() -> None:
    v4 = IPAddress(bytes([10, 0, 0, 1]))
    mapped = IPAddress(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1]))
    sets = [{"source.ip": v4}, {"source.ip": mapped}, {"source.ip": v4}]
    bags = decode_report(request_of(*sets), wanted=frozenset({"source.ip"}))
    assert [b["source.ip"].packed for b in bags] == [v.packed for v in (v4, mapped, v4)]
    assert all(b["source.ip"] == v4 for b in bags)  # the mapped form names the same address
