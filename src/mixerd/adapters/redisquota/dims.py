"""Dimension values as strings (Mixer's ``adapter.Stringify``) and Redis counter keys (pure).

Overrides are matched by the string form of each instance dimension: an override
``{source.ip: "10.0.0.1"}`` matches an IP_ADDRESS dimension whose text is ``10.0.0.1``, and an
absent dimension matches only ``""``.

Counters are keyed by the quota name and the whole dimension set, like ``memquota``: the key is
``<quota name>`` when the instance has no dimensions, else ``<quota name>-<digest>`` where the
digest is the first 128 bits (32 hex digits) of the SHA-256 of the sorted ``[name, value]`` pairs
as compact JSON. A digest keeps keys short whatever the dimension values are; 128 bits make an
accidental (or crafted) collision between two dimension sets out of reach. Rolling windows add
``.rolling`` (their Redis values have other types, so a quota whose algorithm changes on a config
reload starts afresh instead of failing).

:func:`bucket_keys` names the keys one script call touches, given that base:

=====================  ==============================  ===================================
                       one server, Sentinel            Redis Cluster
=====================  ==============================  ===================================
window state           ``<base>.meta``                 ``{<base>}.meta``
units / buckets        ``<base>.data``                 ``{<base>}.data``
a deduplicated answer  ``<dedup id>-<base>.meta``      ``{<base>}.dedup.<dedup id>``
=====================  ==============================  ===================================

On a cluster every key of one bucket starts with the hash tag ``{<base>}``, so all of them hash
to one slot (Redis hashes only the text between the first ``{`` and the next ``}``) and one script
call can touch them all; different buckets spread over the slots. The deduplication id comes
after the tag there, since it comes from the caller and could hold braces of its own. One server
and Sentinel keep the names mixerd always used, so upgrading mixerd keeps the counters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mixerd.adapter import stringify

__all__ = ["bucket_keys", "dimension_strings", "redis_key", "stringify"]


def dimension_strings(dimensions: Mapping[str, Any]) -> dict[str, str]:
    """Every dimension as a string."""
    return {name: stringify(value) for name, value in dimensions.items()}


def redis_key(quota: str, dimensions: Mapping[str, str]) -> str:
    """The base Redis key of the counter for ``quota`` and these (stringified) dimensions."""
    if not dimensions:
        return quota
    canonical = json.dumps(sorted(dimensions.items()), ensure_ascii=False, separators=(",", ":"))
    return f"{quota}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def bucket_keys(base: str, dedup_id: str = "", *, hash_tag: bool = False) -> list[str]:
    """The keys of one bucket, in the scripts' ``KEYS`` order: state, data and, with a
    deduplication id, the key that keeps its answer. ``hash_tag`` gives the Redis Cluster layout."""
    if hash_tag:
        keys = [f"{{{base}}}.meta", f"{{{base}}}.data"]
        if dedup_id:
            keys.append(f"{{{base}}}.dedup.{dedup_id}")
        return keys
    keys = [f"{base}.meta", f"{base}.data"]
    if dedup_id:
        keys.append(f"{dedup_id}-{base}.meta")
    return keys
