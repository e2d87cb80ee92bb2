"""``benchmarks/run.py`` gathers the summary rows every benchmark prints into one table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """A copy of the runner and its helpers next to two tiny benchmarks (one fails)."""
    d = tmp_path / "benchmarks"
    d.mkdir()
    for name in ("run.py", "_util.py"):
        (d / name).write_text((BENCHMARKS / name).read_text())
    (d / "bench_alpha.py").write_text(
        textwrap.dedent(
            """
            import sys
            from pathlib import Path
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from _util import summary_row
            print("alpha's own output")
            summary_row("path A", "1.23x", ">= 1.2x", True)
            summary_row("path B", "7 ms", "< 5 ms", False, note="loaded")
            summary_row("path C", "42", "-", None)
            """
        )
    )
    (d / "bench_beta.py").write_text("import sys\nprint('beta fails')\nsys.exit(3)\n")
    return d


def run(bench_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(bench_dir / "run.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_rows_of_every_script_become_one_table_and_json(bench_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    result = run(bench_dir, "--json", str(out))
    assert result.returncode == 1  # beta failed
    assert "alpha's own output" in result.stdout and "beta fails" in result.stdout
    summary = result.stdout.split("=== summary", 1)[1]
    lines = {line.split("  ")[0]: line for line in summary.splitlines() if line.startswith("path ")}
    assert "1.23x" in lines["path A"] and " met " in lines["path A"]
    assert "MISSED" in lines["path B"]
    assert lines["path C"].split()[2:5] == ["42", "-", "-"]  # no goal of its own: neither met nor missed
    assert "failed: beta" in result.stdout
    data = json.loads(out.read_text())
    assert [(r["script"], r["path"], r["met"]) for r in data["rows"]] == [
        ("alpha", "path A", True),
        ("alpha", "path B", False),
        ("alpha", "path C", None),
    ]
    assert data["rows"][1]["note"] == "loaded"
    assert all(isinstance(r["load"], float) for r in data["rows"])
    assert [(r["script"], r["exit"]) for r in data["runs"]] == [("alpha", 0), ("beta", 3)]


def test_a_subset_runs_and_an_unknown_name_is_refused(bench_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    result = run(bench_dir, "alpha", "--json", str(out))
    assert result.returncode == 0
    assert "beta" not in result.stdout
    assert len(json.loads(out.read_text())["rows"]) == 3
    refused = run(bench_dir, "gamma")
    assert refused.returncode == 2
    assert "no such benchmark: gamma (available: alpha, beta)" in refused.stderr
