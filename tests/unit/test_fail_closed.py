"""Fail-closed check rules and evaluation-error accounting (cases in tests/data/fail_closed.yaml)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.service.ratelimit.v3 import rls_pb2

from mixerd.adapter import Code, ManualClock, QuotaArgs, load_adapters
from mixerd.api.ext_authz.authorize import Authorizer
from mixerd.api.ext_authz.verdict import encode_http
from mixerd.api.ratelimit.service import RateLimitService
from mixerd.attribute import DictBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import DispatchError, Runtime
from mixerd.runtime.dispatcher import FAIL_CLOSED_REASON
from mixerd.server.settings import Settings, add_arguments

DATA = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "fail_closed.yaml").read_text())
CASES = DATA["cases"]
ANNOTATION = "mixerd.io/fail-closed"


def config_text(annotations: Mapping[str, str] | None = None) -> str:
    docs = list(yaml.safe_load_all(DATA["config"]))
    for doc in docs:
        value = (annotations or {}).get(doc["metadata"]["name"]) if doc["kind"] == "rule" else None
        if value is not None:
            doc["metadata"]["annotations"] = {ANNOTATION: value}
    return yaml.safe_dump_all(docs, sort_keys=False)


def make_runtime(annotations: Mapping[str, str] | None = None, *, fail_closed: bool = False) -> Runtime:
    parsed = parse_text(config_text(annotations))
    assert not parsed.errors
    return Runtime(
        MemoryStore(parsed.resources), adapters=load_adapters(), fail_closed=fail_closed, clock=ManualClock()
    )


def evaluation_errors(rt: Runtime) -> dict[str, dict[str, int]]:
    """The non-zero mixerd_rule_evaluation_errors_total samples: short rule name -> part -> count."""
    out: dict[str, dict[str, int]] = {}
    for family in rt.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "mixerd_rule_evaluation_errors_total" and sample.value:
                rule = sample.labels["rule"].split(".", 1)[0]
                out.setdefault(rule, {})[sample.labels["part"]] = int(sample.value)
    return out


@pytest.fixture
async def runtime_for() -> AsyncIterator[Any]:
    started: list[Runtime] = []

    async def make(annotations: Mapping[str, str] | None = None, *, fail_closed: bool = False) -> Runtime:
        rt = make_runtime(annotations, fail_closed=fail_closed)
        await rt.start()
        assert not rt.status.errors, rt.status.errors
        started.append(rt)
        return rt

    yield make
    for rt in started:
        await rt.close()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_cases(case: dict[str, Any], runtime_for: Any) -> None:
    rt = await runtime_for(case.get("annotations"), fail_closed=case.get("fail_closed", False))
    bag = DictBag(case["attributes"])
    if "report" in case:
        problems = await rt.dispatcher.report([bag])
        assert len(problems) == case["report"]["problems"], problems
    elif "error" in case:
        with pytest.raises(DispatchError) as err:
            await rt.dispatcher.check(bag)
        assert err.value.code == case["error"]
    else:
        quotas = {name: QuotaArgs(amount) for name, amount in (case.get("quotas") or {}).items()}
        out = await rt.dispatcher.check(bag, quotas=quotas or None)
        status = out.result.status
        assert status.code == case["check"]["code"]
        if "message" in case["check"]:
            assert status.message == case["check"]["message"]
        if "fail-closed" in status.message:
            assert out.reason == FAIL_CLOSED_REASON
        if "quota" in case:
            [q] = out.quotas.values()
            assert q.result.status.code == case["quota"]["code"]
            assert q.result.amount == case["quota"]["amount"]
            assert q.result.status.message == case["quota"].get("message", "")
    assert evaluation_errors(rt) == case.get("errors", {})


async def test_a_denial_never_quotes_the_request(runtime_for: Any) -> None:
    rt = await runtime_for(fail_closed=True)
    out = await rt.dispatcher.check(DictBag({"request.headers": "x-user: s3cret-value"}))
    assert out.result.status.code == Code.PERMISSION_DENIED
    assert "s3cret" not in out.result.status.message and "s3cret" not in out.reason


async def test_the_quota_alone_is_denied_fail_closed(runtime_for: Any) -> None:
    # Dispatcher.quota (the rate-limit service's path) answers the same denial.
    rt = await runtime_for({"quota-users": "true"})
    r = await rt.dispatcher.quota(DictBag({}), "requestcountquota", QuotaArgs(3))
    assert (r.status.code, r.amount) == (Code.PERMISSION_DENIED, 0)
    r = await rt.dispatcher.quota(DictBag({"request.path": "/api"}), "requestcountquota", QuotaArgs(3))
    assert (r.status.code, r.amount) == (Code.OK, 3)


async def test_evaluation_errors_are_logged_once_per_rule_per_10s(
    runtime_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rt = await runtime_for(fail_closed=True)
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    bad = DictBag({"request.headers": "x-user: blocked\nWARNING forged line"})
    with caplog.at_level(logging.WARNING, logger="mixerd.runtime.dispatcher"):
        for _ in range(5):
            await rt.dispatcher.check(bad)
        clock.advance(10)
        await rt.dispatcher.check(bad)
    lines = [r.getMessage() for r in caplog.records if "deny-blocked" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("evaluation errors of rule deny-blocked.rule.istio-system (latest: match: ")
    assert lines[0].endswith("; the check was denied (fail-closed)): 1")
    assert lines[1].endswith(": 5 in the last 10s")  # the 4 only counted, and this one
    assert all("\n" not in line and "\\nWARNING forged line" in line for line in lines)
    assert evaluation_errors(rt) == {"deny-blocked": {"match": 6}}


async def test_the_routing_table_marks_fail_closed_groups(runtime_for: Any) -> None:
    rt = await runtime_for({"deny-blocked": "true", "count": "true"})
    dump = rt.dispatcher.table.dump()
    assert (
        'rule deny-blocked.rule.istio-system match request.headers["x-user"] == "blocked" (fail-closed)'
        in dump
    )
    # Report groups never fail closed, whatever the rule says; other check rules follow the flag.
    assert 'rule count.rule.istio-system match request.headers["x-user"] != ""\n' in dump
    assert 'rule principal-list.rule.istio-system match (context.protocol | "") == "grpc"\n' in dump
    rt = await runtime_for(fail_closed=True)
    dump = rt.dispatcher.table.dump()
    assert dump.count("(fail-closed)") == 3  # deny-blocked, principal-list, quota-users


async def test_a_bad_annotation_value_is_a_warning(runtime_for: Any) -> None:
    rt = await runtime_for({"deny-blocked": "yes please"})
    assert rt.snapshot is not None
    [warning] = [str(w) for w in rt.snapshot.warnings if ANNOTATION in str(w)]
    assert warning == (
        "rule/deny-blocked.istio-system: metadata.annotations.mixerd.io/fail-closed: "
        'expected "true" or "false", got \'yes please\'; read as "true" (fail closed)'
    )
    [rule] = [r for r in rt.snapshot.rules if r.key.name == "deny-blocked"]
    assert rule.fail_closed is True


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, False),
        (["--fail-closed"], {}, True),
        ([], {"MIXERD_FAIL_CLOSED": "true"}, True),
        (["--no-fail-closed"], {"MIXERD_FAIL_CLOSED": "true"}, False),
    ],
)
def test_the_server_flag(argv: list[str], env: dict[str, str], expected: bool) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, env)
    assert Settings.from_args(parser.parse_args(argv)).fail_closed is expected


async def test_ext_authz_answers_403_without_the_rule_name(runtime_for: Any) -> None:
    rt = await runtime_for(fail_closed=True)
    authorizer = Authorizer(rt, "ext_authz")
    verdict = await authorizer.authorize(lambda: DictBag({"request.headers": "x-user: blocked"}))
    answer = encode_http(verdict)
    assert (answer.status, answer.body) == (403, FAIL_CLOSED_REASON)
    assert ("x-mixerd-status", "PERMISSION_DENIED") in answer.headers


async def test_the_rate_limit_service_answers_over_limit(runtime_for: Any) -> None:
    rt = await runtime_for({"quota-users": "true"})
    svc = RateLimitService(rt.dispatcher)  # failure mode "allow": a fail-closed denial is no failure
    req = rls_pb2.RateLimitRequest(domain="requestcountquota")
    req.descriptors.add().entries.add(key="user", value="alice")
    resp = await svc.ShouldRateLimit(req, context=None)
    assert resp.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT


async def test_instance_errors_of_rules_merged_into_one_group_count_against_each_rule() -> None:
    # A second rule with the same match sending the same instance to the same handler: the two
    # actions share one instance group whose builders are the same builder twice.
    again = {
        "apiVersion": "config.istio.io/v1alpha2",
        "kind": "rule",
        "metadata": {"name": "count-again", "namespace": "istio-system"},
        "spec": {
            "match": 'request.headers["x-user"] != ""',
            "actions": [{"handler": "nothing", "instances": ["requestcount"]}],
        },
    }
    parsed = parse_text(config_text() + "---\n" + yaml.safe_dump(again, sort_keys=False))
    assert not parsed.errors
    rt = Runtime(MemoryStore(parsed.resources), adapters=load_adapters(), clock=ManualClock())
    await rt.start()
    try:
        assert not rt.status.errors, rt.status.errors
        problems = await rt.dispatcher.report([DictBag({"request.headers": {"x-user": "alice"}})])
        assert len(problems) == 2, problems
        assert evaluation_errors(rt) == {"count": {"instance": 1}, "count-again": {"instance": 1}}
    finally:
        await rt.close()
