"""Conformance tests: data from Istio Mixer 1.4 (``shared/conformance``), run case by case.

Mark each generated case with ``pytest.mark.conformance("<suite>")``; the terminal summary then
prints one line per suite: ``<suite>: N passed, F failed, U unsupported`` (unsupported = skipped,
with the reason from the suite's ``unsupported.yaml``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

_SUITE_KEY = "conformance_suite"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance(suite): a case of a Mixer conformance data suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("conformance")
        if marker is not None and marker.args:
            item.user_properties.append((_SUITE_KEY, str(marker.args[0])))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    outcome_of: dict[str, tuple[str, str]] = {}  # nodeid -> (suite, outcome); failures win
    for category in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(category, []):
            suite = dict(getattr(report, "user_properties", ())).get(_SUITE_KEY)
            if suite is None:
                continue
            outcome = {"passed": "passed", "skipped": "unsupported"}.get(category, "failed")
            previous = outcome_of.get(report.nodeid)
            if previous is None or outcome == "failed":
                outcome_of[report.nodeid] = (suite, outcome)
    if not outcome_of:
        return
    counts: dict[str, Counter[str]] = {}
    for suite, outcome in outcome_of.values():
        counts.setdefault(suite, Counter())[outcome] += 1
    terminalreporter.section("conformance")
    for suite in sorted(counts):
        c = counts[suite]
        terminalreporter.write_line(
            f"{suite}: {c['passed']} passed, {c['failed']} failed, {c['unsupported']} unsupported"
        )
