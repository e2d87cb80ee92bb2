"""CEL vs CEXL on the stock Istio metric instances: the cost of one evaluation in each dialect.

The params of the ``requestcount`` and ``requestduration`` metric instances of the stock telemetry
config (``rendered/instances.yaml``: a value and 20 dimensions each) are compiled three ways
against the stock vocabulary: as written (CEXL), written in CEL by hand (``a | b`` is
``pick(a, b)``, ``conditional(c, x, y)`` is ``c ? x : y``, ``"0ms"`` is ``duration("0ms")``), and
as COMPAT (the CEXL text with CEL semantics). All three must give the same values over the three
attribute bags of ``bench_expressions.py``; then each instance's expression set is evaluated in
interleaved rounds (CPU time, best round kept).

Goal: CEL / CEXL <= 1.5 per evaluation.

    python benchmarks/bench_expressions_cel.py [--rounds N] [--sets N] [--strict]
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

from bench_expressions import BAGS, Bag, best_per_call, load_metric_params

from mixerd.attribute import stock_manifest
from mixerd.lang import EvaluationError, Expression, compile

INSTANCES = ("requestcount", "requestduration")

CEL_DIMENSIONS = {
    "reporter": 'pick(context.reporter.kind, "inbound") == "outbound" ? "source" : "destination"',
    "source_workload": 'pick(source.workload.name, "unknown")',
    "source_workload_namespace": 'pick(source.workload.namespace, "unknown")',
    "source_principal": 'pick(source.principal, "unknown")',
    "source_app": 'pick(source.labels["app"], "unknown")',
    "source_version": 'pick(source.labels["version"], "unknown")',
    "destination_workload": 'pick(destination.workload.name, "unknown")',
    "destination_workload_namespace": 'pick(destination.workload.namespace, "unknown")',
    "destination_principal": 'pick(destination.principal, "unknown")',
    "destination_app": 'pick(destination.labels["app"], "unknown")',
    "destination_version": 'pick(destination.labels["version"], "unknown")',
    "destination_service": 'pick(destination.service.host, pick(destination.service.name, "unknown") '
    '== "unknown" ? "unknown" : request.host)',
    "destination_service_name": 'pick(destination.service.name, "unknown")',
    "destination_service_namespace": 'pick(destination.service.namespace, "unknown")',
    "request_protocol": 'pick(api.protocol, context.protocol, "unknown")',
    "response_code": "pick(response.code, 200)",
    "response_flags": 'pick(context.proxy_error_code, "-")',
    "permissive_response_code": 'pick(rbac.permissive.response_code, "none")',
    "permissive_response_policyid": 'pick(rbac.permissive.effective_policy_id, "none")',
    "connection_security_policy": 'pick(context.reporter.kind, "inbound") == "outbound" ? "unknown" : '
    '(pick(connection.mtls, false) ? "mutual_tls" : "none")',
}
CEL_VALUES = {"requestcount": "1", "requestduration": 'pick(response.duration, duration("0ms"))'}


def outcome(expr: Expression, bag: Bag) -> object:
    try:
        return expr.evaluate(bag)
    except EvaluationError as exc:
        return f"error: {exc}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="timing rounds (the best is kept)")
    parser.add_argument("--sets", type=int, default=1000, help="expression sets evaluated per round")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args(argv)

    manifest = stock_manifest()
    params = load_metric_params()
    sets: dict[str, dict[str, list[Expression]]] = {}
    for name in INSTANCES:
        p = params[name]
        assert set(p["dimensions"]) == set(CEL_DIMENSIONS), f"{name}: the stock dimensions changed"
        cexl_texts = [p["value"], *(p["dimensions"][d] for d in CEL_DIMENSIONS)]
        cel_texts = [CEL_VALUES[name], *CEL_DIMENSIONS.values()]
        sets[name] = {
            "cexl": [compile(t, manifest) for t in cexl_texts],
            "cel": [compile(t, manifest, dialect="cel") for t in cel_texts],
            "compat": [compile(t, manifest, dialect="compat") for t in cexl_texts],
        }

    # Same answers first (an absent request.host fails in CEXL and reads "" in CEL: no bag has that).
    for bag_name, bag in BAGS.items():
        for name, by_dialect in sets.items():
            want = [outcome(e, bag) for e in by_dialect["cexl"]]
            for dialect in ("cel", "compat"):
                got = [outcome(e, bag) for e in by_dialect[dialect]]
                assert got == want, (bag_name, name, dialect, got, want)

    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"CEL vs CEXL on the stock metric instances ({python})")
    print("us = CPU microseconds per instance (value + 20 dimensions); per eval = us / 21")
    print()
    header = (
        f"{'bag':<22} {'instance':<16} {'CEXL us':>8} {'CEL us':>8} {'COMPAT us':>10}"
        f" {'CEL/eval':>9} {'CEL/CEXL':>9} {'COMPAT/CEXL':>12}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for bag_name, bag in BAGS.items():
        for name, by_dialect in sets.items():
            runs: list[Callable[[], object]] = []
            for dialect in ("cexl", "cel", "compat"):
                fns = [e.evaluate for e in by_dialect[dialect]]
                runs.append(lambda fns=fns, bag=bag: [f(bag) for f in fns])
            best_per_call(runs, args.sets, 1)  # warm up
            t_cexl, t_cel, t_compat = best_per_call(runs, args.sets, args.rounds)
            ratio = t_cel / t_cexl
            worst = max(worst, ratio)
            count = len(by_dialect["cel"])
            print(
                f"{bag_name:<22} {name:<16} {t_cexl * 1e6:>8.2f} {t_cel * 1e6:>8.2f} {t_compat * 1e6:>10.2f}"
                f" {t_cel / count * 1e6:>9.3f} {ratio:>9.2f} {t_compat / t_cexl:>12.2f}"
            )
    ok = worst <= 1.5
    print()
    print(f"goal CEL/CEXL <= 1.5: {'met' if ok else 'MISSED'} (worst {worst:.2f})")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
