"""``mixerd eval``: compile an expression and evaluate it over attributes given on the command line.

    mixerd eval 'source.labels["app"] | "unknown"' -a 'source.labels={app: reviews}'
    "reviews" (STRING)

The manifest defaults to the stock Istio vocabulary (``--manifest`` takes an attributemanifest
YAML or a plain ``name: TYPE`` map); attributes come from ``--attributes FILE.yaml`` (``name:
value``) and ``-a name=value``, converted to the manifest's types. A compile or evaluation error
prints ``error: <message>`` with the expression and a caret under the failing part (exit 1).
``--lang CEL`` (or ``COMPAT``) compiles in that dialect, as the ``policy.istio.io/lang``
annotation does for a resource.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping
from typing import Any

from mixerd.attribute import ValueType, format_duration
from mixerd.cli.attrs import add_attribute_arguments, attributes_from_args, manifest_from_args
from mixerd.lang import CompileError, EvaluationError, compile

__all__ = ["format_value", "register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate an expression over attributes",
        description=(
            "Compile an expression (Mixer's CEXL, or CEL with --lang) against an attribute manifest "
            "and evaluate it over the given attributes. Prints the value and its type."
        ),
    )
    parser.add_argument("expression", metavar="EXPR", help="the expression, e.g. 'request.size | 0'")
    add_attribute_arguments(parser)
    parser.add_argument(
        "--lang",
        choices=("CEXL", "CEL", "COMPAT"),
        type=str.upper,
        default="CEXL",
        help="the expression dialect, as the policy.istio.io/lang annotation of a rule or instance "
        "selects it: CEXL (default), CEL, or COMPAT (CEXL syntax with CEL semantics)",
    )
    parser.add_argument(
        "--references",
        action="store_true",
        help="also print the attributes the evaluation looked up (-name: absent, map[key]: a map key)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text: str = args.expression
    try:
        manifest = manifest_from_args(args)
    except (OSError, ValueError) as exc:
        return _fail(f"manifest: {exc}")
    try:
        expr = compile(text, manifest, dialect=args.lang.lower())
    except CompileError as exc:
        return _fail(exc.reason, text, exc.position)
    try:
        attributes = attributes_from_args(args, manifest)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    value, tracker = expr.referenced(attributes)
    if isinstance(value, EvaluationError):
        return _fail(value.message, text, value.position)
    print(f"{format_value(value, expr.result_type)} ({expr.result_type.name})")
    if args.references:
        print("referenced: " + (", ".join(tracker.log()) or "(nothing)"))
    return 0


def format_value(value: Any, value_type: ValueType) -> str:
    """Show ``value`` as CEXL/YAML-ish text (strings quoted, times in RFC 3339, durations Go-style)."""
    if value_type in (ValueType.STRING, ValueType.DNS_NAME, ValueType.EMAIL_ADDRESS, ValueType.URI):
        return json.dumps(str(value), ensure_ascii=False)
    if value_type is ValueType.BOOL:
        return "true" if value else "false"
    if value_type is ValueType.TIMESTAMP and isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if value_type is ValueType.DURATION and isinstance(value, dt.timedelta):
        return format_duration(value)
    if value_type is ValueType.STRING_MAP and isinstance(value, Mapping):
        return json.dumps(dict(value), ensure_ascii=False, sort_keys=True)
    return str(value)


def _fail(message: str, text: str | None = None, position: int | None = None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if text is not None and position is not None:
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        line = text[start : len(text) if end < 0 else end]
        print(f"  {line}", file=sys.stderr)
        print("  " + " " * (position - start) + "^", file=sys.stderr)
    return 1
