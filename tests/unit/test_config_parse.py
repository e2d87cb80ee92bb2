"""Parsing configuration documents into resources (mixerd.config.parse)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mixerd.attribute import ValueType, parse_duration
from mixerd.config import (
    Action,
    AttributeManifestSpec,
    HandlerSpec,
    HeaderAction,
    IgnoredResource,
    InstanceSpec,
    Issue,
    IstioService,
    Key,
    PluginKindSpec,
    QuotaCharge,
    QuotaSpecBindingSpec,
    QuotaSpecReference,
    QuotaSpecSpec,
    Resource,
    RuleSpec,
    StringMatch,
    config_files,
    load_paths,
    parse_document,
    parse_file,
    parse_text,
)
from tests.conformance_data import conformance_dir

CONFORMANCE = conformance_dir()


def one(text: str, **kw: str) -> Resource:
    result = parse_text(text, **kw)
    assert result.ok and not result.errors, result.errors
    assert len(result.resources) == 1, result
    return result.resources[0]


def test_generic_rule_camel_and_snake_case() -> None:
    camel = one(
        """
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: ns1}
spec:
  match: request.size > 1
  actions:
  - handler: h
    instances: [a, b.metric]
    name: act
  requestHeaderOperations:
  - name: x-user
    values: ['"v"']
  responseHeaderOperations:
  - {name: x-gone, operation: REMOVE}
  sampling: {random: {percentSampled: {numerator: 5}}}
"""
    )
    snake = one(
        """
kind: rule
metadata: {name: r, namespace: ns1}
spec:
  match: request.size > 1
  actions:
  - {handler: h, instances: [a, b.metric], name: act}
  request_header_operations:
  - {name: x-user, values: ['"v"'], operation: 0}
  response_header_operations:
  - {name: x-gone, operation: 1}
  sampling: {random: {percentSampled: {numerator: 5}}}
"""
    )
    assert camel.key == snake.key == Key("rule", "ns1", "r")
    assert camel.spec == snake.spec
    spec = camel.spec
    assert isinstance(spec, RuleSpec)
    assert spec.actions == (Action("h", ("a", "b.metric"), "act"),)
    assert spec.request_header_operations[0].operation is HeaderAction.REPLACE
    assert spec.response_header_operations[0].operation is HeaderAction.REMOVE
    assert spec.sampling == {"random": {"percentSampled": {"numerator": 5}}}
    assert camel.issues == ()


def test_key_fqn_and_str() -> None:
    key = Key("instance", "istio-system", "requestcount")
    assert key.fqn == "requestcount.instance.istio-system"
    assert str(key) == "instance/requestcount.istio-system"


def test_missing_namespace_uses_default_namespace() -> None:
    text = "kind: handler\nmetadata: {name: h}\nspec: {compiledAdapter: noop}\n"
    assert one(text).key == Key("handler", "istio-system", "h")
    assert parse_text(text, default_namespace="default").resources[0].key.namespace == "default"


def test_legacy_handler_and_instance_kinds() -> None:
    handler = one(
        """
apiVersion: config.istio.io/v1alpha2
kind: memquota
metadata: {name: handler, namespace: istio-system}
spec:
  quotas: [{name: requestcount.quota.istio-system, maxAmount: 500}]
"""
    )
    assert handler.legacy
    assert handler.key.fqn == "handler.memquota.istio-system"
    assert handler.spec == HandlerSpec(
        compiled_adapter="memquota",
        params={"quotas": [{"name": "requestcount.quota.istio-system", "maxAmount": 500}]},
    )
    instance = one(
        """
kind: kubernetes
metadata: {name: attributes, namespace: istio-system}
spec:
  source_uid: source.uid | ""
  attribute_bindings:
    source.uid: $out.source_pod_uid | "unknown"
"""
    )
    assert instance.key.fqn == "attributes.kubernetes.istio-system"
    assert instance.spec == InstanceSpec(
        compiled_template="kubernetes",
        params={"source_uid": 'source.uid | ""'},
        attribute_bindings={"source.uid": '$out.source_pod_uid | "unknown"'},
    )
    empty = one("kind: checknothing\nmetadata: {name: denyrequest}\nspec:\n")
    assert empty.spec == InstanceSpec(compiled_template="checknothing")


def test_listchecker_kind_keeps_adapter_name() -> None:
    r = one("kind: listchecker\nmetadata: {name: wl}\nspec: {blacklist: false}\n")
    assert r.spec == HandlerSpec(compiled_adapter="listchecker", params={"blacklist": False})


def test_other_api_groups_are_ignored_with_a_reason() -> None:
    result = parse_file(CONFORMANCE / "stock-telemetry-config/rendered/destinationrules.yaml")
    assert result.ok and result.resources == () and result.errors == ()
    assert [(i.kind, i.name, i.api_version) for i in result.ignored] == [
        ("DestinationRule", "istio-policy", "networking.istio.io/v1alpha3"),
        ("DestinationRule", "istio-telemetry", "networking.istio.io/v1alpha3"),
    ]
    assert str(result.ignored[0]) == (
        "DestinationRule/istio-policy.istio-system (networking.istio.io/v1alpha3): "
        "not a Mixer resource (other API group)"
    )
    api_spec = parse_document(
        {"apiVersion": "config.istio.io/v1alpha2", "kind": "HTTPAPISpec", "metadata": {"name": "x"}}
    )
    assert isinstance(api_spec, IgnoredResource)
    assert "mixerd does not use it" in api_spec.reason


def test_quota_spec_and_binding() -> None:
    result = parse_text(
        """
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: request-count, namespace: istio-system}
spec:
  rules:
  - match:
    - clause:
        request.http_method: {exact: GET}
        request.path: {prefix: /books}
    - clause:
        request.path: {regex: "/shelves/.*/books"}
    quotas:
    - {quota: requestcountquota, charge: 2}
    - {quota: other}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: request-count, namespace: istio-system}
spec:
  quotaSpecs:
  - name: request-count
  services:
  - {name: ratings, namespace: default}
  - {service: "*"}
"""
    )
    assert result.ok and not result.errors
    spec, binding = (r.spec for r in result.resources)
    assert isinstance(spec, QuotaSpecSpec)
    rule = spec.rules[0]
    assert rule.match == (
        {"request.http_method": StringMatch(exact="GET"), "request.path": StringMatch(prefix="/books")},
        {"request.path": StringMatch(regex="/shelves/.*/books")},
    )
    assert rule.quotas == (QuotaCharge("requestcountquota", 2), QuotaCharge("other", 1))
    assert binding == QuotaSpecBindingSpec(
        services=(
            IstioService(name="ratings", namespace="default"),
            IstioService(namespace="istio-system", service="*"),
        ),
        quota_specs=(QuotaSpecReference("request-count", "istio-system"),),
    )


def test_string_match() -> None:
    assert StringMatch(exact="GET").matches("GET") and not StringMatch(exact="GET").matches("GETS")
    assert StringMatch(prefix="/b").matches("/books") and not StringMatch(prefix="/b").matches("/a")
    regex = StringMatch(regex="/shelves/.*/books")
    assert regex.matches("/shelves/10/books")
    assert not regex.matches("/shelves/1/bar") and not regex.matches("x/shelves/1/books")
    assert not StringMatch().matches("")


def test_issues_are_kept_on_the_resource_with_paths() -> None:
    r = one(
        """
kind: rule
metadata: {name: r, namespace: ns}
spec:
  match: [1]
  actions:
  - instances: [a, 3]
    colour: red
  responseHeaderOperations:
  - {name: x, operation: DELETE}
  bogus: 1
"""
    )
    assert r.issues == (
        Issue("spec.match", "expected a string, got list"),
        Issue("spec.actions[0].handler", "missing"),
        Issue("spec.actions[0].instances[1]", "expected a non-empty string, got 3"),
        Issue("spec.actions[0].colour", "unknown field"),
        Issue(
            "spec.responseHeaderOperations[0].operation",
            "unknown operation 'DELETE' (expected one of REPLACE, REMOVE, APPEND)",
        ),
        Issue("spec.bogus", "unknown field"),
    )


def test_same_field_in_both_spellings_is_an_issue() -> None:
    r = one("kind: handler\nmetadata: {name: h}\nspec: {compiledAdapter: a, compiled_adapter: b}\n")
    assert (
        Issue("spec.compiledAdapter", "given twice, as 'compiledAdapter' and 'compiled_adapter'") in r.issues
    )


def test_handler_and_instance_need_their_target() -> None:
    h = one("kind: handler\nmetadata: {name: h}\nspec: {params: {}}\n")
    assert h.issues == (Issue("spec.compiledAdapter", "missing (a handler needs compiledAdapter)"),)
    i = one("kind: instance\nmetadata: {name: i}\nspec: {params: {}}\n")
    assert i.issues == (Issue("spec.compiledTemplate", "missing (an instance needs compiledTemplate)"),)


def test_connection_timeout_parsed() -> None:
    r = one(
        "kind: handler\nmetadata: {name: h}\n"
        "spec: {adapter: oop, connection: {address: 'a:1', timeout: 1.5s}}\n"
    )
    assert isinstance(r.spec, HandlerSpec)
    assert r.spec.connection is not None
    assert r.spec.connection.timeout == dt.timedelta(seconds=1.5)
    assert r.spec.connection.address == "a:1"


def test_an_overflowing_duration_is_a_field_error_not_a_crash() -> None:
    # Go's ParseDuration stops at about 292 years (int64 nanoseconds); so does mixerd's
    r = one(
        "kind: handler\nmetadata: {name: h}\n"
        "spec: {adapter: oop, connection: {address: 'a:1', timeout: 99999999999h}}\n"
    )
    assert [i.path for i in r.issues] == ["spec.connection.timeout"]
    assert parse_duration("2562047h") == dt.timedelta(hours=2562047)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("2562048h")


def test_attribute_manifest_value_types() -> None:
    r = one(
        """
kind: attributemanifest
metadata: {name: m}
spec:
  name: test
  attributes:
    a.b: {valueType: STRING, description: hi}
    c.d: {value_type: int64}
    e.f: {valueType: NUMBER}
    g.h: {}
"""
    )
    assert isinstance(r.spec, AttributeManifestSpec)
    assert {k: v.value_type for k, v in r.spec.attributes.items()} == {
        "a.b": ValueType.STRING,
        "c.d": ValueType.INT64,
    }
    assert [i.path for i in r.issues] == ["spec.attributes.e.f.valueType", "spec.attributes.g.h.valueType"]


def test_document_level_errors() -> None:
    result = parse_text(
        "apiVersion: config.istio.io/v1alpha2\nmetadata: {name: x}\n---\n"
        "kind: rule\nmetadata: {}\n---\n- just a list\n---\n"
        "kind: Rule\nmetadata: {name: r}\n---\n"
        "kind: unknownthing\nmetadata: {name: u}\n",
        file="f.yaml",
    )
    assert result.ok
    assert [str(e) for e in result.errors] == [
        "f.yaml:1 (document 1): kind: missing (every resource needs apiVersion, kind and metadata.name)",
        "f.yaml:4 (document 2): metadata.name: missing (a rule needs a name)",
        "f.yaml:7 (document 3): expected a resource (a map), got list",
        "Rule/r.istio-system: kind: unknown kind 'Rule' (did you mean 'rule'?)",
    ]
    # Any other kind may name an adapter or template added as a plugin: the snapshot decides.
    (plugin,) = result.resources
    assert plugin.key.kind == "unknownthing" and isinstance(plugin.spec, PluginKindSpec)


def test_yaml_syntax_error_fails_the_file_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: rule\nmetadata: {name: ok}\n---\nkind: rule\nmetadata:\n  name: [unclosed\n")
    result = parse_file(path)
    assert not result.ok and result.resources == ()
    (err,) = result.errors
    assert err.key_or_file == str(path)
    assert err.path.startswith("line 7, column 1")
    assert str(err).startswith(f"{path}: line 7, column 1: invalid YAML: ")


def test_json_files(tmp_path: Path) -> None:
    doc = {
        "kind": "handler",
        "metadata": {"name": "h", "namespace": "n"},
        "spec": {"compiledAdapter": "noop"},
    }
    (tmp_path / "one.json").write_text(json.dumps(doc))
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [doc]}))
    (tmp_path / "bad.json").write_text("{")
    result = load_paths([tmp_path])
    assert [r.key for r in result.resources] == [Key("handler", "n", "h")] * 2
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'bad.json'}: line 1, column 2: invalid JSON: "
        "Expecting property name enclosed in double quotes"
    ]


def test_config_files_skips_hidden_entries(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "..2024_01_01").mkdir()
    for p in ("a.yaml", "sub/b.yml", "sub/c.json", "d.txt", ".hidden.yaml", "..2024_01_01/a.yaml"):
        (tmp_path / p).write_text("")
    assert config_files([tmp_path]) == [tmp_path / "a.yaml", tmp_path / "sub/b.yml", tmp_path / "sub/c.json"]
    missing = tmp_path / "nope.yaml"
    assert config_files([missing]) == [missing]
    (err,) = load_paths([missing]).errors
    assert str(err) == f"{missing}: cannot read file: No such file or directory"


def test_source_records_file_index_and_line() -> None:
    result = parse_text(
        "# c\nkind: rule\nmetadata: {name: a}\n---\n\nkind: rule\nmetadata: {name: b}\n", file="x.yaml"
    )
    sources = [r.source for r in result.resources]
    assert [(s.file, s.index, s.line) for s in sources if s] == [("x.yaml", 0, 2), ("x.yaml", 1, 6)]
    assert str(sources[1]) == "x.yaml:6 (document 2)"


def test_params_are_copied() -> None:
    params = {"a": [1, 2]}
    r = parse_document(
        {"kind": "handler", "metadata": {"name": "h"}, "spec": {"compiledAdapter": "x", "params": params}}
    )
    assert isinstance(r, Resource) and isinstance(r.spec, HandlerSpec) and r.spec.params is not None
    params["a"].append(3)
    assert r.spec.params == {"a": [1, 2]}


# --- every YAML file of the conformance data -----------------------------------------------------

ALL_YAML = sorted(
    p
    for d in ("mixer-testdata-config", "stock-telemetry-config")
    for p in (CONFORMANCE / d).rglob("*")
    if p.suffix in (".yaml", ".yml")
)
# Helm templates and chart files are not Mixer config; they may fail to parse, but must not crash.
NOT_CONFIG = ("stock-telemetry-config/original/",)


def test_conformance_files_found() -> None:
    assert len(ALL_YAML) >= 60


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFORMANCE)))
def test_every_conformance_yaml_parses(path: Path) -> None:
    result = parse_file(path)
    rel = str(path.relative_to(CONFORMANCE))
    if rel.startswith(NOT_CONFIG):
        assert result.ok or result.errors  # a file that failed says why
        return
    assert result.ok, result.errors
    assert result.errors == ()
    for r in result.resources:
        assert r.issues == (), (r.key, r.issues)
    kinds = {r.key.kind for r in result.resources} | {i.kind for i in result.ignored}
    assert kinds, "no documents"


# Istio's validation of QuotaSpec / QuotaSpecBinding (ValidateQuotaSpec, ValidateQuotaSpecBinding):
# (spec, the issues it must give).
QUOTA_VALIDATION = [
    (
        "kind: QuotaSpecBinding\nmetadata: {name: b}\nspec: {quotaSpecs: [{name: q}], services: []}",
        [Issue("spec.services", "at least one service must be specified")],
    ),
    (
        "kind: QuotaSpecBinding\nmetadata: {name: b}\nspec: {quotaSpecs: [{name: q}]}",
        [Issue("spec.services", "at least one service must be specified")],
    ),
    (
        "kind: QuotaSpecBinding\nmetadata: {name: b}\nspec: {services: [{name: s}]}",
        [Issue("spec.quotaSpecs", "at least one spec must be specified")],
    ),
    (
        "kind: QuotaSpecBinding\nmetadata: {name: b}\nspec: {services: {name: s}, quotaSpecs: [{name: q}]}",
        [Issue("spec.services", "expected a list, got dict")],
    ),
    (
        "kind: QuotaSpec\nmetadata: {name: q}\nspec: {rules: [{quotas: []}]}",
        [Issue("spec.rules[0].quotas", "at least one quota must be specified")],
    ),
    (
        "kind: QuotaSpec\nmetadata: {name: q}\nspec: {rules: [{quotas: [{quota: rq, charge: 0}]}]}",
        [Issue("spec.rules[0].quotas[0].charge", "expected a positive integer, got 0")],
    ),
    ("kind: QuotaSpec\nmetadata: {name: q}\nspec: {rules: [{quotas: [{quota: rq}]}]}", []),
]


@pytest.mark.parametrize(("text", "issues"), QUOTA_VALIDATION)
def test_quota_spec_and_binding_validation(text: str, issues: list[Issue]) -> None:
    assert list(one(text).issues) == issues
