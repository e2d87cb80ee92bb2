"""``mixerd adapter new``: what it refuses and what it writes (the generated package is installed,
tested and served in tests/integration/test_adapter_scaffold.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixerd.cli.adapter_new import ScaffoldError, generate, parse_templates
from mixerd.cli.main import main
from mixerd.templates import TEMPLATES as ALL_TEMPLATES

TEMPLATES = [name for name, t in ALL_TEMPLATES.items() if not t.whole_set]
"""Every template an adapter can be scaffolded for (``attributes`` has no fields to scaffold)."""

FILES = [
    "config/sample.yaml",
    "pyproject.toml",
    "README.md",
    "src/demo/__init__.py",
    "src/demo/handler.py",
    "src/demo/py.typed",
    "tests/test_demo.py",
]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Demo", "invalid adapter name 'Demo'"),
        ("my-adapter", "invalid adapter name 'my-adapter'"),
        ("1demo", "invalid adapter name '1demo'"),
        ("class", "invalid adapter name 'class'"),
        ("statsd", "an adapter named 'statsd' is already installed"),
        ("json", "a Python module named 'json' is already importable"),
    ],
)
def test_refused_names(name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapter", "new", name, "--templates", "metric", "--output", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_templates() -> None:
    assert parse_templates("listentry, metric,metric") == ["metric", "listentry"]
    with pytest.raises(ScaffoldError, match=r"unknown template\(s\): mertic, foo \(known: metric, logentry,"):
        parse_templates("mertic,foo")
    with pytest.raises(ScaffoldError, match="needs at least one template"):
        parse_templates(" , ")
    with pytest.raises(ScaffoldError, match="attribute set itself"):
        parse_templates("metric,attributes")


def test_writes_the_package_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["adapter", "new", "demo", "-t", ",".join(TEMPLATES), "-o", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)
    pyproject = (out / "pyproject.toml").read_text()
    assert '[project.entry-points."mixerd.adapters"]\ndemo = "demo:INFO"' in pyproject
    docs = list(yaml.safe_load_all((out / "config" / "sample.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["handler"] + ["instance"] * len(TEMPLATES) + ["rule"]
    assert docs[0]["spec"]["compiledAdapter"] == "demo"
    assert [d["spec"]["compiledTemplate"] for d in docs[1:-1]] == list(TEMPLATES)
    assert docs[-1]["spec"]["actions"] == [{"handler": "demo", "instances": [f"demo-{t}" for t in TEMPLATES]}]
    for path in out.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # valid Python for every template
    capsys.readouterr()

    (out / "NOTES.txt").write_text("mine")
    (out / "README.md").write_text("edited")
    assert main(["adapter", "new", "demo", "-t", "metric", "-o", str(out)]) == 1
    assert "already exists; choose another --output, or pass --force" in capsys.readouterr().err
    assert (out / "README.md").read_text() == "edited"
    assert main(["adapter", "new", "demo", "-t", "metric", "-o", str(out), "--force"]) == 0
    assert (out / "README.md").read_text().startswith("# demo")
    assert (out / "NOTES.txt").read_text() == "mine"


def test_output_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(ScaffoldError, match="exists and is not a directory"):
        generate("demo", ["metric"], target, force=True)
