"""The generated instance builder (one function per builder) against the generic loop."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mixerd.attribute import builtin_manifest
from mixerd.templates import InstanceBuildError, compile_instance

MANIFEST = builtin_manifest()
METRIC: dict[str, Any] = {
    "value": "request.size | 0",
    "dimensions": {"source": 'source.uid | "unknown"', "path": "request.path", "code": "response.code | 200"},
    "monitoredResourceType": '"UNSPECIFIED"',
}
LOG: dict[str, Any] = {
    "severity": '"info"',
    "timestamp": "request.time",
    "variables": {"path": 'request.path | "-"'},
}
BAGS = [
    {
        "request.size": 7,
        "request.path": "/a",
        "source.uid": "kubernetes://a.ns",
        "request.time": dt.datetime(2020, 1, 1),
    },
    {"request.path": "/b", "response.code": 503, "request.time": dt.datetime(2021, 2, 3)},
]


@pytest.mark.parametrize(("template", "params"), [("metric", METRIC), ("logentry", LOG)])
@pytest.mark.parametrize("bag", BAGS)
def test_generated_build_gives_what_the_generic_loop_gives(template: str, params: Any, bag: Any) -> None:
    b = compile_instance("i.instance.ns", template, params, MANIFEST)
    assert b.build.__code__.co_filename == "<instance i.instance.ns>"  # the generated function
    assert b.build(bag) == b.build_slowly(bag)
    assert b.build(bag, {}) == b.build_slowly(bag, {})


def test_an_evaluation_error_names_the_field() -> None:
    b = compile_instance("i.instance.ns", "metric", METRIC, MANIFEST)
    with pytest.raises(
        InstanceBuildError, match=r"^instance i\.instance\.ns: dimensions: lookup failed: 'request\.path'$"
    ):
        b.build({"request.size": 1}, {})
    log = compile_instance("l.instance.ns", "logentry", LOG, MANIFEST)
    with pytest.raises(
        InstanceBuildError, match=r"^instance l\.instance\.ns: timestamp: lookup failed: 'request\.time'$"
    ):
        log.build({})


def test_builders_with_the_same_dimensions_share_the_map_through_the_memo() -> None:
    first = compile_instance("a.instance.ns", "metric", METRIC, MANIFEST)
    second = compile_instance("b.instance.ns", "metric", {**METRIC, "value": "1"}, MANIFEST)
    memo: dict[str, Any] = {}
    one, two = first.build(BAGS[0], memo), second.build(BAGS[0], memo)
    assert one.dimensions is two.dimensions
    assert (one.value, two.value) == (7, 1)
    assert len(memo) == 1
