"""Mixer's dispatcher scenarios (tests/data/mixer_dispatch_cases.yaml) run through mixerd's runtime
with a scripted adapter whose answers each case gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import (
    Builder,
    CheckResult,
    ConfigError,
    DirectHttpResponse,
    Env,
    Info,
    QuotaArgs,
    QuotaResult,
    Status,
    load_adapters,
)
from mixerd.attribute import DictBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime

DATA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "data" / "mixer_dispatch_cases.yaml").read_text()
)
CASES: list[dict[str, Any]] = DATA["cases"]


class Scripted:
    """Answers each call with the next scripted answer (the last one repeats); records the calls."""

    calls: list[str] = []

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.checks = list(config.get("checks", ()))
        self.quotas = list(config.get("quotas", ()))

    def _next(self, answers: list[dict[str, Any]]) -> dict[str, Any]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def _record(self, instance: Any) -> None:
        Scripted.calls.append(f"{self.name}:{instance.name.split('.', 1)[0]}")

    def handle_checknothing(self, instance: Any) -> CheckResult:
        self._record(instance)
        a = self._next(self.checks)
        direct = None
        if "direct" in a:
            d = a["direct"]
            direct = DirectHttpResponse(
                d.get("code", 0), d.get("body", ""), tuple(tuple(h) for h in d.get("headers", ()))
            )
        return CheckResult(
            Status(a.get("code", 0), a.get("message", ""), direct),
            dt.timedelta(seconds=a.get("seconds", 60)),
            a.get("uses", 10000),
        )

    async def handle_quota(self, instance: Any, args: QuotaArgs) -> QuotaResult:
        self._record(instance)
        a = self._next(self.quotas)
        return QuotaResult(
            Status(a.get("code", 0), a.get("message", "")),
            dt.timedelta(seconds=a.get("seconds", 0)),
            a.get("amount", 0),
        )


class _ScriptedBuilder(Builder):
    def validate(self) -> list[ConfigError]:
        return []

    def build(self, env: Env) -> Scripted:
        return Scripted(env.name.split(".", 1)[0], self.config)


SCRIPTED = Info("scripted", "answers as the test says", ("checknothing", "quota"), _ScriptedBuilder)


def _config(case: dict[str, Any]) -> str:
    docs = [DATA["config"]]
    for name, params in case["handlers"].items():
        docs.append(
            yaml.safe_dump(
                {
                    "apiVersion": "config.istio.io/v1alpha2",
                    "kind": "handler",
                    "metadata": {"name": name, "namespace": "istio-system"},
                    "spec": {"compiledAdapter": "scripted", "params": params},
                }
            )
        )
    for name, rule in case["rules"].items():
        spec: dict[str, Any] = {
            "match": rule.get("match", ""),
            "actions": [{"handler": rule["handler"], "instances": rule["instances"]}],
        }
        if "responseHeaderOperations" in rule:
            spec["responseHeaderOperations"] = rule["responseHeaderOperations"]
        docs.append(
            yaml.safe_dump(
                {
                    "apiVersion": "config.istio.io/v1alpha2",
                    "kind": "rule",
                    "metadata": {"name": name, "namespace": "istio-system"},
                    "spec": spec,
                }
            )
        )
    return "\n---\n".join(docs)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_mixer_dispatch_case(case: dict[str, Any]) -> None:
    parsed = parse_text(_config(case), file="case.yaml")
    assert parsed.errors == [] or not parsed.errors
    store = MemoryStore()
    store.replace(parsed.resources, parsed.errors)
    rt = Runtime(store, adapters={**load_adapters(), "scripted": SCRIPTED})
    await rt.start()
    Scripted.calls = []
    try:
        assert rt.status.errors == ()
        bag = DictBag(case.get("attributes") or {})
        expect = case["expect"]
        if "quota" in case:
            q = case["quota"]
            r = await rt.dispatcher.quota(bag, q["name"], QuotaArgs(amount=q["amount"]))
            assert r.status.code == expect["status"]["code"]
            assert r.status.message == expect["status"].get("message", "")
            assert r.amount == expect["amount"]
            assert r.valid_duration == dt.timedelta(seconds=expect["seconds"])
        else:
            out = await rt.dispatcher.check(bag)
            st = out.result.status
            assert (st.code, st.message) == (expect["status"]["code"], expect["status"]["message"])
            valid = expect["valid"]
            assert out.result.valid_duration == dt.timedelta(seconds=valid["seconds"])
            assert out.result.valid_use_count == valid["uses"]
            want = expect["direct"]
            if want is None:
                assert out.directive is None or not out.directive.direct_response_code
            else:
                d = out.directive
                assert d is not None
                assert d.request_header_operations == ()
                got = [[op.operation.name, op.name, op.value] for op in d.response_header_operations]
                assert (d.direct_response_code, d.direct_response_body, got) == (
                    want["code"],
                    want["body"],
                    want["headers"],
                )
        assert Scripted.calls == expect["calls"]
        if "rule" in expect:
            assert out.rule == expect["rule"]
    finally:
        await rt.close()


def test_a_direct_response_code_must_be_an_http_status() -> None:
    with pytest.raises(ValueError, match="must be 0 or an HTTP status 200-599, got 99"):
        DirectHttpResponse(99)


async def test_a_cached_denial_keeps_its_direct_response() -> None:
    case = next(c for c in CASES if c["name"].startswith("Set-Cookie of a direct response"))
    parsed = parse_text(_config(case), file="case.yaml")
    store = MemoryStore()
    store.replace(parsed.resources, parsed.errors)
    rt = Runtime(store, adapters={**load_adapters(), "scripted": SCRIPTED})
    await rt.start()
    Scripted.calls = []
    try:
        first = await rt.dispatcher.check(DictBag({}))
        second = await rt.dispatcher.check(DictBag({}))  # from the decision cache: no call
        assert Scripted.calls == ["hcheck1:icheck1"]
        assert first.directive is not None and first.directive.direct_response_code == 302
        assert second.directive == first.directive
    finally:
        await rt.close()
