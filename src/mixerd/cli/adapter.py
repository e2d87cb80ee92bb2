"""``mixerd adapter``: commands about adapters. Each subcommand lives in its own module
(``mixerd.cli.adapter_<name>``, listed in ``_SUBCOMMANDS``) with a ``register(subparsers)`` that
adds it to this group and sets ``func``."""

from __future__ import annotations

import argparse
import importlib

__all__ = ["register"]

_SUBCOMMANDS = ("adapter_new", "adapter_serve")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "adapter",
        help="adapter development: create an adapter package, serve one out of process",
        description="Commands for writing and running adapters (see docs/adapters.md): "
        "'mixerd adapter SUBCOMMAND --help'.",
    )
    group = p.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"mixerd.cli.{name}").register(group)
    p.set_defaults(func=lambda _args: _help(p))


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2
