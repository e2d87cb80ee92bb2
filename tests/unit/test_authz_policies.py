"""AuthorizationPolicy matching (mixerd.runtime.authz) against the table in tests/data/authz_policies.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Code, ManualClock
from mixerd.config import StaticAdapterCatalog, build_snapshot, parse_documents
from mixerd.runtime import RuntimeMetrics
from mixerd.runtime.authz import PolicyIndex, Request, compile_policies, evaluate
from mixerd.runtime.security import Pending, build_security

TABLE = yaml.safe_load((Path(__file__).parent.parent / "data" / "authz_policies.yaml").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]


def _index(docs: list[dict[str, Any]]) -> PolicyIndex:
    parsed = parse_documents((d, None) for d in docs)
    assert not parsed.errors
    snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
    assert not snapshot.errors, [str(e) for e in snapshot.errors]
    return PolicyIndex(compile_policies(snapshot.security, "istio-system"), "istio-system")


def test_case_names_are_unique() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_policy_table(case: dict[str, Any]) -> None:
    index = _index(case["policies"])
    bag = dict(case["request"])
    policies = index.applicable(bag.get("destination.namespace", ""), bag.get("destination.labels"))
    decision = evaluate(policies, Request(bag, case.get("claims")))
    assert decision.allowed is case["allowed"]
    assert decision.policy == case["policy"]
    assert list(decision.audits) == case.get("audits", [])
    # the workload's decision cache (by the values the policies read) answers the same, twice
    workload = index.workload(bag.get("destination.namespace", ""), bag.get("destination.labels"))
    for _ in range(2):
        assert workload.decide(Request(bag, case.get("claims"))) == decision
    claims = case.get("claims")
    if claims is not None:
        # As with a token mixerd verified: its request.auth.* attributes given apart from the
        # bag, and what the policies read from it kept in the token's memo.
        auth = {k: v for k, v in bag.items() if k.startswith("request.auth.")}
        memo: dict[Any, Any] = {}
        for _ in range(2):
            assert workload.decide(Request(bag, claims, auth, memo)) == decision


def test_index_caches_per_workload_and_reads_only_selector_keys() -> None:
    index = _index([TABLE["policies"]["allow-get"], TABLE["policies"]["deny-admin"]])
    web = index.applicable("foo", {"app": "web", "pod-template-hash": "abc"})
    assert [p.name for p in web] == ["foo/allow-get", "foo/deny-admin"]
    # another pod of the same workload (labels the selectors do not read differ): the same tuple
    assert index.applicable("foo", {"app": "web", "pod-template-hash": "def"}) is web
    assert [p.name for p in index.applicable("foo", {"app": "db"})] == ["foo/deny-admin"]
    assert index.applicable("bar", None) == ()


def test_as_mapping_tells_mappings_from_other_values_by_class() -> None:
    from types import MappingProxyType

    from mixerd.runtime.authz import as_mapping, request_headers

    for _ in range(2):  # the second time from what the first found per class
        assert as_mapping({"a": "1"}) == {"a": "1"}
        assert as_mapping(MappingProxyType({"a": "1"})) == {"a": "1"}
        assert as_mapping("a=1") is None
        assert as_mapping(None) is None
    assert request_headers({"request.headers": {"x": "y"}}) == {"x": "y"}
    assert request_headers({"request.headers": ["x"]}) is None
    assert request_headers({}) is None


def test_the_gate_remembers_a_finding_only_under_what_decides_it() -> None:
    """Every request of the table through the gate of every case's policies, twice (the second
    time answered from the gate's findings kept by the values the policies read): each answer
    is the decision of the policies evaluated afresh. A key that left out a value a policy
    reads would give one request another's answer here."""
    requests = [dict(c["request"]) for c in CASES]
    for case in CASES:
        parsed = parse_documents((d, None) for d in case["policies"])
        snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
        index = _index(case["policies"])
        table, problems = build_security(
            snapshot.security,
            "istio-system",
            clock=ManualClock(),
            decisions=RuntimeMetrics().counter("d", "x", ["policy", "action", "dry_run"]),
        )
        assert not problems
        if table is None:
            assert not case["policies"]
            continue
        for _ in range(2):
            for bag in requests:
                ns = bag.get("destination.namespace", "")
                expected = evaluate(index.applicable(ns, bag.get("destination.labels")), Request(bag))
                verdict = table.decide(bag)
                assert not isinstance(verdict, Pending)
                allowed = verdict is None or verdict.code == Code.OK
                assert allowed is expected.allowed, (case["name"], bag)
                if not allowed:
                    assert verdict is not None and verdict.policy == expected.policy
