"""Without PostgreSQL's server programs the PostgreSQL tests fail (never skip), saying what to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.postgres_server import find_postgres_bin


def test_missing_binaries_fail_with_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"run `make system-deps`"):
        find_postgres_bin(tmp_path / "nowhere")


def test_the_newest_debian_version_is_used(tmp_path: Path) -> None:
    for version in ("9", "15", "13"):
        for program in ("initdb", "postgres"):
            path = tmp_path / version / "bin" / program
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    assert find_postgres_bin(tmp_path) == tmp_path / "15" / "bin"
