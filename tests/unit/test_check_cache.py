"""The decision cache: keys by referenced attributes, validity, and never an answer of another
config, another caller or a failed evaluation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from mixerd.adapter import Builder, CheckResult, ConfigError, Env, Info, ManualClock, QuotaArgs, Status
from mixerd.adapter import load_adapters as _load
from mixerd.attribute import Condition, DictBag, OverlayBag, ReferenceTracker, TrackingBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import DispatchError, Runtime
from mixerd.runtime.checkcache import CheckCache, Shape

A, E = Condition.ABSENCE, Condition.EXACT

# -- shapes: which requests share an answer ------------------------------------------------------

SHAPE_CASES = [
    # (id, references, whole values, request, same key as the first request of the case?)
    ("exact value", ((("a", None), E),), (), {"a": "x"}, {"a": "x", "b": "other"}, True),
    ("exact value differs", ((("a", None), E),), (), {"a": "x"}, {"a": "y"}, False),
    ("absent stays absent", ((("a", None), A),), (), {}, {"b": 1}, True),
    ("absent now present", ((("a", None), A),), (), {}, {"a": "x"}, None),
    ("present now absent", ((("a", None), E),), (), {"a": "x"}, {}, None),
    ("type is part of the value", ((("n", None), E),), (), {"n": 1}, {"n": True}, False),
    (
        "map read by key: other keys do not matter",
        ((("h", None), E), (("h", "u"), E)),
        (),
        {"h": {"u": "alice", "x-request-id": "1"}},
        {"h": {"u": "alice", "x-request-id": "2"}},
        True,
    ),
    (
        "map key differs",
        ((("h", None), E), (("h", "u"), E)),
        (),
        {"h": {"u": "alice"}},
        {"h": {"u": "bob"}},
        False,
    ),
    (
        "absent map key now present",
        ((("h", None), E), (("h", "u"), A)),
        (),
        {"h": {}},
        {"h": {"u": "alice"}},
        None,
    ),
    (
        "map used whole: every entry matters",
        ((("h", None), E),),
        ("h",),
        {"h": {"u": "alice", "x-request-id": "1"}},
        {"h": {"u": "alice", "x-request-id": "2"}},
        False,
    ),
    (
        "map used whole, same entries",
        ((("h", None), E),),
        ("h",),
        {"h": {"u": "alice", "v": "1"}},
        {"h": {"v": "1", "u": "alice"}},
        True,
    ),
]


@pytest.mark.parametrize(
    ("refs", "whole", "first", "second", "same"),
    [case[1:] for case in SHAPE_CASES],
    ids=[case[0] for case in SHAPE_CASES],
)
def test_shape_keys(
    refs: Any, whole: tuple[str, ...], first: dict[str, Any], second: dict[str, Any], same: bool | None
) -> None:
    shape = Shape.of(refs, frozenset(whole))
    assert shape is not None
    k1 = shape.key(first)
    assert k1 is not None
    k2 = shape.key(second)
    if same is None:
        assert k2 is None
    else:
        assert (k1 == k2) is same


def test_a_regex_reference_is_never_cached() -> None:
    assert Shape.of(((("a", None), Condition.REGEX),), frozenset()) is None


def _store(cache: CheckCache, bag: Mapping[str, Any], result: CheckResult, refs: Any) -> bool:
    return cache.store(
        bag,
        result,
        reason="",
        rule="r",
        handler="h",
        references=refs,
        whole_maps=frozenset(),
        whole_values=frozenset(),
        generated={},
    )


def test_validity_and_bounds() -> None:
    clock = ManualClock()
    cache = CheckCache(clock, max_entries=2)
    refs = ((("a", None), E),)
    ok = CheckResult(Status(), dt.timedelta(seconds=10), 2)
    assert _store(cache, {"a": "x"}, ok, refs)
    hit = cache.lookup({"a": "x"})
    assert hit is not None and hit[1].valid_duration == dt.timedelta(seconds=10)
    clock.advance(dt.timedelta(seconds=4))
    hit = cache.lookup({"a": "x"})
    assert hit is not None and hit[1].valid_duration == dt.timedelta(seconds=6)
    assert cache.lookup({"a": "x"}) is None  # two uses were granted
    assert _store(cache, {"a": "x"}, ok, refs)
    clock.advance(dt.timedelta(seconds=10))
    assert cache.lookup({"a": "x"}) is None  # expired
    # Nothing valid is not stored; the least recently used entry goes first.
    assert not _store(cache, {"a": "x"}, CheckResult(Status(), dt.timedelta(0), 5), refs)
    for value in ("1", "2", "3"):
        assert _store(cache, {"a": value}, ok, refs)
    assert len(cache) == 2 and cache.lookup({"a": "1"}) is None and cache.lookup({"a": "3"}) is not None


def test_the_context_is_part_of_the_key() -> None:
    cache = CheckCache(ManualClock())
    ok = CheckResult(Status(), dt.timedelta(seconds=10), 5)
    assert cache.store(
        {},
        ok,
        reason="",
        rule="",
        handler="",
        references=(),
        whole_maps=frozenset(),
        whole_values=frozenset(),
        generated={},
        context=frozenset({("mixerd.caller.principal", "spiffe://a")}),
    )
    assert cache.lookup({}, frozenset({("mixerd.caller.principal", "spiffe://a")})) is not None
    assert cache.lookup({}, frozenset({("mixerd.caller.principal", "spiffe://b")})) is None
    assert cache.lookup({}) is None


def test_a_string_map_used_whole_is_marked() -> None:
    tracker = ReferenceTracker()
    bag = TrackingBag(DictBag({"request.headers": {"a": "1"}}), tracker)
    headers = bag["request.headers"]
    assert "a" in headers and "b" not in headers  # key tests are references of their own
    assert tracker.whole_values == set()
    assert [str(r) for r in tracker.references()] == [
        "request.headers",
        "request.headers[a]",
        "-request.headers[b]",
    ]
    assert dict(headers) == {"a": "1"}
    assert tracker.whole_values == {"request.headers"}


# -- through the dispatcher ----------------------------------------------------------------------


class Counting:
    """A check handler that counts its calls and answers per its config."""

    calls = 0

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def handle_checknothing(self, instance: Any) -> CheckResult:
        Counting.calls += 1
        if self.config.get("fail"):
            raise RuntimeError("backend down")
        return CheckResult(
            Status(int(self.config.get("code", 0)), "no"),
            dt.timedelta(seconds=int(self.config.get("seconds", 60))),
            int(self.config.get("uses", 100)),
        )


class _CountingBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> Counting:
        return Counting(self.config)


COUNTING = Info("counting", "counts checks", ("checknothing",), _CountingBuilder)


def config(match: str, params: Mapping[str, Any] | None = None, header_ops: bool = False) -> list[Any]:
    ops = (
        "\n  requestHeaderOperations:\n  - name: x-transaction-id\n"
        "    values: ['request.headers[\"x-request-id\"]']"
        if header_ops
        else ""
    )
    text = f"""
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: c, namespace: istio-system}}
spec: {{compiledTemplate: checknothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: h, namespace: istio-system}}
spec: {{compiledAdapter: counting, params: {dict(params or {})!r}}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: r, namespace: istio-system}}
spec:
  match: '{match}'
  actions: [{{handler: h, instances: [c]}}]{ops}
"""
    parsed = parse_text(text)
    assert not parsed.errors, parsed.errors
    return list(parsed.resources)


@pytest.fixture
async def make() -> Any:
    runtimes: list[Runtime] = []

    async def factory(resources: list[Any], **kw: Any) -> tuple[Runtime, MemoryStore]:
        store = MemoryStore()
        store.replace(resources, [])
        rt = Runtime(store, adapters={**_load(), "counting": COUNTING}, **kw)
        await rt.start()
        runtimes.append(rt)
        Counting.calls = 0
        return rt, store

    yield factory
    for rt in runtimes:
        await rt.close()


def user(name: str, request_id: str = "1", **extra: Any) -> DictBag:
    return DictBag({"request.headers": {"x-user": name, "x-request-id": request_id}, **extra})


def hits(rt: Runtime) -> float:
    return rt.metrics.value("mixerd_check_cache_lookups_total", {"result": "hit"}) or 0.0


BLOCK_BOB = 'request.headers["x-user"] == "bob"'


async def test_identical_requests_share_an_answer_different_ones_do_not(make: Any) -> None:
    rt, _ = await make(config(BLOCK_BOB, {"code": 7}))
    d = rt.dispatcher
    first = await d.check(user("bob", "1"))
    again = await d.check(user("bob", "2"))  # another request id: the rule never read it
    assert Counting.calls == 1 and hits(rt) == 1
    assert again.result.status == first.result.status and again.result.status.code == 7
    assert again.references == first.references and again.rule == first.rule == "r.rule.istio-system"
    other = await d.check(user("alice"))
    assert other.result.status.code == 0 and Counting.calls == 1  # the rule does not match alice
    assert (await d.check(user("alice"))).result.status.code == 0 and hits(rt) == 2


async def test_a_config_change_is_seen_at_once(make: Any) -> None:
    rt, store = await make(config(BLOCK_BOB, {"code": 0}))
    assert (await rt.dispatcher.check(user("bob"))).result.status.code == 0
    assert (await rt.dispatcher.check(user("bob"))).result.status.code == 0
    store.replace(config(BLOCK_BOB, {"code": 7}), [])
    await rt.reload()
    assert (await rt.dispatcher.check(user("bob"))).result.status.code == 7
    assert Counting.calls == 2


async def test_validity_comes_from_the_handlers(make: Any) -> None:
    clock = ManualClock()
    rt, _ = await make(config(BLOCK_BOB, {"seconds": 30, "uses": 2}), clock=clock)
    d = rt.dispatcher
    for _ in range(3):  # evaluated once, then used twice
        await d.check(user("bob"))
    assert Counting.calls == 1
    await d.check(user("bob"))
    assert Counting.calls == 2  # uses spent: evaluated again
    clock.advance(dt.timedelta(seconds=31))
    await d.check(user("bob"))
    assert Counting.calls == 3  # expired: evaluated again


async def test_failures_quotas_and_evaluation_errors_are_never_cached(make: Any) -> None:
    rt, _ = await make(config(BLOCK_BOB, {"fail": True}))
    for _ in range(2):
        with pytest.raises(DispatchError):
            await rt.dispatcher.check(user("bob"))
    assert Counting.calls == 2

    rt, _ = await make(config(BLOCK_BOB))
    for _ in range(2):
        await rt.dispatcher.check(user("bob"), quotas={"q": QuotaArgs(amount=1)})
    assert Counting.calls == 2 and hits(rt) == 0

    rt, _ = await make(config("request.size > 10"))  # request.size absent: an evaluation error
    for _ in range(2):
        await rt.dispatcher.check(user("bob"))
    assert hits(rt) == 0
    errors = {"rule": "r.rule.istio-system", "part": "match"}
    assert rt.metrics.value("mixerd_rule_evaluation_errors_total", errors) == 2


async def test_header_operations_are_evaluated_for_each_request(make: Any) -> None:
    rt, _ = await make(config(BLOCK_BOB, {"code": 0}, header_ops=True))
    seen = []
    for request_id in ("r-1", "r-2"):
        tracker = ReferenceTracker()
        out = await rt.dispatcher.check(TrackingBag(user("bob", request_id), tracker), tracker=tracker)
        assert out.directive is not None
        seen.append(out.directive.request_header_operations[0].value)
        assert (("request.headers", "x-request-id"), E) in (out.references or ())
    assert seen == ["r-1", "r-2"] and Counting.calls == 1 and hits(rt) == 1


async def test_the_callers_identity_separates_answers(make: Any) -> None:
    rt, _ = await make(config('mixerd.caller.principal == "spiffe://a"', {"code": 7}))

    async def as_caller(principal: str) -> int:
        tracker = ReferenceTracker()
        bag = OverlayBag(TrackingBag(user("bob"), tracker))  # as the Mixer API front-end layers it
        bag.set("mixerd.caller.principal", principal)
        return (await rt.dispatcher.check(bag, tracker=tracker)).result.status.code

    assert [await as_caller(p) for p in ("spiffe://a", "spiffe://b", "spiffe://a", "spiffe://b")] == [
        7,
        0,
        7,
        0,
    ]
    assert hits(rt) == 2


async def test_off_with_no_entries(make: Any) -> None:
    rt, _ = await make(config(BLOCK_BOB), check_cache_entries=0)
    for _ in range(2):
        await rt.dispatcher.check(user("bob"))
    assert Counting.calls == 2 and rt.dispatcher.table.check_cache is None
    assert rt.metrics.value("mixerd_check_cache_lookups_total", {"result": "miss"}) in (None, 0.0)
