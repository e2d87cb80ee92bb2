"""The quotas an Envoy ext_authz Check charges (pure).

Two sources, merged once per request by :func:`quota_args` (the larger charge wins when both name
the same quota):

* the config's :class:`~mixerd.runtime.QuotaPlan` (``QuotaSpecBinding`` / ``QuotaSpec``
  resources, semantics in :mod:`mixerd.runtime.quotas`), pinned with the routing table the Check
  runs on. Through ext_authz the service attributes a binding matches come from the context
  extensions (:mod:`mixerd.api.ext_authz.request`).
* context extension ``mixerd.quotas`` = ``name[=amount],...`` (amount defaults to 1).

A quota is denied (``RESOURCE_EXHAUSTED``, HTTP 429, "quota exhausted: <name>") when its handler
grants less than the charge; a quota whose handler answers with a non-OK status is denied with that
status. Quotas carry no deduplication id (Envoy does not retry ext_authz calls by default, and
neither ``x-request-id`` nor Envoy's stream id is unique enough to deduplicate on safely).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mixerd.adapter import QuotaArgs
from mixerd.api.ext_authz.request import QUOTAS_EXTENSION, BadRequest, _RequestBag
from mixerd.runtime import EMPTY_QUOTA_PLAN, QuotaPlan

__all__ = ["parse_quota_list", "quota_args"]


def parse_quota_list(text: str, where: str = f"context extension {QUOTAS_EXTENSION}") -> dict[str, int]:
    """``name[=amount],...`` -> {name: amount}; raises :class:`BadRequest` naming ``where``."""
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, amount = item.partition("=")
        name = name.strip()
        if not name:
            raise BadRequest(f"{where}: {item!r} has no quota name")
        if sep:
            amount = amount.strip()
            if not (amount.isascii() and amount.isdigit()) or len(amount) > 18 or int(amount) < 1:
                raise BadRequest(f"{where}: amount of {name!r} must be a positive integer, got {amount!r}")
            n = int(amount)
        else:
            n = 1
        out[name] = max(out.get(name, 0), n)
    return out


@functools.lru_cache(maxsize=256)
def _extension_quotas(text: str) -> Mapping[str, QuotaArgs]:
    return MappingProxyType({name: QuotaArgs(amount=n) for name, n in parse_quota_list(text).items()})


def quota_args(
    attrs: Mapping[str, Any], plan: QuotaPlan = EMPTY_QUOTA_PLAN
) -> Mapping[str, QuotaArgs] | None:
    """The quotas to request with a Check: the plan's and ``mixerd.quotas`` merged (None if none).

    Raises :class:`BadRequest` for a malformed ``mixerd.quotas``.
    """
    if isinstance(attrs, _RequestBag):
        text = attrs.extension(QUOTAS_EXTENSION)
    else:
        ext = attrs.get("context.extensions")
        text = ext.get(QUOTAS_EXTENSION) if ext else None
    if not plan.bindings:
        if not text:
            return None
        return _extension_quotas(text) or None
    amounts = plan.select(attrs)
    if text:
        for name, args in _extension_quotas(text).items():
            if args.amount > amounts.get(name, 0):
                amounts[name] = args.amount
    if not amounts:
        return None
    return {name: QuotaArgs(amount=n) for name, n in amounts.items()}
