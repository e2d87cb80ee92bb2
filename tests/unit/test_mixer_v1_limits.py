"""Bounded work per Mixer API request: limits checked before decoding, linear delta decoding."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from mixerd._proto.mixer.v1 import attributes_pb2, report_pb2
from mixerd.api.mixer_v1.client import encode_attributes
from mixerd.api.mixer_v1.decode import DeltaBag, ProtoBag, check_limits, decode_report, decode_report_steps
from mixerd.api.mixer_v1.wire import INDEPENDENT_ENCODING, LimitExceeded, RequestLimits

CA = attributes_pb2.CompressedAttributes


def attack(n: int) -> report_pb2.ReportRequest:
    """The reproducer: n DELTA_ENCODING sets over n default words, each adding one new attribute."""
    req = report_pb2.ReportRequest(default_words=[f"w{i}" for i in range(n)])
    for i in range(n):
        req.attributes.add().strings[~i] = ~i
    return report_pb2.ReportRequest.FromString(req.SerializeToString())


_UNLIMITED = RequestLimits(
    words=10**9, attributes=10**9, report_sets=10**9, map_entries=10**9, decoded_values=10**9
)


def _peak(req: report_pb2.ReportRequest) -> int:
    tracemalloc.start()
    try:
        bags = decode_report(req, _UNLIMITED)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(bags) == len(req.attributes)
    return peak


def _seconds(req: report_pb2.ReportRequest) -> float:
    start = time.perf_counter()
    decode_report(req, _UNLIMITED)
    return time.perf_counter() - start


def test_delta_report_of_8000_sets_decodes_in_linear_memory() -> None:
    small = attack(8000)
    peak = _peak(small)
    assert peak < 50_000_000  # was about 900 MB: every set copied the sets before it
    bags = decode_report(small)
    assert len(bags[0]) == 1 and len(bags[-1]) == 8000
    assert bags[-1]["w7999"] == "w7999" and bags[-1]["w0"] == "w0"
    assert "w1" not in bags[0] and bags[0].get("w1") is None
    assert list(bags[2]) == ["w0", "w1", "w2"]
    half_peak = _peak(attack(4000))
    assert peak < 3 * half_peak


def test_delta_report_time_is_linear() -> None:
    small, large = attack(4000), attack(8000)
    _seconds(small)  # warm up
    t_small = min(_seconds(small) for _ in range(3))
    t_large = min(_seconds(large) for _ in range(3))
    assert t_large < 4 * t_small + 0.05  # quadratic would be 4x plus the copying


def test_delta_bags_equal_the_copying_semantics() -> None:
    # Many sets, each replacing some values and adding one name: the shared history path.
    sets: list[dict[str, Any]] = [{f"app.n{i}": i, "app.v": i % 3} for i in range(2000)]
    sets[5]["app.v"] = "five"
    words: list[str] = []
    req = report_pb2.ReportRequest(
        attributes=[encode_attributes(s, words=words) for s in sets], default_words=words
    )
    bags = decode_report(req)
    assert isinstance(bags[-1], DeltaBag)
    expected: dict[str, Any] = {}
    for i, s in enumerate(sets):
        expected.update(s)
        if i % 97 == 0 or i > 1990:
            assert dict(bags[i]) == expected
            assert len(bags[i]) == len(expected)
    assert bags[5]["app.v"] == "five" and bags[6]["app.v"] == 0
    with pytest.raises(KeyError):
        bags[3]["app.n4"]


def test_small_delta_reports_stay_plain_dicts() -> None:
    sets = [encode_attributes({"request.path": f"/{i}", "response.code": 200}) for i in range(100)]
    bags = decode_report(report_pb2.ReportRequest(attributes=sets))
    assert all(type(b) is dict for b in bags)


def test_decode_steps_yield_between_chunks() -> None:
    steps = decode_report_steps(attack(20000), _UNLIMITED)
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            bags = done.value
            break
        yields += 1
    assert yields >= 4 and len(bags) == 20000


# --- limits -------------------------------------------------------------------------------------


def _raises(
    req: report_pb2.ReportRequest, limits: RequestLimits, message: str, *, resource: bool = False
) -> None:
    with pytest.raises(LimitExceeded) as err:
        decode_report(req, limits)
    assert str(err.value) == message
    assert err.value.resource is resource


def test_report_sets_limit() -> None:
    _raises(
        attack(11),
        RequestLimits(report_sets=10),
        "attributes: 11 attribute sets exceed the limit of 10 (--max-report-sets / MIXERD_MAX_REPORT_SETS)",
    )
    assert len(decode_report(attack(10), RequestLimits(report_sets=10))) == 10


def test_request_words_limit_counts_every_dictionary() -> None:
    req = attack(10)
    req.attributes[3].words.extend(["a", "b"])
    _raises(
        req,
        RequestLimits(words=11),
        "words: 12 words exceed the limit of 11 (--max-request-words / MIXERD_MAX_REQUEST_WORDS)",
    )


def test_attributes_limit_names_the_set() -> None:
    req = report_pb2.ReportRequest(
        attributes=[
            CA(int64s={1: 1}),
            CA(int64s={1: 1, 2: 2}, bools={3: True}, string_maps={4: attributes_pb2.StringMap()}),
        ],
        repeated_attributes_semantics=INDEPENDENT_ENCODING,
    )
    _raises(
        req,
        RequestLimits(attributes=3),
        "attributes[1]: 4 attributes exceed the limit of 3 (--max-attributes / MIXERD_MAX_ATTRIBUTES)",
    )


def test_map_entries_limit() -> None:
    big = attributes_pb2.StringMap(entries={i: i for i in range(6)})
    req = report_pb2.ReportRequest(attributes=[CA(string_maps={1: big})])
    _raises(
        req,
        RequestLimits(map_entries=5),
        "attributes[0].string_maps: 6 entries in one string map exceed the limit of 5 "
        "(--max-map-entries / MIXERD_MAX_MAP_ENTRIES)",
    )


def test_decoded_values_limit_is_resource_exhausted() -> None:
    _raises(
        attack(100),
        RequestLimits(decoded_values=99),
        "attributes: 100 attributes and map entries exceed the limit of 99 "
        "(--max-decoded-values / MIXERD_MAX_DECODED_VALUES)",
        resource=True,
    )


def test_check_limits_on_one_message() -> None:
    msg = CA(words=["a", "b", "c"], strings={-1: -2, -2: -3})
    check_limits(msg, RequestLimits(words=3, attributes=2))
    with pytest.raises(
        LimitExceeded, match=r"^attributes\.words: 3 words exceed the limit of 2 \(--max-request-words"
    ):
        check_limits(msg, RequestLimits(words=2))
    with pytest.raises(
        LimitExceeded, match=r"^attributes: 2 attributes exceed the limit of 1 \(--max-attributes"
    ):
        check_limits(msg, RequestLimits(attributes=1))
    assert ProtoBag(msg).to_dict() == {"a": "b", "b": "c"}


# --- flags --------------------------------------------------------------------------------------


def test_limit_flags_and_environment_reach_the_servicer() -> None:
    import argparse

    from mixerd.adapter import load_adapters
    from mixerd.config import MemoryStore
    from mixerd.runtime import Runtime
    from mixerd.server.services import build_services
    from mixerd.server.settings import Settings, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, {"MIXERD_MAX_REPORT_SETS": "7", "MIXERD_MAX_ATTRIBUTES": "9"})
    settings = Settings.from_args(parser.parse_args(["--max-request-words", "11", "--max-attributes", "8"]))
    assert (settings.max_report_sets, settings.max_attributes, settings.max_request_words) == (7, 8, 11)
    assert Settings().max_report_sets == 10_000 and Settings().max_request_words == 100_000
    services = build_services(Runtime(MemoryStore([]), adapters=load_adapters()), settings)
    mixer = services[0]
    assert mixer.limits == RequestLimits(words=11, attributes=8, report_sets=7)
    with pytest.raises(ValueError, match="--max-map-entries must be at least 1"):
        Settings.from_args(parser.parse_args(["--max-map-entries", "0"]))
