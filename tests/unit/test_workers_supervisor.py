"""The pure parts of ``mixerd serve --workers``: merging expositions, the flag, the worker role."""

from __future__ import annotations

import argparse

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mixerd.server.settings import Settings, add_arguments, parse_workers
from mixerd.server.workers import Supervisor, WorkerRole, merge_expositions


def _worker_body(requests: int, queued: float, generation: int, latencies: list[float]) -> str:
    r = CollectorRegistry()
    c = Counter("mixerd_requests", "Requests.", ["method"], registry=r)
    c.labels("Check").inc(requests)
    Gauge("mixerd_report_queued", "Queued.", registry=r).set(queued)
    Gauge("mixerd_config_generation", "Config.", registry=r).set(generation)
    h = Histogram("mixerd_request_duration_seconds", "Latency.", buckets=(0.1, 1.0), registry=r)
    for v in latencies:
        h.observe(v)
    return generate_latest(r).decode()


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def test_merge_sums_counters_and_histograms_and_documents_gauges() -> None:
    merged = _samples(
        merge_expositions(
            [
                _worker_body(3, 2, 5, [0.05, 0.5]),
                _worker_body(4, 1, 5, [2.0]),
                "",
            ]  # "" : a worker that was down
        )
    )
    assert merged[("mixerd_requests_total", (("method", "Check"),))] == 7
    assert merged[("mixerd_report_queued", ())] == 3  # a load: summed
    assert merged[("mixerd_config_generation", ())] == 5  # the config: the largest, not 10
    assert merged[("mixerd_request_duration_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("mixerd_request_duration_seconds_bucket", (("le", "1.0"),))] == 2
    assert merged[("mixerd_request_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("mixerd_request_duration_seconds_count", ())] == 3
    assert merged[("mixerd_request_duration_seconds_sum", ())] == pytest.approx(2.55)


def test_workers_flag() -> None:
    assert parse_workers("3") == 3
    assert parse_workers("auto") >= 1
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="--workers"):
            parse_workers(bad)
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={"MIXERD_WORKERS": "2"})
    assert Settings.from_args(parser.parse_args([])).worker_count == 2
    with pytest.raises(ValueError, match="--workers"):
        Settings.from_args(parser.parse_args(["--workers", "none"]))


def test_settings_travel_to_workers_unchanged() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={})
    settings = Settings.from_args(parser.parse_args(["-c", "/etc/mixerd", "--workers", "2", "--fail-closed"]))
    assert Settings.from_json(settings.to_json()) == settings


def test_worker_role_flag_round_trips_and_bad_ones_are_refused() -> None:
    role = WorkerRole(1, 4, "/run/mixerd-workers-x")
    assert WorkerRole.parse(role.flag()) == role
    assert role.monitoring_socket == "/run/mixerd-workers-x/worker-1.sock"
    with pytest.raises(ValueError, match="INDEX/COUNT:DIRECTORY"):
        WorkerRole.parse("one")


def test_shared_ports_must_be_fixed() -> None:
    with pytest.raises(ValueError, match=r"--grpc-address 127\.0\.0\.1:0: with --workers"):
        Supervisor(Settings(grpc_address="127.0.0.1:0"), 2).check()
    Supervisor(Settings(grpc_address="127.0.0.1:9091", monitoring_address="127.0.0.1:0"), 2).check()
