"""``mixerd eval``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from mixerd.attribute import IPAddress, ValueType
from mixerd.cli import eval as eval_cmd


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mixerd")
    eval_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return int(args.func(args))


def test_value_and_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert run('source.labels["app"] | "unknown"', "-a", "source.labels={app: reviews}") == 0
    assert capsys.readouterr().out == '"reviews" (STRING)\n'
    assert run('response.duration | "10ms"') == 0
    assert capsys.readouterr().out == "10ms (DURATION)\n"


def test_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("request.size | 0", "--references") == 0
    assert capsys.readouterr().out == "0 (INT64)\nreferenced: -request.size\n"


def test_compile_error_points_at_the_problem(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("request.size == true") == 1
    err = capsys.readouterr().err
    assert err == (
        "error: EQ($request.size, true) arg 2 (true) typeError got BOOL, expected INT64\n"
        "  request.size == true\n"
        "                  ^\n"
    )


def test_evaluation_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("request.size + 1") == 1
    assert capsys.readouterr().err == "error: lookup failed: 'request.size'\n  request.size + 1\n  ^\n"


def test_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("when: TIMESTAMP\nwho: STRING\n")
    attributes = tmp_path / "attrs.yaml"
    attributes.write_text("when: 2019-11-13T10:00:00Z\nwho: bob\n")
    assert run("when", "--manifest", str(manifest), "--attributes", str(attributes)) == 0
    assert capsys.readouterr().out == "2019-11-13T10:00:00Z (TIMESTAMP)\n"
    assert run("who", "--manifest", str(manifest), "-a", "who=alice", "--attributes", str(attributes)) == 0
    assert capsys.readouterr().out == '"alice" (STRING)\n'
    assert run("who", "--manifest", str(tmp_path / "missing.yaml")) == 1
    assert capsys.readouterr().err.startswith("error: manifest: ")


def test_bad_attribute_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("request.size", "-a", "request.size=lots") == 1
    assert capsys.readouterr().err.startswith("error: attribute 'request.size'")


@pytest.mark.parametrize(
    ("value", "value_type", "text"),
    [
        ('a"b', ValueType.STRING, '"a\\"b"'),
        (True, ValueType.BOOL, "true"),
        (1.5, ValueType.DOUBLE, "1.5"),
        (IPAddress.parse("::1"), ValueType.IP_ADDRESS, "::1"),
        (dt.timedelta(seconds=90), ValueType.DURATION, "1m30s"),
        ({"b": "2", "a": "1"}, ValueType.STRING_MAP, '{"a": "1", "b": "2"}'),
    ],
)
def test_format_value(value: object, value_type: ValueType, text: str) -> None:
    assert eval_cmd.format_value(value, value_type) == text
