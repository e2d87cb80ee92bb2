"""deploy/systemd: the unit verified by ``systemd-analyze verify`` (every directive known, every
value valid) and scored by ``systemd-analyze security``, and checked against mixerd: its settings
file names real flags with values ``mixerd serve`` accepts, the stop timeout covers the drain,
no reload signal is configured (mixerd has none), the console's store is in the StateDirectory."""

from __future__ import annotations

import argparse
import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mixerd.console.store import sqlite_path
from mixerd.server.settings import Settings, add_arguments

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
EXEC = "/opt/mixerd/bin/mixerd"


def _unit() -> dict[str, dict[str, list[str]]]:
    """The unit's sections -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in (SYSTEMD / "mixerd.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            sections.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"not a setting: {raw!r}"
        sections[section].setdefault(key.strip(), []).append(value.strip())
    return sections


def _env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in (SYSTEMD / "mixerd.env").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {raw!r}"
        values[key] = value
    return values


def _local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's mixerd (verify checks the binary)."""
    mixerd = Path(sys.executable).parent / "mixerd"
    assert mixerd.exists(), mixerd
    text = (SYSTEMD / "mixerd.service").read_text()
    assert f"ExecStart={EXEC} serve" in text
    unit = tmp_path / "mixerd.service"
    unit.write_text(text.replace(EXEC, str(mixerd)).replace("EnvironmentFile=/", "EnvironmentFile=-/"))
    return unit


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): only the parser checks ran")
    return found


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify prints unknown keys and bad values as warnings and still exits 0: both must be empty.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_systemd_analyze_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    unit = _local_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtecSystem=strict"))
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Unknown key" in done.stderr


def test_hardening_score(tmp_path: Path) -> None:
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--no-pager", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for mixerd\.service: ([\d.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= 2.0, "systemd rates 0-2 as OK; the unit was written to stay there"


def test_unit_is_hardened_and_stops_as_mixerd_does() -> None:
    unit = _unit()
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["ExecStart"] == f"{EXEC} serve"
    assert service["User"] != "root" and service["User"] == service["Group"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
    }.items():
        assert service[key] == value, key
    # SIGHUP re-reads the config now (mixerd serve, and every worker through the supervisor).
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    drain = float(_env_file()["MIXERD_DRAIN_TIMEOUT"])
    assert float(service["TimeoutStopSec"]) >= drain + 10
    # Exit status 2 is a bad flag or environment value (mixerd serve), not worth restarting.
    assert service["RestartPreventExitStatus"] == "2"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_state_directory_holds_the_console_store() -> None:
    service = {k: v[-1] for k, v in _unit()["Service"].items()}
    state = Path("/var/lib") / service["StateDirectory"]
    assert service["Environment"] == "XDG_STATE_HOME=%S"  # default store under /var/lib/mixerd
    assert sqlite_path(_env_file()["MIXERD_CONSOLE_STORE"]).parent == state
    sysusers = (SYSTEMD / "mixerd.sysusers").read_text().split("\n")
    entry = next(line for line in sysusers if line.startswith("u "))
    assert entry.split()[1] == service["User"]


def test_environment_file_holds_mixerd_settings() -> None:
    env = _env_file()
    known = {f"MIXERD_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(env) <= known, set(env) - known
    assert {"MIXERD_TLS_CERT", "MIXERD_TLS_KEY", "MIXERD_TLS_CLIENT_CA", "MIXERD_CONFIG"} <= set(env)
    # What `mixerd serve` makes of it (the files themselves are read when it starts).
    parser = argparse.ArgumentParser()
    add_arguments(parser, env)
    settings = Settings.from_args(parser.parse_args([]))
    assert settings.config == (Path("/etc/mixerd/config"),)
    assert settings.tls_client_ca == "/etc/mixerd/tls/root-cert.pem"
    assert settings.monitoring_tls_client_ca == ""  # monitoring: TLS without client certificates
    assert settings.drain_timeout == float(env["MIXERD_DRAIN_TIMEOUT"])


def test_unit_parses_as_ini() -> None:
    """systemd's format is stricter than INI in places, looser in others; this catches a broken
    section header or a stray line even where systemd-analyze is not installed."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((SYSTEMD / "mixerd.service").read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


def test_sysusers_creates_the_units_user(tmp_path: Path) -> None:
    """systemd-sysusers, into an empty root directory: the user and group the unit runs as."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (Debian package systemd)")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD / "mixerd.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    service = {k: v[-1] for k, v in _unit()["Service"].items()}
    passwd = {
        line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    user = passwd[service["User"]]
    assert user[5] == "/var/lib/mixerd" and user[6] == "/usr/sbin/nologin"
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert service["Group"] in groups


def test_the_reload_signal_is_mixerds() -> None:
    """`systemctl reload` sends SIGHUP: mixerd serve must handle it (and say so in --help)."""
    serve = (REPO / "src" / "mixerd" / "cli" / "serve.py").read_text()
    assert "SIGHUP" in serve
