"""End to end: ``mixerd serve`` as a subprocess, its config directory edited while it serves."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from tests.support.net import wait_for

from .mixerd_proc import start_mixerd

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


def _check(stub: mixer_pb2_grpc.MixerStub, user: str) -> int:
    resp = stub.Check(build_check_request({"request.headers": {"x-user": user}}), timeout=5)
    return int(resp.precondition.status.code)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "policy.yaml").write_text(DENY.format(who="mallory"))
    return d


def test_config_edits_take_effect_without_errors(tmp_path: Path, config_dir: Path) -> None:
    mixerd = start_mixerd(tmp_path, [config_dir])
    try:
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            assert _check(stub, "alice") == 0
            assert _check(stub, "mallory") == 7

            # Hammer the server from another thread while the config changes under it: every
            # answer must be a policy answer (OK or PERMISSION_DENIED), never an error.
            failures: list[str] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    try:
                        code = _check(stub, "alice")
                        if code not in (0, 7):
                            failures.append(f"status {code}")
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")

            worker = threading.Thread(target=load)
            worker.start()
            try:
                (config_dir / "policy.yaml").write_text(DENY.format(who="alice"))
                wait_for(lambda: _check(stub, "alice") == 7, timeout=10, what="the new rule to deny alice")
                assert _check(stub, "mallory") == 0

                # A broken file: reported, and the last good config keeps serving.
                (config_dir / "broken.yaml").write_text("kind: rule\nmetadata: [unclosed\n")
                wait_for(
                    lambda: "broken.yaml" in mixerd.http("/debug/config"),
                    timeout=10,
                    what="the broken file to be reported",
                )
                assert _check(stub, "alice") == 7
            finally:
                stop.set()
                worker.join()
            assert failures == []

            # Reports go through too (the default config has no report rules here: nothing to do).
            stub.Report(build_report_request([{"request.headers": {"x-user": "bob"}}]), timeout=5)

        routes = mixerd.http("/debug/routes")
        assert "deny.handler.istio-system" in routes
        config = json.loads(mixerd.http("/debug/config"))
        assert "deny-user.rule.istio-system" in config["snapshot"]["rules"]
        assert "mixerd_requests_total" in mixerd.http("/metrics")
    finally:
        code = mixerd.stop()
    assert code == 0, mixerd.log()


def test_malformed_request_is_rejected_and_server_stays_up(tmp_path: Path, config_dir: Path) -> None:
    mixerd = start_mixerd(tmp_path, [config_dir])
    try:
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            bad = build_check_request({"request.headers": {"x-user": "alice"}})
            bad.attributes.strings[-40] = -41  # indices far outside the message dictionary
            with pytest.raises(grpc.RpcError) as err:
                stub.Check(bad, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "dictionary" in (err.value.details() or "")

            too_new = build_check_request({"request.headers": {"x-user": "alice"}})
            too_new.global_word_count = 5000
            with pytest.raises(grpc.RpcError) as err:
                stub.Check(too_new, timeout=5)
            assert err.value.code() == grpc.StatusCode.INTERNAL

            assert _check(stub, "alice") == 0

        # The command-line client against the same server.
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "mixerd.cli.main", *args, "--server", mixerd.grpc_address]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)

        denied = cli("check", "-a", "request.headers[x-user]=mallory")
        assert denied.returncode == 3, denied.stderr
        assert "mallory may not pass" in denied.stdout
        assert denied.stdout.rstrip().endswith("=> denied (PERMISSION_DENIED)")
        allowed = cli("check", "-a", "request.headers[x-user]=alice", "-q", "unconfigured")
        assert allowed.returncode == 0 and allowed.stdout.rstrip().endswith("=> allowed"), allowed.stdout
        reported = cli("report", "-a", "context.protocol=http", "--repeat", "3")
        assert (reported.returncode, reported.stdout.strip()) == (0, "reported 3 attribute set(s)")
        bad = cli("check", "-a", "no.such.attribute=1")
        assert bad.returncode == 2 and "unknown attribute 'no.such.attribute'" in bad.stderr
    finally:
        assert mixerd.stop() == 0
