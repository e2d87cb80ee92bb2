#!/usr/bin/env python3
"""Fetch the console UI's browser libraries (Cytoscape.js, its dagre layout, uPlot) from the npm
registry into ``src/mixerd/server/ui/static/vendor/``, as ``make install`` does.

Usage::

    .venv/bin/python scripts/fetch_ui_vendor.py           # fetch what is missing (fast when present)
    .venv/bin/python scripts/fetch_ui_vendor.py --check   # exit 1 if any file is missing or altered
    .venv/bin/python scripts/fetch_ui_vendor.py --update  # maintainers: re-read the registry's
                                                          # tarball and integrity for the versions
                                                          # in the lock file and rewrite it

What is fetched is pinned by ``src/mixerd/server/ui/vendor.lock.json`` (committed): per package
its version, the tarball's URL and the registry's ``dist.integrity`` (sha512, Subresource
Integrity format), and the files taken from the tarball with their sha256. A tarball whose sha512
differs from the lock file is refused; so is an extracted file whose sha256 differs. The files go
to ``vendor/<name>-<version>/`` with the package's licence; they are git-ignored, never committed,
and shipped as package data (a wheel built after this script runs includes them). Directories of
versions the lock file no longer names are removed.

``MIXERD_NPM_REGISTRY`` points at a mirror of the npm registry (same paths as the registry);
``HTTPS_PROXY`` is honoured. Only the standard library is used, so any Python 3.11 runs it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "src" / "mixerd" / "server" / "ui"
LOCK = UI / "vendor.lock.json"
DEST = UI / "static" / "vendor"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
TIMEOUT_S = 60
ATTEMPTS = 3


class FetchError(Exception):
    pass


def _registry(lock: dict[str, Any]) -> str:
    url = os.environ.get("MIXERD_NPM_REGISTRY") or lock["registry"]
    return str(url).rstrip("/")


def _tarball_url(registry: str, lock_registry: str, tarball: str) -> str:
    """The tarball's URL on ``registry`` (a mirror keeps the registry's paths)."""
    lock_registry = lock_registry.rstrip("/")
    if registry != lock_registry and tarball.startswith(lock_registry + "/"):
        return registry + tarball[len(lock_registry) :]
    return tarball


def _get(url: str) -> bytes:
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise FetchError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
            last = exc
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.5 * (attempt + 1))
    raise FetchError(f"GET {url}: {getattr(last, 'reason', last)}")


def _sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_dir(dest: Path, name: str, version: str) -> Path:
    return dest / f"{name}-{version}"


def _present(dest: Path, name: str, pkg: dict[str, Any]) -> bool:
    directory = _package_dir(dest, name, pkg["version"])
    for target, spec in pkg["files"].items():
        path = directory / target
        if not path.is_file() or _sha256(path) != spec["sha256"]:
            return False
    return True


def _members(tarball: bytes, wanted: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    found[member.name] = f.read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise FetchError(f"the tarball has no {', '.join(missing)}")
    return found


def _install(dest: Path, name: str, pkg: dict[str, Any], tarball: bytes) -> None:
    sources = [spec["from"] for spec in pkg["files"].values()]
    contents = _members(tarball, sources)
    directory = _package_dir(dest, name, pkg["version"])
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        for target, spec in pkg["files"].items():
            data = contents[spec["from"]]
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec["sha256"]:
                raise FetchError(f"{spec['from']}: sha256 {digest}, the lock file says {spec['sha256']}")
            (staging / target).write_bytes(data)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _download(registry: str, lock: dict[str, Any], name: str, pkg: dict[str, Any]) -> bytes:
    url = _tarball_url(registry, lock["registry"], pkg["tarball"])
    data = _get(url)
    got = _sri_sha512(data)
    if got != pkg["integrity"]:
        raise FetchError(f"{url}: integrity {got}, the lock file says {pkg['integrity']}: refused")
    return data


def _prune(dest: Path, lock: dict[str, Any]) -> None:
    if not dest.is_dir():
        return
    keep = {f"{name}-{pkg['version']}" for name, pkg in lock["packages"].items()}
    for child in dest.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child)
            print(f"fetch_ui_vendor: removed {child.name} (not in the lock file)")


def fetch(lock_path: Path, dest: Path) -> int:
    lock = json.loads(lock_path.read_text("utf-8"))
    registry = _registry(lock)
    _prune(dest, lock)
    fetched = []
    for name, pkg in lock["packages"].items():
        if _present(dest, name, pkg):
            continue
        try:
            _install(dest, name, pkg, _download(registry, lock, name, pkg))
        except FetchError as exc:
            print(
                f"fetch_ui_vendor: {name}@{pkg['version']}: {exc}\n"
                "  The console UI's graph and charts need it (the API works without). Check the network,\n"
                "  or set MIXERD_NPM_REGISTRY to an npm registry mirror, then run this script again.",
                file=sys.stderr,
            )
            return 1
        fetched.append(f"{name}@{pkg['version']}")
    if fetched:
        print(f"fetch_ui_vendor: {', '.join(fetched)} verified and extracted into {dest}")
    return 0


def check(lock_path: Path, dest: Path) -> int:
    lock = json.loads(lock_path.read_text("utf-8"))
    bad = [f"{n}@{p['version']}" for n, p in lock["packages"].items() if not _present(dest, n, p)]
    if bad:
        print(f"fetch_ui_vendor: missing or altered in {dest}: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def update(lock_path: Path) -> int:
    """Re-read each package's tarball URL and integrity from the registry for the version in the
    lock file, and the sha256 of the files taken from it."""
    lock = json.loads(lock_path.read_text("utf-8"))
    registry = _registry(lock)
    for name, pkg in lock["packages"].items():
        meta = json.loads(_get(f"{registry}/{name}/{pkg['version']}"))
        pkg["tarball"] = meta["dist"]["tarball"]
        pkg["integrity"] = meta["dist"]["integrity"]
        data = _download(registry, lock, name, pkg)
        contents = _members(data, [spec["from"] for spec in pkg["files"].values()])
        for spec in pkg["files"].values():
            spec["sha256"] = hashlib.sha256(contents[spec["from"]]).hexdigest()
        print(f"fetch_ui_vendor: {name}@{pkg['version']} {pkg['integrity']}")
    lock_path.write_text(json.dumps(lock, indent=2) + "\n", "utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=LOCK, help="the lock file [%(default)s]")
    parser.add_argument("--dest", type=Path, default=DEST, help="where the files go [%(default)s]")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check that every file is there, intact")
    mode.add_argument("--update", action="store_true", help="rewrite the lock file from the registry")
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check(args.lock, args.dest)
        if args.update:
            return update(args.lock)
        return fetch(args.lock, args.dest)
    except FetchError as exc:
        print(f"fetch_ui_vendor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
