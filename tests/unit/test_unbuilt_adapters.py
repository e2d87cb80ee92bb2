"""Mixer adapters mixerd does not build: `mixerd validate` (and the runtime) say so and say what to
use instead, from the one table in mixerd.config.unbuilt; every Mixer 1.4 in-tree adapter is
either built or in that table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mixerd.adapter import load_adapters
from mixerd.cli.main import main
from mixerd.config import NOT_BUILT_ADAPTERS, MemoryStore, parse_text
from mixerd.runtime import AdapterRegistryCatalog, Runtime

# Mixer 1.4's in-tree adapters (mixer/adapter/inventory.yaml), those removed earlier that Istio
# samples still name, and the cloud adapters users ran next to Mixer.
MIXER_ADAPTERS = [
    "bypass", "circonus", "cloudwatch", "denier", "dogstatsd", "fluentd", "kubernetesenv", "listchecker",
    "memquota", "noop", "opa", "prometheus", "redisquota", "solarwinds", "stackdriver", "statsd", "stdio",
    "zipkin", "rbac", "servicecontrol", "signalfx", "apigee",
]  # fmt: skip
BUILT_HERE = {"fluentd", "statsd", "dogstatsd", "opa"}  # this branch's adapters (entry points after install)
CLOUD = ["stackdriver", "cloudwatch", "signalfx", "solarwinds", "circonus", "apigee"]

HANDLER = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: h, namespace: istio-system}}
spec: {{compiledAdapter: {adapter}, params: {{}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: i, namespace: istio-system}}
spec: {{compiledTemplate: reportnothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: r, namespace: istio-system}}
spec: {{actions: [{{handler: h, instances: [i]}}]}}
"""
LEGACY = """
apiVersion: config.istio.io/v1alpha2
kind: {adapter}
metadata: {{name: h, namespace: istio-system}}
spec: {{}}
"""


def mixerd_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``mixerd validate --quiet PATH`` (in process): exit status and output."""
    capsys.readouterr()
    status = main(["validate", "--quiet", str(path)])
    return status, capsys.readouterr().out


def test_validate_as_a_command(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(HANDLER.format(adapter="stackdriver"))
    out = subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert NOT_BUILT_ADAPTERS["stackdriver"].message("stackdriver") in out.stdout


def test_every_mixer_adapter_is_built_or_explained() -> None:
    built = set(load_adapters()) | BUILT_HERE
    assert [a for a in MIXER_ADAPTERS if a not in built and a not in NOT_BUILT_ADAPTERS] == []
    assert set(CLOUD) <= set(NOT_BUILT_ADAPTERS)


def test_the_table_does_not_list_the_statsd_and_fluentd_adapters() -> None:
    # (an entry for an adapter that is installed is harmless: the table is read only when none is)
    assert set(NOT_BUILT_ADAPTERS) & BUILT_HERE == set()


@pytest.mark.parametrize("adapter", CLOUD)
def test_validate_explains_a_cloud_adapter(
    adapter: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    legacy = adapter != "apigee"  # Apigee's handlers were out-of-process (`adapter: apigee`), never a kind
    text = HANDLER.format(adapter=adapter)
    if legacy:
        text += "---" + LEGACY.format(adapter=adapter).replace("name: h", "name: h2")
    config.write_text(text)
    status, out = mixerd_validate(config, capsys)
    assert status == 1
    entry = NOT_BUILT_ADAPTERS[adapter]
    message = f"adapter '{adapter}' ({entry.what}) is not built into mixerd; instead: {entry.instead}"
    assert f"error: handler/h.istio-system: spec.compiledAdapter: {message}" in out
    if legacy:
        assert f"error: {adapter}/h2.istio-system: kind: {message}" in out


def test_the_messages_name_an_alternative() -> None:
    for name, entry in NOT_BUILT_ADAPTERS.items():
        message = entry.message(name)
        assert "not built into mixerd; instead: " in message
        assert any(word in entry.instead for word in ("adapter", "Envoy", "AuthorizationPolicy", "Proxy")), (
            name
        )


def test_an_unknown_adapter_keeps_the_plain_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(HANDLER.format(adapter="nosuchadapter"))
    _, out = mixerd_validate(config, capsys)
    assert "spec.compiledAdapter: unknown adapter 'nosuchadapter'  [" in out


def test_the_registry_catalog_explains_too() -> None:
    catalog = AdapterRegistryCatalog({})
    [(path, message)] = catalog.validate_params("cloudwatch", {}, {})
    assert path == "" and message == NOT_BUILT_ADAPTERS["cloudwatch"].message("cloudwatch")
    assert catalog.validate_params("nosuchadapter", {}, {}) == [
        ("", "no adapter named 'nosuchadapter' is installed")
    ]


async def test_the_runtime_reports_it_in_its_errors() -> None:
    parsed = parse_text(HANDLER.format(adapter="stackdriver"))
    runtime = Runtime(MemoryStore(parsed.resources))
    await runtime.start()
    try:
        errors = "\n".join(runtime.status.errors)
        assert NOT_BUILT_ADAPTERS["stackdriver"].message("stackdriver") in errors
    finally:
        await runtime.close()
