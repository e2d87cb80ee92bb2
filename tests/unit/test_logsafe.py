"""logsafe (request-derived text in log lines) and the rate-limited warning it feeds."""

from __future__ import annotations

import logging

import pytest

from mixerd._proto.mixer.v1 import check_pb2
from mixerd.adapter import ManualClock, QuotaArgs, RateLimitedWarning, load_adapters
from mixerd.api.mixer_v1.service import MixerService
from mixerd.attribute import DictBag, logsafe
from mixerd.config import MemoryStore
from mixerd.runtime import Runtime, log_failure, new_request_id

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


# --- request-derived values at the places mixerd logs them ---------------------------------------

FORGED = "name\nWARNING mixerd: forged line \x1b[2J\u202e"


async def _runtime() -> Runtime:
    rt = Runtime(MemoryStore([]), adapters=load_adapters(), clock=ManualClock())
    await rt.start()
    return rt


def _one_line_each(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records]
    for m in messages:
        assert "\n" not in m and "\x1b" not in m and "\u202e" not in m, m
    return messages


async def test_an_unconfigured_quota_name_logs_one_escaped_line(caplog: pytest.LogCaptureFixture) -> None:
    rt = await _runtime()
    try:
        with caplog.at_level(logging.WARNING):
            await rt.dispatcher.quota(DictBag({}), FORGED, QuotaArgs(1))
        [line] = _one_line_each(caplog)
        assert (
            "Requested quota 'name\\nWARNING mixerd: forged line \\x1b[2J\\u202e' is not configured" in line
        )
        assert caplog.text.count("\n") == 1
    finally:
        await rt.close()


async def test_5000_unknown_quota_names_in_one_check_do_not_make_5000_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = await _runtime()
    service = MixerService(rt.dispatcher)
    try:
        request = check_pb2.CheckRequest()
        for i in range(5000):
            request.quotas[f"{FORGED} {i}"].amount = 1
        with caplog.at_level(logging.WARNING):
            response = await service.Check(request.SerializeToString(), context=None)
        assert len(response.quotas) == 5000
        assert all(q.granted_amount == 1 for q in response.quotas.values())  # granted, as Mixer does
        lines = _one_line_each(caplog)
        assert 1 <= len(lines) <= 10
        assert rt.metrics.value("mixerd_unconfigured_quota_requests_total") == 5000
        # The names counted but not logged are in the next line after the interval.
        assert isinstance(rt.clock, ManualClock)
        rt.clock.advance(10)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            await rt.dispatcher.quota(DictBag({}), "one more", QuotaArgs(1))
        [line] = _one_line_each(caplog)
        assert line.endswith("Unconfigured quota names: 4991 in the last 10s")
    finally:
        await service.aclose()
        await rt.close()


def test_a_failure_line_escapes_the_detail_and_the_callers_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        answer = log_failure(
            "ext_authz", "Check", f"handler h failed: {FORGED}", attributes={"request.id": "r1\nforged"}
        )
    [line] = _one_line_each(caplog)
    rid = answer.removeprefix("handler failure (request id ").removesuffix(")")
    assert len(rid) == 16 and int(rid, 16) >= 0
    assert line == (
        f"ext_authz Check failed (request id {rid}, x-request-id r1\\nforged): handler h failed: "
        "name\\nWARNING mixerd: forged line \\x1b[2J\\u202e"
    )
    assert FORGED not in answer


def test_request_ids_differ() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000
