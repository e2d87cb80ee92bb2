"""Attributes: Mixer's value types, manifests, the global dictionary and bags."""

from mixerd.attribute.bag import (
    MISSING,
    Bag,
    Condition,
    DictBag,
    FrozenReferences,
    OverlayBag,
    Reference,
    ReferenceTracker,
    TrackedStringMap,
    TrackingBag,
    sorted_references,
)
from mixerd.attribute.coerce import coerce
from mixerd.attribute.dictionary import GLOBAL_DICTIONARY, GLOBAL_INDEX
from mixerd.attribute.manifest import (
    Manifest,
    ManifestError,
    builtin_manifest,
    load_manifests,
    manifest_from_resources,
    stock_manifest,
)
from mixerd.attribute.types import (
    URI,
    DNSName,
    EmailAddress,
    IPAddress,
    ValueType,
    format_duration,
    parse_duration,
    parse_timestamp,
    type_of,
)

__all__ = [
    "GLOBAL_DICTIONARY",
    "GLOBAL_INDEX",
    "MISSING",
    "URI",
    "Bag",
    "Condition",
    "DNSName",
    "DictBag",
    "EmailAddress",
    "FrozenReferences",
    "IPAddress",
    "Manifest",
    "ManifestError",
    "OverlayBag",
    "Reference",
    "ReferenceTracker",
    "TrackedStringMap",
    "TrackingBag",
    "ValueType",
    "builtin_manifest",
    "coerce",
    "format_duration",
    "load_manifests",
    "manifest_from_resources",
    "parse_duration",
    "parse_timestamp",
    "sorted_references",
    "stock_manifest",
    "type_of",
]
