"""Out-of-process adapters, with real processes: ``mixerd serve`` calls a third-party adapter
(``tests/support/oop_adapter.py``, written only from Mixer's adapter protos) over Mixer 1.4's
gRPC adapter model, and a built-in adapter served by ``mixerd adapter serve``.

The test asserts what the adapter received byte for byte as Mixer 1.4 sent it: the instances
(``InstanceMsg`` with the instance's name in field 72295727), ``adapter_config`` as an Any of the
adapter's ``Params``, ``dedup_id`` (for quotas the Check's plus the quota name), and for a session-based adapter
Validate/CreateSession (with the inferred types), the session id in later calls, CloseSession.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_tools import protoc

from mixerd._proto.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2 as ib
from mixerd._proto.mixer.template.listentry import template_handler_service_pb2 as listentry_pb2
from mixerd._proto.mixer.template.metric import template_handler_service_pb2 as metric_pb2
from mixerd._proto.mixer.template.quota import template_handler_service_pb2 as quota_pb2
from mixerd._proto.mixer.v1 import check_pb2, mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request, build_report_request
from tests.support.net import free_port, port_open, wait_for
from tests.support.proc import stop_process

from .mixerd_proc import MixerdProcess, start_mixerd

ROOT = Path(__file__).resolve().parents[2]
OOP_PROTO = ROOT / "tests" / "support" / "oop_proto"
ADAPTER = ROOT / "tests" / "support" / "oop_adapter.py"
HANDLER = "backend.handler.istio-system"


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test's template and config protos compiled as an adapter author would: Python modules
    for the adapter, and the FileDescriptorSets that go into the template and adapter resources."""
    out = tmp_path_factory.mktemp("oop-gen")
    wkt = Path(protoc.__file__).resolve().parent / "_proto"
    for proto, descriptor in (
        ("checkoutput/template_handler_service.proto", "checkoutput.pb"),
        ("config.proto", "config.pb"),
    ):
        args = [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{ROOT / 'proto' / 'third_party'}",
            f"-I{OOP_PROTO}",
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "--include_imports",
            f"--descriptor_set_out={out / descriptor}",
            proto,
        ]
        assert protoc.main(args) == 0, f"protoc failed for {proto}"
    return out


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _params_class(gen: Path) -> Any:
    sys.path.insert(0, str(gen))
    try:
        import config_pb2
    finally:
        sys.path.remove(str(gen))
    return config_pb2.Params


@dataclass
class Adapter:
    proc: subprocess.Popen[bytes]
    port: int
    record: Path

    def requests(self, method: str, cls: Any) -> list[Any]:
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            entry = json.loads(line)
            if entry["method"] == method:
                out.append(cls.FromString(base64.b64decode(entry["request"])))
        return out

    def stop(self) -> None:
        stop_process(self.proc)


def start_adapter(tmp: Path, gen: Path, port: int | None = None) -> Adapter:
    port = port or free_port()
    record = tmp / f"adapter-{port}.jsonl"
    args = ["--address", f"127.0.0.1:{port}", "--record", str(record), "--gen", str(gen)]
    with (tmp / f"adapter-{port}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ADAPTER), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    adapter = Adapter(proc, port, record)
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), timeout=30, what="the adapter's port")
    except AssertionError:
        adapter.stop()
        raise
    return adapter


@pytest.fixture
def adapters() -> Iterator[list[Adapter]]:
    started: list[Adapter] = []
    try:
        yield started
    finally:
        for a in started:
            a.stop()


def config(gen: Path, port: int, *, session_based: bool = False) -> str:
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: template
metadata: {{name: checkoutput, namespace: istio-system}}
spec: {{descriptor: "{_b64(gen / "checkoutput.pb")}"}}
---
apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {{name: oopbackend, namespace: istio-system}}
spec:
  description: a third-party backend
  session_based: {"true" if session_based else "false"}
  templates: [listentry, metric, quota, checkoutput]
  config: "{_b64(gen / "config.pb")}"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: backend, namespace: istio-system}}
spec:
  adapter: oopbackend
  connection: {{address: "127.0.0.1:{port}", timeout: 2s}}
  params: {{blocked: [mallory], label: L}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: user-entry, namespace: istio-system}}
spec:
  template: listentry
  params:
    value: 'request.headers["x-user"] | ""'
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requests, namespace: istio-system}}
spec:
  template: metric
  params:
    value: "1"
    dimensions:
      code: response.code | 0
      user: 'request.headers["x-user"] | ""'
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requestcount, namespace: istio-system}}
spec:
  template: quota
  params:
    dimensions:
      user: 'request.headers["x-user"] | ""'
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: greeting, namespace: istio-system}}
spec:
  template: checkoutput
  params:
    user: 'request.headers["x-user"] | ""'
    size: request.size | 0
    labels: {{a: '"b"'}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: check-user, namespace: istio-system}}
spec:
  actions: [{{handler: backend, instances: [user-entry]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: greet, namespace: istio-system}}
spec:
  actions: [{{handler: backend, instances: [greeting], name: hello}}]
  requestHeaderOperations:
  - name: x-istio
    values: [hello.output.value]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: count, namespace: istio-system}}
spec:
  actions: [{{handler: backend, instances: [requests, requestcount]}}]
"""


def _serve(tmp: Path, text: str) -> MixerdProcess:
    path = tmp / "config.yaml"
    path.write_text(text)
    return start_mixerd(tmp, [path])


def _check(mixerd: MixerdProcess, user: str, **kw: Any) -> check_pb2.CheckResponse:
    with grpc.insecure_channel(mixerd.grpc_address) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        values = {"request.headers": {"x-user": user}, "request.size": 42}
        resp: check_pb2.CheckResponse = stub.Check(build_check_request(values, **kw), timeout=10)
        return resp


def _report(mixerd: MixerdProcess, user: str) -> None:
    with grpc.insecure_channel(mixerd.grpc_address) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        stub.Report(
            build_report_request([{"request.headers": {"x-user": user}, "response.code": 200}]), timeout=10
        )


def test_check_report_quota_and_outputs_reach_the_adapter_as_mixer_sent_them(
    tmp_path: Path, gen: Path, adapters: list[Adapter]
) -> None:
    adapter = start_adapter(tmp_path, gen)
    adapters.append(adapter)
    mixerd = _serve(tmp_path, config(gen, adapter.port))
    params = _params_class(gen)
    try:
        allowed = _check(mixerd, "alice", quotas={"requestcount": 5}, dedup_id="dedup-42")
        assert allowed.precondition.status.code == 0
        assert allowed.precondition.valid_use_count == 3  # the smallest of the two check answers
        ops = {(op.name, op.value) for op in allowed.precondition.route_directive.request_header_operations}
        assert ops == {("x-istio", "L:alice")}  # CHECK_WITH_OUTPUT: hello.output.value
        assert allowed.quotas["requestcount"].granted_amount == 2
        for _ in range(2):  # evaluated, then answered from the decision cache: the output is kept
            again = _check(mixerd, "alice")
            ops = {(op.name, op.value) for op in again.precondition.route_directive.request_header_operations}
            assert ops == {("x-istio", "L:alice")}

        denied = _check(mixerd, "mallory")
        assert denied.precondition.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "mallory is blocked" in denied.precondition.status.message

        _report(mixerd, "alice")
        metrics = wait_for(
            lambda: adapter.requests("HandleMetric", metric_pb2.HandleMetricRequest), timeout=20
        )
    finally:
        assert mixerd.stop() == 0

    want_config = params(blocked=["mallory"], label="L")
    entries = adapter.requests("HandleListEntry", listentry_pb2.HandleListEntryRequest)
    # alice: the Check with quotas, then the first of the two without (the second came from the
    # decision cache and never reached the adapter)
    assert [e.instance.value.string_value for e in entries] == ["alice", "alice", "mallory"]
    for e in entries:
        assert e.instance.name == "user-entry.instance.istio-system"
        assert e.adapter_config.type_url == "type.googleapis.com/oopbackend.config.Params"
        assert params.FromString(e.adapter_config.value) == want_config
        assert e.dedup_id
    assert entries[0].dedup_id != entries[1].dedup_id

    (quota,) = adapter.requests("HandleQuota", quota_pb2.HandleQuotaRequest)
    assert quota.instance.name == "requestcount.instance.istio-system"
    assert dict(quota.instance.dimensions)["user"].string_value == "alice"
    assert quota.dedup_id == "dedup-42requestcount"  # the Check's deduplication id + the quota's name
    wanted = quota.quota_request.quotas["requestcount.instance.istio-system"]
    assert (wanted.amount, wanted.best_effort) == (5, False)
    assert params.FromString(quota.adapter_config.value) == want_config

    (report,) = metrics
    (inst,) = report.instances
    assert inst.name == "requests.instance.istio-system"
    assert inst.value.int64_value == 1
    assert {k: v.WhichOneof("value") for k, v in inst.dimensions.items()} == {
        "code": "int64_value",
        "user": "string_value",
    }
    assert (inst.dimensions["code"].int64_value, inst.dimensions["user"].string_value) == (200, "alice")
    assert report.dedup_id and params.FromString(report.adapter_config.value) == want_config


def test_session_based_adapter(tmp_path: Path, gen: Path, adapters: list[Adapter]) -> None:
    adapter = start_adapter(tmp_path, gen)
    adapters.append(adapter)
    mixerd = _serve(tmp_path, config(gen, adapter.port, session_based=True))
    params = _params_class(gen)
    try:
        assert _check(mixerd, "alice").precondition.status.code == 0
        assert (
            _check(mixerd, "mallory").precondition.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        )
    finally:
        assert mixerd.stop() == 0

    (validate,) = adapter.requests("Validate", ib.ValidateRequest)
    (create,) = adapter.requests("CreateSession", ib.CreateSessionRequest)
    for req in (validate, create):
        assert params.FromString(req.adapter_config.value) == params(blocked=["mallory"], label="L")
        types = req.inferred_types["user-entry.instance.istio-system"]
        assert types.type_url == "type.googleapis.com/listentry.Type"
        assert listentry_pb2.Type.FromString(types.value).value == 1  # STRING
    entries = adapter.requests("HandleListEntry", listentry_pb2.HandleListEntryRequest)
    assert len(entries) == 2
    for e in entries:  # the session id instead of the config
        assert (e.adapter_config.type_url, e.adapter_config.value) == (
            "google.protobuf.Any.type_url",
            b"session-1",
        )
    closed = wait_for(lambda: adapter.requests("CloseSession", ib.CloseSessionRequest), timeout=10)
    assert [c.session_id for c in closed] == ["session-1"]


@pytest.mark.parametrize("session_based", [False, True], ids=["config", "session"])
def test_a_stopped_backend_is_isolated_counted_and_reconnected(
    tmp_path: Path, gen: Path, adapters: list[Adapter], session_based: bool
) -> None:
    """A backend that goes away fails its calls (counted, logged, INTERNAL for the Check) and
    nothing else; once it is back, calls reach it again (a session-based one gets a new session:
    the restarted adapter does not know the old one)."""
    adapter = start_adapter(tmp_path, gen)
    adapters.append(adapter)
    mixerd = _serve(tmp_path, config(gen, adapter.port, session_based=session_based))
    try:
        assert _check(mixerd, "alice").precondition.status.code == 0
        adapter.stop()
        with pytest.raises(grpc.RpcError) as failed:
            _check(mixerd, "bob")  # not alice: her answer is in the decision cache for 5 s
        assert failed.value.code() is grpc.StatusCode.INTERNAL
        assert "handler failure (request id" in (failed.value.details() or "")
        assert mixerd.metric("mixerd_dispatch_errors_total", handler=HANDLER, template="listentry") >= 1
        _report(mixerd, "alice")  # accepted, and its failed dispatch counted
        wait_for(
            lambda: mixerd.metric("mixerd_dispatch_errors_total", handler=HANDLER, template="metric") >= 1,
            timeout=20,
            what="the failed report dispatch counted",
        )
        assert mixerd.metric("mixerd_report_errors_total") >= 1
        assert "out-of-process handler backend.handler.istio-system at 127.0.0.1:" in mixerd.log()
        # mixerd itself keeps serving
        assert mixerd.http("/healthz").startswith("ok")

        restarted = start_adapter(tmp_path, gen, adapter.port)
        adapters.append(restarted)

        def recovered() -> bool:
            try:
                return _check(mixerd, "bob").precondition.status.code == 0  # failures are never cached
            except grpc.RpcError:
                return False

        wait_for(recovered, timeout=30, interval=0.2, what="checks through the restarted adapter")
    finally:
        assert mixerd.stop() == 0
    if session_based:  # one session with each adapter process (both record into one file)
        created = restarted.requests("CreateSession", ib.CreateSessionRequest)
        assert len(created) == 2


SERVED_LIST = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: blocklist, namespace: istio-system}}
spec:
  adapter: list
  connection: {{address: "127.0.0.1:{port}"}}
  params: {{overrides: [mallory, eve], blacklist: true}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: user, namespace: istio-system}}
spec:
  template: listentry
  params:
    value: 'request.headers["x-user"] | ""'
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: block-users, namespace: istio-system}}
spec:
  actions: [{{handler: blocklist, instances: [user]}}]
"""


def test_adapter_serve_reaches_a_builtin_adapter_out_of_process(tmp_path: Path) -> None:
    """``mixerd adapter serve list``: the built-in list adapter in its own process, reached by a
    handler with ``adapter: list`` and ``connection.address``."""
    port = free_port()
    with (tmp_path / "adapter-serve.log").open("ab") as log:
        served = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mixerd.cli.main",
                "adapter",
                "serve",
                "list",
                "--address",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: served.poll() is None and port_open(port), timeout=30, what="mixerd adapter serve")
        mixerd = _serve(tmp_path, SERVED_LIST.format(port=port))
        try:
            assert _check(mixerd, "alice").precondition.status.code == 0
            denied = _check(mixerd, "eve").precondition
            assert denied.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert "eve" in denied.status.message
            assert (
                mixerd.metric("mixerd_dispatch_errors_total", handler="blocklist.handler.istio-system") == 0
            )
        finally:
            assert mixerd.stop() == 0
        served_log = (tmp_path / "adapter-serve.log").read_text()
        assert "serving adapter list on 127.0.0.1:" in served_log
    finally:
        assert stop_process(served)
    assert served.returncode == 0
