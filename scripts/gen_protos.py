#!/usr/bin/env python3
"""Regenerate mixerd's protobuf and gRPC modules (``src/mixerd/_proto/``) from ``proto/``.

Usage::

    .venv/bin/python scripts/gen_protos.py            # rewrite src/mixerd/_proto
    .venv/bin/python scripts/gen_protos.py --out DIR  # write DIR/mixerd/_proto instead

Needs ``grpcio-tools`` (a dev dependency). The generated files are committed, so installing
mixerd does not need it. The ``.proto`` files under ``proto/mixerd/`` are compiled as they are;
``proto/third_party/`` is on the include path (``google.rpc.Status`` comes from the
``xds-protos`` package at runtime), and the vendored OpenTelemetry protos there
(``proto/third_party/opentelemetry/``) are compiled as a copy whose proto package
``opentelemetry.proto.*`` is renamed ``mixerd.otlp.*`` (modules ``mixerd._proto.otlp.*``; the
README beside them says why).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
THIRD_PARTY = PROTO_ROOT / "third_party"
PACKAGE = Path("mixerd") / "_proto"

# Modules that define a gRPC service (only these get a *_pb2_grpc.py).
SERVICE_PROTOS = (
    "mixerd/_proto/mixer/v1/mixer.proto",
    "mixerd/_proto/mixer/adapter/model/v1beta1/infrastructure_backend.proto",
    "mixerd/_proto/mixer/template/listentry/template_handler_service.proto",
    "mixerd/_proto/mixer/template/metric/template_handler_service.proto",
    "mixerd/_proto/mixer/template/quota/template_handler_service.proto",
)

# The vendored OpenTelemetry protos (OTLP), compiled under a private proto package.
OTLP_SOURCE = THIRD_PARTY / "opentelemetry" / "proto"
OTLP_FILES = (
    "common/v1/common.proto",
    "resource/v1/resource.proto",
    "trace/v1/trace.proto",
    "logs/v1/logs.proto",
    "collector/trace/v1/trace_service.proto",
    "collector/logs/v1/logs_service.proto",
)
OTLP_TARGET = PACKAGE / "otlp"
OTLP_PACKAGE = "mixerd.otlp"

INIT_DOCSTRINGS = {
    PACKAGE: "Generated protobuf and gRPC modules (scripts/gen_protos.py); do not edit.",
    PACKAGE / "mixer": "Generated modules of Mixer's API (package istio.mixer).",
    PACKAGE / "mixer" / "v1": "Generated modules of Mixer's v1 API (package istio.mixer.v1).",
    PACKAGE / "policy": "Generated modules of Istio's policy API (package istio.policy).",
    OTLP_TARGET: "Generated modules of the OpenTelemetry protocol (OTLP), proto package renamed mixerd.otlp.",
}


def _protoc(args: list[str], include: Path | None = None) -> None:
    try:
        import grpc_tools
    except ImportError:
        raise SystemExit("grpcio-tools is not installed (pip install grpcio-tools)") from None

    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"  # the well-known types
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *([f"-I{include}"] if include is not None else []),
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY}",
        f"-I{wkt}",
        *args,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)


def rename_otlp(text: str) -> str:
    """One vendored OTLP file with its proto package renamed (``opentelemetry.proto.X`` ->
    ``mixerd.otlp.X``), its imports pointing at the renamed files and its type references
    renamed; options (``java_package`` ...) and everything else are kept."""
    text = text.replace('import "opentelemetry/proto/', f'import "{OTLP_TARGET.as_posix()}/')
    renamed = re.sub(r"(?<![\w./-])opentelemetry\.proto\.", f"{OTLP_PACKAGE}.", text)
    if not re.search(rf"^package {re.escape(OTLP_PACKAGE)}\.", renamed, re.MULTILINE):
        raise SystemExit("a vendored OTLP file has no 'package opentelemetry.proto...' line")
    return renamed


def _write_otlp(root: Path) -> list[str]:
    """Write the renamed OTLP files under ``root``; return their paths relative to it."""
    names = []
    for name in OTLP_FILES:
        target = OTLP_TARGET / name
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_text(rename_otlp((OTLP_SOURCE / name).read_text(encoding="utf-8")), "utf-8")
        names.append(target.as_posix())
    return names


def _package_doc(package: Path) -> str:
    if package in INIT_DOCSTRINGS:
        return INIT_DOCSTRINGS[package]
    if not package.is_relative_to(OTLP_TARGET):
        return f"Generated modules of {package.relative_to(PACKAGE).as_posix()} (Istio's adapter model)."
    otlp = package.relative_to(OTLP_TARGET).as_posix().replace("/", ".")
    return f"Generated modules of OTLP's {otlp} (package {OTLP_PACKAGE}.{otlp})."


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
    with tempfile.TemporaryDirectory() as tmp:
        # No gRPC stubs: they would carry the renamed service name (see the README).
        _protoc([f"--python_out={out}", f"--pyi_out={out}", *_write_otlp(Path(tmp))], include=Path(tmp))
    for directory in sorted({target, *(d for d in target.rglob("*") if d.is_dir())}):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text(f'"""{_package_doc(directory.relative_to(out))}"""\n', encoding="utf-8")
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
