"""Rule sampling: the decision table in tests/data/sampling_cases.yaml (with an injected random
source and clock), validation errors with their field paths, and a sampled rule in a runtime:
report actions sampled once per request for the whole rule, check actions never."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Builder, CheckResult, ConfigError, Env, Info, ManualClock, load_adapters
from mixerd.attribute import DictBag, builtin_manifest, stock_manifest
from mixerd.config import MemoryStore, build_snapshot, parse_text
from mixerd.config.sampling import SamplingConfig, compile_sampling
from mixerd.lang import Expression, compile
from mixerd.runtime import AdapterRegistryCatalog, Runtime
from mixerd.runtime.sampling import RuleSampler, request_id_value

DATA = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "sampling_cases.yaml").read_text())
MANIFEST = stock_manifest()


def _compile(text: str) -> Expression:
    return compile(text, MANIFEST)


def checked(raw: Mapping[str, Any]) -> SamplingConfig | None:
    config, issues = compile_sampling(raw, _compile)
    assert not issues, issues
    return config


class Draws:
    """The injected random source: hands out the values an entry lists, checking each bound."""

    def __init__(self) -> None:
        self.pending: list[dict[str, int]] = []

    def __call__(self, bound: int) -> int:
        assert self.pending, f"drew a random number (bound {bound}) where the case expects none"
        draw = self.pending.pop(0)
        assert bound == draw["bound"]
        return draw["value"]


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["name"] for c in DATA["cases"]])
def test_decisions(case: dict[str, Any]) -> None:
    config = checked(case["sampling"])
    clock, draws = ManualClock(), Draws()
    sampler = RuleSampler("r.rule.istio-system", config, randbelow=draws, clock=clock) if config else None
    for n, entry in enumerate(case["entries"]):
        for _ in range(entry.get("repeat", 1)):
            clock.advance(entry.get("advance", 0))
            draws.pending = list(entry.get("draws", []))
            bag = DictBag(entry.get("attributes") or {})
            got = True if sampler is None else sampler.sample(bag)
            assert got is entry["sampled"], f"entry {n}: {entry}"
            assert not draws.pending, f"entry {n}: draws left unused: {draws.pending}"


@pytest.mark.parametrize("case", DATA["errors"], ids=[c["name"] for c in DATA["errors"]])
def test_errors(case: dict[str, Any]) -> None:
    config, issues = compile_sampling(case["sampling"], _compile)
    assert config is None
    got = [f"{i.path}: {i.message}" for i in issues]
    assert len(got) == len(case["errors"]), got
    for expected in case["errors"]:
        assert any(g.startswith(expected) for g in got), (expected, got)


@pytest.mark.parametrize("case", DATA["describe"], ids=[c["text"] for c in DATA["describe"]])
def test_describe(case: dict[str, Any]) -> None:
    config = checked(case["sampling"])
    assert config is not None
    assert config.describe() == case["text"]


def test_request_id_value() -> None:
    assert request_id_value("ffffffff-0000", 1_000_000) == 0xFFFFFFFF % 1_000_000
    assert request_id_value("0000000a", 100) == 10
    assert request_id_value("short", 100) is None
    assert request_id_value("zzzzzzzz-1111", 100) is None


def test_decide_once_per_request() -> None:
    config = checked({"rateLimit": {"samplingDuration": "1s", "maxUnsampledEntries": 1}})
    assert config is not None
    sampler = RuleSampler("r", config, clock=ManualClock())
    decisions: dict[RuleSampler, bool] = {}
    bag = DictBag({})
    # the rule's second and third action reuse the first decision: one entry counted
    assert [sampler.decide(bag, decisions) for _ in range(3)] == [True, True, True]
    assert sampler.decide(bag, {}) is False  # the next request is the window's second entry


# --- in a runtime ---------------------------------------------------------------------------


class Recorder:
    reports: list[tuple[str, list[str]]] = []
    checks: list[str] = []

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def handle_metric(self, instances: Sequence[Any]) -> None:
        Recorder.reports.append((self.tag, [i.dimensions["id"] for i in instances]))

    def handle_checknothing(self, instance: Any) -> CheckResult:
        Recorder.checks.append(self.tag)
        return CheckResult()


class _RecorderBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> Recorder:
        return Recorder(str(self.config.get("tag", "")))


RECORDER = Info("recorder", "records what it is sent", ("metric", "checknothing"), _RecorderBuilder)

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: one, namespace: istio-system}
spec: {compiledAdapter: recorder, params: {tag: one}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: two, namespace: istio-system}
spec: {compiledAdapter: recorder, params: {tag: two}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: count, namespace: istio-system}
spec: {compiledTemplate: metric, params: {value: "1", dimensions: {id: request.id}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: sampled, namespace: istio-system}
spec:
  match: request.id != ""
  actions:
  - {handler: one, instances: [count, nothing]}
  - {handler: two, instances: [count]}
  sampling:
    random: {percentSampled: {numerator: 50}}
"""

# 0x00000010 = 16 < 50: sampled; 0x00000060 = 96: not
IN, OUT = "00000010-1111-4111-8111-111111111111", "00000060-1111-4111-8111-111111111111"


async def test_runtime_samples_report_actions_only() -> None:
    parsed = parse_text(CONFIG)
    assert not parsed.errors
    Recorder.reports.clear()
    Recorder.checks.clear()
    rt = Runtime(
        MemoryStore(parsed.resources), adapters={**load_adapters(), "recorder": RECORDER}, clock=ManualClock()
    )
    await rt.start()
    try:
        assert not rt.status.errors, rt.status.errors
        warnings = [str(w) for w in rt.snapshot.warnings]
        assert any(
            "spec.sampling: sampling applies to report actions only; this rule's checknothing actions "
            "run on every matching request" in w
            for w in warnings
        ), warnings
        dump = rt.dispatcher.table.dump()
        assert "sampled: random 50/100 by x-request-id" in dump
        problems = await rt.dispatcher.report([DictBag({"request.id": i}) for i in (IN, OUT, IN)])
        assert problems == []
        # both actions of the rule decided alike, once per attribute set
        assert sorted(Recorder.reports) == [("one", [IN, IN]), ("two", [IN, IN])]
        for rid in (IN, OUT):
            outcome = await rt.dispatcher.check(DictBag({"request.id": rid}))
            assert outcome.result.status.ok
        assert Recorder.checks == ["one", "one"]  # the check action ran for the unsampled id too
    finally:
        await rt.close()


def test_bad_sampling_drops_the_rule_with_its_path() -> None:
    text = CONFIG.replace("numerator: 50", "numerator: fifty")
    snapshot = build_snapshot(
        parse_text(text).resources,
        adapters=AdapterRegistryCatalog({**load_adapters(), "recorder": RECORDER}),
        base_manifest=builtin_manifest(),
    )
    assert [str(e) for e in snapshot.errors] == [
        "rule/sampled.istio-system: spec.sampling.random.percentSampled.numerator: "
        "expected a non-negative integer, got 'fifty'"
    ]
    assert snapshot.rules == ()


def test_a_rule_sampled_at_zero_percent_is_a_warning() -> None:
    text = CONFIG.replace("random: {percentSampled: {numerator: 50}}", "random: {}")
    snapshot = build_snapshot(
        parse_text(text).resources,
        adapters=AdapterRegistryCatalog({**load_adapters(), "recorder": RECORDER}),
        base_manifest=builtin_manifest(),
    )
    assert not snapshot.errors
    assert (
        "rule/sampled.istio-system: spec.sampling.random.percentSampled.numerator: 0 (the default) and "
        "no attributeExpression: the rule's report actions never run"
    ) in [str(w) for w in snapshot.warnings]
