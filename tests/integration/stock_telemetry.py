"""Istio 1.4's stock telemetry config (rendered, from the conformance data) and a report an Envoy
sidecar sends, shared by the end-to-end tests that run ``mixerd serve`` on it."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from tests.conformance_data import conformance_dir

__all__ = ["PODS", "PRODUCTPAGE", "REVIEWS", "STOCK_FILES", "copy_stock_config", "inbound_http"]

PODS = Path(__file__).resolve().parents[1] / "data" / "pods.yaml"
"""Pods for kubernetesenv (``MIXERD_KUBERNETESENV_PODS_FILE``): the stock handler has no params."""
STOCK_FILES = (
    "attributemanifests.yaml",
    "handlers.yaml",
    "instances.yaml",
    "rules.yaml",
    "optional-stdio.yaml",
)

PRODUCTPAGE = "kubernetes://productpage-v1-6b746f74dc-9stvs.default"
REVIEWS = "kubernetes://reviews-v2-7d7b8c9f4c-x2x7p.default"


def copy_stock_config(config: Path, *, stdio_params: dict[str, Any] | None = None) -> Path:
    """Copy the stock files into the new directory ``config``, unchanged, except that
    ``stdio_params`` (when given) are added to the stdio handler's params (e.g. to write the
    access log to a file instead of mixerd's stdout)."""
    rendered = conformance_dir() / "stock-telemetry-config" / "rendered"
    config.mkdir()
    for name in STOCK_FILES:
        shutil.copyfile(rendered / name, config / name)
    if stdio_params:
        path = config / "optional-stdio.yaml"
        text = path.read_text()
        anchor = "  params:\n    outputAsJson: true\n"
        assert text.count(anchor) == 1, "the stock stdio handler changed"
        extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in stdio_params.items())  # JSON is YAML
        path.write_text(text.replace(anchor, anchor + extra))
    return config


def inbound_http() -> dict[str, Any]:
    """What reviews' sidecar reports for a call from productpage (mTLS, 200)."""
    return {
        "context.reporter.kind": "inbound",
        "context.protocol": "http",
        "source.uid": PRODUCTPAGE,
        "destination.uid": REVIEWS,
        "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "destination.principal": "cluster.local/ns/default/sa/bookinfo-reviews",
        "destination.port": 9080,
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.service.namespace": "default",
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": "/reviews/0",
        "request.useragent": "python-requests/2.22.0",
        "request.headers": {
            "x-request-id": "8c7e2f8a-5f1f-4a8e-9a47-1b1d2c3e4f50",
            ":authority": "reviews:9080",
        },
        "request.time": dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC),
        "response.time": dt.datetime(2026, 11, 26, 12, 0, 0, 25000, tzinfo=dt.UTC),
        "request.size": 100,
        "response.size": 1500,
        "response.code": 200,
        "response.duration": dt.timedelta(milliseconds=25),
        "connection.mtls": True,
        "context.proxy_error_code": "-",
    }
