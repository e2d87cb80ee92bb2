"""docs/adapters.md, run: every command of its ``sh`` blocks, in order, for real (and a package
of every template: installed, tested, lint- and type-checked, validated).

``mixerd adapter new`` generates a package into a temporary directory; it is installed
(``pip install -e``) into a fresh virtual environment that sees this mixerd through a ``.pth``
file (no network, no build isolation); its generated tests run with that environment's pytest;
``mixerd validate`` accepts its sample config; ``mixerd serve`` (on free ports) routes to it
(``/debug/routes``), it receives a Report and a Check (``mixerd_dispatches_total``), and after
the documented edit of the config its Check denies.

The commands are taken from the document; each must be one the test knows how to run (a new
command in the document fails the test until the test runs it too).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

import mixerd
from tests.support.net import wait_for

from .mixerd_proc import MixerdProcess, start_mixerd

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
NAME = "hello"


def doc_commands() -> list[str]:
    """The command lines of the document's ``sh`` blocks (comments and blank lines dropped)."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


class Session:
    """Runs documented commands in ``work`` with the virtual environment's interpreter."""

    def __init__(self, work: Path, python: Path, host_python: str) -> None:
        self.work = work
        self.python = str(python)
        self.host_python = host_python
        self.server: MixerdProcess | None = None

    def run(
        self, argv: list[str], *, expect: int = 0, timeout: float = 60, env: dict[str, str] | None = None
    ) -> str:
        done = subprocess.run(argv, cwd=self.work, capture_output=True, text=True, timeout=timeout, env=env)
        output = done.stdout + done.stderr
        assert done.returncode == expect, f"{argv} exited {done.returncode}, not {expect}:\n{output}"
        return output

    def mixerd(self, args: list[str], *, expect: int = 0) -> str:
        return self.run([self.python, "-m", "mixerd.cli.main", *args], expect=expect)

    def client(self, args: list[str], *, expect: int = 0) -> str:
        assert self.server is not None, "a client command before `mixerd serve`"
        return self.mixerd([*args, "--server", self.server.grpc_address], expect=expect)

    def monitoring_path(self, url: str) -> str:
        assert self.server is not None
        path = re.sub(r"^http://127\.0\.0\.1:15014", "", url)
        assert path.startswith("/"), url
        return path


def make_venv(root: Path) -> Path:
    """A virtual environment that imports this mixerd (and its dependencies, pytest, setuptools)
    through a ``.pth`` file: the project's site-packages (editable installs included) and the
    directory mixerd is imported from."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host_site = sysconfig.get_paths()["purelib"]
    source = Path(mixerd.__file__).resolve().parents[1]
    (Path(target) / "_mixerd_host.pth").write_text(
        f"import site; site.addsitedir({host_site!r})\n{source}\n", encoding="utf-8"
    )
    return python


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "work"
    work.mkdir()
    s = Session(work, make_venv(tmp_path / "venv"), sys.executable)
    yield s
    if s.server is not None and s.server.proc.poll() is None:
        assert s.server.stop() == 0, s.server.log()


def test_the_documented_workflow(session: Session, tmp_path: Path) -> None:
    commands = doc_commands()
    checks = 0
    for command in commands:
        argv = shlex.split(command.split(" | ")[0])
        if argv[:3] == ["mixerd", "adapter", "new"]:
            out = session.mixerd(argv[1:])
            assert f"created adapter '{NAME}'" in out
        elif argv[:3] == ["pip", "install", "-e"]:
            # into the test's environment, offline: mixerd is already there (through the .pth)
            session.run(
                [
                    session.host_python, "-m", "pip", "--python", session.python, "install", "-q",
                    "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    *argv[2:],
                ]
            )  # fmt: skip
        elif argv[0] == "pytest":
            out = session.run([session.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv[1:]])
            assert re.search(r"\b\d+ passed\b", out) and "failed" not in out and "skipped" not in out, out
        elif argv[:2] == ["mixerd", "validate"]:
            out = session.mixerd(argv[1:])
            assert "1 handler, 1 rule" in out and "0 errors" in out, out
        elif argv[:2] == ["mixerd", "serve"]:
            assert argv[2] == "--config" and len(argv) == 4, command
            session.server = start_mixerd(
                tmp_path, [session.work / argv[3]], python=session.python, cwd=session.work
            )
        elif argv[:2] == ["curl", "-s"] and argv[2].endswith("/debug/routes"):
            assert session.server is not None
            routes = session.server.http(session.monitoring_path(argv[2]))
            for variety, template in (("CHECK", "listentry"), ("REPORT", "metric")):
                section = routes.split(f"{variety}:", 1)[1]
                assert f"handler {NAME}.handler.istio-system ({NAME}) template {template}" in section, routes
                assert f"instance {NAME}-{template}.instance.istio-system" in section, routes
        elif argv[:2] == ["mixerd", "report"]:
            session.client(argv[1:])
        elif argv[:2] == ["mixerd", "check"]:
            checks += 1
            if checks == 1:
                out = session.client(argv[1:])
                assert "status: OK" in out and "=> allowed" in out, out
            else:  # after the documented edit: the reloaded handler denies
                out = wait_for(
                    lambda args=argv[1:]: session.client(args, expect=3),
                    timeout=20,
                    what="the Check to be denied",
                )
                assert "status: PERMISSION_DENIED" in out, out
                assert f"message: {NAME}.handler.istio-system:denied by {NAME}" in out, out
        elif argv[:2] == ["curl", "-s"] and argv[2].endswith("/metrics"):
            assert session.server is not None
            handler = f"{NAME}.handler.istio-system"
            for template in ("metric", "listentry"):
                count = session.server.metric("mixerd_dispatches_total", handler=handler, template=template)
                assert count >= 1, (template, session.server.http("/metrics"))
            assert f'mixerd_dispatches_total{{handler="{handler}"' in session.server.http("/metrics")
        elif argv[:2] == ["sed", "-i"]:
            session.run(argv)
            assert "verdict: DENY" in (session.work / argv[3]).read_text()
        else:
            raise AssertionError(f"docs/adapters.md has a command this test does not run: {command}")
    assert checks == 2 and session.server is not None, commands


def test_every_template(session: Session) -> None:
    """An adapter of every template of the catalogue installs, passes its generated tests, and
    its sample config validates (and routes each template to it). (``attributes`` is left out: its
    instance is the attribute set itself, with no fields to scaffold.)"""
    from mixerd.templates import TEMPLATES as ALL

    TEMPLATES = [name for name, t in ALL.items() if not t.whole_set]

    session.mixerd(["adapter", "new", "every", "--templates", ",".join(TEMPLATES)])
    session.run(
        [
            session.host_python, "-m", "pip", "--python", session.python, "install", "-q", "--no-deps",
            "--no-build-isolation", "--no-index", "--disable-pip-version-check", "-e", "./every",
        ]
    )  # fmt: skip
    out = session.run([session.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "every/tests"])
    assert re.search(r"\b\d+ passed\b", out) and "failed" not in out and "skipped" not in out, out
    # the generated code is lint-clean and type-checks strictly
    ruff = str(Path(sys.executable).parent / "ruff")
    rules = ["--isolated", "--line-length", "100"]
    session.run([ruff, "check", *rules, "--select", "E,F,W,I,B,UP,SIM,RUF", "every/src", "every/tests"])
    session.run([ruff, "format", "--check", *rules, "every/src", "every/tests"])
    env = {**os.environ, "PYTHONPATH": str(session.work / "every" / "src")}
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.devnull, "every/src", "every/tests"]
    assert "Success: no issues found" in session.run(mypy, env=env)
    out = session.mixerd(["validate", "every/config/sample.yaml"])
    assert f"{len(TEMPLATES)} instances, 1 handler, 1 rule" in out and "0 errors, 0 warnings" in out, out
    routes = session.mixerd(["routes", "every/config/sample.yaml"])
    for template in TEMPLATES:
        assert f"handler every.handler.istio-system (every) template {template}" in routes, routes
    # installed, the name is taken; regenerating the package in place with --force is not a clash
    out = session.mixerd(["adapter", "new", "every", "--templates", "metric", "-o", "other"], expect=1)
    assert "an adapter named 'every' is already installed" in out, out
    session.mixerd(["adapter", "new", "every", "--templates", "metric", "--force"])
    assert 'templates=("metric",)' in (session.work / "every" / "src" / "every" / "__init__.py").read_text()
