"""ServiceRole / ServiceRoleBinding / ClusterRbacConfig (mixerd.runtime.rbac) against tests/data/authz_rbac.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.config import StaticAdapterCatalog, build_snapshot, parse_documents
from mixerd.runtime.authz import Request, evaluate
from mixerd.runtime.rbac import compile_rbac

TABLE = yaml.safe_load((Path(__file__).parent.parent / "data" / "authz_rbac.yaml").read_text())


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_rbac_table(case: dict[str, Any]) -> None:
    parsed = parse_documents((d, None) for d in case["config"])
    snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
    assert not snapshot.errors, [str(e) for e in snapshot.errors]
    policies = compile_rbac(snapshot.security, "istio-system")
    req = Request(case["request"], case.get("claims"))
    enforced = evaluate([p for p in policies if not p.dry_run], req)
    assert enforced.allowed is case["allowed"]
    if not enforced.allowed:
        assert enforced.policy == "rbac"
    if "dry_run_allowed" in case:
        assert evaluate([p for p in policies if p.dry_run], req).allowed is case["dry_run_allowed"]


def test_binding_to_a_missing_role_is_a_warning() -> None:
    doc = {
        "apiVersion": "rbac.istio.io/v1alpha1",
        "kind": "ServiceRoleBinding",
        "metadata": {"name": "b", "namespace": "shop"},
        "spec": {"subjects": [{"user": "*"}], "roleRef": {"kind": "ServiceRole", "name": "nope"}},
    }
    snapshot = build_snapshot(parse_documents([(doc, None)]).resources, adapters=StaticAdapterCatalog({}))
    assert not snapshot.errors
    assert [str(w) for w in snapshot.warnings] == [
        "ServiceRoleBinding/b.shop: spec.roleRef.name: ServiceRole 'nope' not found in namespace 'shop'; "
        "this binding grants nothing"
    ]
