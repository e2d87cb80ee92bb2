"""Attribute input for the command line: ``-a name=value`` and ``--attributes FILE.yaml``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mixerd.attribute import ValueType, builtin_manifest, coerce, load_manifests

__all__ = ["add_attribute_arguments", "attributes_from_args", "manifest_from_args"]


def add_attribute_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a",
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attribute, typed by the manifest (repeatable). String maps: 'request.headers[x-user]=bob' "
        "or 'request.headers={x-user: bob}'. Timestamps: RFC 3339 or 'now'; durations: 10ms; IPs: 10.0.0.1",
    )
    p.add_argument(
        "--attributes", type=Path, metavar="FILE.yaml", help="a YAML map of attribute name to value"
    )
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE.yaml",
        help="attribute manifest (attributemanifest YAML or a 'name: TYPE' map) "
        "[default: the stock Istio vocabulary and mixerd's own attributes]",
    )


def manifest_from_args(args: argparse.Namespace) -> Mapping[str, ValueType]:
    if getattr(args, "manifest", None):
        return load_manifests(Path(args.manifest).read_text("utf-8"))
    return builtin_manifest()


def attributes_from_args(args: argparse.Namespace, manifest: Mapping[str, ValueType]) -> dict[str, Any]:
    """Typed attributes from ``--attributes`` then ``-a`` (later ones win). Raises ValueError."""
    raw: dict[str, Any] = {}
    if getattr(args, "attributes", None):
        loaded = yaml.safe_load(Path(args.attributes).read_text("utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{args.attributes}: expected a map of attribute name to value")
        raw.update({str(k): v for k, v in loaded.items()})
    for item in getattr(args, "attr", []) or []:
        _add_assignment(raw, item)
    return typed_attributes(raw, manifest)


def typed_attributes(raw: Mapping[str, Any], manifest: Mapping[str, ValueType]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        vt = manifest.get(name)
        if vt is None:
            raise ValueError(f"unknown attribute '{name}' (not in the manifest)")
        try:
            out[name] = coerce(value, vt)
        except ValueError as exc:
            raise ValueError(f"attribute '{name}': {exc}") from None
    return out


def _add_assignment(raw: dict[str, Any], item: str) -> None:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=VALUE, got {item!r}")
    name = name.strip()
    if name.endswith("]") and "[" in name:
        base, _, key = name[:-1].partition("[")
        current = raw.setdefault(base, {})
        if not isinstance(current, dict):
            raise ValueError(f"attribute '{base}' is given both as a value and as a map")
        current[key] = value
        return
    if value.startswith("{"):
        loaded = yaml.safe_load(value)
        if isinstance(loaded, Mapping):
            raw[name] = dict(loaded)
            return
    raw[name] = value


def split_quotas(items: Sequence[str]) -> dict[str, int]:
    """``["requestcount", "api=5"]`` -> ``{"requestcount": 1, "api": 5}``."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, amount = item.partition("=")
        out[name] = int(amount) if sep else 1
    return out
