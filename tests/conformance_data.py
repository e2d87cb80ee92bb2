"""Where the shared Mixer conformance data lives (read-only, outside the repository).

``MIXERD_CONFORMANCE_DIR`` overrides the default ``<repo>/../shared/conformance``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["conformance_dir"]

_REPO = Path(__file__).resolve().parent.parent


def conformance_dir() -> Path:
    """The conformance data directory (it is not checked that it exists)."""
    override = os.environ.get("MIXERD_CONFORMANCE_DIR")
    return Path(override) if override else _REPO.parent / "shared" / "conformance"
