"""``mixerd adapter ...``: commands for adapter developers."""

from __future__ import annotations

import argparse

from mixerd.cli.adapter_new import register_new

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "adapter",
        help="adapter development: create a new adapter package",
        description="Commands for writing adapters (see docs/adapters.md).",
    )
    group = p.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND")
    register_new(group)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)
