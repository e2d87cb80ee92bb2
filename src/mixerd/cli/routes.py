"""``mixerd routes PATH...``: print the routing table a config produces."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mixerd.adapter import load_adapters
from mixerd.cli.validate import load_snapshot
from mixerd.config import DEFAULT_NAMESPACE
from mixerd.runtime import build_handler_table, build_routing_table
from mixerd.runtime.controller import close_handler

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "routes",
        help="print the routing table of a config",
        description=(
            "Build the routing table that `mixerd serve` would use for this config (handlers are built "
            "and closed again, without starting background work) and print it: for each variety and "
            "namespace, the handlers, the rules and their match conditions, and the instances, in "
            "dispatch order (handlers by name; the rules sending instances to a handler under the same "
            "match text share one group, as in Mixer; groups by match text)."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--default-namespace", default=DEFAULT_NAMESPACE, help="[default: %(default)s]")
    p.add_argument(
        "--fail-closed",
        action="store_true",
        help="as `mixerd serve --fail-closed`: check and quota rules without a mixerd.io/fail-closed "
        "annotation fail closed (marked '(fail-closed)')",
    )
    p.set_defaults(func=run)


async def _dump(paths: list[Path], default_namespace: str, fail_closed: bool = False) -> tuple[str, int]:
    snapshot = load_snapshot(paths, default_namespace)
    handlers = build_handler_table(snapshot, load_adapters())
    try:
        table = build_routing_table(snapshot, handlers, default_namespace, fail_closed=fail_closed)
        return table.dump(), len(snapshot.errors)
    finally:
        for entry in handlers.entries.values():
            await close_handler(entry)


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    text, errors = asyncio.run(_dump(args.paths, args.default_namespace, args.fail_closed))
    sys.stdout.write(text)
    if errors:
        print(f"({errors} config errors: run `mixerd validate` to see them)", file=sys.stderr)
    return 0
