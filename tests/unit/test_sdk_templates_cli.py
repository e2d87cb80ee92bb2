"""The adapter SDK (registry, Params, harness), the template builder, settings and the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixerd.adapter import AdapterNotFound, Code, Params, get_adapter, load_adapters
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.attribute import IPAddress, ValueType, stock_manifest
from mixerd.server.settings import Settings, add_arguments
from mixerd.templates import (
    InstanceBuildError,
    MetricInstance,
    TemplateError,
    compile_instance,
    compile_output_mapper,
)

# --- registry and Params -------------------------------------------------------------------------


def test_builtin_adapters_are_entry_points() -> None:
    names = set(load_adapters())
    assert {"noop", "denier", "prometheus", "stdio", "list", "listchecker", "memquota", "redisquota"} <= names
    assert "kubernetesenv" in names


def test_unknown_adapter_names_the_group() -> None:
    with pytest.raises(
        AdapterNotFound, match=r"no adapter named 'nosuchadapter' in entry-point group 'mixerd\.adapters'"
    ):
        get_adapter("nosuchadapter")


def test_params_collects_every_error_with_its_path() -> None:
    p = Params({"maxAmount": -1, "valid_duration": "soon", "quotas": [{"name": 3}], "extra": 1})
    assert p.int("maxAmount", minimum=0) == -1
    p.duration("validDuration")
    for _, q in p.list("quotas"):
        q.str("name", required=True)
    errors = [str(e) for e in p.errors + p.unknown_fields()]
    assert errors == [
        "maxAmount: must be >= 0, got -1",
        "valid_duration: expected a duration such as '10s' or '500ms', got 'soon'",
        "quotas[0].name: expected a string, got int",
        "extra: unknown field",
    ]


async def test_harness_drives_the_denier() -> None:
    h = AdapterHarness("denier", {"status": {"code": 7, "message": "nope"}}, {"c": ("checknothing", {})})
    result = await h.check("c", {})
    assert (result.status.code, result.status.message) == (Code.PERMISSION_DENIED, "nope")
    assert result.valid_duration == dt.timedelta(seconds=5)
    await h.close()
    with pytest.raises(HarnessConfigError, match=r"status\.code: expected a gRPC status code"):
        AdapterHarness("denier", {"status": {"code": 99}})


# --- templates -------------------------------------------------------------------------------


def test_instance_builder_types_and_values() -> None:
    b = compile_instance(
        "requestcount.instance.istio-system",
        "metric",
        {
            "value": "1",
            "dimensions": {"source": 'source.workload.name | "unknown"', "ip": "source.ip"},
            "monitoredResourceType": '"UNSPECIFIED"',
        },
        stock_manifest(),
    )
    assert b.types == {
        "value": ValueType.INT64,
        "dimensions.source": ValueType.STRING,
        "dimensions.ip": ValueType.IP_ADDRESS,
        "monitored_resource_type": ValueType.STRING,
    }
    inst = b.build({"source.ip": IPAddress.parse("10.0.0.1")})
    assert inst == MetricInstance(
        "requestcount.instance.istio-system",
        1,
        {"source": "unknown", "ip": IPAddress.parse("10.0.0.1")},
        "UNSPECIFIED",
    )
    with pytest.raises(
        InstanceBuildError, match=r"instance requestcount\.instance\.istio-system: dimensions"
    ):
        b.build({})  # source.ip has no fallback


def test_instance_errors_are_all_reported_with_paths() -> None:
    with pytest.raises(TemplateError) as err:
        compile_instance(
            "x",
            "logentry",
            {"severity": "response.code", "timestamp": "reqest.time", "colour": '"red"'},
            stock_manifest(),
        )
    assert [str(e) for e in err.value.errors] == [
        "params.severity: expression 'response.code' has type INT64, the field needs STRING",
        "params.timestamp: unknown attribute reqest.time at position 0",
        "params.colour: unknown field (this template has: variables, timestamp, severity, "
        "monitored_resource_type, monitored_resource_dimensions)",
    ]


def test_output_mapper_defaults_and_type_checks() -> None:
    m = compile_output_mapper(
        "kubernetes",
        {
            "source.workload.name": '$out.source_workload_name | "unknown"',
            "source.labels": "$out.source_labels",
        },
        stock_manifest(),
    )
    assert m.map({}) == {"source.workload.name": "unknown"}
    assert m.map({"source_labels": {"app": "a"}}) == {
        "source.workload.name": "unknown",
        "source.labels": {"app": "a"},
    }
    with pytest.raises(TemplateError, match=r"attribute 'source\.uid' is STRING"):
        compile_output_mapper("kubernetes", {"source.uid": "$out.source_labels"}, stock_manifest())


# --- settings ----------------------------------------------------------------------------------


def test_settings_from_environment_and_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(
        parser,
        {
            "MIXERD_GRPC_ADDRESS": "127.0.0.1:1",
            "MIXERD_RATELIMIT_SHADOW": "false",
            "MIXERD_CHECK_DEADLINE": "2.5",
        },
    )
    s = Settings.from_args(parser.parse_args([]))
    assert (s.grpc_address, s.ratelimit_shadow, s.check_deadline, s.config) == ("127.0.0.1:1", False, 2.5, ())
    s = Settings.from_args(parser.parse_args(["--ratelimit-shadow", "--config", "a", "-c", "b"]))
    assert s.ratelimit_shadow is True and s.config == (Path("a"), Path("b"))
    parser = argparse.ArgumentParser()
    add_arguments(parser, {"MIXERD_RATELIMIT_SHADOW": "maybe"})  # building the parser never fails
    with pytest.raises(ValueError, match="MIXERD_RATELIMIT_SHADOW: expected true or false"):
        Settings.from_args(parser.parse_args([]))


def test_bad_environment_values_are_reported_not_raised() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MIXERD_CHECK_DEADLINE": "soon"},
    )
    assert out.returncode == 2
    assert "invalid float value 'soon' (from the flag or MIXERD_CHECK_DEADLINE)" in out.stderr
    # Commands other than serve do not care.
    out = subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", "eval", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MIXERD_RATELIMIT_SHADOW": "maybe"},
    )
    assert out.returncode == 0, out.stderr


# --- command line --------------------------------------------------------------------------------


def mixerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixerd.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_validate_and_routes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: h, namespace: istio-system}\n"
        "spec: {compiledAdapter: noop}\n---\n"
        "apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: i, namespace: istio-system}\n"
        "spec: {compiledTemplate: checknothing}\n---\n"
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: istio-system}\n"
        "spec: {match: 'request.size > 10', actions: [{handler: h, instances: [i]}]}\n"
    )
    out = mixerd("validate", str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 errors" in out.stdout
    routes = mixerd("routes", str(good))
    assert routes.returncode == 0
    assert "rule r.rule.istio-system match request.size > 10" in routes.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("request.size > 10", "reqest.size > 10"))
    out = mixerd("validate", str(bad))
    assert out.returncode == 1
    assert "error: rule/r.istio-system: spec.match: unknown attribute 'reqest.size'" in out.stdout
    missing = mixerd("validate", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr


def test_cli_eval() -> None:
    out = mixerd("eval", 'request.headers["x-user"] | "anonymous"', "-a", "request.headers[x-user]=bob")
    assert (out.returncode, out.stdout.strip()) == (0, '"bob" (STRING)')
    out = mixerd("eval", "reqest.size > 1")
    assert out.returncode == 1
    assert "unknown attribute reqest.size" in out.stdout + out.stderr


def test_cli_help_lists_commands() -> None:
    out = mixerd("--help")
    for command in ("serve", "validate", "routes", "eval", "check", "report"):
        assert command in out.stdout
    serve = mixerd("serve", "--help")
    assert "MIXERD_GRPC_ADDRESS" in serve.stdout and "--allow-slow-protobuf" in serve.stdout
