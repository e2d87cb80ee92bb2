"""scripts/fetch_ui_vendor.py against a registry on disk (file:// URLs): verified fetching,
refusal of a tarball or a file that does not match the lock, nothing fetched when all is there."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch_ui_vendor.py"


@pytest.fixture(scope="module")
def fetcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_ui_vendor", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_ui_vendor"] = module
    spec.loader.exec_module(module)
    return module


def _tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _registry(tmp_path: Path, js: bytes = b"window.lib = 1;\n") -> tuple[Path, Path, dict[str, Any]]:
    registry = tmp_path / "registry"
    tgz = _tarball({"package/dist/lib.min.js": js, "package/LICENSE": b"MIT\n", "package/README.md": b"x"})
    path = registry / "lib" / "-" / "lib-1.2.3.tgz"
    path.parent.mkdir(parents=True)
    path.write_bytes(tgz)
    lock = {
        "registry": registry.as_uri(),
        "packages": {
            "lib": {
                "version": "1.2.3",
                "tarball": path.as_uri(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
                "files": {
                    "lib.min.js": {
                        "from": "package/dist/lib.min.js",
                        "sha256": hashlib.sha256(js).hexdigest(),
                    },
                    "LICENSE": {"from": "package/LICENSE", "sha256": hashlib.sha256(b"MIT\n").hexdigest()},
                },
            }
        },
    }
    lock_path = tmp_path / "vendor.lock.json"
    lock_path.write_text(json.dumps(lock))
    return lock_path, path, lock


def test_fetches_verifies_and_then_leaves_alone(fetcher: ModuleType, tmp_path: Path) -> None:
    lock_path, tarball, _ = _registry(tmp_path)
    dest = tmp_path / "vendor"
    (dest / "lib-1.0.0").mkdir(parents=True)  # an older version: removed
    assert fetcher.fetch(lock_path, dest) == 0
    assert (dest / "lib-1.2.3" / "lib.min.js").read_bytes() == b"window.lib = 1;\n"
    assert (dest / "lib-1.2.3" / "LICENSE").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["lib-1.2.3"]
    tarball.unlink()  # present and intact: nothing is downloaded
    assert fetcher.fetch(lock_path, dest) == 0
    assert fetcher.check(lock_path, dest) == 0


def test_an_altered_file_is_fetched_again(fetcher: ModuleType, tmp_path: Path) -> None:
    lock_path, _, _ = _registry(tmp_path)
    dest = tmp_path / "vendor"
    assert fetcher.fetch(lock_path, dest) == 0
    (dest / "lib-1.2.3" / "lib.min.js").write_text("tampered")
    assert fetcher.check(lock_path, dest) == 1
    assert fetcher.fetch(lock_path, dest) == 0
    assert (dest / "lib-1.2.3" / "lib.min.js").read_bytes() == b"window.lib = 1;\n"


def test_a_tarball_that_does_not_match_the_lock_is_refused(
    fetcher: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock_path, tarball, _ = _registry(tmp_path)
    tarball.write_bytes(_tarball({"package/dist/lib.min.js": b"evil()", "package/LICENSE": b"MIT\n"}))
    dest = tmp_path / "vendor"
    assert fetcher.fetch(lock_path, dest) == 1
    err = capsys.readouterr().err
    assert "lib@1.2.3" in err and "refused" in err and "MIXERD_NPM_REGISTRY" in err
    assert not (dest / "lib-1.2.3").exists()


def test_a_file_that_does_not_match_the_lock_is_refused(fetcher: ModuleType, tmp_path: Path) -> None:
    lock_path, _, lock = _registry(tmp_path)
    lock["packages"]["lib"]["files"]["lib.min.js"]["sha256"] = "0" * 64
    lock_path.write_text(json.dumps(lock))
    dest = tmp_path / "vendor"
    assert fetcher.fetch(lock_path, dest) == 1
    assert not (dest / "lib-1.2.3").exists()


def test_a_mirror_serves_the_registrys_paths(
    fetcher: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_path, tarball, _ = _registry(tmp_path)
    mirror = tmp_path / "mirror"
    (mirror / "lib" / "-").mkdir(parents=True)
    tarball.rename(mirror / "lib" / "-" / tarball.name)
    monkeypatch.setenv("MIXERD_NPM_REGISTRY", mirror.as_uri())
    assert fetcher.fetch(lock_path, tmp_path / "vendor") == 0


def test_this_checkout_has_the_locked_files(fetcher: ModuleType) -> None:
    """What the console UI serves is what the lock file pins (make install fetched it)."""
    assert fetcher.check(fetcher.LOCK, fetcher.DEST) == 0, "run `make install` (scripts/fetch_ui_vendor.py)"
