"""Work a handler drops is counted in the runtime's /metrics with a reason: nothing is lost silently."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mixerd.attribute import DictBag
from mixerd.config import MemoryStore, parse_text
from mixerd.runtime import Runtime

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: lines, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params: {{logStream: FILE, outputPath: "{out}", maxQueuedLines: 2}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: line, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params: {{severity: '"info"', timestamp: request.time, variables: {{path: request.path | ""}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: all, namespace: istio-system}}
spec:
  actions: [{{handler: lines, instances: [line]}}]
"""


async def test_a_full_adapter_queue_is_counted_in_metrics(tmp_path: Path) -> None:
    parsed = parse_text(CONFIG.format(out=tmp_path / "out.log"))
    assert not parsed.errors
    runtime = Runtime(MemoryStore(parsed.resources))
    await runtime.start()
    try:
        assert not runtime.dispatcher.table.errors, runtime.dispatcher.table.errors
        now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        bags = [DictBag({"request.time": now, "request.path": f"/{i}"}) for i in range(7)]
        await runtime.dispatcher.report(bags)  # one batch of 7 lines into a queue of 2
        labels = {"handler": "lines.handler.istio-system", "reason": "queue_full"}
        assert runtime.metrics.value("mixerd_adapter_dropped_total", labels) == 5
    finally:
        await runtime.close()
