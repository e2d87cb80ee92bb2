"""Mixer's routing builder scenarios (tests/data/mixer_routing_cases.yaml): the routing table's
dump for each config (what a merged group dispatches is in tests/data/mixer_dispatch_cases.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime

DATA = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "mixer_routing_cases.yaml").read_text())
CASES: list[dict[str, Any]] = DATA["cases"]


def _config(case: dict[str, Any]) -> str:
    docs = [DATA["config"]]
    for name, rule in case["rules"].items():
        docs.append(
            yaml.safe_dump(
                {
                    "apiVersion": "config.istio.io/v1alpha2",
                    "kind": "rule",
                    "metadata": {
                        "name": name,
                        "namespace": rule.get("namespace", "istio-system"),
                        "annotations": rule.get("annotations", {}),
                    },
                    "spec": {
                        "match": rule.get("match", ""),
                        "actions": [{"handler": rule["handler"], "instances": rule["instances"]}],
                    },
                }
            )
        )
    return "\n---\n".join(docs)


async def runtime_of(text: str) -> Runtime:
    parsed = parse_text(text, file="case.yaml")
    store = MemoryStore()
    store.replace(parsed.resources, parsed.errors)
    rt = Runtime(store)
    await rt.start()
    return rt


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_mixer_routing_case(case: dict[str, Any]) -> None:
    rt = await runtime_of(_config(case))
    try:
        dump = rt.dispatcher.table.dump().split("\n", 1)[1]
        assert dump == case["dump"]
    finally:
        await rt.close()
