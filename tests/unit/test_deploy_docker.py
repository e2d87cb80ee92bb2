"""The Dockerfile, checked without building it (no container daemon or registry in the test
environment): it parses, installs mixerd with the steps ``make install`` runs, runs as the user
the Kubernetes manifests expect, exposes mixerd's ports and starts ``mixerd serve``."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.server.settings import Settings, parse_address

REPO = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    line: int
    name: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their arguments; continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(p for p in pending if p)
        pending = []
        name, _, args = joined.partition(" ")
        if name.upper() not in INSTRUCTIONS:
            raise ValueError(f"line {start}: unknown instruction {name!r}")
        out.append(Instruction(start, name.upper(), args.strip()))
    if pending:
        raise ValueError("the file ends inside a continued instruction")
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.name == "FROM":
            stages.append([])
        assert stages, "the first instruction must be FROM (ARG before FROM is not used here)"
        stages[-1].append(ins)
    return stages


def _run_commands(stage: list[Instruction]) -> list[str]:
    """Every shell command of the stage's RUN instructions, split at ``&&``."""
    commands: list[str] = []
    for ins in stage:
        if ins.name == "RUN":
            commands += [c.strip() for c in ins.args.split("&&")]
    return commands


def test_parser_refuses_what_docker_would() -> None:
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_dockerfile("FROM scratch\nRUNN true\n")
    with pytest.raises(ValueError, match="continued"):
        parse_dockerfile("FROM scratch\nRUN true \\\n")


def test_two_stages_on_a_python_mixerd_supports(dockerfile: list[Instruction]) -> None:
    build, final = _stages(dockerfile)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    for stage in (build, final):
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+( AS \w+)?", stage[0].args)
        assert match, stage[0].args
        assert (int(match[1]), int(match[2])) >= minimum
    assert build[0].args.split()[0] == final[0].args.split()[0], "the venv is copied between the same Python"


def test_installs_mixerd_as_make_install_does(dockerfile: list[Instruction]) -> None:
    build, final = _stages(dockerfile)
    commands = _run_commands(build)
    venv = next(c for c in commands if " -m venv " in f" {c} ")
    prefix = shlex.split(venv)[-1]
    fetch = next(i for i, c in enumerate(commands) if c.endswith("scripts/fetch_ui_vendor.py"))
    install = next(i for i, c in enumerate(commands) if re.search(r"-m pip install .*'\.\[(\w+)\]'$", c))
    assert fetch < install, "the browser libraries are package data: fetched before pip builds the package"
    assert commands[fetch].split()[-2] == f"{prefix}/bin/python"
    extra = re.search(r"'\.\[(\w+)\]'", commands[install])
    assert extra is not None
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra[1] in extras and "asyncpg" in " ".join(extras[extra[1]])
    # The same steps as `make install` (a venv, pip install, the vendor fetch) ...
    makefile = (REPO / "Makefile").read_text()
    assert "-m venv $(VENV)" in makefile
    assert "-m pip install --quiet -e '.[dev]'" in makefile
    assert "$(PY) scripts/fetch_ui_vendor.py" in makefile
    # ... which the README describes.
    assert "scripts/fetch_ui_vendor.py" in (REPO / "README.md").read_text()
    copied = [i for i in final if i.name == "COPY"]
    assert [c.args for c in copied] == [f"--from=build {prefix} {prefix}"]
    env = " ".join(i.args for i in final if i.name == "ENV")
    assert f"PATH={prefix}/bin:$PATH" in env


def test_copies_only_files_that_exist_and_are_not_ignored(dockerfile: list[Instruction]) -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    build = _stages(dockerfile)[0]
    sources = [s for ins in build if ins.name == "COPY" for s in ins.args.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    assert ".venv" in ignored and "src/mixerd/server/ui/static/vendor" in ignored


def _deployment() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "deploy/base/deployment.yaml").read_text())
    return next(d for d in docs if d["kind"] == "Deployment")


def test_runs_as_the_user_kubernetes_expects(dockerfile: list[Instruction]) -> None:
    final = _stages(dockerfile)[-1]
    (user,) = [i.args for i in final if i.name == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user (runAsNonRoot can check it)"
    pod = _deployment()["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    env = " ".join(i.args for i in final if i.name == "ENV")
    state = re.search(r"XDG_STATE_HOME=(\S+)", env)
    assert state is not None
    container = _deployment()["spec"]["template"]["spec"]["containers"][0]
    assert state[1] in {m["mountPath"] for m in container["volumeMounts"]}


def test_exposes_mixerds_ports_and_serves(dockerfile: list[Instruction]) -> None:
    final = _stages(dockerfile)[-1]
    (expose,) = [i.args for i in final if i.name == "EXPOSE"]
    defaults = Settings()
    ports = {
        parse_address(a)[1]
        for a in (
            defaults.grpc_address,
            defaults.monitoring_address,
            defaults.prometheus_address,
            defaults.http_authz_address,
        )
    }
    assert {int(p) for p in expose.split()} == ports
    container = _deployment()["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == ports
    (entrypoint,) = [i.args for i in final if i.name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["mixerd", "serve"]
    assert [i.args for i in final if i.name == "STOPSIGNAL"] == ["SIGTERM"]
