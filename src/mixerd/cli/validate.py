"""``mixerd validate PATH...`` / ``mixerd validate k8s://``: check config and print every problem."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mixerd.adapter import load_adapters
from mixerd.attribute import builtin_manifest
from mixerd.config import DEFAULT_NAMESPACE, Snapshot, build_snapshot, config_files, format_report, load_paths
from mixerd.config.k8s.target import is_k8s_url
from mixerd.runtime import AdapterRegistryCatalog

__all__ = ["load_snapshot", "register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="validate config files, directories or a cluster's config resources and print every problem",
        description=(
            "Parse and validate Mixer-style config (YAML/JSON files, directories searched recursively, or "
            "the custom resources of a Kubernetes cluster: k8s://, k8s:///path/to/kubeconfig, "
            "k8s://?namespaces=a,b) against the installed adapters: every problem is printed with its "
            "resource and field path. Exit status 0 when there are no errors (warnings and ignored "
            "documents are fine), 1 otherwise."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a config file or directory, or one k8s:// URL")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="k8s://: seconds to wait for the list of every kind before giving up [default: %(default)s]",
    )
    p.add_argument("--default-namespace", default=DEFAULT_NAMESPACE, help="[default: %(default)s]")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary line")
    p.set_defaults(func=run)


def load_snapshot(paths: list[Path], default_namespace: str) -> Snapshot:
    """Parse ``paths`` and validate them into a snapshot, as the server would."""
    parsed = load_paths(paths, default_namespace=default_namespace)
    return build_snapshot(
        parsed.resources,
        adapters=AdapterRegistryCatalog(load_adapters()),
        default_namespace=default_namespace,
        base_manifest=builtin_manifest(),
        problems=parsed.errors,
        ignored=parsed.ignored,
    )


async def _list_cluster(url: str, default_namespace: str, timeout: float) -> Snapshot:
    from mixerd.config.k8s.store import KubeStore  # only a k8s:// URL needs the client

    async with KubeStore(url, default_namespace=default_namespace) as store:
        try:
            resources = await asyncio.wait_for(store.list(), timeout)
        except TimeoutError:
            errors = store.list_errors()
            raise TimeoutError(
                f"{url}: not every kind was listed within {timeout:g}s; still waiting for "
                + ", ".join(store.waiting_for())
                + ("\n  " + "\n  ".join(errors) if errors else "")
            ) from None
        return build_snapshot(
            resources,
            adapters=AdapterRegistryCatalog(load_adapters()),
            default_namespace=default_namespace,
            base_manifest=builtin_manifest(),
            problems=store.problems(),
            ignored=store.ignored(),
        )


def _run_cluster(args: argparse.Namespace) -> int:
    if len(args.paths) != 1:
        print("error: a k8s:// URL cannot be combined with files or another URL", file=sys.stderr)
        return 2
    try:
        snapshot = asyncio.run(_list_cluster(args.paths[0], args.default_namespace, args.timeout))
    except (ValueError, TimeoutError) as exc:  # KubeConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(format_report(snapshot, show_warnings=not args.quiet, show_ignored=not args.quiet))
    return 1 if snapshot.errors else 0


def run(args: argparse.Namespace) -> int:
    if any(is_k8s_url(p) for p in args.paths):
        return _run_cluster(args)
    args.paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    if not config_files(args.paths):
        print(f"note: no .yaml, .yml or .json files in {', '.join(map(str, args.paths))}", file=sys.stderr)
    snapshot = load_snapshot(args.paths, args.default_namespace)
    sys.stdout.write(format_report(snapshot, show_warnings=not args.quiet, show_ignored=not args.quiet))
    return 1 if snapshot.errors else 0
