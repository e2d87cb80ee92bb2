"""Validation and compilation of configuration into snapshots (mixerd.config.snapshot)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mixerd.attribute import ValueType, stock_manifest
from mixerd.config import (
    HandlerSpec,
    HeaderAction,
    InstanceTypes,
    Key,
    MemoryStore,
    ResolvedAction,
    Resource,
    ResourceError,
    RuleSpec,
    Severity,
    Snapshot,
    StaticAdapterCatalog,
    build_snapshot,
    canonical_json,
    format_report,
    load_paths,
    parse_text,
)
from mixerd.templates import Variety
from tests.conformance_data import conformance_dir

CONFORMANCE = conformance_dir()
STOCK = CONFORMANCE / "stock-telemetry-config/rendered"
TESTDATA = CONFORMANCE / "mixer-testdata-config"
DATA = Path(__file__).resolve().parent.parent / "data" / "config"

# Mixer 1.4's in-tree adapters and the templates each supports (mixer-reference.md §6.1).
INVENTORY: Mapping[str, tuple[str, ...]] = {
    "bypass": ("checknothing", "reportnothing", "metric", "quota"),
    "circonus": ("metric",),
    "cloudwatch": ("metric", "logentry"),
    "denier": ("checknothing", "listentry", "quota"),
    "dogstatsd": ("metric",),
    "fluentd": ("logentry",),
    "kubernetesenv": ("kubernetes",),
    "listchecker": ("listentry",),
    "memquota": ("quota",),
    "noop": (
        "authorization",
        "checknothing",
        "reportnothing",
        "listentry",
        "logentry",
        "metric",
        "quota",
        "tracespan",
    ),
    "opa": ("authorization",),
    "prometheus": ("metric",),
    "redisquota": ("quota",),
    "solarwinds": ("metric", "logentry"),
    "stackdriver": ("edge", "logentry", "metric", "tracespan"),
    "statsd": ("metric",),
    "stdio": ("logentry", "metric"),
    "zipkin": ("tracespan",),
}


def prometheus_validator(
    adapter: str, params: Mapping[str, Any], instances: InstanceTypes
) -> list[tuple[str, str]]:
    """A stand-in for the prometheus adapter's validation: metrics must name routed instances."""
    if adapter != "prometheus":
        return []
    problems = []
    for i, metric in enumerate(params.get("metrics") or []):
        name = metric.get("instance_name") or metric.get("instanceName")
        if name not in instances:
            problems.append((f"metrics[{i}].instance_name", f"no instance '{name}' is sent to this handler"))
    return problems


def snapshot_of(*paths: Path, adapters: Mapping[str, tuple[str, ...]] = INVENTORY, **kw: Any) -> Snapshot:
    result = load_paths(paths)
    return build_snapshot(
        result.resources,
        adapters=StaticAdapterCatalog(adapters),
        problems=result.errors,
        ignored=result.ignored,
        **kw,
    )


# --- the stock Istio 1.4 telemetry config -------------------------------------------------------

STOCK_FILES = [
    STOCK / f for f in ("attributemanifests.yaml", "handlers.yaml", "instances.yaml", "rules.yaml")
]
STOCK_ADAPTERS = {"prometheus": ("metric",), "kubernetesenv": ("kubernetes",)}


def test_stock_config_has_no_errors() -> None:
    snap = snapshot_of(*STOCK_FILES, STOCK / "destinationrules.yaml", adapters=STOCK_ADAPTERS)
    assert snap.errors == ()
    assert snap.warnings == ()
    assert [(i.kind, i.name) for i in snap.ignored] == [
        ("DestinationRule", "istio-policy"),
        ("DestinationRule", "istio-telemetry"),
    ]
    assert len(snap.manifest) == 90
    assert sorted(snap.instances) == sorted(
        f"{n}.instance.istio-system"
        for n in (
            "requestcount",
            "requestduration",
            "requestsize",
            "responsesize",
            "tcpbytesent",
            "tcpbytereceived",
            "tcpconnectionsopened",
            "tcpconnectionsclosed",
            "attributes",
        )
    )
    assert sorted(snap.handlers) == ["kubernetesenv.handler.istio-system", "prometheus.handler.istio-system"]
    rules = {r.key.name: r for r in snap.rules}
    assert list(rules) == [
        "promhttp",
        "promtcp",
        "promtcpconnectionopen",
        "promtcpconnectionclosed",
        "kubeattrgenrulerule",
        "tcpkubeattrgenrulerule",
    ]
    assert rules["promhttp"].actions == (
        ResolvedAction(
            "prometheus.handler.istio-system",
            tuple(
                f"{n}.instance.istio-system"
                for n in ("requestcount", "requestduration", "requestsize", "responsesize")
            ),
        ),
    )
    assert rules["kubeattrgenrulerule"].match is None
    promtcp = rules["promtcp"].match
    assert promtcp is not None and promtcp.result_type is ValueType.BOOL
    attributes = snap.instances["attributes.instance.istio-system"]
    assert attributes.variety is Variety.ATTRIBUTE_GENERATOR
    assert attributes.output_mapper is not None
    assert "destination.workload.name" in attributes.output_mapper.attributes
    prom = snap.handlers["prometheus.handler.istio-system"]
    assert prom.adapter == "prometheus"
    tcp = ("tcpbytesent", "tcpbytereceived", "tcpconnectionsopened", "tcpconnectionsclosed")
    expected = (*rules["promhttp"].actions[0].instance_fqns, *(f"{n}.instance.istio-system" for n in tcp))
    assert prom.instances == tuple(sorted(expected))
    assert prom.params_json == canonical_json(dict(prom.params))
    assert snap.instances["requestcount.instance.istio-system"].types["value"] is ValueType.INT64


def test_stock_config_single_file_equals_split_files() -> None:
    whole = snapshot_of(STOCK / "config.yaml", adapters=STOCK_ADAPTERS)
    split = snapshot_of(*STOCK_FILES, adapters=STOCK_ADAPTERS)
    assert whole.errors == ()
    assert sorted(whole.instances) == sorted(split.instances)
    assert [r.fqn for r in whole.rules] == [r.fqn for r in split.rules]
    assert {k: h.params_json for k, h in whole.handlers.items()} == {
        k: h.params_json for k, h in split.handlers.items()
    }


def test_stock_config_with_stdio() -> None:
    adapters = {**STOCK_ADAPTERS, "stdio": ("logentry", "metric")}
    snap = snapshot_of(*STOCK_FILES, STOCK / "optional-stdio.yaml", adapters=adapters)
    assert snap.errors == () and snap.warnings == ()
    assert "stdio.handler.istio-system" in snap.handlers
    assert snap.instances["accesslog.instance.istio-system"].template == "logentry"
    assert [r.key.name for r in snap.rules][-2:] == ["stdio", "stdiotcp"]


def test_stock_config_with_prometheus_validation() -> None:
    result = load_paths(STOCK_FILES)
    snap = build_snapshot(
        result.resources, adapters=StaticAdapterCatalog(STOCK_ADAPTERS, prometheus_validator)
    )
    assert snap.errors == ()


def test_mixer_testdata_config_has_no_errors() -> None:
    snap = snapshot_of(TESTDATA / "mixer/testdata/config")
    assert snap.errors == ()
    assert snap.warnings == ()
    # legacy kinds keep their kind in the FQN
    assert "requestcount.metric.istio-system" in snap.instances
    assert "denyrequest.checknothing.istio-system" in snap.instances
    assert "attributes.kubernetes.istio-system" in snap.instances
    assert snap.instances["attributes.kubernetes.istio-system"].output_mapper is not None
    deny = next(r for r in snap.rules if r.key.name == "mixerdenysome")
    assert deny.actions == (
        ResolvedAction("denyall.handler.istio-system", ("denyrequest.checknothing.istio-system",)),
    )


# --- error messages -----------------------------------------------------------------------------

EXPECTED_ERRORS = [
    "attributemanifest/attrs.istio-system: spec.attributes.request.count.valueType: unknown value type "
    "'NUMBER' (expected one of STRING, INT64, DOUBLE, BOOL, TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS, URI, "
    "DNS_NAME, DURATION, STRING_MAP)",
    "rule/promhttp.istio-system: spec.match: unknown attribute 'reqest.size'",
    "rule/stringmatch.istio-system: spec.match: expression type is STRING, a rule match needs BOOL",
    "instance/badmetric.istio-system: spec.params.value: unknown attribute 'request.sise'",
    "instance/badmetric.istio-system: spec.params.dimensions.source: unknown attribute 'source.nmae'",
    "instance/badmetric.istio-system: spec.params.colour: unknown field "
    "(this template has: value, dimensions, monitored_resource_type, monitored_resource_dimensions)",
    "logentry/legacylog.istio-system: spec.severity: expression '42' has type INT64, the field needs STRING",
    "rule/mixed.istio-system: spec.actions[0].instances[1]: instance 'badmetric.instance.istio-system' "
    "is invalid and was dropped (see its errors)",
    "rule/mixed.istio-system: spec.actions[0].instances[2]: instance 'nosuch' not found "
    "(looked for nosuch.instance.istio-system)",
    "rule/mixed.istio-system: spec.actions[0].instances[3]: instance 'requestcount.instance.istio-system' "
    "is listed twice in this action",
    "rule/mixed.istio-system: spec.actions[0].instances[4]: instance 'legacylog.logentry.istio-system' "
    "is invalid and was dropped (see its errors)",
    "handler/fluent.istio-system: spec.compiledAdapter: unknown adapter 'fluentd'",
    "rule/tofluent.istio-system: spec.actions[0].handler: handler 'fluent.handler.istio-system' "
    "is invalid and was dropped (see its errors)",
    "rule/tofluent.istio-system: spec.actions[1].handler: handler 'missing.default' not found "
    "(looked for missing.default.istio-system and missing.handler.default)",
    "rule/tofluent.istio-system: spec.actions: no valid actions and no header operations; "
    "the rule is dropped",
    "rule/celrule.istio-system: spec.match: found no matching overload for '_>_' applied to '(int, string)'",
    "rule/headers.istio-system: spec.requestHeaderOperations[0].values[0]: expression type is INT64, "
    "a header value needs STRING",
    "rule/headers.istio-system: spec.requestHeaderOperations[1].values[0]: unknown attribute "
    "'act.output.value' (action outputs '<action>.output.<field>' exist only for actions with an "
    "instance of a CHECK_WITH_OUTPUT template, defined by a template resource)",
    "rule/empty.istio-system: spec.actions: no valid actions and no header operations; the rule is dropped",
]


def test_error_messages_with_field_paths() -> None:
    snap = snapshot_of(DATA / "errors.yaml", adapters={"prometheus": ("metric",)})
    assert [str(e) for e in snap.errors] == EXPECTED_ERRORS
    # what survives: the good instance, the handler, and the rule minus its bad references
    assert list(snap.instances) == ["requestcount.instance.istio-system"]
    assert list(snap.handlers) == ["prometheus.handler.istio-system"]
    assert [(r.key.name, r.actions) for r in snap.rules] == [
        (
            "mixed",
            (ResolvedAction("prometheus.handler.istio-system", ("requestcount.instance.istio-system",)),),
        )
    ]
    assert all(e.source is not None and e.source.file.endswith("errors.yaml") for e in snap.errors)
    assert all(e.severity is Severity.ERROR for e in snap.errors)


def test_error_str_form() -> None:
    key = Key("rule", "istio-system", "promhttp")
    assert str(ResourceError(key, "spec.match", "unknown attribute 'reqest.size'")) == (
        "rule/promhttp.istio-system: spec.match: unknown attribute 'reqest.size'"
    )
    assert str(ResourceError("a.yaml", "", "cannot read file")) == "a.yaml: cannot read file"


# --- dropping bad resources, keeping the rest ---------------------------------------------------

MANIFEST = """
apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: m, namespace: istio-system}
spec:
  attributes:
    request.size: {valueType: INT64}
    request.path: {valueType: STRING}
    context.protocol: {valueType: STRING}
"""


def build(text: str, adapters: Mapping[str, tuple[str, ...]] = INVENTORY, **kw: Any) -> Snapshot:
    result = parse_text(MANIFEST + "\n---\n" + text)
    assert result.ok and not result.errors, result.errors
    return build_snapshot(
        result.resources, adapters=StaticAdapterCatalog(adapters, kw.pop("validator", None)), **kw
    )


def test_handler_rejected_by_its_adapter_is_dropped_with_its_actions() -> None:
    def validator(adapter: str, params: Mapping[str, Any], instances: InstanceTypes) -> list[tuple[str, str]]:
        seen.append((adapter, dict(params), dict(instances)))
        if params.get("bad"):
            return [("bad", "must be false"), ("", "and something else")]
        return []

    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    snap = build(
        """
kind: handler
metadata: {name: good, namespace: istio-system}
spec: {compiledAdapter: noop, params: {x: 1}}
---
kind: noop
metadata: {name: legacybad, namespace: istio-system}
spec: {bad: true}
---
kind: instance
metadata: {name: size, namespace: istio-system}
spec: {compiledTemplate: metric, params: {value: request.size}}
---
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  actions:
  - {handler: good, instances: [size]}
  - {handler: legacybad.noop, instances: [size]}
""",
        validator=validator,
    )
    assert [str(e) for e in snap.errors] == [
        "noop/legacybad.istio-system: spec.bad: must be false",
        "noop/legacybad.istio-system: spec: and something else",
        "rule/r.istio-system: spec.actions[1].handler: handler 'legacybad.noop.istio-system' "
        "is invalid and was dropped (see its errors)",
    ]
    assert list(snap.handlers) == ["good.handler.istio-system"]
    assert snap.handlers["good.handler.istio-system"].instances == ("size.instance.istio-system",)
    (rule,) = snap.rules
    assert rule.actions == (ResolvedAction("good.handler.istio-system", ("size.instance.istio-system",)),)
    assert sorted(a for a, _, _ in seen) == ["noop", "noop"]
    _, _, instances = next(s for s in seen if s[1] == {"x": 1})
    assert instances == {"size.instance.istio-system": ("metric", {"value": ValueType.INT64})}


def test_validator_exception_becomes_an_error() -> None:
    def boom(adapter: str, params: Mapping[str, Any], instances: InstanceTypes) -> list[tuple[str, str]]:
        raise RuntimeError("kaput")

    snap = build(
        """
kind: handler
metadata: {name: h, namespace: istio-system}
spec: {compiledAdapter: noop}
---
kind: instance
metadata: {name: i, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
kind: rule
metadata: {name: r, namespace: istio-system}
spec: {actions: [{handler: h, instances: [i]}]}
""",
        validator=boom,
    )
    assert str(snap.errors[0]) == (
        "handler/h.istio-system: spec.params: adapter 'noop' failed to validate its params: "
        "RuntimeError('kaput')"
    )
    assert snap.rules == () and snap.handlers == {}


def test_rule_with_header_operations_only_is_kept() -> None:
    snap = build(
        """
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  match: context.protocol == "http"
  requestHeaderOperations:
  - {name: x-path, values: [request.path], operation: APPEND}
  - {name: x-gone, operation: REMOVE}
"""
    )
    assert snap.errors == ()
    (rule,) = snap.rules
    assert rule.actions == ()
    append, remove = rule.request_header_operations
    assert append.operation is HeaderAction.APPEND and append.value_texts == ("request.path",)
    assert append.values[0].result_type is ValueType.STRING
    assert remove.operation is HeaderAction.REMOVE and remove.values == ()


def test_out_of_process_adapter_resources_load() -> None:
    snap = snapshot_of(TESTDATA / "mixer/test/spybackend")
    assert snap.errors == ()
    assert [str(w) for w in snap.warnings if "unknown template" in str(w)] == [
        f"adapter/spybackend-nosession.istio-system: spec.templates[{i}]: unknown template '{t}' (no "
        "template resource of that name, and not built into mixerd): no instance can be of it"
        for i, t in ((3, "apa"), (4, "checkoutput"))
    ]
    assert Key("adapter", "istio-system", "spybackend-session") in snap.resources


OOP_ADAPTERS = DATA / "oop" / "published-adapters.yaml"
OOP_CONFIGS = [
    (TESTDATA / "mixer/test/listbackend",),
    # Mixer's prometheus test reads two pre-1.0 attributes (source.service), declared by its test.
    (TESTDATA / "mixer/test/prometheus", DATA / "oop" / "legacy-attributes.yaml"),
    (TESTDATA / "samples/bookinfo/policy/prometheus-oop-rule.yaml",),
]


@pytest.mark.parametrize("paths", OOP_CONFIGS, ids=lambda p: p[0].name)
def test_mixer_out_of_process_configs_validate(paths: tuple[Path, ...]) -> None:
    """Mixer's out-of-process test configs, with the adapter resources their adapters publish:
    every handler is an out-of-process one, every rule is kept."""
    snap = snapshot_of(*paths, OOP_ADAPTERS, base_manifest=stock_manifest())
    assert snap.errors == ()
    assert snap.rules and all(r.actions for r in snap.rules)
    assert all(h.remote is not None for h in snap.handlers.values())
    ignored = sorted(str(w) for w in snap.warnings if "ignored" in str(w))
    assert ignored == [
        "adapter/prometheus.istio-system: 'prometheus' is an adapter built into mixerd; this adapter "
        "resource is ignored",
        "template/metric.istio-system: 'metric' is a template built into mixerd; this descriptor is ignored",
    ]


def test_duplicate_keys_last_wins() -> None:
    first = parse_text(
        "kind: instance\nmetadata: {name: i}\nspec: {compiledTemplate: metric, params: {value: '1'}}\n",
        file="a.yaml",
    ).resources
    second = parse_text(
        "kind: instance\nmetadata: {name: i}\nspec: {compiledTemplate: metric, params: {value: '2'}}\n",
        file="b.yaml",
    ).resources
    snap = build_snapshot(first + second, adapters=StaticAdapterCatalog(INVENTORY))
    assert snap.instances["i.instance.istio-system"].params == {"value": "2"}
    assert [str(w) for w in snap.warnings if "more than once" in str(w)] == [
        "instance/i.istio-system: defined more than once (a.yaml:1 (document 1) and b.yaml:1 (document 1)); "
        "the last definition is used"
    ]


def test_problems_and_warnings_from_loading_are_carried() -> None:
    err = ResourceError("bad.yaml", "line 3, column 1", "invalid YAML: boom")
    warn = ResourceError("x.yaml", "", "something", Severity.WARNING)
    snap = build_snapshot([], adapters=StaticAdapterCatalog({}), problems=[err, warn])
    assert snap.errors == (err,)
    assert snap.warnings == (warn,)


def test_compat_dialect_and_unknown_dialect() -> None:
    snap = build(
        """
kind: instance
metadata:
  name: i
  namespace: istio-system
  annotations: {policy.istio.io/lang: COMPAT}
spec: {compiledTemplate: metric, params: {value: '1'}}
---
kind: instance
metadata:
  name: j
  namespace: istio-system
  annotations: {policy.istio.io/lang: PYTHON}
spec: {compiledTemplate: metric, params: {value: '1'}}
"""
    )
    assert [str(e) for e in snap.errors] == [
        'instance/j.istio-system: metadata.annotations["policy.istio.io/lang"]: unknown expression '
        "language 'PYTHON' (expected CEXL, CEL or COMPAT)"
    ]
    assert list(snap.instances) == ["i.instance.istio-system"]


def test_bindings_only_for_generators() -> None:
    snap = build(
        """
kind: instance
metadata: {name: i, namespace: istio-system}
spec:
  compiledTemplate: metric
  params: {value: '1'}
  attributeBindings: {request.path: $out.x}
"""
    )
    assert [str(e) for e in snap.errors] == [
        "instance/i.istio-system: spec.attributeBindings: template 'metric' produces no outputs "
        "(only attribute generators such as 'kubernetes' take attributeBindings)"
    ]


def test_quota_spec_warns_about_unconfigured_quota() -> None:
    snap = build(
        """
kind: handler
metadata: {name: q, namespace: istio-system}
spec: {compiledAdapter: memquota}
---
kind: instance
metadata: {name: requestcountquota, namespace: istio-system}
spec: {compiledTemplate: quota, params: {dimensions: {path: request.path}}}
---
kind: rule
metadata: {name: quota, namespace: istio-system}
spec: {actions: [{handler: q, instances: [requestcountquota]}]}
---
kind: QuotaSpec
metadata: {name: request-count, namespace: istio-system}
spec:
  rules:
  - quotas: [{quota: RequestCountQuota, charge: 1}, {quota: typo, charge: 1}]
---
kind: QuotaSpecBinding
metadata: {name: request-count, namespace: istio-system}
spec:
  quotaSpecs: [{name: request-count}, {name: nope, namespace: default}]
  services: [{name: productpage, namespace: default}]
"""
    )
    assert snap.errors == ()
    assert [str(w) for w in snap.warnings] == [
        "QuotaSpec/request-count.istio-system: spec.rules[0].quotas[1].quota: no rule sends a quota "
        "instance named 'typo' to a handler; such a quota is granted without any check",
        "QuotaSpecBinding/request-count.istio-system: spec.quotaSpecs[1]: QuotaSpec 'nope' not found "
        "in namespace 'default'",
    ]
    assert list(snap.quota_specs) == [Key("QuotaSpec", "istio-system", "request-count")]
    assert list(snap.quota_spec_bindings) == [Key("QuotaSpecBinding", "istio-system", "request-count")]


def test_unused_handlers_and_instances_are_warnings() -> None:
    snap = build(
        """
kind: handler
metadata: {name: h, namespace: istio-system}
spec: {compiledAdapter: noop}
---
kind: instance
metadata: {name: i, namespace: istio-system}
spec: {compiledTemplate: checknothing}
"""
    )
    assert snap.errors == ()
    assert [str(w) for w in snap.warnings] == [
        "handler/h.istio-system: not used by any rule in effect "
        "(its params were not validated by the adapter)",
        "instance/i.istio-system: not used by any rule in effect",
    ]
    text = format_report(snap, show_sources=False)
    assert text.splitlines()[0] == "warning: " + str(snap.warnings[0])
    assert "warning:" not in format_report(snap, show_warnings=False)
    assert snap.handlers["h.handler.istio-system"].instances == ()


def test_rules_in_other_namespaces_resolve_locally() -> None:
    snap = build(
        """
kind: handler
metadata: {name: h, namespace: istio-system}
spec: {compiledAdapter: noop}
---
kind: instance
metadata: {name: i, namespace: default}
spec: {compiledTemplate: checknothing}
---
kind: rule
metadata: {name: r, namespace: default}
spec:
  actions:
  - {handler: h, instances: [i]}
  - {handler: h.istio-system, instances: [i]}
"""
    )
    assert [str(e) for e in snap.errors] == [
        "rule/r.default: spec.actions[0].handler: handler 'h' not found (looked for h.handler.default)"
    ]
    (rule,) = snap.rules
    assert rule.namespace == "default"
    assert rule.actions == (ResolvedAction("h.handler.istio-system", ("i.instance.default",)),)


def test_snapshot_ids_increase_and_snapshot_is_read_only() -> None:
    a = build_snapshot([], adapters=StaticAdapterCatalog({}))
    b = build_snapshot([], adapters=StaticAdapterCatalog({}))
    assert b.id > a.id
    assert build_snapshot([], adapters=StaticAdapterCatalog({}), snapshot_id=42).id == 42
    with pytest.raises(TypeError):
        a.instances["x"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        a.id = 3  # type: ignore[misc]


def test_base_manifest() -> None:
    text = (
        "kind: rule\nmetadata: {name: r}\n"
        "spec: {match: source.name == 'a', requestHeaderOperations: [{name: x, values: ['\"y\"']}]}\n"
    )
    resources = parse_text(text).resources
    bare = build_snapshot(resources, adapters=StaticAdapterCatalog({}))
    assert [str(e) for e in bare.errors] == [
        "rule/r.istio-system: spec.match: unknown attribute 'source.name'"
    ]
    stocked = build_snapshot(resources, adapters=StaticAdapterCatalog({}), base_manifest=stock_manifest())
    assert stocked.errors == ()


async def test_accepts_a_mapping_of_resources() -> None:
    store = MemoryStore(parse_text(MANIFEST).resources)
    state: dict[Key, Resource] = await store.list()
    snap = build_snapshot(state, adapters=StaticAdapterCatalog({}))
    assert "request.size" in snap.manifest


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, {"y": 2, "x": 1}]}) == '{"a":[1,{"x":1,"y":2}],"b":1}'


def test_report_text() -> None:
    snap = snapshot_of(
        DATA / "errors.yaml", STOCK / "destinationrules.yaml", adapters={"prometheus": ("metric",)}
    )
    text = format_report(snap, show_sources=False)
    lines = text.splitlines()
    assert lines[0] == "error: " + EXPECTED_ERRORS[0]
    assert not any(line.startswith("warning:") for line in lines)
    assert (
        "ignored: DestinationRule/istio-policy.istio-system (networking.istio.io/v1alpha3): "
        "not a Mixer resource (other API group)" in lines
    )
    assert lines[-1] == (
        "in effect: 1 attribute manifest (5 attributes), 1 instance, 1 handler, 1 rule, 0 quota specs, "
        "0 quota spec bindings; 19 errors, 0 warnings, 2 ignored"
    )
    with_sources = format_report(snap)
    assert f"  [{DATA / 'errors.yaml'}:17 (document 2)]" in with_sources


# --- every Mixer sample, with Mixer's adapter inventory ------------------------------------------

SAMPLES = sorted((TESTDATA / "samples/bookinfo").rglob("*.yaml"))
# Samples that cannot validate alone, and why (the out-of-process sample's adapter resource is
# published by the adapter, not the sample: test_mixer_out_of_process_configs_validate adds it).
FAILING_SAMPLES = {
    "policy/prometheus-oop-rule.yaml": [
        "handler/prometheus-handler.istio-system: spec.adapter: no adapter resource named "
        "'prometheus-nosession' (an out-of-process adapter is declared with a `kind: adapter` resource "
        "listing its templates and config descriptor)",
        "rule/promhttp-oop.istio-system: spec.actions[0].handler: handler "
        "'prometheus-handler.handler.istio-system' is invalid and was dropped (see its errors)",
        "rule/promhttp-oop.istio-system: spec.actions: no valid actions and no header operations; "
        "the rule is dropped",
    ],
}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bookinfo_samples(path: Path) -> None:
    snap = snapshot_of(path, base_manifest=stock_manifest())
    name = f"{path.parent.name}/{path.name}"
    assert [str(e) for e in snap.errors] == FAILING_SAMPLES.get(name, [])
    if name not in FAILING_SAMPLES:
        assert snap.warnings == ()


def test_hand_made_resource_with_mismatched_spec_is_reported() -> None:
    odd = Resource(Key("rule", "istio-system", "r"), HandlerSpec(compiled_adapter="noop"))
    alien = Resource(Key("gizmo", "istio-system", "g"), RuleSpec())
    snap = build_snapshot([odd, alien], adapters=StaticAdapterCatalog(INVENTORY))
    assert [str(e) for e in snap.errors] == [
        "rule/r.istio-system: spec: a rule needs a RuleSpec, got HandlerSpec",
        "gizmo/g.istio-system: kind: unknown kind 'gizmo'",
    ]
    assert snap.rules == () and snap.handlers == {}


# The kind shorthand (`kind: <adapter>` / `kind: <template>`) for adapters and templates that are
# not in Mixer's fixed list: (config, the adapters installed, expected errors, handler FQN ->
# adapter, instance FQN -> template).
_SHORTHAND_RULE = """
---
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  actions: [{handler: h.myadapter, instances: [c.checknothing]}]
"""
PLUGIN_KINDS = [
    pytest.param(
        "kind: myadapter\nmetadata: {name: h, namespace: istio-system}\nspec: {level: 3}\n---\n"
        "kind: checknothing\nmetadata: {name: c, namespace: istio-system}\nspec: {}" + _SHORTHAND_RULE,
        {"myadapter": ("checknothing",)},
        [],
        {"h.myadapter.istio-system": ("myadapter", {"level": 3})},
        id="a plugin adapter's kind is a handler of it",
    ),
    pytest.param(
        "kind: list\nmetadata: {name: l, namespace: istio-system}\nspec: {overrides: [a]}",
        {"list": ("listentry",)},
        [],
        {"l.list.istio-system": ("list", {"overrides": ["a"]})},
        id="so is a built-in adapter missing from Mixer's list",
    ),
    pytest.param(
        "kind: gizmo\nmetadata: {name: g, namespace: istio-system}\nspec: {}",
        {"myadapter": ("checknothing",)},
        ["gizmo/g.istio-system: kind: unknown kind 'gizmo' (no adapter or template of that name)"],
        {},
        id="a kind nothing is installed for is refused",
    ),
    pytest.param(
        "kind: myadapter\nmetadata: {name: h, namespace: istio-system}\nspec: {attributeBindings: {a: b}}",
        {"myadapter": ("checknothing",)},
        [
            "myadapter/h.istio-system: spec.attributeBindings: a handler (kind myadapter) has no attributeBindings"
        ],
        {},
        id="a handler shorthand takes no attributeBindings",
    ),
]


@pytest.mark.parametrize(("text", "adapters", "errors", "handlers"), PLUGIN_KINDS)
def test_kind_shorthand_for_plugins(
    text: str, adapters: Mapping[str, tuple[str, ...]], errors: list[str], handlers: dict[str, Any]
) -> None:
    snap = build(text, adapters={**INVENTORY, **adapters})
    assert [str(e) for e in snap.errors] == errors
    assert {fqn: (h.adapter, dict(h.params)) for fqn, h in snap.handlers.items()} == handlers
    if handlers and "myadapter" in adapters and not errors:
        assert [a.handler_fqn for r in snap.rules for a in r.actions] == ["h.myadapter.istio-system"]
