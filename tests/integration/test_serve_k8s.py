"""``mixerd serve --config k8s://`` and ``mixerd validate k8s://`` against the fake API server.

The fake (tests/support/fake_kube.py) serves the stock Istio 1.4 telemetry config
(tests/data/k8s/) over TLS with a bearer token; only the Mixer kinds mixerd is expected to use here
have their CRD "installed", every other kind answers 404.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request
from mixerd.config.k8s.kinds import KINDS
from tests.support.certs import CA
from tests.support.fake_kube import Crd, FakeKubeApi, FakeKubeThread, load_fixture_lists, write_kubeconfig
from tests.support.net import free_port, wait_for

from .mixerd_proc import MixerdProcess, start_mixerd

DATA = Path(__file__).resolve().parents[1] / "data" / "k8s"
TOKEN = "serve-k8s-token-41b7"
INSTALLED = ("rule", "instance", "handler", "attributemanifest")
V1A2 = "config.istio.io/v1alpha2"


def res(kind: str, name: str, spec: dict[str, Any], ns: str = "istio-system") -> dict[str, Any]:
    return {"apiVersion": V1A2, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def deny_rule(who: str) -> dict[str, Any]:
    return res(
        "rule",
        "deny-user",
        {
            "match": f'request.headers["x-user"] == "{who}"',
            "actions": [{"handler": "deny", "instances": ["nothing"]}],
        },
    )


DENY_HANDLER = res("handler", "deny", {"compiledAdapter": "denier", "params": {"status": {"code": 7}}})
NOTHING = res("instance", "nothing", {"compiledTemplate": "checknothing"})
NEVER = {
    "match": "false",
    "actions": [{"handler": "deny.istio-system", "instances": ["nothing.istio-system"]}],
}


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("fake kube CA")


@pytest.fixture
def kube(ca: CA) -> Iterator[FakeKubeThread]:
    crds = [Crd(k.group, k.version, k.kind, k.plural) for k in KINDS if k.kind in INSTALLED]
    api = FakeKubeApi(crds, token=TOKEN, page_size=4)
    api.load(load_fixture_lists(DATA))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*ca.server("fake-kube").files())
    with FakeKubeThread(api, ctx) as thread:
        yield thread


@pytest.fixture
def kubeconfig(tmp_path: Path, kube: FakeKubeThread, ca: CA) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", kube.api.url, token=TOKEN, ca_pem=ca.pem)


def spawn(tmp: Path, url: str, *args: str) -> MixerdProcess:
    """Start mixerd on the cluster config without waiting for /readyz."""
    return start_mixerd(tmp, None, "--config", url, "--console-store", "off", *args, wait_ready=False)


def readyz(mixerd: MixerdProcess) -> tuple[int, str]:
    try:
        return 200, mixerd.http("/readyz")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def debug_config(mixerd: MixerdProcess) -> dict[str, Any]:
    snapshot: dict[str, Any] = json.loads(mixerd.http("/debug/config"))["snapshot"]
    return snapshot


def check(stub: mixer_pb2_grpc.MixerStub, user: str) -> int:
    resp = stub.Check(build_check_request({"request.headers": {"x-user": user}}), timeout=5)
    return int(resp.precondition.status.code)


def test_serve_from_cluster(tmp_path: Path, kube: FakeKubeThread, kubeconfig: Path) -> None:
    api = kube.api
    kube.call(lambda: setattr(api, "hold_lists", asyncio.Event()))
    mixerd = spawn(tmp_path, f"k8s://{kubeconfig}", "--k8s-write-status", "--k8s-missing-retry", "0.5")
    try:
        # Not ready until the initial list of every installed kind is in.
        _, text = wait_for(lambda: (s := readyz(mixerd))[0] == 503 and s, timeout=30, what="/readyz 503")
        assert "waiting for the initial list of" in text and "rules.config.istio.io" in text
        assert kube.call(lambda: api.hold_lists is not None and not api.hold_lists.is_set())
        kube.call(lambda: api.hold_lists.set() if api.hold_lists else None)
        wait_for(lambda: readyz(mixerd)[0] == 200, timeout=30, what="/readyz 200 after the initial list")

        snapshot = debug_config(mixerd)
        assert "promhttp.rule.istio-system" in snapshot["rules"]
        assert "prometheus.handler.istio-system" in snapshot["handlers"]
        assert len(snapshot["rules"]) == 6
        log = mixerd.log()
        assert "not installed on the API server" in log and TOKEN not in log

        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            assert check(stub, "mallory") == 0

            # Added: takes effect.
            kube.call(api.load, [DENY_HANDLER, NOTHING, deny_rule("mallory")])
            wait_for(lambda: check(stub, "mallory") == 7, timeout=15, what="the new rule to deny mallory")

            # Changed: takes effect.
            kube.call(api.put, deny_rule("eve"))
            wait_for(lambda: check(stub, "eve") == 7, timeout=15, what="the changed rule to deny eve")
            assert check(stub, "mallory") == 0

            # Bookmark, then the watches end: they resume from the bookmark's version.
            kube.call(api.put, res("rule", "other-ns", NEVER, ns="elsewhere"))
            wait_for(
                lambda: "other-ns.rule.elsewhere" in debug_config(mixerd)["rules"], timeout=15, what="rule"
            )
            assert kube.call(api.bookmark) >= len(INSTALLED)
            bookmark_rv = kube.call(lambda: str(api.rv))
            wait_for(lambda: kube.call(api.delivered), timeout=10, what="the bookmarks to be sent")
            kube.call(api.end_watches)
            wait_for(
                lambda: bookmark_rv in [q["resourceVersion"] for q in kube.call(api.watches, "handlers")],
                timeout=15,
                what="a watch from the bookmark's version",
            )

            # A dropped connection: the client lists again (after a backoff) and sees the change.
            wait_for(
                lambda: kube.call(lambda: len(api.watchers)) >= len(INSTALLED), timeout=15, what="watches"
            )
            kube.call(api.drop_watches)
            kube.call(api.put, deny_rule("trudy"))  # made while the client reconnects
            wait_for(
                lambda: check(stub, "trudy") == 7, timeout=20, what="a change after a dropped connection"
            )

            # 410 Gone: changes the watches missed, then compaction: a relist publishes the diff.
            kube.call(api.put, deny_rule("oscar"), notify=False)
            kube.call(api.compact)
            wait_for(
                lambda: check(stub, "oscar") == 7, timeout=20, what="the relist after 410 to apply the change"
            )
            assert check(stub, "trudy") == 0

            # Deleted: takes effect.
            kube.call(api.delete, V1A2, "rule", "istio-system", "deny-user")
            wait_for(lambda: check(stub, "oscar") == 0, timeout=15, what="the deleted rule to stop denying")

            # A bad resource: reported with its field path, written once as an Event, the rest serves.
            bad = res(
                "rule",
                "typo",
                {
                    "match": 'reqest.headers["x"] == "1"',
                    "actions": [{"handler": "deny", "instances": ["nothing"]}],
                },
            )
            kube.call(api.put, bad)
            wait_for(
                lambda: any("typo" in e for e in debug_config(mixerd)["errors"]), timeout=15, what="the error"
            )
            wait_for(lambda: kube.call(lambda: len(api.events)) >= 1, timeout=15, what="an Event")
            event = kube.call(lambda: api.events[0])
            assert event["involvedObject"]["name"] == "typo" and event["involvedObject"]["kind"] == "rule"
            assert event["reason"] == "InvalidConfig" and "spec.match" in event["message"]
            kube.call(api.put, res("rule", "unrelated", NEVER))
            wait_for(
                lambda: "unrelated.rule.istio-system" in debug_config(mixerd)["rules"],
                timeout=15,
                what="rule",
            )
            assert kube.call(lambda: len(api.events)) == 1  # not one per rebuild
            assert check(stub, "mallory") == 0 and readyz(mixerd)[0] == 200

            # A kind that was not installed appears later: its resources are read.
            kube.call(api.install, Crd("config.istio.io", "v1alpha2", "QuotaSpec", "quotaspecs"))
            kube.call(
                api.put,
                res("QuotaSpec", "later", {"rules": [{"quotas": [{"quota": "requestcount", "charge": 1}]}]}),
            )
            wait_for(
                lambda: "now installed" in mixerd.log(), timeout=15, what="the QuotaSpec CRD to be found"
            )
    finally:
        code = mixerd.stop()
    assert code == 0, mixerd.log()
    assert TOKEN not in mixerd.log()


def test_sigterm_while_waiting_for_the_cluster(
    tmp_path: Path, kube: FakeKubeThread, kubeconfig: Path
) -> None:
    kube.call(lambda: setattr(kube.api, "hold_lists", asyncio.Event()))
    mixerd = spawn(tmp_path, f"k8s://{kubeconfig}")
    try:
        wait_for(lambda: readyz(mixerd)[0] == 503, timeout=30, what="/readyz 503")
    finally:
        code = mixerd.stop()
    assert code == 1
    assert "stopped before the config was loaded" in mixerd.log()


def test_validate_reads_the_cluster(tmp_path: Path, kube: FakeKubeThread, kubeconfig: Path) -> None:
    def validate(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mixerd.cli.main", "validate", f"k8s://{kubeconfig}", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = validate("--quiet")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = res(
        "rule", "typo", {"match": "true", "actions": [{"handler": "nope", "instances": ["requestcount"]}]}
    )
    kube.call(kube.api.put, bad)
    failed = validate()
    assert failed.returncode == 1
    assert "rule/typo.istio-system" in failed.stdout and "spec.actions[0].handler" in failed.stdout


def test_validate_gives_up_with_the_reason(tmp_path: Path, kube: FakeKubeThread, ca: CA) -> None:
    wrong = write_kubeconfig(tmp_path / "wrong", kube.api.url, token="not-the-token-5e2f", ca_pem=ca.pem)
    out = subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", "validate", f"k8s://{wrong}", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Unauthorized" in out.stderr and "not-the-token-5e2f" not in out.stderr + out.stdout


def test_bad_urls_and_kubeconfigs_stop_serve_with_a_message(tmp_path: Path, kube: FakeKubeThread) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        port = free_port()
        return subprocess.run(
            [sys.executable, "-m", "mixerd.cli.main", "serve", "--grpc-address", f"127.0.0.1:{port}",
             "--monitoring-address", f"127.0.0.1:{free_port()}", "--prometheus-address", "",
             "--http-authz-address", "", "--console-store", "off", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    out = serve("--config", "k8s://apiserver:6443")
    assert out.returncode == 2 and "a host in a k8s:// URL is not supported" in out.stderr
    out = serve("--config", "k8s://", "--config", str(tmp_path))
    assert out.returncode == 2 and "cannot be combined" in out.stderr
    insecure = tmp_path / "insecure"
    insecure.write_text(
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    out = serve("--config", f"k8s://{insecure}")
    assert out.returncode == 1 and "always verifies the API server's certificate" in out.stderr
