#!/usr/bin/env python3
"""Regenerate mixerd's protobuf and gRPC modules (``src/mixerd/_proto/``) from ``proto/``.

Usage::

    .venv/bin/python scripts/gen_protos.py            # rewrite src/mixerd/_proto
    .venv/bin/python scripts/gen_protos.py --out DIR  # write DIR/mixerd/_proto instead

Needs ``grpcio-tools`` (a dev dependency). The generated files are committed, so installing
mixerd does not need it. Only the ``.proto`` files under ``proto/mixerd/`` are compiled;
``proto/third_party/`` is on the include path only (``google.rpc.Status`` comes from the
``xds-protos`` package at runtime).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
THIRD_PARTY = PROTO_ROOT / "third_party"
PACKAGE = Path("mixerd") / "_proto"

# Modules that define a gRPC service (only these get a *_pb2_grpc.py).
SERVICE_PROTOS = ("mixerd/_proto/mixer/v1/mixer.proto",)

INIT_DOCSTRINGS = {
    PACKAGE: "Generated protobuf and gRPC modules (scripts/gen_protos.py); do not edit.",
    PACKAGE / "mixer": "Generated modules of Mixer's API (package istio.mixer).",
    PACKAGE / "mixer" / "v1": "Generated modules of Mixer's v1 API (package istio.mixer.v1).",
}


def _protoc(args: list[str]) -> None:
    try:
        import grpc_tools
    except ImportError:
        raise SystemExit("grpcio-tools is not installed (pip install grpcio-tools)") from None

    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"  # the well-known types
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY}",
        f"-I{wkt}",
        *args,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)


def generate(out: Path) -> list[Path]:
    """Generate into ``out`` (``out/mixerd/_proto/...``); returns the files written, relative to ``out``."""
    target = out / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / PACKAGE).rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    _protoc([f"--python_out={out}", f"--pyi_out={out}", *protos])
    _protoc([f"--grpc_python_out={out}", *SERVICE_PROTOS])
    for package, doc in INIT_DOCSTRINGS.items():
        (out / package).mkdir(parents=True, exist_ok=True)
        (out / package / "__init__.py").write_text(f'"""{doc}"""\n', encoding="utf-8")
    return sorted(p.relative_to(out) for p in target.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="output root (default: src)")
    ns = parser.parse_args(argv)
    for path in generate(ns.out.resolve()):
        print(path.as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
