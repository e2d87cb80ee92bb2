"""The runtime: routing table (golden text), dispatch semantics, handler reuse, drain and close."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mixerd.adapter import (
    Builder,
    CheckResult,
    Code,
    ConfigError,
    Env,
    Info,
    ManualClock,
    QuotaArgs,
    RateLimitedWarning,
    Status,
    load_adapters,
)
from mixerd.attribute import DictBag, TrackingBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import DispatchError, Runtime, request_namespace

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden"


def store_of(*texts: str) -> MemoryStore:
    store = MemoryStore()
    resources: list[Any] = []
    errors: list[Any] = []
    for i, text in enumerate(texts):
        parsed = parse_text(text, file=f"doc{i}.yaml")
        resources += parsed.resources
        errors += parsed.errors
    store.replace(resources, errors)
    return store


def headers(**h: str) -> dict[str, Any]:
    return {"request.headers": {k.replace("_", "-"): v for k, v in h.items()}}


@pytest.fixture
async def runtime() -> Any:
    rt = Runtime(store_of((DATA / "runtime" / "namespaces.yaml").read_text()))
    await rt.start()
    yield rt
    await rt.close()


def assert_golden(name: str, text: str) -> None:
    # The first line names the snapshot id, which depends on how many snapshots the process built.
    text = text.split("\n", 1)[1]
    path = GOLDEN / name
    if os.environ.get("MIXERD_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"routing table differs from {path} (MIXERD_UPDATE_GOLDEN=1 rewrites it)"


async def test_routing_table_golden(runtime: Runtime) -> None:
    assert runtime.status.errors == ()
    assert_golden("routes-namespaces.txt", runtime.dispatcher.table.dump())


async def test_routing_table_golden_stock_telemetry() -> None:
    from tests.conformance_data import conformance_dir

    rendered = conformance_dir() / "stock-telemetry-config" / "rendered"
    texts = [
        (rendered / n).read_text() for n in ("attributemanifests.yaml", "handlers.yaml", "instances.yaml")
    ]
    texts.append((rendered / "rules.yaml").read_text())
    rt = Runtime(store_of(*texts))
    os.environ["MIXERD_KUBERNETESENV_PODS_FILE"] = str(DATA / "pods.yaml")
    try:
        await rt.start()
        assert rt.status.errors == ()
        assert_golden("routes-stock-telemetry.txt", rt.dispatcher.table.dump())
    finally:
        del os.environ["MIXERD_KUBERNETESENV_PODS_FILE"]
        await rt.close()


async def test_check_deny_wins_with_minimum_validity(runtime: Runtime) -> None:
    bag = TrackingBag(DictBag(headers(x_user="blocked")))
    out = await runtime.dispatcher.check(bag, tracker=bag.tracker)
    assert out.result.status.code == Code.PERMISSION_DENIED
    assert out.result.status.message == "deny.handler.istio-system:blocked"
    assert out.result.valid_duration == dt.timedelta(seconds=5)
    assert out.result.valid_use_count == 3
    assert out.directive is None  # header operations only after an OK check
    assert bag.tracker.log() == [
        "-context.reporter.kind",
        "-destination.namespace",
        "request.headers",
        "request.headers[x-user]",
    ]


async def test_check_without_answers_is_ok_for_a_minute(runtime: Runtime) -> None:
    out = await runtime.dispatcher.check(DictBag(headers(x_user="alice")))
    assert out.result == CheckResult(Status(), dt.timedelta(minutes=1), 10000)
    assert out.directive is not None
    ops = [(o.name, o.value, o.operation) for o in out.directive.response_header_operations]
    assert ops == [("x-checked-by", "mixerd", 0), ("x-user", "alice", 2)]  # empty values are skipped
    assert out.directive.request_header_operations == ()


async def test_namespace_rules_add_to_global_ones(runtime: Runtime) -> None:
    shop = {"destination.namespace": "shop", "context.reporter.kind": "inbound"}
    out = await runtime.dispatcher.check(DictBag({**shop, **headers(x_user="")}))
    assert out.result.status == Status(Code.UNAUTHENTICATED, "shopdeny.handler.shop:shop needs a user")
    # In "shop", the global deny rule applies too, and it comes first.
    out = await runtime.dispatcher.check(DictBag({**shop, **headers(x_user="blocked")}))
    assert out.result.status.code == Code.PERMISSION_DENIED
    # Outbound traffic is judged by the source's namespace.
    out = await runtime.dispatcher.check(
        DictBag({"source.namespace": "shop", "context.reporter.kind": "outbound", **headers(x_user="")})
    )
    assert out.result.status.code == Code.UNAUTHENTICATED
    # Header operations of a namespace's own rules (not the global ones, as in Mixer).
    out = await runtime.dispatcher.check(DictBag({**shop, **headers(x_user="bob")}))
    assert out.directive is not None
    ops = [(o.name, o.value, o.operation) for o in out.directive.request_header_operations]
    assert ops == [("x-shop", "yes", 0), ("x-internal", "", 1)]
    assert out.directive.response_header_operations == ()  # global directives are not copied (Mixer)


def test_request_namespace() -> None:
    assert request_namespace({}) == ""
    assert request_namespace({"destination.namespace": "a", "source.namespace": "b"}) == "a"
    assert request_namespace({"context.reporter.kind": "outbound", "source.namespace": "b"}) == "b"


async def test_quota_by_instance_name(runtime: Runtime) -> None:
    d = runtime.dispatcher
    api = DictBag({"request.path": "/api/x", **headers(x_user="bob")})
    r = await d.quota(api, "RequestCountQuota", QuotaArgs(amount=3))  # names match case-insensitively
    assert r.amount == 3 and r.valid_duration == dt.timedelta(minutes=1)
    # The rule does not match: granted anyway (Mixer's behaviour).
    r = await d.quota(DictBag({"request.path": "/web"}), "requestcountquota", QuotaArgs(amount=2))
    assert r.amount == 2
    # Nobody configured this quota: granted, with a warning.
    r = await d.quota(api, "nosuchquota", QuotaArgs(amount=4))
    assert r.amount == 4
    # Quotas in a Check run only when the precondition passed.
    out = await d.check(api, quotas={"requestcountquota": QuotaArgs(amount=1)})
    assert out.quotas["requestcountquota"].result.amount == 1
    out = await d.check(DictBag(headers(x_user="blocked")), quotas={"requestcountquota": QuotaArgs(amount=1)})
    assert out.quotas == {}


# --- a spy adapter for dispatch semantics ------------------------------------------------------


class Spy:
    calls: list[tuple[str, Any]] = []

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.closed = False

    async def handle_checknothing(self, instance: Any) -> CheckResult:
        Spy.calls.append(("check", self.config.get("tag")))
        delay = float(self.config.get("delay", 0))
        if delay:
            await asyncio.sleep(delay)
        if self.config.get("fail"):
            raise RuntimeError("spy exploded")
        return CheckResult(
            Status(int(self.config.get("code", 0)), str(self.config.get("message", ""))),
            dt.timedelta(seconds=int(self.config.get("seconds", 60))),
            7,
        )

    def handle_metric(self, instances: Sequence[Any]) -> None:
        Spy.calls.append(("metric", [dict(i.dimensions) for i in instances]))
        if self.config.get("fail"):
            raise ValueError("metric sink down")

    def close(self) -> None:
        self.closed = True
        Spy.calls.append(("close", self.config.get("tag")))


class _SpyBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return [] if "tag" in self.config else [ConfigError("tag", "required")]

    def build(self, env: Env) -> Spy:
        return Spy(self.config)


SPY = Info("spy", "records calls", ("checknothing", "metric"), _SpyBuilder)


def spy_config(*handlers: tuple[str, dict[str, Any]], match: str = "") -> str:
    docs = [
        "apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: c, namespace: istio-system}\n"
        "spec: {compiledTemplate: checknothing}",
        "apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: m, namespace: istio-system}\n"
        "spec:\n  compiledTemplate: metric\n  params:\n    value: '1'\n"
        '    dimensions:\n      user: request.headers["x-user"]',
    ]
    for name, params in handlers:
        docs.append(
            "apiVersion: config.istio.io/v1alpha2\nkind: handler\n"
            f"metadata: {{name: {name}, namespace: istio-system}}\nspec: {{compiledAdapter: spy, params: {params!r}}}"
        )
        docs.append(
            "apiVersion: config.istio.io/v1alpha2\nkind: rule\n"
            f"metadata: {{name: r-{name}, namespace: istio-system}}\n"
            f"spec: {{match: '{match}', actions: [{{handler: {name}, instances: [c, m]}}]}}"
        )
    return "\n---\n".join(docs)


def spy_runtime(text: str, **kw: Any) -> Runtime:
    return Runtime(store_of(text), adapters={**load_adapters(), "spy": SPY}, **kw)


async def test_check_fans_out_and_combines() -> None:
    Spy.calls = []
    rt = spy_runtime(
        spy_config(
            ("a", {"tag": "a", "seconds": 30}),
            ("b", {"tag": "b", "code": 7, "message": "no", "seconds": 10}),
            ("c", {"tag": "c", "code": 9, "message": "neither"}),
        )
    )
    await rt.start()
    try:
        out = await rt.dispatcher.check(DictBag({}))
        assert sorted(t for k, t in Spy.calls if k == "check") == ["a", "b", "c"]
        assert out.result.status == Status(7, "b.handler.istio-system:no, c.handler.istio-system:neither")
        assert out.result.valid_duration == dt.timedelta(seconds=10)
        assert out.result.valid_use_count == 7
    finally:
        await rt.close()


async def test_handler_failure_and_deadline_become_errors_not_crashes() -> None:
    rt = spy_runtime(spy_config(("boom", {"tag": "x", "fail": True})))
    await rt.start()
    try:
        with pytest.raises(
            DispatchError, match=r"handler boom\.handler\.istio-system failed: RuntimeError: spy exploded"
        ):
            await rt.dispatcher.check(DictBag({}))
        problems = await rt.dispatcher.report([DictBag(headers(x_user="u"))])
        assert problems == ["handler boom.handler.istio-system failed: ValueError: metric sink down"]
    finally:
        await rt.close()
    rt = spy_runtime(spy_config(("slow", {"tag": "s", "delay": 5})), check_deadline=0.05)
    await rt.start()
    try:
        with pytest.raises(DispatchError, match=r"did not answer within 0\.05s") as err:
            await rt.dispatcher.check(DictBag({}))
        assert err.value.code == Code.DEADLINE_EXCEEDED
    finally:
        await rt.close()


async def test_report_batches_per_destination_and_reports_build_errors() -> None:
    Spy.calls = []
    rt = spy_runtime(spy_config(("sink", {"tag": "s"})))
    await rt.start()
    try:
        bags = [DictBag(headers(x_user="a")), DictBag({}), DictBag(headers(x_user="b"))]
        problems = await rt.dispatcher.report(bags)
        # One call with both good instances; the set without x-user could not be built.
        assert [c for c in Spy.calls if c[0] == "metric"] == [("metric", [{"user": "a"}, {"user": "b"}])]
        assert len(problems) == 1 and "instance m.instance.istio-system: dimensions" in problems[0]
    finally:
        await rt.close()


async def test_match_errors_mean_no_match() -> None:
    Spy.calls = []
    rt = spy_runtime(spy_config(("h", {"tag": "h", "code": 7}), match='request.headers["x-user"] == "x"'))
    await rt.start()
    try:
        out = await rt.dispatcher.check(DictBag({}))  # request.headers is absent: the condition fails
        assert out.result.status.code == Code.OK
        assert not [c for c in Spy.calls if c[0] == "check"]
    finally:
        await rt.close()


async def test_handlers_are_reused_by_signature_and_retired_ones_closed() -> None:
    Spy.calls = []
    store = store_of(spy_config(("keep", {"tag": "keep"}), ("change", {"tag": "v1"})))
    rt = Runtime(store, adapters={**load_adapters(), "spy": SPY}, drain_timeout=2)
    await rt.start()
    try:
        before = dict(rt.dispatcher.table.handlers.entries)
        parsed = parse_text(spy_config(("keep", {"tag": "keep"}), ("change", {"tag": "v2"})), file="x")
        # A request in flight on the old table delays the close of retired handlers.
        with rt.dispatcher.pinned():
            store.replace(parsed.resources)
            reload = asyncio.create_task(rt.reload())
            await asyncio.sleep(0.05)
            assert ("close", "v1") not in Spy.calls
        await reload
        after = rt.dispatcher.table.handlers.entries
        assert after["keep.handler.istio-system"] is before["keep.handler.istio-system"]
        assert after["change.handler.istio-system"] is not before["change.handler.istio-system"]
        assert ("close", "v1") in Spy.calls and ("close", "keep") not in Spy.calls
    finally:
        await rt.close()
    assert ("close", "keep") in Spy.calls


async def test_bad_config_change_keeps_serving_the_rest() -> None:
    store = store_of(spy_config(("a", {"tag": "a", "code": 7})))
    rt = Runtime(store, adapters={**load_adapters(), "spy": SPY})
    await rt.start()
    try:
        broken = spy_config(("a", {"tag": "a", "code": 7}), ("b", {})) + (
            "\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: bad, namespace: istio-system}\n"
            "spec: {match: 'reqest.size > 1', actions: [{handler: a, instances: [c]}]}"
        )
        parsed = parse_text(broken, file="broken.yaml")
        store.replace(parsed.resources)
        await rt.reload()
        errors = "\n".join(rt.status.errors)
        assert "handler/b.istio-system: spec.params.tag: required" in errors
        assert "rule/bad.istio-system: spec.match: unknown attribute 'reqest.size'" in errors
        out = await rt.dispatcher.check(DictBag({}))
        assert out.result.status.code == 7  # handler a still denies
    finally:
        await rt.close()


async def test_a_config_swap_during_a_check_neither_mixes_tables_nor_skips_the_drain() -> None:
    Spy.calls = []
    store = store_of(spy_config(("slow", {"tag": "v1", "delay": 0.2, "code": 7, "message": "old"})))
    rt = Runtime(store, adapters={**load_adapters(), "spy": SPY}, drain_timeout=5)
    await rt.start()
    try:
        old = rt.dispatcher.table
        check = asyncio.create_task(rt.dispatcher.check(DictBag({})))
        await asyncio.sleep(0.05)  # the check waits for its handler
        assert old.in_flight == 1
        parsed = parse_text(spy_config(("slow", {"tag": "v2"})), file="x")
        store.replace(parsed.resources)
        reload = asyncio.create_task(rt.reload())
        await asyncio.sleep(0.05)
        assert rt.dispatcher.table is not old  # the new table is in force ...
        assert ("close", "v1") not in Spy.calls  # ... but the old handler is not closed under the check
        assert not reload.done()
        out = await check
        assert out.result.status == Status(7, "slow.handler.istio-system:old")  # all of it on the old table
        await reload
        assert old.in_flight == 0 and ("close", "v1") in Spy.calls
        out = await rt.dispatcher.check(DictBag({}))
        assert out.result.status.code == Code.OK
    finally:
        await rt.close()


async def test_warnings_about_unconfigured_quotas_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    rt = spy_runtime(spy_config(("a", {"tag": "a"})))
    await rt.start()
    try:
        d = rt.dispatcher
        d._max_warned_quotas = 3
        with caplog.at_level("WARNING", logger="mixerd.runtime.dispatcher"):
            for name in ("q1", "q2", "q1", "q3", "q4", "q2", "q4"):
                r = await d.quota(DictBag({}), name, QuotaArgs(amount=2))
                assert r.amount == 2
        warned = [r.getMessage() for r in caplog.records if "is not configured" in r.getMessage()]
        # q1 q2 warned; q1 again suppressed (and refreshed); q3 warned; q4 warned, q2 forgotten
        # (the least recently requested); q2 warned again, q1 forgotten; q4 still remembered.
        assert [w.split("'")[1] for w in warned] == ["q1", "q2", "q3", "q4", "q2"]
        assert d.suppressed_quota_warnings == 2
        assert len(d._warned_quotas) == 3
    finally:
        await rt.close()


QUOTA_SPEC = """
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: users, namespace: istio-system}
spec:
  rules:
  - match: [{clause: {"request.headers[x-user]": {prefix: spec-}, "request.path": {exact: /a}}}]
    quotas: [{quota: requestcount, charge: 2}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: everyone, namespace: istio-system}
spec:
  services: [{name: "*"}]
  quotaSpecs: [{name: users}]
"""


async def test_the_quota_plan_is_built_and_pinned_with_the_routing_table() -> None:
    store = store_of(spy_config(("a", {"tag": "a"})))
    rt = Runtime(store, adapters={**load_adapters(), "spy": SPY})
    await rt.start()
    try:
        attrs = {"request.path": "/a", **headers(x_user="spec-1")}
        with rt.dispatcher.pinned() as old:
            assert old.quota_plan.select(attrs) == {}
            store.set(*parse_text(QUOTA_SPEC).resources)
            await rt.reload()
            new = rt.dispatcher.table
            assert new is not old and old.quota_plan.select(attrs) == {}  # the pinned table keeps its plan
        assert new.quota_plan.select(attrs) == {"requestcount": 2}
        assert new.quota_plan.select({**attrs, "request.path": "/b"}) == {}
        assert new.quota_plan.select({"request.path": "/a", **headers(x_user="bob")}) == {}
    finally:
        await rt.close()


async def test_two_runtimes_in_one_process_count_independently() -> None:
    a = spy_runtime(spy_config(("h", {"tag": "a"})))
    b = spy_runtime(spy_config(("h", {"tag": "b"})))
    await a.start()
    await b.start()
    try:
        assert a.metrics.registry is not b.metrics.registry
        for _ in range(3):
            await a.dispatcher.check(DictBag({}))
        await b.dispatcher.check(DictBag({}))
        await b.dispatcher.quota(DictBag({}), "nosuchquota", QuotaArgs(amount=1))
        labels = {"handler": "h.handler.istio-system", "template": "checknothing"}
        # the answer depends on no attribute: the second and third Checks come from the cache
        assert a.metrics.value("mixerd_dispatches_total", labels) == 1
        assert a.metrics.value("mixerd_check_cache_lookups_total", {"result": "hit"}) == 2
        assert b.metrics.value("mixerd_dispatches_total", labels) == 1
        assert b.metrics.value("mixerd_check_cache_lookups_total", {"result": "hit"}) == 0
        assert a.metrics.value("mixerd_unconfigured_quota_requests_total") == 0
        assert b.metrics.value("mixerd_unconfigured_quota_requests_total") == 1
        assert a.metrics.value("mixerd_handlers_built_total") == 1
        # Front-end metrics live in the runtime's registry too, created once per registry.
        assert a.metrics.counter("mixerd_x", "x.") is a.metrics.counter("mixerd_x", "x.")
        assert a.metrics.counter("mixerd_x", "x.") is not b.metrics.counter("mixerd_x", "x.")
    finally:
        await a.close()
        await b.close()


def test_the_report_warning_is_spaced_on_the_clock_it_is_given(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    w = RateLimitedWarning(clock, interval=10)
    with caplog.at_level("WARNING", logger="mixerd.runtime.reporting"):
        w.add(2, "dropped")
        w.add(3, "dropped")
        clock.advance(10)
        w.add(1, "dropped")
    assert [r.getMessage() for r in caplog.records] == ["dropped: 2", "dropped: 4 in the last 10s"]


async def test_a_big_report_batch_lets_other_requests_run_while_it_is_built() -> None:
    from mixerd.runtime.dispatcher import REPORT_SLICE

    Spy.calls = []
    rt = spy_runtime(spy_config(("sink", {"tag": "s"})))
    await rt.start()
    ticks = 0
    stop = False

    async def other_requests() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    try:
        ticker = asyncio.create_task(other_requests())
        await asyncio.sleep(0)  # the ticker is running
        before = ticks
        sets = [{"request.headers": {"x-user": f"u{i}"}} for i in range(5 * REPORT_SLICE)]
        assert await rt.dispatcher.report(sets) == []
        during = ticks - before
        stop = True
        await ticker
        assert Spy.calls[-1][0] == "metric" and len(Spy.calls[-1][1]) == len(sets)
        assert during >= 5, during  # one turn of the loop per slice at least
    finally:
        await rt.close()
