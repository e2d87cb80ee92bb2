"""Name resolution of rule references (mixerd.config.resolve), on every rule of the conformance data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixerd.config import LEGACY_KINDS, RuleSpec, candidates, load_paths, resolve, short_name
from tests.conformance_data import conformance_dir

CONFORMANCE = conformance_dir()
TESTDATA = CONFORMANCE / "mixer-testdata-config"


def test_candidates() -> None:
    assert candidates("denyall", "handler", "istio-system") == ("denyall.handler.istio-system",)
    assert candidates("denyrequest.checknothing", "instance", "ns") == (
        "denyrequest.checknothing.ns",
        "denyrequest.instance.checknothing",
    )
    assert candidates("source-whitelist.istio-system", "handler", "istio-system") == (
        "source-whitelist.istio-system.istio-system",
        "source-whitelist.handler.istio-system",
    )
    assert candidates("requestcount.metric.istio-system", "instance", "default") == (
        "requestcount.metric.istio-system",
    )
    assert candidates("a.b.c.d", "instance", "ns") == ("a.b.c.d",)


def test_resolve_prefers_name_kind_form() -> None:
    known = {"x.prometheus.ns", "x.handler.prometheus"}
    assert resolve("x.prometheus", "handler", "ns", known).fqn == "x.prometheus.ns"
    assert resolve("x.prometheus", "handler", "other", known).fqn == "x.handler.prometheus"
    miss = resolve("x", "handler", "ns", known)
    assert miss.fqn is None
    assert miss.describe_failure() == "looked for x.handler.ns"


def test_no_fallback_to_default_namespace() -> None:
    known = {"prometheus.handler.istio-system"}
    assert resolve("prometheus", "handler", "default", known).fqn is None
    assert (
        resolve("prometheus.istio-system", "handler", "default", known).fqn
        == "prometheus.handler.istio-system"
    )


def test_short_name() -> None:
    assert short_name("requestcount.instance.istio-system") == "requestcount"
    assert short_name("requestcount") == "requestcount"


# --- every rule of the conformance YAML ---------------------------------------------------------

# A rule sees the resources of its own file plus, for the directories that Mixer loads as a
# whole (mixer/testdata/config, mixer/test/<x>), of its directory; the stock config is one set.
GROUPS: dict[str, list[Path]] = {
    "stock": [CONFORMANCE / "stock-telemetry-config/rendered"],
    "testdata": [TESTDATA / "mixer/testdata/config"],
    "listbackend": [TESTDATA / "mixer/test/listbackend"],
    "prometheus-oop": [TESTDATA / "mixer/test/prometheus"],
    **{
        f"sample:{p.parent.name}/{p.name}": [p]
        for p in sorted((TESTDATA / "samples/bookinfo").rglob("*.yaml"))
    },
}

# (group, rule FQN, written reference) -> expected FQN, for the interesting spellings.
EXPECTED = {
    ("testdata", "mixerdenysome.rule.istio-system", "denyall"): "denyall.handler.istio-system",
    (
        "testdata",
        "mixerdenysome.rule.istio-system",
        "denyrequest.checknothing",
    ): "denyrequest.checknothing.istio-system",
    ("testdata", "stdiotcp.rule.istio-system", "stdio.handler"): "stdio.handler.istio-system",
    ("testdata", "quota.rule.istio-system", "requestcount.quota"): "requestcount.quota.istio-system",
    ("listbackend", "listchecker-oop.rule.istio-system", "source-whitelist.istio-system"): (
        "source-whitelist.handler.istio-system"
    ),
    (
        "sample:policy/mixer-rule-productpage-ratelimit-crd.yaml",
        "quota.rule.istio-system",
        "handler.memquota",
    ): ("handler.memquota.istio-system"),
    ("sample:policy/mixer-rule-deny-ip-crd.yaml", "checkip.rule.istio-system", "whitelistip.listchecker"): (
        "whitelistip.listchecker.istio-system"
    ),
    ("sample:telemetry/tcp-metrics-crd.yaml", "mongoprom.rule.default", "mongohandler.prometheus"): (
        "mongohandler.prometheus.default"
    ),
    ("sample:telemetry/tcp-metrics-crd.yaml", "mongoprom.rule.default", "mongosentbytes.metric"): (
        "mongosentbytes.metric.default"
    ),
    ("stock", "promhttp.rule.istio-system", "prometheus"): "prometheus.handler.istio-system",
    ("stock", "kubeattrgenrulerule.rule.istio-system", "attributes"): "attributes.instance.istio-system",
}


def _role(kind: str) -> str | None:
    if kind in ("handler", "instance"):
        return kind
    legacy = LEGACY_KINDS.get(kind)
    return legacy.role if legacy else None


def _references(group: str) -> list[tuple[str, str, str, str, str | None]]:
    """(group, rule FQN, role, reference, resolved FQN) for every action of every rule."""
    result = load_paths(GROUPS[group])
    handlers = {r.key.fqn for r in result.resources if _role(r.key.kind) == "handler"}
    instances = {r.key.fqn for r in result.resources if _role(r.key.kind) == "instance"}
    out: list[tuple[str, str, str, str, str | None]] = []
    for r in result.resources:
        if not isinstance(r.spec, RuleSpec):
            continue
        ns = r.key.namespace
        for action in r.spec.actions:
            out.append(
                (
                    group,
                    r.key.fqn,
                    "handler",
                    action.handler,
                    resolve(action.handler, "handler", ns, handlers).fqn,
                )
            )
            for name in action.instances:
                out.append((group, r.key.fqn, "instance", name, resolve(name, "instance", ns, instances).fqn))
    return out


ALL_REFERENCES = [ref for group in GROUPS for ref in _references(group)]


def test_reference_count() -> None:
    # 6 stock rules + the testdata, test and sample rules: every one of them has at least a handler.
    assert len({(g, rule) for g, rule, *_ in ALL_REFERENCES}) >= 45
    assert len(ALL_REFERENCES) >= 120


@pytest.mark.parametrize("ref", ALL_REFERENCES, ids=lambda ref: f"{ref[0]}:{ref[1]}:{ref[3]}")
def test_every_rule_reference_resolves(ref: tuple[str, str, str, str, str | None]) -> None:
    group, rule, role, name, fqn = ref
    assert fqn is not None, f"{rule}: {role} '{name}' does not resolve"
    expected = EXPECTED.get((group, rule, name))
    if expected is not None:
        assert fqn == expected


def test_expected_cases_are_present() -> None:
    seen = {(g, rule, name) for g, rule, _, name, _ in ALL_REFERENCES}
    assert set(EXPECTED) <= seen
