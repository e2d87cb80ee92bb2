"""Every Istio 1.4 Mixer test config and Bookinfo sample (tests/data/mixer_testdata_validate.yaml)
passes `mixerd validate` with the installed adapters, or is refused for the listed reason only."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.cli.main import main
from tests.conformance_data import conformance_dir

ROOT = conformance_dir() / "mixer-testdata-config"
DATA = Path(__file__).resolve().parents[1] / "data"
TABLE: dict[str, Any] = yaml.safe_load((DATA / "mixer_testdata_validate.yaml").read_text())
FILES = [
    e["path"] for e in json.loads((ROOT / "index.json").read_text())["copied"] if e["path"].endswith(".yaml")
]


def _units() -> list[str]:
    """What is validated as one config: a `together` directory, or one file."""
    units: list[str] = []
    for path in FILES:
        directory = next((d for d in TABLE["together"] if path.startswith(d + "/")), None)
        unit = directory or path
        if unit not in units:
            units.append(unit)
    return units


def validate(unit: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        extra = [str(DATA / "config" / f) for f in TABLE["with"].get(unit, ())]
        status = main(["validate", "--quiet", str(ROOT / unit), *extra])
    return status, [line for line in out.getvalue().splitlines() if line.startswith("error:")]


def test_every_file_of_the_index_is_covered() -> None:
    assert len(FILES) > 40
    assert set(TABLE["refused"]) <= set(FILES)
    assert set(TABLE["with"]) <= set(_units())


@pytest.mark.parametrize("unit", _units())
def test_mixer_testdata_validates(unit: str) -> None:
    status, errors = validate(unit)
    reason = TABLE["refused"].get(unit)
    if reason is None or status == 0:
        assert (status, errors) == (0, [])
    else:
        # The refused resources say why; the rules that used them are dropped in consequence.
        causes = [e for e in errors if not e.startswith("error: rule/")]
        assert causes and all(reason in e for e in causes), errors
