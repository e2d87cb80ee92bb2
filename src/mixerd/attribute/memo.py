"""Bounded memos: the one eviction policy of mixerd's per-value caches.

Hot paths keep small dictionaries of things derived from request values (encoded answers,
peers, parsed addresses, policy decisions). The hit stays an inline ``dict.get``; a miss stores
through :func:`remember`, which empties a full memo before adding: no bookkeeping on hits (an
LRU would cost a move per hit), and a memo refills with whatever is in use after the reset.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` in ``memo`` (emptied first when it holds ``limit``
    entries) and return it."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
