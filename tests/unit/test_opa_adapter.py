"""The opa adapter: Mixer's own opa test cases (tests/data/opa_cases.yaml) through AdapterHarness,
config validation with field paths, failClose, the input document, dry run and decision counts."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from mixerd.adapter import Code, code_name
from mixerd.adapter.authz_metrics import AUTHZ_DECISIONS, METRIC_LABELS, AuthzDecisions
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.opa import INFO, REJECTED, input_document
from mixerd.adapters.opa.engine import compile_policy
from mixerd.attribute import IPAddress
from mixerd.templates import AuthorizationAction, AuthorizationInstance, AuthorizationSubject

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "opa_cases.yaml").read_text())
POLICIES: dict[str, list[str]] = CASES["policies"]
BUCKET = POLICIES["bucket"]
ALLOW_ADMIN = ['package mixerauthz\ndefault allow = false\nallow { input.subject.user == "admin" }\n']
USER = {"subject": {"user": 'source.user | ""'}}


def harness(config: dict[str, Any], instance: dict[str, Any] | None = None, **kw: Any) -> AdapterHarness:
    return AdapterHarness(INFO, config, {"authz": ("authorization", instance or USER)}, **kw)


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["name"])
async def test_mixer_cases(case: dict[str, Any]) -> None:
    config = {
        "policy": POLICIES[case["policy"]],
        "checkMethod": case.get("checkMethod", "data.mixerauthz.allow"),
        "failClose": case.get("failClose", False),
    }
    h = harness(config, case["instance"])
    result = await h.check("authz", {})
    assert code_name(result.status.code) == case["code"]
    if "message_prefix" in case:
        assert result.status.message.startswith(case["message_prefix"])
        assert len(result.status.message) > len(case["message_prefix"])
    else:
        assert result.status.message == case.get("message", "")
    if result.status.code == Code.OK:
        assert result.valid_duration == dt.timedelta(minutes=1) and result.valid_use_count == 10000
    else:  # Mixer's zero result: a denial is not to be cached
        assert result.valid_duration == dt.timedelta(0) and result.valid_use_count == 0
    await h.close()


# --- validation --------------------------------------------------------------------------------


def errors(config: dict[str, Any]) -> list[str]:
    return [str(e) for e in AdapterHarness.validate(INFO, config)]


def test_valid_config_has_no_errors() -> None:
    assert errors({"policy": BUCKET, "checkMethod": "data.mixerauthz.allow"}) == []
    assert errors({"policy": POLICIES["orgchart"], "check_method": "data.mixerauthz.allow"}) == []


def test_missing_check_method_and_policy() -> None:
    assert errors({"policy": BUCKET}) == ["checkMethod: check method is not configured"]
    assert errors({"checkMethod": "data.mixerauthz.allow"}) == ["policy: policies are not configured"]
    assert errors({"policy": [], "checkMethod": "data.mixerauthz.allow"}) == [
        "policy: policies are not configured"
    ]


def test_parse_errors_name_the_module_and_line() -> None:
    bad = "package mixerauthz\n\nallow {\n  +\n}\n"
    got = errors({"policy": [BUCKET[0], bad], "checkMethod": "data.mixerauthz.allow"})
    assert len(got) == 1
    assert got[0].startswith("policy[1]: Rego: line 4 column 3: ")
    assert "operator" in got[0]


def test_a_module_without_package_and_an_empty_module() -> None:
    got = errors({"policy": ["bad policy", "  "], "checkMethod": "data.mixerauthz.allow"})
    assert got == [
        "policy[0]: Rego: a module must start with 'package <name>'",
        "policy[1]: Rego: empty module: a module starts with 'package <name>'",
    ]


def test_engine_parse_error_in_first_module() -> None:
    got = errors({"policy": ["package x\nallow = = 1\n"], "checkMethod": "data.x.allow"})
    assert got and all(e.startswith("policy[0]: Rego: line 2 column ") for e in got)


def test_check_method_must_name_a_rule() -> None:
    for method in ("allow", "data.mixerauthz", "data.mixerauthz.allow == true", "input.x"):
        got = errors({"policy": BUCKET, "checkMethod": method})
        assert len(got) == 1 and got[0].startswith("checkMethod: must name a rule as data.<package>.<rule>")


def test_type_errors_and_unknown_fields_are_errors_even_with_fail_close() -> None:
    got = errors({"policy": "package x", "checkMethod": 3, "failClose": True, "extra": 1})
    assert "policy: expected a list of Rego modules (strings), got str" in got
    assert "checkMethod: expected a string, got int" in got
    assert "extra: unknown field" in got
    got = errors({"policy": [1], "checkMethod": "data.x.allow", "dryRun": "yes"})
    assert got == [
        "policy[0]: expected a Rego module (a string), got int",
        "dryRun: expected true or false, got 'yes'",
    ]


def test_harness_refuses_a_config_with_problems() -> None:
    with pytest.raises(HarnessConfigError, match=r"policy\[0\]"):
        harness({"policy": ["package x\nallow {\n"], "checkMethod": "data.x.allow"})


# --- failClose with config problems (TestFailOpenClose) ----------------------------------------


async def test_fail_close_with_a_bad_policy_builds_and_denies_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = {"policy": ["bad policy"], "checkMethod": "data.mixerauthz.allow", "failClose": True}
    assert errors(config) == []  # as in Mixer: not a config error, the handler denies instead
    with caplog.at_level(logging.ERROR):
        h = harness(config)
    assert "params.policy[0]: Rego: a module must start with 'package <name>'" in caplog.text
    result = await h.check("authz", {"source.user": "admin"})
    assert result.status.code == Code.PERMISSION_DENIED and result.status.message == REJECTED
    await h.close()


async def test_fail_close_without_check_method_denies() -> None:
    h = harness({"policy": ALLOW_ADMIN, "failClose": True})
    result = await h.check("authz", {"source.user": "admin"})
    assert result.status.code == Code.PERMISSION_DENIED and result.status.message == REJECTED
    await h.close()


# --- input document (TestCovertActionObjectToMap, TestConvertSubjectObjectToMap) -----------------


def test_input_document_as_mixer_builds_it() -> None:
    instance = AuthorizationInstance(
        "i",
        AuthorizationSubject("user", "groups", {"key1": "val1", "key2": "val2"}),
        AuthorizationAction("namespace", "service", "GET", "/test/path", {"key1": "val1", "key2": "val2"}),
    )
    assert input_document(instance) == {
        "subject": {"user": "user", "groups": ["groups"], "properties": {"key1": "val1", "key2": "val2"}},
        "action": {
            "namespace": "namespace",
            "service": "service",
            "method": "GET",
            "path": "/test/path",
            "properties": {"key1": "val1", "key2": "val2"},
        },
    }


def test_input_document_leaves_out_empty_fields_and_stringifies_other_types() -> None:
    assert input_document(AuthorizationInstance("i")) == {"subject": {}, "action": {}}
    props = {
        "ip": IPAddress(bytes([10, 0, 0, 1])),
        "n": 3,
        "f": 1.5,
        "ok": True,
        "t": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "d": dt.timedelta(seconds=90),
        "m": {"a": "b"},
    }
    doc = input_document(AuthorizationInstance("i", AuthorizationSubject(properties=props)))
    assert doc["subject"]["properties"] == {
        "ip": "10.0.0.1",
        "n": 3,
        "f": 1.5,
        "ok": True,
        "t": "2020-01-02T03:04:05.000000Z",
        "d": "1m30s",
        "m": {"a": "b"},
    }


async def test_attribute_values_reach_the_policy() -> None:
    policy = [
        "package p\ndefault allow = false\n"
        'allow { input.action.properties.ip == "10.0.0.1"; input.action.properties.port == 8080 }\n'
    ]
    instance = {"action": {"properties": {"ip": "source.ip", "port": "destination.port"}}}
    h = harness({"policy": policy, "checkMethod": "data.p.allow"}, instance)
    ok = await h.check("authz", {"source.ip": IPAddress(bytes([10, 0, 0, 1])), "destination.port": 8080})
    no = await h.check("authz", {"source.ip": IPAddress(bytes([10, 0, 0, 2])), "destination.port": 8080})
    assert ok.status.code == Code.OK and no.status.code == Code.PERMISSION_DENIED
    await h.close()


# --- dry run and decision counts ----------------------------------------------------------------


def counter_service() -> tuple[CollectorRegistry, dict[str, object]]:
    registry = CollectorRegistry()
    counter = AuthzDecisions.on(lambda name, doc, labels: Counter(name, doc, labels, registry=registry))
    return registry, {AUTHZ_DECISIONS: counter}


def count(registry: CollectorRegistry, action: str, dry_run: str) -> float:
    labels = {"policy": "opa.handler.istio-system", "action": action, "dry_run": dry_run}
    return registry.get_sample_value("mixerd_authz_decisions_total", labels) or 0.0


async def test_decisions_are_counted() -> None:
    registry, services = counter_service()
    h = harness({"policy": ALLOW_ADMIN, "checkMethod": "data.mixerauthz.allow"}, services=services)
    assert (await h.check("authz", {"source.user": "admin"})).status.code == Code.OK
    assert (await h.check("authz", {"source.user": "eve"})).status.code == Code.PERMISSION_DENIED
    assert (await h.check("authz", {"source.user": "eve"})).status.code == Code.PERMISSION_DENIED
    assert count(registry, "allow", "false") == 1
    assert count(registry, "deny", "false") == 2
    assert count(registry, "deny", "true") == 0
    await h.close()


async def test_dry_run_decides_logs_counts_and_allows(caplog: pytest.LogCaptureFixture) -> None:
    registry, services = counter_service()
    config = {"policy": ALLOW_ADMIN, "checkMethod": "data.mixerauthz.allow", "dryRun": True}
    h = harness(config, services=services)
    with caplog.at_level(logging.WARNING):
        denied = await h.check("authz", {"source.user": "eve\nforged"})
    assert denied.status.code == Code.OK
    assert "(dry run) would deny user eve\\nforged" in caplog.text
    assert "opa: request was rejected" in caplog.text
    assert (await h.check("authz", {"source.user": "admin"})).status.code == Code.OK
    assert count(registry, "deny", "true") == 1
    assert count(registry, "allow", "true") == 1
    assert count(registry, "deny", "false") == 0
    await h.close()


async def test_dry_run_with_fail_close_issue_counts_a_deny() -> None:
    registry, services = counter_service()
    config = {
        "policy": POLICIES["nodefault"],
        "checkMethod": "data.mixerauthz.allow",
        "failClose": True,
        "dryRun": True,
    }
    h = harness(config, services=services)
    assert (await h.check("authz", {"source.user": "bob"})).status.code == Code.OK
    assert count(registry, "deny", "true") == 1
    await h.close()


def test_metric_labels_are_the_shared_ones() -> None:
    assert tuple(METRIC_LABELS) == ("policy", "action", "dry_run")


async def test_runtime_hands_handlers_the_counter() -> None:
    from mixerd.runtime.metrics import RuntimeMetrics

    metrics = RuntimeMetrics()
    h = harness(
        {"policy": ALLOW_ADMIN, "checkMethod": "data.mixerauthz.allow"},
        services={AUTHZ_DECISIONS: metrics.authz_decisions},
    )
    await h.check("authz", {"source.user": "eve"})
    labels = {"policy": "opa.handler.istio-system", "action": "deny", "dry_run": "false"}
    assert metrics.value("mixerd_authz_decisions_total", labels) == 1
    await h.close()


# --- the compiled policy ------------------------------------------------------------------------


def test_compiled_once_and_evaluated_from_many_threads() -> None:
    policy, problems = compile_policy(ALLOW_ADMIN, "data.mixerauthz.allow")
    assert problems == [] and policy is not None
    failures: list[str] = []

    def run(user: str, expected: bool) -> None:
        for _ in range(200):
            got = policy.evaluate({"subject": {"user": user}, "action": {}})
            if not got.defined or got.value is not expected:
                failures.append(f"{user}: {got}")

    threads = [threading.Thread(target=run, args=(u, u == "admin")) for u in ("admin", "eve", "admin", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_evaluation_error_carries_no_request_values() -> None:
    policy, _ = compile_policy(POLICIES["conflict"], "data.mixerauthz.allow")
    assert policy is not None
    got = policy.evaluate({"subject": {"user": "admin"}})
    assert not got.defined and got.error is not None and "admin" not in got.error


def test_mixerd_validate_reports_the_module_line_and_drops_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mixerd.cli.main import main

    config = tmp_path / "c.yaml"
    config.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\n"
        "metadata: {name: opahandler, namespace: istio-system}\n"
        "spec:\n  compiledAdapter: opa\n  params:\n    checkMethod: data.mixerauthz.allow\n"
        "    policy:\n    - |\n      package mixerauthz\n      allow {\n        input.subject.user ==\n      }\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: instance\n"
        "metadata: {name: authz, namespace: istio-system}\n"
        "spec: {compiledTemplate: authorization, params: {subject: {user: source.user}}}\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\n"
        "metadata: {name: opa, namespace: istio-system}\n"
        "spec: {actions: [{handler: opahandler, instances: [authz]}]}\n"
    )
    assert main(["validate", str(config)]) == 1
    out = capsys.readouterr().out
    assert "handler/opahandler.istio-system: spec.params.policy[0]: Rego: line 3 column " in out
    assert (
        "rule/opa.istio-system: spec.actions[0].handler: handler 'opahandler.handler.istio-system' is invalid"
        in out
    )
