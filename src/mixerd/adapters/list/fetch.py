"""Fetching a list body over HTTP(S), bounded in time and size (the adapter's only I/O)."""

from __future__ import annotations

from mixerd.adapter.fetch import FetchError, fetch_bounded

__all__ = ["FetchError", "fetch_list"]


async def fetch_list(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url`` and return its body (:func:`mixerd.adapter.fetch.fetch_bounded`, limit ``maxListBytes``)."""
    return await fetch_bounded(
        url,
        timeout=timeout,
        max_bytes=max_bytes,
        what="list",
        limit_name="maxListBytes",
        accept="text/plain, application/yaml, */*",
    )
