"""The ``mixerd`` command line: one sub-command per module in :mod:`mixerd.cli`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mixerd import __version__

__all__ = ["main"]

# Each module defines ``register(subparsers)``, which adds its sub-command and sets ``func``
# (a callable taking the parsed namespace and returning the exit status).
_COMMANDS = ("serve", "validate", "routes", "eval", "check", "report", "adapter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixerd",
        description=(
            "mixerd: a policy and telemetry hub for service meshes. It speaks Istio Mixer's gRPC API "
            "and Envoy's ext_authz, rate-limit and access-log APIs, driven by Mixer-style config "
            "(attribute manifests, instances, handlers, rules)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mixerd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"mixerd.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mixerd.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
