"""``mixerd validate PATH...``: check config files and print every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixerd.adapter import load_adapters
from mixerd.attribute import builtin_manifest
from mixerd.config import DEFAULT_NAMESPACE, Snapshot, build_snapshot, config_files, format_report, load_paths
from mixerd.runtime import AdapterRegistryCatalog

__all__ = ["load_snapshot", "register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="validate config files or directories and print every problem",
        description=(
            "Parse and validate Mixer-style config (YAML/JSON files, directories searched recursively) "
            "against the installed adapters: every problem is printed with its resource and field path. "
            "Exit status 0 when there are no errors (warnings and ignored documents are fine), 1 otherwise."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
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


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    if not config_files(args.paths):
        print(f"note: no .yaml, .yml or .json files in {', '.join(map(str, args.paths))}", file=sys.stderr)
    snapshot = load_snapshot(args.paths, args.default_namespace)
    sys.stdout.write(format_report(snapshot, show_warnings=not args.quiet, show_ignored=not args.quiet))
    return 1 if snapshot.errors else 0
