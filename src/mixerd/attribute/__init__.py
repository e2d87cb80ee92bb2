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
    ReferenceTracking,
    TrackedStringMap,
    TrackingBag,
    sorted_references,
    tracker_of,
    untracked_view,
)
from mixerd.attribute.coerce import coerce
from mixerd.attribute.dictionary import GLOBAL_DICTIONARY, GLOBAL_INDEX
from mixerd.attribute.entries import entries_read, map_entry, merge_reads
from mixerd.attribute.logsafe import LOGSAFE_LIMIT, logsafe
from mixerd.attribute.manifest import (
    Manifest,
    ManifestError,
    builtin_manifest,
    load_manifests,
    manifest_from_resources,
    stock_manifest,
)
from mixerd.attribute.memo import remember
from mixerd.attribute.partial import PartialAttributes
from mixerd.attribute.types import (
    URI,
    V4_MAPPED_PREFIX,
    DNSName,
    EmailAddress,
    IPAddress,
    ValueType,
    format_duration,
    parse_duration,
    parse_ip,
    parse_timestamp,
    type_of,
)

__all__ = [
    "GLOBAL_DICTIONARY",
    "GLOBAL_INDEX",
    "LOGSAFE_LIMIT",
    "MISSING",
    "URI",
    "V4_MAPPED_PREFIX",
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
    "PartialAttributes",
    "Reference",
    "ReferenceTracker",
    "ReferenceTracking",
    "TrackedStringMap",
    "TrackingBag",
    "ValueType",
    "builtin_manifest",
    "coerce",
    "entries_read",
    "format_duration",
    "load_manifests",
    "logsafe",
    "manifest_from_resources",
    "map_entry",
    "merge_reads",
    "parse_duration",
    "parse_ip",
    "parse_timestamp",
    "remember",
    "sorted_references",
    "stock_manifest",
    "tracker_of",
    "type_of",
    "untracked_view",
]
