"""Files tests keep for people to look at (screenshots): under ``test-artifacts/`` at the top of
the checkout (git-ignored), or ``$MIXERD_TEST_ARTIFACTS``. The terminal summary lists what a run
saved (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ARTIFACTS", "artifact", "saved"]

ARTIFACTS = Path(
    os.environ.get("MIXERD_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts"
)

saved: list[Path] = []
"""What this run saved, in order."""


def artifact(*parts: str) -> Path:
    """A path under the artifacts directory (its directory created), recorded for the summary."""
    path = ARTIFACTS.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved.append(path)
    return path
