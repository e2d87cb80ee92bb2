"""The opa adapter's cost: a Mixer Check through an opa rule against the same Check through a plain
listchecker rule, in one mixerd process and one run.

Both rules allow the users alice, bob, carol and dave (``x-user``): the listchecker from its
``overrides``, the opa handler from a Rego policy (``data.mixerauthz.allow`` over a list of users,
with the method and path in the input document too). ``x-route: list`` or ``x-route: opa`` picks
the rule, so the two request bodies differ in one header value only. Check rounds alternate
between the two (h2load, the request of benchmarks/bench_check.py); the figures are requests per
second (median of the rounds) and mixerd CPU time per Check.

A second part times the handlers alone, in this process (no server, no gRPC): one
``handle_authorization`` of the opa handler (input document + Rego evaluation) against one
``handle_listentry`` of the listchecker handler.

    python benchmarks/bench_opa.py [--requests N] [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from _util import MIXERD, H2Load, cpu_seconds, free_port, grpc_frame, h2load, start, stop, table
from bench_check import attributes

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.adapter.testing import AdapterHarness
from mixerd.api.mixer_v1.client import build_check_request

POLICY = """package mixerauthz
users = ["alice", "bob", "carol", "dave"]
default allow = false
allow {
  input.subject.user == users[_]
  input.action.method == "GET"
  startswith(input.action.path, "/api")
}
"""

CONFIG = f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: allowed-users, namespace: istio-system}}
spec:
  compiledAdapter: listchecker
  params: {{overrides: [alice, bob, carol, dave], blacklist: false, entryType: STRINGS}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: user, namespace: istio-system}}
spec:
  compiledTemplate: listentry
  params: {{value: 'request.headers["x-user"] | ""'}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: list, namespace: istio-system}}
spec:
  match: request.headers["x-route"] == "list"
  actions: [{{handler: allowed-users, instances: [user]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: opa-users, namespace: istio-system}}
spec:
  compiledAdapter: opa
  params:
    checkMethod: data.mixerauthz.allow
    failClose: true
    policy:
    - |
{"".join("      " + line + chr(10) for line in POLICY.splitlines())}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: authz, namespace: istio-system}}
spec:
  compiledTemplate: authorization
  params:
    subject: {{user: 'request.headers["x-user"] | ""'}}
    action:
      namespace: destination.namespace | ""
      service: destination.service.host | ""
      method: request.method | ""
      path: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: opa, namespace: istio-system}}
spec:
  match: request.headers["x-route"] == "opa"
  actions: [{{handler: opa-users, instances: [authz]}}]
"""


def request(route: str) -> dict[str, object]:
    attrs = attributes()
    headers = dict(attrs["request.headers"])  # type: ignore[call-overload]
    headers["x-route"] = route
    return {**attrs, "request.headers": headers}


def handler_costs(calls: int) -> dict[str, float]:
    """Microseconds per handler call, in this process."""
    opa = AdapterHarness(
        "opa",
        {"policy": [POLICY], "checkMethod": "data.mixerauthz.allow", "failClose": True},
        {
            "a": (
                "authorization",
                {"subject": {"user": '"alice"'}, "action": {"method": '"GET"', "path": '"/api/x"'}},
            )
        },
    )
    lst = AdapterHarness(
        "listchecker",
        {"overrides": ["alice", "bob", "carol", "dave"]},
        {"e": ("listentry", {"value": '"alice"'})},
    )
    out: dict[str, float] = {}
    for name, method, instance in (
        ("opa handle_authorization", opa.handler.handle_authorization, opa.instance("a", {})),
        ("listchecker handle_listentry", lst.handler.handle_listentry, lst.instance("e", {})),
    ):
        assert method(instance).status.code == 0
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                method(instance)
            samples.append((time.perf_counter() - t0) / calls * 1e6)
        out[name] = min(samples)
    asyncio.run(opa.close())
    asyncio.run(lst.close())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000, help="Checks per round [default: %(default)s]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds [default: %(default)s]")
    ap.add_argument("--calls", type=int, default=5000, help="handler calls per timing [default: %(default)s]")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mixerd-bench-opa-"))
    (tmp / "config").mkdir()
    (tmp / "config" / "bench.yaml").write_text(CONFIG)
    bodies = {}
    for route in ("list", "opa"):
        bodies[route] = tmp / f"{route}.bin"
        bodies[route].write_bytes(grpc_frame(build_check_request(request(route)).SerializeToString()))

    port, mon = free_port(), free_port()
    cmd = [*MIXERD, "serve", "--config", str(tmp / "config"), "--grpc-address", f"127.0.0.1:{port}",
           "--monitoring-address", f"127.0.0.1:{mon}", "--prometheus-address", "",
           "--http-authz-address", "", "--log-level", "warning"]  # fmt: skip
    proc: subprocess.Popen[bytes] = start(cmd, port, log=tmp / "mixerd.log")
    url = f"http://127.0.0.1:{port}/istio.mixer.v1.Mixer/Check"
    runs: dict[str, list[tuple[H2Load, float]]] = {"list": [], "opa": []}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = mixer_pb2_grpc.MixerStub(ch)
            for route in ("list", "opa"):  # both rules answer, and allow
                ok = stub.Check(build_check_request(request(route)), timeout=5).precondition.status
                assert ok.code == 0, (route, ok)
                bad = {**request(route), "request.headers": {"x-route": route, "x-user": "mallory"}}
                denied = stub.Check(build_check_request(bad), timeout=5).precondition.status
                assert denied.code == 7, (route, denied)
        for route in ("list", "opa"):
            h2load(url, bodies[route], requests=2000)  # warm-up
        for i in range(args.rounds):
            for route in ("list", "opa")[:: 1 if i % 2 == 0 else -1]:
                cpu0 = cpu_seconds(proc.pid)
                r = h2load(url, bodies[route], requests=args.requests)
                runs[route].append((r, (cpu_seconds(proc.pid) - cpu0) / r.succeeded * 1e6))
    finally:
        stop(proc)

    rows = []
    for route, label in (("list", "listchecker rule"), ("opa", "opa rule")):
        rps = [r.rps for r, _ in runs[route]]
        cpu = [c for _, c in runs[route]]
        all_ok = "yes" if all(r.ok for r, _ in runs[route]) else "NO"
        rounds = " ".join(f"{x:,.0f}" for x in rps)
        rows.append(
            (label, rounds, f"{statistics.median(rps):,.0f}", f"{statistics.median(cpu):,.0f}", all_ok)
        )
    print(
        table(rows, ("Mixer Check via", "req/s per round", "median req/s", "mixerd CPU us/Check", "all OK"))
    )
    ratio = statistics.median(r.rps for r, _ in runs["opa"]) / statistics.median(
        r.rps for r, _ in runs["list"]
    )
    print(f"\nthroughput ratio opa / listchecker (medians of {args.rounds} alternating rounds) = {ratio:.2f}")

    costs = handler_costs(args.calls)
    print()
    print(
        table(
            [(k, f"{v:.1f}") for k, v in costs.items()],
            ("handler call (in process)", "us per call (best of 5)"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
