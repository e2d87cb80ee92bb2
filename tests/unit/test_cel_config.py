"""Rules and instances annotated ``policy.istio.io/lang: CEL`` (or ``COMPAT``) are compiled in that
dialect, routed and dispatched end to end in process, next to CEXL resources."""

from __future__ import annotations

from typing import Any

from mixerd.adapter import Code, load_adapters
from mixerd.attribute import DictBag
from mixerd.runtime import Runtime
from tests.unit.test_runtime import SPY, Spy, store_of

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: spy, namespace: istio-system}
spec: {compiledAdapter: spy, params: {tag: s, code: 7, message: denied}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: celcheck
  namespace: istio-system
  annotations: {policy.istio.io/lang: CEL}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: celmetric
  namespace: istio-system
  annotations: {policy.istio.io/lang: CEL}
spec:
  compiledTemplate: metric
  params:
    value: size(request.path)
    dimensions:
      user: pick(request.headers["x-user"], "anonymous")
      reporter: 'context.reporter.kind == "outbound" ? "source" : "destination"'
      big: request.size > 1000
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: cexlmetric, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: '1'
    dimensions:
      user: request.headers["x-user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: deny-blocked
  namespace: istio-system
  annotations: {policy.istio.io/lang: CEL}
spec:
  match: '!("x-user" in request.headers) || request.headers["x-user"] in ["blocked", "banned"]'
  actions: [{handler: spy, instances: [celcheck]}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: tag
  namespace: istio-system
  annotations: {policy.istio.io/lang: COMPAT}
spec:
  match: request.headers["x-user"] == "alice"
  requestHeaderOperations:
  - name: x-size
    values: ['request.headers["x-size"] | "none"']
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: report
  namespace: istio-system
  annotations: {policy.istio.io/lang: CEL}
spec:
  match: request.path.startsWith("/api")
  actions: [{handler: spy, instances: [celmetric, cexlmetric]}]
"""


async def _runtime(text: str) -> Runtime:
    rt = Runtime(store_of(text), adapters={**load_adapters(), "spy": SPY})
    await rt.start()
    return rt


async def test_cel_rules_and_instances_route_and_dispatch() -> None:
    rt = await _runtime(CONFIG)
    try:
        snapshot = rt.snapshot
        assert snapshot is not None and [str(e) for e in snapshot.errors] == []
        d = rt.dispatcher

        Spy.calls = []
        for user in ("blocked", "banned"):
            out = await d.check(DictBag({"request.headers": {"x-user": user}}))
            assert out.result.status.code == Code.PERMISSION_DENIED
        out = await d.check(DictBag({}))  # no x-user header: denied too
        assert out.result.status.code == Code.PERMISSION_DENIED
        assert [c for c in Spy.calls if c[0] == "check"] == [("check", "s")] * 3

        Spy.calls = []
        out = await d.check(DictBag({"request.headers": {"x-user": "alice"}}))
        assert out.result.status.code == Code.OK
        assert Spy.calls == []
        assert out.directive is not None
        assert [(h.name, h.value) for h in out.directive.request_header_operations] == [("x-size", "none")]

        Spy.calls = []
        problems = await d.report(
            [
                DictBag(
                    {
                        "request.path": "/api/v1",
                        "request.size": 2048,
                        "context.reporter.kind": "outbound",
                        "request.headers": {"x-user": "bob"},
                    }
                ),
                DictBag({"request.path": "/api"}),  # absent attributes: CEL's zero values
                DictBag({"request.path": "/other"}),  # no match
            ]
        )
        assert problems == []
        metrics: list[Any] = [c[1] for c in Spy.calls if c[0] == "metric"]
        dims = sorted((sorted(d.items()) for batch in metrics for d in batch), key=str)
        assert dims == sorted(
            [
                sorted({"user": "bob", "reporter": "source", "big": True}.items()),
                sorted({"user": "anonymous", "reporter": "destination", "big": False}.items()),
                [("user", "bob")],
                [("user", "anonymous")],
            ],
            key=str,
        )
    finally:
        await rt.close()


async def test_a_cel_error_drops_only_its_resource_with_the_field_path() -> None:
    text = CONFIG.replace('request.path.startsWith("/api")', "request.path.startsWith(1)").replace(
        "value: size(request.path)", "value: size(request.path) +"
    )
    text += """
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: python
  namespace: istio-system
  annotations: {policy.istio.io/lang: PYTHON}
spec:
  match: 'true'
  actions: [{handler: spy, instances: [celcheck]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: listdim
  namespace: istio-system
  annotations: {policy.istio.io/lang: CEL}
spec:
  compiledTemplate: metric
  params: {value: '1', dimensions: {codes: '[1, 2]'}}
"""
    rt = await _runtime(text)
    try:
        snapshot = rt.snapshot
        assert snapshot is not None
        assert [str(e) for e in snapshot.errors] == [
            "instance/celmetric.istio-system: spec.params.value: Syntax error: expected an operand, "
            "found end of input",
            "rule/report.istio-system: spec.match: found no matching overload for 'string.startsWith' "
            "applied to '(int)'",
            "rule/report.istio-system: spec.actions[0].instances[0]: instance 'celmetric.instance.istio-system' "
            "is invalid and was dropped (see its errors)",
            'rule/python.istio-system: metadata.annotations["policy.istio.io/lang"]: unknown expression '
            "language 'PYTHON' (expected CEXL, CEL or COMPAT)",
            "instance/listdim.istio-system: spec.params.dimensions.codes: expression '[1, 2]' gives a CEL "
            "list, bytes, uint or type, not an attribute value",
        ]
        out = await rt.dispatcher.check(DictBag({"request.headers": {"x-user": "banned"}}))
        assert out.result.status.code == Code.PERMISSION_DENIED  # the good CEL rule still serves
    finally:
        await rt.close()
