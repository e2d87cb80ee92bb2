"""The stock Istio 1.4 telemetry config, end to end, scraped by a real Prometheus.

``mixerd serve`` runs the rendered stock config *unchanged* (attribute manifests, the prometheus
and kubernetesenv handlers, the metric and kubernetes instances, the rules; plus the optional
stdio access log). kubernetesenv reads pod metadata from a static pods file given through
``MIXERD_KUBERNETESENV_PODS_FILE`` (the stock handler has no params). Reports go over Mixer's
gRPC API, compressed as an Envoy sidecar sends them; Prometheus scrapes mixerd every second, and
the test asks Prometheus' HTTP API for the series and values Mixer would have produced.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_report_request
from mixerd.attribute import IPAddress
from tests.support.net import wait_for

from .mixerd_proc import start_mixerd
from .prometheus_server import start_prometheus
from .stock_telemetry import PODS, PRODUCTPAGE, copy_stock_config, inbound_http


def outbound_unknown() -> dict[str, Any]:
    """An outbound call from a workload mixerd knows nothing about, failing with UH (no healthy upstream)."""
    return {
        "context.reporter.kind": "outbound",
        "context.protocol": "http",
        "destination.service.host": "ratings.default.svc.cluster.local",
        "destination.service.name": "ratings",
        "destination.service.namespace": "default",
        "request.host": "ratings:9080",
        "request.useragent": "curl/7.64.0",
        "request.time": dt.datetime(2026, 11, 26, 12, 0, 1, tzinfo=dt.UTC),
        "response.time": dt.datetime(2026, 11, 26, 12, 0, 1, 3000, tzinfo=dt.UTC),
        "request.size": 0,
        "response.size": 19,
        "response.code": 503,
        "response.duration": dt.timedelta(milliseconds=3),
        "context.proxy_error_code": "UH",
    }


def probe() -> dict[str, Any]:
    """A kubelet probe: the stock promhttp rule leaves it out."""
    return {**inbound_http(), "request.useragent": "kube-probe/1.15"}


def tcp(event: str, sent: int, received: int) -> dict[str, Any]:
    return {
        "context.reporter.kind": "inbound",
        "context.protocol": "tcp",
        "source.uid": PRODUCTPAGE,
        "destination.uid": "kubernetes://ratings-0.default",
        "source.ip": IPAddress.parse("10.44.0.11"),
        "destination.port": 27017,
        "destination.service.host": "mongodb.default.svc.cluster.local",
        "connection.event": event,
        "connection.sent.bytes": sent,
        "connection.received.bytes": received,
        "connection.mtls": False,
    }


HTTP_INBOUND_LABELS = {
    "reporter": "destination",
    "source_app": "productpage",
    "source_principal": "cluster.local/ns/default/sa/bookinfo-productpage",
    "source_workload": "productpage-v1",
    "source_workload_namespace": "default",
    "source_version": "v1",
    "destination_app": "reviews",
    "destination_principal": "cluster.local/ns/default/sa/bookinfo-reviews",
    "destination_workload": "reviews-v2",
    "destination_workload_namespace": "default",
    "destination_version": "v2",
    "destination_service": "reviews.default.svc.cluster.local",
    "destination_service_name": "reviews",
    "destination_service_namespace": "default",
    "request_protocol": "http",
    "response_code": "200",
    "response_flags": "-",
    "permissive_response_code": "none",
    "permissive_response_policyid": "none",
    "connection_security_policy": "mutual_tls",
}

HTTP_OUTBOUND_LABELS = {
    "reporter": "source",
    "source_app": "unknown",
    "source_principal": "unknown",
    "source_workload": "unknown",
    "source_workload_namespace": "unknown",
    "source_version": "unknown",
    "destination_app": "unknown",
    "destination_principal": "unknown",
    "destination_workload": "unknown",
    "destination_workload_namespace": "unknown",
    "destination_version": "unknown",
    "destination_service": "ratings.default.svc.cluster.local",
    "destination_service_name": "ratings",
    "destination_service_namespace": "default",
    "request_protocol": "http",
    "response_code": "503",
    "response_flags": "UH",
    "permissive_response_code": "none",
    "permissive_response_policyid": "none",
    "connection_security_policy": "unknown",
}


def _series(results: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], float]:
    out = {}
    for r in results:
        labels = {k: v for k, v in r["metric"].items() if k not in ("__name__", "instance", "job")}
        out[frozenset(labels.items())] = float(r["value"][1])
    return out


@pytest.fixture
def stock_config(tmp_path: Path) -> Path:
    return copy_stock_config(tmp_path / "config")  # unchanged


def test_stock_config_series_in_prometheus(tmp_path: Path, stock_config: Path) -> None:
    mixerd = start_mixerd(tmp_path, [stock_config], env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)})
    prometheus = None
    try:
        validation = mixerd.http("/debug/config")
        assert '"errors": []' in validation, validation
        prometheus = start_prometheus(tmp_path, mixerd.prometheus_port)  # returns after a first scrape

        sets = [inbound_http()] * 3 + [outbound_unknown()] * 2 + [probe()] * 4
        sets += [tcp("open", 0, 0), tcp("continue", 1000, 200), tcp("close", 24, 8)]
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            mixer_pb2_grpc.MixerStub(channel).Report(build_report_request(sets), timeout=10)

        # the series appear with the next scrape after the report
        wait_for(
            lambda: len(prometheus.query("istio_requests_total")) == 2,
            timeout=20,
            what="istio_requests_total in Prometheus",
        )
        requests = _series(prometheus.query("istio_requests_total"))
        assert requests == {
            frozenset(HTTP_INBOUND_LABELS.items()): 3.0,
            frozenset(HTTP_OUTBOUND_LABELS.items()): 2.0,
        }

        # Distributions: explicit buckets for durations (seconds), exponential for sizes.
        inbound = ",".join(f'{k}="{v}"' for k, v in HTTP_INBOUND_LABELS.items())
        assert float(prometheus.query(f"istio_request_duration_seconds_sum{{{inbound}}}")[0]["value"][1]) == (
            pytest.approx(0.075)
        )
        le = _series(prometheus.query(f"istio_request_duration_seconds_bucket{{{inbound}}}"))
        by_bound = {dict(k)["le"]: v for k, v in le.items()}
        assert by_bound["0.01"] == 0 and by_bound["0.025"] == 3 and by_bound["+Inf"] == 3
        response_sizes = _series(prometheus.query(f"istio_response_bytes_bucket{{{inbound}}}"))
        sizes = {dict(k)["le"]: v for k, v in response_sizes.items()}
        assert sizes["1000"] == 0 and sizes["10000"] == 3
        assert float(prometheus.query(f"istio_request_bytes_sum{{{inbound}}}")[0]["value"][1]) == 300

        # TCP: bytes summed over the reports, connections opened / closed counted.
        sent = _series(prometheus.query("istio_tcp_sent_bytes_total"))
        assert list(sent.values()) == [1024.0]
        tcp_labels = dict(next(iter(sent)))
        assert tcp_labels["source_workload"] == "productpage-v1"
        assert tcp_labels["destination_workload"] == "ratings"
        assert tcp_labels["destination_service"] == "mongodb.default.svc.cluster.local"
        assert tcp_labels["connection_security_policy"] == "none"
        assert list(_series(prometheus.query("istio_tcp_received_bytes_total")).values()) == [208.0]
        assert list(_series(prometheus.query("istio_tcp_connections_opened_total")).values()) == [1.0]
        assert list(_series(prometheus.query("istio_tcp_connections_closed_total")).values()) == [1.0]
    finally:
        if prometheus is not None:
            prometheus.stop()
        code = mixerd.stop()
    assert code == 0, mixerd.log()
    # The optional stdio access log wrote one line per HTTP report (probes included: the stdio
    # rule has no user-agent filter) to mixerd's stdout.
    assert mixerd.log().count('"instance":"accesslog.instance.istio-system"') == 9
