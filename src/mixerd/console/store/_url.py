"""Store URLs as they may be shown (logs, errors, /debug pages)."""

from __future__ import annotations

from mixerd.adapter import redact_url

__all__ = ["display_url"]


def display_url(url: str) -> str:
    """``url`` without its password (``mixerd.adapter.redact_url``), keeping an empty authority:
    ``postgresql:///db?host=/run/postgresql`` stays that, where ``redact_url`` alone gives
    ``postgresql:/db?...``."""
    shown = redact_url(url)
    scheme, sep, _rest = url.partition(":///")
    if sep and shown.startswith(f"{scheme}:/") and not shown.startswith(f"{scheme}://"):
        return f"{scheme}://{shown[len(scheme) + 1 :]}"
    return shown
