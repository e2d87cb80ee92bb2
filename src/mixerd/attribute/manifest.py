"""Attribute manifests: which attributes exist and what type each has.

Manifests are Istio ``attributemanifest`` resources (YAML). The stock Istio vocabulary (the
``istioproxy`` and ``kubernetes`` manifests that Istio 1.4 installed) ships inside the package.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

from mixerd.attribute.types import ValueType

__all__ = [
    "Manifest",
    "ManifestError",
    "builtin_manifest",
    "load_manifests",
    "manifest_from_resources",
    "stock_manifest",
]

Manifest = Mapping[str, ValueType]
"""An attribute manifest: attribute name -> value type."""


class ManifestError(ValueError):
    """A manifest document is malformed; the message names the document and field."""


def manifest_from_resources(docs: Iterable[Mapping[str, Any]]) -> dict[str, ValueType]:
    """Merge the ``attributemanifest`` documents of ``docs`` (other kinds are ignored)."""
    out: dict[str, ValueType] = {}
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") != "attributemanifest":
            continue
        meta = doc.get("metadata") or {}
        where = f"attributemanifest/{meta.get('name', '?')}"
        spec = doc.get("spec") or {}
        attrs = spec.get("attributes") or {}
        if not isinstance(attrs, Mapping):
            raise ManifestError(f"{where}: spec.attributes: expected a map of attribute name to info")
        for name, info in attrs.items():
            raw = (info or {}).get("valueType", (info or {}).get("value_type"))
            if raw is None:
                raise ManifestError(f"{where}: spec.attributes.{name}.valueType: missing")
            try:
                out[str(name)] = ValueType.parse(raw)
            except ValueError as exc:
                raise ManifestError(f"{where}: spec.attributes.{name}.valueType: {exc}") from None
    return out


def load_manifests(text: str) -> dict[str, ValueType]:
    """Load every ``attributemanifest`` of a multi-document YAML text.

    A plain ``name: TYPE`` mapping is accepted too, which is handy for tests and ``mixerd eval``.
    """
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) == 1 and isinstance(docs[0], Mapping) and "kind" not in docs[0]:
        try:
            return {str(k): ValueType.parse(v) for k, v in docs[0].items()}
        except (ValueError, AttributeError) as exc:
            raise ManifestError(f"manifest: {exc}") from None
    return manifest_from_resources(docs)


@functools.cache
def stock_manifest() -> Manifest:
    """The stock Istio 1.4 vocabulary (90 attributes), read-only."""
    text = resources.files("mixerd.attribute").joinpath("data/istio-attributes.yaml").read_text("utf-8")
    return MappingProxyType(load_manifests(text))


@functools.cache
def builtin_manifest() -> Manifest:
    """Every attribute mixerd knows without any config: the stock Istio vocabulary plus the
    attributes of mixerd's own front-ends (``mixerd-attributes.yaml``: Envoy ext_authz context
    extensions, rate-limit descriptors ...). Config manifests add to it."""
    merged = dict(stock_manifest())
    extra = resources.files("mixerd.attribute").joinpath("data/mixerd-attributes.yaml")
    if extra.is_file():
        merged.update(load_manifests(extra.read_text("utf-8")))
    return MappingProxyType(merged)
