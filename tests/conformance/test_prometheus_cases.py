"""Mixer's prometheus adapter tests (prometheus_cases.json) run against mixerd's adapter.

Cases mixerd deliberately handles differently are listed in prometheus_unsupported.yaml; the last
tests here check that list is accurate."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mixerd.adapter import ConfigError, Env, InstanceInfo, ManualClock, Params
from mixerd.adapters.prometheus import (
    HandleMetricError,
    PrometheusExporter,
    PrometheusHandler,
    make_info,
    stringify,
)
from mixerd.adapters.prometheus.config import bucket_bounds, safe_name
from mixerd.attribute import URI, DNSName, EmailAddress, IPAddress, load_manifests, parse_timestamp, type_of
from mixerd.templates import MetricInstance, compile_instance
from tests.conformance_data import conformance_dir, params

CONFORMANCE = conformance_dir()
DATA: dict[str, Any] = json.loads((CONFORMANCE / "prometheus_cases.json").read_text())
UNSUPPORTED: dict[str, dict[str, str]] = yaml.safe_load(
    (Path(__file__).parent / "prometheus_unsupported.yaml").read_text()
)
TABLES = (
    "bucket_cases",
    "handle_metric_cases",
    "handle_metric_failure_cases",
    "validate_expiration_policy_cases",
    "build_ok_cases",
    "build_error_cases",
    "build_conflict_cases",
    "stringify_cases",
    "integration_scenarios",
)
_GO_STRING_TYPES = {"adapter.EmailAddress": EmailAddress, "adapter.URI": URI, "adapter.DNSName": DNSName}


def cases(table: str) -> list[Any]:
    """The table's cases as test params; those in prometheus_unsupported.yaml are skipped with
    their reason (and checked by test_unsupported_entries_are_real_and_still_differ)."""
    unsupported = UNSUPPORTED.get(table, {})
    out = []
    for case in DATA[table]:
        marks = [pytest.mark.conformance(f"prometheus[{table}]")]
        if case["id"] in unsupported:
            marks.append(pytest.mark.skip(reason=f"unsupported: {unsupported[case['id']]}"))
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


def decode(value: Any, go_type: str | None = None) -> Any:
    """A value in the conformance JSON encoding -> mixerd's runtime representation."""
    if isinstance(value, dict) and "@type" in value:
        kind = value["@type"]
        if kind == "duration":
            return dt.timedelta(microseconds=value["nanos"] / 1000)
        if kind == "timestamp":
            return parse_timestamp(value["value"])
        if kind == "ip":
            return IPAddress(base64.b64decode(value["bytes"]))
        if kind == "string_map":
            return dict(value["value"])
        raise AssertionError(f"unexpected value type {kind}")
    if go_type in _GO_STRING_TYPES:
        return _GO_STRING_TYPES[go_type](value)
    return value


class Runner:
    def __init__(self) -> None:
        self.exporter = PrometheusExporter()
        self.info = make_info(self.exporter)
        self.live: list[PrometheusHandler] = []

    def builder(
        self, metrics: list[dict[str, Any]], instances: Mapping[str, InstanceInfo] | None = None
    ) -> Any:
        if instances is None:
            instances = {
                m["instanceName"]: InstanceInfo(m["instanceName"], "metric", {})
                for m in metrics
                if m.get("instanceName")
            }
        return self.info.builder({"metrics": metrics}, instances)

    def build(self, builder: Any, owner: str = "handler.prometheus.istio-system") -> PrometheusHandler:
        handler = builder.build(Env(owner, clock=ManualClock()))
        self.live.append(handler)
        return handler  # type: ignore[no-any-return]

    def validate_and_build(self, metrics: list[dict[str, Any]]) -> list[ConfigError] | PrometheusHandler:
        builder = self.builder(metrics)
        errors: list[ConfigError] = builder.validate()
        return errors or self.build(builder)

    def close(self) -> None:
        for h in self.live:
            h.close()
        assert self.exporter.registries == ()


def instances_of(case: Mapping[str, Any]) -> list[MetricInstance]:
    return [
        MetricInstance(
            i["name"],
            decode(i["value"], i.get("value_go_type")),
            {k: decode(v) for k, v in i["dimensions"].items()},
        )
        for i in case["instances"]
    ]


# -- tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("bucket_cases"))
def test_buckets(case: dict[str, Any]) -> None:
    p = Params(case["buckets"])
    assert list(bucket_bounds(p)) == pytest.approx(case["want_bounds"])
    assert p.errors == []


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
@pytest.mark.parametrize("case", cases("handle_metric_cases"))
def test_handle_metric(case: dict[str, Any], typed: bool) -> None:
    runner = Runner()
    instances = instances_of(case)
    infos = None
    if typed:  # the instances' static types, as the runtime passes them
        infos = {m["instanceName"]: InstanceInfo(m["instanceName"], "metric", {}) for m in case["metrics"]}
        for inst in instances:
            types = {"value": type_of(inst.value)} | {
                f"dimensions.{k}": type_of(v) for k, v in inst.dimensions.items()
            }
            infos[inst.name] = InstanceInfo(inst.name, "metric", types)
    builder = runner.builder(case["metrics"], infos)
    assert builder.validate() == []
    handler = runner.build(builder)
    handler.handle_metric(instances)
    for want in case["expected_values"]:
        (vec,) = handler.metrics_for(want["metric"])
        key = tuple(want["labels"][name] for name in vec.definition.label_names)
        series = vec.series[key]
        got = series.sum if hasattr(series, "sum") else series.value
        assert got == pytest.approx(want["value"])
    runner.close()


@pytest.mark.parametrize("case", cases("handle_metric_failure_cases"))
def test_handle_metric_failures(case: dict[str, Any]) -> None:
    runner = Runner()
    handler = runner.validate_and_build(case["metrics"])
    assert isinstance(handler, PrometheusHandler)
    with pytest.raises(HandleMetricError):
        handler.handle_metric(instances_of(case))
    runner.close()


@pytest.mark.parametrize("case", cases("validate_expiration_policy_cases"))
def test_validate_expiration_policy(case: dict[str, Any]) -> None:
    config: dict[str, Any] = {"metrics": []}
    if case["metricsExpirationPolicy"] is not None:
        config["metricsExpirationPolicy"] = params(case["metricsExpirationPolicy"])
    errors = make_info(PrometheusExporter()).builder(config, {}).validate()
    assert bool(errors) == case["expect_validation_error"], errors


GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""client_golang's ``prometheus.DefBuckets``: Mixer's bounds for a DISTRIBUTION without ``buckets``."""


def expected_definition(metric: Mapping[str, Any]) -> dict[str, Any]:
    """What Mixer's prometheus adapter (``Build``) registers for one ``metrics[]`` entry, worked
    out from the entry itself; the conformance data has no table of built definitions."""
    name = metric.get("name")
    if not name:
        # Mixer names the metric after the whole instanceName; mixerd, on purpose, after the
        # instance's short name (the first part of ``name.kind.namespace``: see the
        # mixerd.adapters.prometheus docstring). The case data's two-dot "the.counter.nodesc"
        # therefore exports istio_the where Mixer exported istio_the_counter_nodesc.
        instance = metric["instanceName"]
        name = instance.rsplit(".", 2)[0] if instance.count(".") >= 2 else instance
    namespace = safe_name(metric["namespace"]) if metric.get("namespace") else "istio"
    bounds: tuple[float, ...] = ()
    if metric["kind"] == "DISTRIBUTION":
        buckets = metric.get("buckets") or {}
        # the rules of the data's schema (bucket_cases): n finite buckets have n + 1 bounds
        if "explicitBuckets" in buckets:
            bounds = tuple(buckets["explicitBuckets"]["bounds"])
        elif "linearBuckets" in buckets:
            lb = buckets["linearBuckets"]
            bounds = tuple(lb["offset"] + i * lb["width"] for i in range(lb["numFiniteBuckets"] + 1))
        elif "exponentialBuckets" in buckets:
            eb = buckets["exponentialBuckets"]
            bounds = tuple(eb["scale"] * eb["growthFactor"] ** i for i in range(eb["numFiniteBuckets"] + 1))
        else:
            bounds = GO_DEFAULT_BUCKETS
    return {
        "name": f"{namespace}_{safe_name(name)}",
        "kind": metric["kind"],
        "help": metric.get("description") or name,  # Mixer: the (unsanitised) name when there is none
        "label_names": tuple(safe_name(label) for label in metric.get("labelNames", [])),
        "bounds": pytest.approx(bounds),
    }


def assert_builds_definitions(handler: PrometheusHandler, metrics: list[dict[str, Any]]) -> None:
    """The handler exports exactly one metric per ``metrics[]`` entry, defined as Mixer did."""
    for metric in metrics:
        (vec,) = handler.metrics_for(metric["instanceName"])
        d = vec.definition
        got = {
            "name": d.name,
            "kind": d.kind.name,
            "help": d.help,
            "label_names": d.label_names,
            "bounds": d.bounds,
        }
        assert got == expected_definition(metric), metric


def test_expected_definition_of_a_named_metric() -> None:
    """``name``, ``namespace`` and default buckets, which no build_ok case exercises together."""
    metric = {"instanceName": "rc.instance.ns", "name": "a-b.c", "namespace": "my-ns", "kind": "DISTRIBUTION"}
    want = expected_definition(metric)
    assert (want["name"], want["help"], want["label_names"]) == ("myns_ab_c", "a-b.c", ())
    assert want["bounds"] == GO_DEFAULT_BUCKETS


@pytest.mark.parametrize("case", cases("build_ok_cases"))
def test_build_ok(case: dict[str, Any]) -> None:
    runner = Runner()
    result = runner.validate_and_build(case["metrics"])
    assert isinstance(result, PrometheusHandler), result
    assert_builds_definitions(result, case["metrics"])
    runner.close()


def test_build_ok_cases_one_after_another() -> None:
    """As in Mixer's TestBuild, every case is built in turn by the same handler resource (each
    one replaces the previous definition set, as after successive config changes)."""
    runner = Runner()
    for case in DATA["build_ok_cases"]:
        if case["id"] in UNSUPPORTED.get("build_ok_cases", {}):
            continue
        result = runner.validate_and_build(case["metrics"])
        assert isinstance(result, PrometheusHandler), (case["id"], result)
        assert_builds_definitions(result, case["metrics"])
    runner.close()


@pytest.mark.parametrize("case", cases("build_error_cases") + cases("build_conflict_cases"))
def test_build_errors(case: dict[str, Any]) -> None:
    runner = Runner()
    result = runner.validate_and_build(case["metrics"])
    assert isinstance(result, list)
    assert result, "expected a validation error"
    runner.close()


def test_conflicts_across_handlers() -> None:
    """Mixer's conflict cases with each definition in a different handler resource."""
    for case in DATA["build_conflict_cases"]:
        runner = Runner()
        first, second = case["metrics"]
        runner.build(runner.builder([first]), owner="one.istio-system")
        builder = runner.builder([second])
        assert builder.validate() == []
        with pytest.raises(ValueError, match=r"already exported by handler one\.istio-system"):
            runner.build(builder, owner="two.istio-system")
        runner.close()


@pytest.mark.parametrize("case", cases("stringify_cases"))
def test_stringify(case: dict[str, Any]) -> None:
    assert stringify(decode(case["v"], case.get("v_go_type"))) == case["want"]


# -- integration scenarios ------------------------------------------------------------------------


def scenario_resources(case: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(handler params, {instance FQN: metric params}) from the scenario's YAML configs."""
    handler: dict[str, Any] | None = None
    instances: dict[str, Any] = {}
    for text in case["configs"]:
        if not isinstance(text, str):
            continue  # the out-of-process adapter's descriptor CR: not needed in process
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kind, meta, spec = doc["kind"], doc["metadata"], doc["spec"]
            if kind == "prometheus":  # legacy kind: spec is the params
                handler = spec
            elif kind == "handler":
                handler = spec["params"]
            elif kind == "metric":  # legacy instance kind: spec is the params
                instances[f"{meta['name']}.metric.{meta['namespace']}"] = spec
            elif kind == "instance":
                instances[f"{meta['name']}.instance.{meta['namespace']}"] = spec["params"]
    assert handler is not None
    return handler, instances


@pytest.mark.parametrize("case", cases("integration_scenarios"))
def test_integration_scenario(case: dict[str, Any]) -> None:
    handler_params, specs = scenario_resources(case)
    manifest = load_manifests((CONFORMANCE / "istio-attributes.yaml").read_text())
    builders = {name: compile_instance(name, "metric", spec, manifest) for name, spec in specs.items()}
    infos = {name: InstanceInfo(name, "metric", dict(b.types)) for name, b in builders.items()}
    runner = Runner()
    builder = runner.info.builder(handler_params, infos)
    assert builder.validate() == []
    handler = runner.build(builder)
    for call in case["calls"]:
        assert call["kind"] == "REPORT"
        bag = {k: decode(v) for k, v in call["attrs"].items()}
        handler.handle_metric([b.build(bag) for b in builders.values()])

    text = runner.exporter.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for want in case["expected_metrics"]:
        # The parser files counter families under the name without "_total"; the exposed sample
        # name is Mixer's own (no "_total" appended).
        family = families.get(want["name"]) or families[want["name"].removesuffix("_total")]
        assert family.type == want["type"].lower()
        assert family.documentation == want["help"]
        (sample,) = [s for s in family.samples if s.labels == want["labels"]]
        assert sample.value == float(want["value"])
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(want["labels"].items()))
        assert f"{want['name']}{{{labels}}} {want['value']}\n" in text
    runner.close()


# -- the unsupported list is accurate -------------------------------------------------------------


def test_every_table_is_run_or_listed() -> None:
    tables = set(DATA) - {"source", "schema", "named_values"}
    assert tables == set(TABLES) | set(UNSUPPORTED)


@pytest.mark.parametrize(
    ("table", "case_id"), [(t, c) for t, cases in UNSUPPORTED.items() for c in cases], ids=lambda x: str(x)
)
def test_unsupported_entries_are_real_and_still_differ(table: str, case_id: str) -> None:
    assert table in DATA, f"no table {table}"
    if case_id == "*":
        assert table not in TABLES, f"{table} is listed as unsupported but is run"
        return
    (case,) = [c for c in DATA[table] if c["id"] == case_id]
    assert UNSUPPORTED[table][case_id].strip()
    if table == "build_ok_cases":
        result = Runner().validate_and_build(case["metrics"])
        assert isinstance(result, list) and result, f"{case_id} now builds: remove it from the list"
        assert any(e.path.endswith("instanceName") for e in result)
    else:
        raise AssertionError(f"no check for unsupported {table} entries; add one")
