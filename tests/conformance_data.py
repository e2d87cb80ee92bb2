"""Where the shared Mixer conformance data lives (read-only, outside the repository), and how its
encoded handler params become the params mixerd reads.

``MIXERD_CONFORMANCE_DIR`` overrides the default ``<repo>/../shared/conformance``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["conformance_dir", "conformance_file", "params"]

_REPO = Path(__file__).resolve().parent.parent


def conformance_dir() -> Path:
    """The conformance data directory (it is not checked that it exists)."""
    override = os.environ.get("MIXERD_CONFORMANCE_DIR")
    return Path(override) if override else _REPO.parent / "shared" / "conformance"


def conformance_file(name: str) -> Path:
    """A file of the conformance data. The data is the specification: without it the suite that
    reads it fails (at import), it never skips."""
    path = conformance_dir() / name
    if not path.is_file():
        raise RuntimeError(
            f"conformance data not found in {path.parent}: put shared/conformance beside the repository "
            "or set MIXERD_CONFORMANCE_DIR"
        )
    return path


def params(value: Any) -> Any:
    """Handler params from the JSON: durations as the Go duration strings users write."""
    if isinstance(value, dict):
        if value.get("@type") == "duration":
            return value["value"]
        return {k: params(v) for k, v in value.items()}
    if isinstance(value, list):
        return [params(v) for v in value]
    return value
