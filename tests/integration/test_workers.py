"""``mixerd serve --workers 2``: two worker processes behind one supervisor.

Load reaches both workers (new connections are spread by the kernel), a config change reaches
both, a killed worker is restarted and serves, SIGTERM drains both with their reports flushed,
memquota counts exactly across them (end to end, and Mixer's memquota tables through two workers'
handlers and the supervisor's counters over the real socket), and ``/metrics`` is the sum.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.adapter import Env, InstanceInfo, ManualClock, QuotaArgs
from mixerd.adapters.memquota import INFO
from mixerd.adapters.memquota.shared import SHARED_SERVICE, QuotaClient, QuotaOwner, SharedMemQuotaHandler
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from mixerd.server import default_config_text
from mixerd.templates import QuotaInstance
from tests.conformance.test_memquota_cases import cases, decode
from tests.conformance_data import params
from tests.support.net import free_port, wait_for

from .mixerd_proc import MixerdProcess, start_mixerd

DENY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: deny, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params: {{status: {{code: 7, message: "{who} may not pass"}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec: {{compiledTemplate: checknothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: deny-user, namespace: istio-system}}
spec:
  match: request.headers["x-user"] == "{who}"
  actions: [{{handler: deny, instances: [nothing]}}]
"""

LIMITED = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      client: request.headers["x-client"] | "none"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: limited, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - {name: perclient.instance.istio-system, maxAmount: 7, validDuration: 1h}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: limit-clients, namespace: istio-system}
spec:
  actions: [{handler: limited, instances: [perclient]}]
"""

LINES = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: lines, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params: {{logStream: FILE, outputPath: "{out}"}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: line, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"info"'
    timestamp: request.time
    variables:
      n: request.headers["x-n"] | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: log-everything, namespace: istio-system}}
spec:
  actions: [{{handler: lines, instances: [line]}}]
"""

CONNECTIONS = 40
"""Fresh connections per round of load: the kernel hashes each to a worker, so the chance that
all of them land on the same one of two workers is 2**-39."""


def _get(mixerd: MixerdProcess, path: str, worker: int | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{mixerd.monitoring_port}{path}")
    if worker is not None:
        request.add_header("X-Mixerd-Worker", str(worker))
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def _workers(mixerd: MixerdProcess) -> list[dict[str, Any]]:
    return json.loads(_get(mixerd, "/debug/workers"))["workers"]  # type: ignore[no-any-return]


def _fresh_stubs(mixerd: MixerdProcess, count: int = CONNECTIONS) -> Iterator[mixer_pb2_grpc.MixerStub]:
    """One stub per new connection (a channel option that no other channel shares, so gRPC's
    subchannel pool does not hand back an existing connection)."""
    for i in range(count):
        with grpc.insecure_channel(mixerd.grpc_address, options=[("mixerd.test.connection", i)]) as channel:
            yield mixer_pb2_grpc.MixerStub(channel)


def _check_code(stub: mixer_pb2_grpc.MixerStub, user: str) -> int:
    response = stub.Check(build_check_request({"request.headers": {"x-user": user}}), timeout=10)
    return int(response.precondition.status.code)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "default.yaml").write_text(default_config_text())
    (d / "policy.yaml").write_text(DENY.format(who="mallory"))
    (d / "limited.yaml").write_text(LIMITED)
    (d / "lines.yaml").write_text(LINES.format(out=tmp_path / "lines.jsonl"))
    return d


@pytest.fixture
def mixerd(tmp_path: Path, config_dir: Path) -> Iterator[MixerdProcess]:
    process = start_mixerd(tmp_path, [config_dir], "--workers", "2", "--console-store", "off")
    try:
        wait_for(lambda: all(w["ready"] for w in _workers(process)), timeout=30, what="both workers ready")
        yield process
    finally:
        if process.proc.poll() is None:
            process.stop(timeout=40)


def test_load_reaches_both_workers_and_metrics_add_up(mixerd: MixerdProcess, tmp_path: Path) -> None:
    pids = {w["pid"] for w in _workers(mixerd)}
    assert len(pids) == 2 and mixerd.proc.pid not in pids
    reports = 0
    for stub in _fresh_stubs(mixerd):
        stub.Report(build_report_request([{"request.headers": {"x-user": "alice"}}]), timeout=10)
        reports += 1
    served = [w["requests"] for w in _workers(mixerd)]
    assert all(n > 0 for n in served), served
    assert sum(served) == reports
    # One exposition, counters summed across the workers.
    assert mixerd.metric("mixerd_requests_total", method="Report") == reports
    assert mixerd.metric("mixerd_report_attribute_sets_total") == reports
    assert mixerd.metric("mixerd_workers") == 2
    # The prometheus adapter's series, on the monitoring port and on the adapter's own port.
    wait_for(
        lambda: mixerd.metric("mixerd_demo_requests_total", user="alice") == reports,
        what="every report counted by the prometheus adapter",
    )
    adapter = mixerd.http("/metrics", port=mixerd.prometheus_port)
    labels = 'method="unknown",protocol="unknown",response_code="200",user="alice"'
    assert f"mixerd_demo_requests_total{{{labels}}} {reports}.0" in adapter
    assert "mixerd_requests_total" not in adapter  # mixerd's own metrics are on the monitoring port only
    # Other pages are answered by a worker that says who it is.
    with urllib.request.urlopen(f"http://127.0.0.1:{mixerd.monitoring_port}/debug/routes", timeout=10) as r:
        worker = r.headers["X-Mixerd-Worker"]
        assert worker.split()[0] == "0" and int(worker.split()[-1]) in pids
        assert "deny.handler.istio-system" in r.read().decode()


def test_config_change_reaches_both_workers(mixerd: MixerdProcess, config_dir: Path) -> None:
    assert {_check_code(stub, "alice") for stub in _fresh_stubs(mixerd)} == {0}
    (config_dir / "policy.yaml").write_text(DENY.format(who="alice"))
    for index in (0, 1):
        wait_for(
            lambda index=index: (
                "deny-user.rule.istio-system"  # type: ignore[misc]
                in _get(mixerd, "/debug/config", worker=index)
                and json.loads(_get(mixerd, "/debug/config", worker=index))["generation"] >= 2
            ),
            timeout=15,
            what=f"worker {index} to load the changed config",
        )
    before = [w["requests"] for w in _workers(mixerd)]
    assert {_check_code(stub, "alice") for stub in _fresh_stubs(mixerd)} == {7}
    after = [w["requests"] for w in _workers(mixerd)]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # both answered
    assert {_check_code(stub, "mallory") for stub in _fresh_stubs(mixerd, 4)} == {0}


def test_sighup_is_relayed_to_every_worker(mixerd: MixerdProcess) -> None:
    pids = [w["pid"] for w in _workers(mixerd)]
    mixerd.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: mixerd.log().count("SIGHUP: reading the config files") == 2,
        what="both workers to re-read the config",
    )
    assert [w["pid"] for w in _workers(mixerd)] == pids  # re-read, not restarted
    assert _get(mixerd, "/readyz").startswith("ready: 2 workers")


def test_memquota_counts_exactly_across_workers(mixerd: MixerdProcess) -> None:
    granted = 0
    for n, stub in enumerate(_fresh_stubs(mixerd)):
        request = build_check_request(
            {"request.headers": {"x-client": "c1", "x-user": "alice"}},
            quotas={"perclient": 1},
            dedup_id=f"request-{n}",  # Mixer deduplicates quota requests by this id and the quota
        )
        response = stub.Check(request, timeout=10)
        granted += response.quotas["perclient"].granted_amount
    assert granted == 7
    assert all(w["requests"] > 0 for w in _workers(mixerd))


def test_a_killed_worker_is_restarted_and_serves(mixerd: MixerdProcess) -> None:
    old = _workers(mixerd)[1]["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        w = _workers(mixerd)[1]
        return bool(w["ready"] and w["pid"] not in (None, old) and w["restarts"] == 1)

    wait_for(restarted, timeout=30, what="worker 1 restarted")
    assert f"worker 1 (pid {old}) killed by SIGKILL; restarting it" in mixerd.log()
    assert _get(mixerd, "/readyz").startswith("ready: 2 workers")
    for stub in _fresh_stubs(mixerd):
        stub.Report(build_report_request([{"request.headers": {"x-user": "bob"}}]), timeout=10)
    assert all(w["requests"] > 0 for w in _workers(mixerd))
    assert mixerd.metric("mixerd_worker_restarts_total") == 1


def test_sigterm_drains_both_workers_and_flushes_reports(mixerd: MixerdProcess, tmp_path: Path) -> None:
    pids = [w["pid"] for w in _workers(mixerd)]
    now = dt.datetime.now(dt.UTC)
    sent = 0
    for stub in _fresh_stubs(mixerd):
        stub.Report(
            build_report_request(
                [{"request.headers": {"x-n": f"{sent}-{k}"}, "request.time": now} for k in range(5)]
            ),
            timeout=10,
        )
        sent += 5
    assert all(w["requests"] > 0 for w in _workers(mixerd))  # both hold reports when told to stop
    assert mixerd.stop(timeout=40) == 0, mixerd.log()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    lines = (tmp_path / "lines.jsonl").read_text().splitlines()
    assert len(lines) == sent
    assert len({json.loads(line)["n"] for line in lines}) == sent
    log = mixerd.log()
    assert log.count("shutting down: draining in-flight calls") == 2, log


# -- memquota: Mixer's tables through two workers' handlers and the supervisor's counters ---------


async def _two_workers(
    tmp_path: Path, config: dict[str, Any], names: list[str], clock: ManualClock
) -> tuple[list[SharedMemQuotaHandler], list[QuotaClient], Any]:
    owner = QuotaOwner(clock=clock.monotonic)
    path = str(tmp_path / "quota.sock")
    server = await owner.serve(path)
    handlers, clients = [], []
    for worker in range(2):
        client = QuotaClient(path)
        builder = INFO.builder(config, {n: InstanceInfo(n, "quota") for n in names})
        assert builder.validate() == []
        handler = builder.build(Env("memquota.conformance", clock=clock, services={SHARED_SERVICE: client}))
        assert isinstance(handler, SharedMemQuotaHandler), worker
        handlers.append(handler)
        clients.append(client)

    async def close() -> None:
        for client in clients:
            await client.aclose()
        server.close()
        owner.stop_sweeping()

    return handlers, clients, close


async def test_memquota_alloc_and_release_alternating_between_two_workers(tmp_path: Path) -> None:
    table = cases()["alloc_and_release"]
    config = params(table["config"])
    dims = {k: decode(v) for k, v in table["instance_dimensions"].items()}
    clock = ManualClock()
    handlers, _, close = await _two_workers(tmp_path, config, [q["name"] for q in config["quotas"]], clock)
    try:
        offset = 0.0
        for n, step in enumerate(table["steps"]):
            clock.advance(step["now_offset_seconds"] - offset)
            offset = step["now_offset_seconds"]
            instance = QuotaInstance(step["quota"], dims)
            alloc, release = step["alloc"], step["release"]
            where = f"step {step['step']} (line {step['source']['line']})"
            # allocation by one worker, release by the other
            got = await handlers[n % 2].handle_quota(
                instance, QuotaArgs(alloc["amount"], alloc["best_effort"], alloc["dedup_id"])
            )
            assert got.amount == alloc["expect_amount"], where
            assert got.valid_duration == decode(alloc["expect_valid_duration"]), where
            got = await handlers[(n + 1) % 2].handle_quota(
                instance, QuotaArgs(release["amount"], False, release["dedup_id"])
            )
            assert got.amount == release["expect_amount"], where
    finally:
        await close()


@pytest.mark.parametrize("case", cases()["limit_override_cases"], ids=lambda c: c["id"])
async def test_memquota_limit_override_across_two_workers(tmp_path: Path, case: dict[str, Any]) -> None:
    config = {"quotas": [{"name": "q", **params(case["quota_config"])}]}
    handlers, _, close = await _two_workers(tmp_path, config, ["q"], ManualClock())
    try:
        dims = {k: decode(v) for k, v in case["instance_dimensions"].items()}
        instance = QuotaInstance("q", dims)
        limit = case["expect_max_amount"]
        assert (await handlers[0].handle_quota(instance, QuotaArgs(amount=0))).limit == limit
        # the limit is one limit: each worker's grants count against the other's
        half = limit // 2
        assert (await handlers[0].handle_quota(instance, QuotaArgs(amount=half))).amount == half
        assert (
            await handlers[1].handle_quota(instance, QuotaArgs(amount=limit - half))
        ).amount == limit - half
        assert (await handlers[0].handle_quota(instance, QuotaArgs(amount=1))).amount == 0
        assert (await handlers[1].handle_quota(instance, QuotaArgs(amount=1))).amount == 0
    finally:
        await close()


async def test_concurrent_allocations_from_two_workers_are_exact(tmp_path: Path) -> None:
    config = {"quotas": [{"name": "q", "maxAmount": 100, "validDuration": "1h"}]}
    handlers, _, close = await _two_workers(tmp_path, config, ["q"], ManualClock())
    try:
        instance = QuotaInstance("q", {"d": "x"})
        results = await asyncio.gather(
            *(handlers[i % 2].handle_quota(instance, QuotaArgs(amount=3)) for i in range(50))
        )
        assert sum(r.amount for r in results) == 99  # 33 grants of 3; the 17 others get nothing
        assert sorted({r.amount for r in results}) == [0, 3]
    finally:
        await close()


def test_a_taken_port_stops_the_supervisor_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: the workers cannot share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mixerd.cli.main",
                "serve",
                "--workers",
                "2",
                "--grpc-address",
                f"127.0.0.1:{port}",
                "--monitoring-address",
                f"127.0.0.1:{free_port()}",
                "--prometheus-address",
                "",
                "--http-authz-address",
                "",
                "--console-store",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    reasons = [line for line in result.stderr.splitlines() if line.startswith("mixerd: ")]
    assert reasons and all(f"127.0.0.1:{port}" in line for line in reasons), result.stderr
    assert "could not start (its message is above); stopping" in result.stderr
