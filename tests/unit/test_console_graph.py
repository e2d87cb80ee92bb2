"""The service graph against ``tests/data/console_graph.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.console import stats
from mixerd.console.graph import GRAPH_TYPES, graph, service_name
from mixerd.console.model import Peer
from mixerd.console.store.base import EdgeRollup

CASES = yaml.safe_load((Path(__file__).parent.parent / "data" / "console_graph.yaml").read_text())["cases"]
T0 = 1_800_000_000_000_000


def _peer(text: str) -> Peer:
    if "/" not in text:
        return Peer(workload=text)
    parts = [*text.split("/"), "", "", "", ""][:5]
    return Peer(namespace=parts[0], workload=parts[1], app=parts[2], version=parts[3], service=parts[4])


def _histogram(spec: dict[Any, int] | None) -> tuple[int, ...]:
    counts = stats.empty()
    for bound, n in (spec or {}).items():
        counts[len(stats.BOUNDS_MS) if bound == "inf" else stats.BOUNDS_MS.index(bound)] = n
    return tuple(counts) if spec else ()


def _rollup(spec: dict[str, Any]) -> EdgeRollup:
    return EdgeRollup(
        bucket_us=T0 + spec.get("at", 0) * 1_000_000,
        reporter=spec.get("r", "source"),
        source=_peer(spec["from"]),
        destination=_peer(spec["to"]),
        protocol=spec.get("proto", "http"),
        response_code=spec.get("code", 200),
        count=spec.get("n", 1),
        errors=spec.get("err", 0),
        denied=spec.get("denied", 0),
        duration_sum_us=0,
        histogram=_histogram(spec.get("hist")),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_graph(case: dict[str, Any], order: str) -> None:
    rollups = [_rollup(r) for r in case["rollups"]]
    if order == "reversed":
        rollups.reverse()
    got = graph(rollups, case["type"], case["duration"])
    assert got["graphType"] == case["type"] and got["duration"] == case["duration"]
    nodes = [n["data"] for n in got["elements"]["nodes"]]
    assert [n["id"] for n in nodes] == [w if isinstance(w, str) else w["id"] for w in case["nodes"]]
    for have, want in zip(nodes, case["nodes"], strict=True):
        if isinstance(want, dict):
            assert have == want
        else:
            assert set(have) == {"id", "nodeType", "namespace", "workload", "app", "version", "service"}
    edges = {}
    for e in got["elements"]["edges"]:
        data = e["data"]
        assert data["id"] == f"{data['source']}->{data['target']}"
        assert data["source"] in {n["id"] for n in nodes} and data["target"] in {n["id"] for n in nodes}
        traffic = data["traffic"]
        edges[data["id"]] = {
            "protocol": traffic["protocol"],
            "http": traffic["rates"]["http"],
            "err": traffic["rates"]["httpPercentErr"],
            "denied": traffic["rates"]["httpDenied"],
            "responses": traffic["responses"],
            "rt": data["responseTime"],
        }
    assert list(edges) == sorted(edges)
    want_edges = case["edges"]
    assert set(edges) == set(want_edges)
    for edge_id, want in want_edges.items():
        have = edges[edge_id]
        assert have == {
            **want,
            "http": pytest.approx(want["http"]),
            "denied": pytest.approx(want["denied"]),
        }, edge_id


def test_graph_types() -> None:
    assert GRAPH_TYPES == ("workload", "app", "versionedApp", "service")


def test_unknown_graph_type() -> None:
    with pytest.raises(ValueError, match="unknown graph type 'services'"):
        graph([], "services", 60)


@pytest.mark.parametrize("duration", [0, -1.0, float("nan")])
def test_duration_must_be_positive(duration: float) -> None:
    with pytest.raises(ValueError, match="graph duration must be positive"):
        graph([], "workload", duration)


@pytest.mark.parametrize(
    ("host", "namespace", "name"),
    [
        ("reviews.shop.svc.cluster.local", "", "reviews"),
        ("reviews.shop.svc", "shop", "reviews"),
        ("reviews.shop", "shop", "reviews"),
        ("reviews.shop", "", "reviews.shop"),
        ("reviews", "shop", "reviews"),
        ("api.example.com", "shop", "api.example.com"),
    ],
)
def test_service_name(host: str, namespace: str, name: str) -> None:
    assert service_name(host, namespace) == name
