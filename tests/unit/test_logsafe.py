"""logsafe (request-derived text in log lines) and the rate-limited warning it feeds."""

from __future__ import annotations

import logging

import pytest

from mixerd.adapter import ManualClock
from mixerd.attribute import logsafe
from mixerd.runtime.ratelog import RateLimitedWarning

CASES = [
    # (value, expected)
    ("plain text, quotes ' \" and \\ stay", "plain text, quotes ' \" and \\ stay"),
    ("line\nforged: WARNING x", "line\\nforged: WARNING x"),
    ("cr\r lf\n tab\t nul\x00", "cr\\r lf\\n tab\\t nul\\x00"),
    ("esc \x1b[31mred", "esc \\x1b[31mred"),
    ("del \x7f", "del \\x7f"),
    ("c1 \x85 \x9b", "c1 \\x85 \\x9b"),
    ("separators \u2028 \u2029", "separators \\u2028 \\u2029"),
    ("bidi \u202eevil", "bidi \\u202eevil"),
    ("lone surrogate \ud800", "lone surrogate \\ud800"),
    ("unicode é 漢字 stays", "unicode é 漢字 stays"),
    (12345, "12345"),
    (b"\x00", "b'\\x00'"),
]


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_logsafe_escapes_what_is_not_printable(value: object, expected: str) -> None:
    assert logsafe(value) == expected


def test_clean_text_is_returned_as_is() -> None:
    text = "request.headers[x-user]"
    assert logsafe(text) is text


def test_long_text_is_cut_with_a_marker_before_escaping() -> None:
    assert logsafe("x" * 300) == "x" * 256 + "...[44 more characters]"
    assert logsafe("ab\ncd", limit=3) == "ab\\n...[2 more characters]"
    # The result stays bounded whatever the input holds.
    assert len(logsafe("\n" * 1_000_000)) < 600


def test_a_logsafe_value_makes_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        logging.getLogger("mixerd.test").warning("quota %s", logsafe("q\nWARNING forged line"))
    assert caplog.text.count("\n") == 1


def test_rate_limited_warning_with_a_burst(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    w = RateLimitedWarning(clock, interval=10, burst=3)
    with caplog.at_level(logging.WARNING, logger="mixerd.runtime.ratelog"):
        logged = [w.add(1, f"event {i}") for i in range(10)]
        clock.advance(10)
        logged.append(w.add(1, "event 10"))
    assert logged == [True, True, True] + [False] * 7 + [True]
    assert [r.getMessage() for r in caplog.records] == [
        "event 0: 1",
        "event 1: 1 in the last 0s",
        "event 2: 1 in the last 0s",
        "event 10: 8 in the last 10s",  # the 7 only counted, and this one
    ]
    with pytest.raises(ValueError):
        RateLimitedWarning(clock, burst=0)


def test_rate_limited_warning_logs_on_the_logger_it_is_given(caplog: pytest.LogCaptureFixture) -> None:
    w = RateLimitedWarning(ManualClock(), logger=logging.getLogger("mixerd.elsewhere"))
    with caplog.at_level(logging.WARNING):
        w.add(2, "two")
        w.add(1, "counted")
        w.flush("flushed")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("mixerd.elsewhere", "two: 2"),
        ("mixerd.elsewhere", "flushed: 1 in the last 0s"),
    ]
