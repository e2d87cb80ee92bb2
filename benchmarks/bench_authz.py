"""Benchmark the authentication and authorization gate on the ext_authz Check path.

Two runtimes in this process, each behind mixerd's ext_authz servicer (called directly with a
decoded ``CheckRequest``: the whole check path of the front-end, decode -> dispatcher -> verdict
-> response, without a network between):

(A) the plain policy: a ``listchecker`` whitelist of ``x-user`` values;
(B) the same, plus a RequestAuthentication (RS256, inline JWKS) and 50 AuthorizationPolicies that
    all apply to the request's workload (45 DENY policies over paths, headers, addresses and
    claims that do not match, then 5 ALLOW policies of which the last matches).

Every request carries the same headers, a JWT among them (one of ``--tokens`` tokens, so
verification is cached per token after the first use). Rounds alternate A and B; the figure is
the median CPU time per check of each and their ratio (goal: B/A <= 1.3).

Next to them, (O): the same Check decided by an ``opa`` rule instead of the listchecker (a Rego
policy over the user, method and path), measured in the same alternating rounds: as deployed
(its answers come from the decision cache after the first) and with the decision cache off (the
Rego policy evaluated on every check).

Usage: .venv/bin/python benchmarks/bench_authz.py [--checks 4000] [--rounds 5] [--tokens 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.jwt_issuer

from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2  # noqa: E402

from mixerd.api.ext_authz import ExtAuthzService  # noqa: E402
from mixerd.config import MemoryStore, parse_text  # noqa: E402
from mixerd.runtime import Runtime  # noqa: E402
from mixerd.runtime.checkcache import DEFAULT_CACHE_ENTRIES  # noqa: E402
from tests.support.jwt_issuer import Issuer  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import summary_row  # noqa: E402

LIST_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: allowed-users, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params: {overrides: [alice, bob, carol, dave], blacklist: false, entryType: STRINGS}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params: {value: 'request.headers["x-user"] | ""'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: allowed-users, namespace: istio-system}
spec:
  actions: [{handler: allowed-users, instances: [user]}]
"""


OPA_POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: opa-users, namespace: istio-system}
spec:
  compiledAdapter: opa
  params:
    checkMethod: data.mixerauthz.allow
    failClose: true
    policy:
    - |
      package mixerauthz
      users = ["alice", "bob", "carol", "dave"]
      default allow = false
      allow {
        input.subject.user == users[_]
        input.action.method == "GET"
        startswith(input.action.path, "/orders")
      }
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: authz, namespace: istio-system}
spec:
  compiledTemplate: authorization
  params:
    subject: {user: 'request.headers["x-user"] | ""'}
    action:
      namespace: destination.namespace | ""
      method: request.method | ""
      path: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: opa, namespace: istio-system}
spec:
  actions: [{handler: opa-users, instances: [authz]}]
"""


def security_policy(issuer: Issuer) -> str:
    docs = [
        {
            "apiVersion": "security.istio.io/v1beta1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "idp", "namespace": "shop"},
            "spec": {
                "jwtRules": [{"issuer": issuer.issuer, "audiences": ["shop"], "jwks": issuer.jwks("rsa1")}]
            },
        }
    ]
    deny_rules: list[dict[str, Any]] = [
        {"to": [{"operation": {"paths": ["/admin*"]}}]},
        {"when": [{"key": "request.headers[x-debug]", "values": ["1"]}]},
        {"from": [{"source": {"ipBlocks": ["192.168.0.0/16"]}}]},
        {"when": [{"key": "request.auth.claims[role]", "values": ["banned"]}]},
        {"to": [{"operation": {"methods": ["DELETE"], "hosts": ["*.internal"]}}]},
    ]
    for i in range(45):
        docs.append(
            {
                "apiVersion": "security.istio.io/v1beta1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": f"deny-{i}", "namespace": "shop"},
                "spec": {"action": "DENY", "rules": [deny_rules[i % len(deny_rules)]]},
            }
        )
    for i in range(5):
        last = i == 4
        docs.append(
            {
                "apiVersion": "security.istio.io/v1beta1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": f"allow-{i}", "namespace": "shop"},
                "spec": {
                    "rules": [
                        {
                            "from": [{"source": {"requestPrincipals": [f"{issuer.issuer}/*"]}}],
                            "to": [
                                {
                                    "operation": {
                                        "methods": ["GET"],
                                        "paths": ["/orders*" if last else f"/other{i}*"],
                                    }
                                }
                            ],
                            "when": [{"key": "request.auth.claims[role]", "values": ["admin", "viewer"]}],
                        }
                    ]
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


def request(token: str) -> Any:
    ctx = attribute_context_pb2.AttributeContext()
    ctx.source.address.socket_address.address = "10.1.2.3"
    ctx.source.address.socket_address.port_value = 40000
    ctx.destination.address.socket_address.address = "10.9.8.7"
    ctx.destination.address.socket_address.port_value = 8080
    http = ctx.request.http
    http.method = "GET"
    http.path = "/orders/7"
    http.host = "shop.example"
    http.headers.update(
        {
            ":path": "/orders/7",
            ":method": "GET",
            ":authority": "shop.example",
            "x-user": "alice",
            "authorization": f"Bearer {token}",
            "user-agent": "bench",
            "x-request-id": "7c2a59e4-0f1e-4b4a-9a0e-6c1d2b3e4f50",
        }
    )
    ctx.context_extensions["namespace"] = "shop"
    return external_auth_pb2.CheckRequest(attributes=ctx)


async def start(text: str, *, cache: bool = True) -> tuple[Runtime, ExtAuthzService]:
    parsed = parse_text(text)
    assert not parsed.errors, parsed.errors
    runtime = Runtime(
        MemoryStore(parsed.resources), check_cache_entries=DEFAULT_CACHE_ENTRIES if cache else 0
    )
    await runtime.start()
    errors = runtime.status.errors
    assert not errors, errors
    return runtime, ExtAuthzService(runtime)


async def run(svc: ExtAuthzService, requests: list[Any], checks: int) -> float:
    """CPU seconds per check over ``checks`` checks."""
    n = len(requests)
    t0 = time.process_time()
    for i in range(checks):
        resp = await svc.Check(requests[i % n], None)
        if resp.status.code != 0:
            raise AssertionError(f"check denied: {resp.status.message}")
    return (time.process_time() - t0) / checks


async def main(args: argparse.Namespace) -> int:
    issuer = Issuer()
    tokens = [issuer.mint(issuer.claims(f"user{i}", aud="shop", role="viewer")) for i in range(args.tokens)]
    requests = [request(t) for t in tokens]
    plain_rt, plain = await start(LIST_POLICY)
    authz_rt, authz = await start(LIST_POLICY + "\n---\n" + security_policy(issuer))
    opa_rt, opa = await start(OPA_POLICY)
    rego_rt, rego = await start(OPA_POLICY, cache=False)
    try:
        await run(plain, requests, 500)  # warm up (and fill the token cache of B)
        await run(authz, requests, 500)
        await run(opa, requests, 500)
        await run(rego, requests, 500)
        a_times: list[float] = []
        b_times: list[float] = []
        o_times: list[float] = []
        r_times: list[float] = []
        for _ in range(args.rounds):
            a_times.append(await run(plain, requests, args.checks))
            b_times.append(await run(authz, requests, args.checks))
            o_times.append(await run(opa, requests, args.checks))
            r_times.append(await run(rego, requests, args.checks))
        a = statistics.median(a_times)
        b = statistics.median(b_times)
        o = statistics.median(o_times)
        r = statistics.median(r_times)
        print(f"checks per round: {args.checks}, rounds: {args.rounds}, distinct tokens: {args.tokens}")
        print(f"(A) listchecker Check:                       {a * 1e6:7.1f} us CPU per check (median)")
        print(f"(B) + JWT + 50 AuthorizationPolicies:        {b * 1e6:7.1f} us CPU per check (median)")
        rounds = ", ".join(f"{y / x:.2f}" for x, y in zip(a_times, b_times, strict=True))
        print(f"B/A: {b / a:.2f} (rounds: {rounds}); goal <= 1.3")
        print(f"(O) opa Check (Rego, same request):          {o * 1e6:7.1f} us CPU per check (median)")
        o_rounds = ", ".join(f"{y / x:.2f}" for x, y in zip(a_times, o_times, strict=True))
        print(f"O/A: {o / a:.2f} (rounds: {o_rounds})")
        print(f"(O) opa Check, no decision cache:           {r * 1e6:7.1f} us CPU per check (median)")
        r_rounds = ", ".join(f"{y / x:.2f}" for x, y in zip(a_times, r_times, strict=True))
        print(f"O (no cache)/A: {r / a:.2f} (rounds: {r_rounds})")
        summary_row(
            "issue 12: Check with JWT + 50 AuthorizationPolicies / listchecker",
            f"{b / a:.2f}",
            "<= 1.3",
            b / a <= 1.3,
        )
        uncached = issuer.mint(issuer.claims("fresh", aud="shop", role="viewer"))
        t0 = time.process_time()
        resp = await authz.Check(request(uncached), None)
        print(
            f"first check of a new token (RS256 verification): {(time.process_time() - t0) * 1e6:.0f} us CPU"
        )
        assert resp.status.code == 0
    finally:
        await plain_rt.close()
        await authz_rt.close()
        await opa_rt.close()
        await rego_rt.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checks", type=int, default=4000, help="checks per round (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of A then B (default 5)")
    parser.add_argument("--tokens", type=int, default=20, help="distinct tokens sent (default 20)")
    sys.exit(asyncio.run(main(parser.parse_args())))
