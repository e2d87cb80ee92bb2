"""The Mixer servicer over a real grpc.aio server: bad bytes, request limits, a responsive loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from mixerd._proto.mixer.v1 import attributes_pb2, check_pb2, mixer_pb2_grpc, report_pb2
from mixerd.adapter import load_adapters
from mixerd.api.mixer_v1.service import MixerService
from mixerd.api.mixer_v1.wire import RequestLimits
from mixerd.config import MemoryStore
from mixerd.runtime import Runtime

CA = attributes_pb2.CompressedAttributes
LIMITS = RequestLimits(words=1000, attributes=20, report_sets=50, map_entries=10, decoded_values=500)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(MemoryStore([]), adapters=load_adapters())
    await rt.start()
    yield rt
    await rt.close()


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[tuple[MixerService, str]]:
    service = MixerService(runtime.dispatcher, limits=LIMITS)
    server = grpc.aio.server()
    service.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}"
    await server.stop(None)
    await service.aclose()


async def _raw(target: str, method: str, data: bytes) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/istio.mixer.v1.Mixer/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(data, timeout=10)
    return err.value


@pytest.mark.parametrize("method", ["Check", "Report"])
async def test_garbage_bytes_answer_invalid_argument_with_one_log_line(
    served: tuple[MixerService, str], method: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, target = served
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        err = await _raw(target, method, b"\xff\xff\xff\xff garbage \x1b[31m")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith(f"malformed {method}Request")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    ours = [r for r in caplog.records if "rejected Mixer" in r.getMessage()]
    assert len(ours) == 1  # rate-limited: one line per kind every 10 s
    assert ours[0].levelno == logging.WARNING
    assert f"rejected Mixer {method} requests (INVALID_ARGUMENT; the last: malformed" in ours[0].getMessage()


async def test_valid_requests_still_answer(served: tuple[MixerService, str]) -> None:
    _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        response = await stub.Check(check_pb2.CheckRequest(attributes=CA(int64s={1: 1})), timeout=10)
        assert response.precondition.status.code == 0
        await stub.Report(report_pb2.ReportRequest(attributes=[CA(int64s={1: 1})]), timeout=10)


def _sets(n: int) -> report_pb2.ReportRequest:
    return report_pb2.ReportRequest(attributes=[CA(int64s={1: i}) for i in range(n)])


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        (
            "Report",
            _sets(51),
            grpc.StatusCode.INVALID_ARGUMENT,
            "attributes: 51 attribute sets exceed the limit of 50 (--max-report-sets / MIXERD_MAX_REPORT_SETS)",
        ),
        (
            "Report",
            report_pb2.ReportRequest(default_words=["w"] * 1001, attributes=[CA()]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "words: 1001 words exceed the limit of 1000 (--max-request-words / MIXERD_MAX_REQUEST_WORDS)",
        ),
        (
            "Report",
            report_pb2.ReportRequest(attributes=[CA(int64s={i: i for i in range(20)}) for _ in range(26)]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "attributes: 520 attributes and map entries exceed the limit of 500 "
            "(--max-decoded-values / MIXERD_MAX_DECODED_VALUES)",
        ),
        (
            "Check",
            check_pb2.CheckRequest(attributes=CA(int64s={i: i for i in range(21)})),
            grpc.StatusCode.INVALID_ARGUMENT,
            "attributes: 21 attributes exceed the limit of 20 (--max-attributes / MIXERD_MAX_ATTRIBUTES)",
        ),
        (
            "Check",
            check_pb2.CheckRequest(
                attributes=CA(string_maps={1: attributes_pb2.StringMap(entries={i: i for i in range(11)})})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "attributes.string_maps: 11 entries in one string map exceed the limit of 10 "
            "(--max-map-entries / MIXERD_MAX_MAP_ENTRIES)",
        ),
    ],
)
async def test_each_limit_answers_its_code_and_names_the_flag(
    served: tuple[MixerService, str], method: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    _, target = served
    err = await _raw(target, method, request_.SerializeToString())
    assert err.code() == code
    assert err.details() == message


async def test_logged_reasons_escape_control_characters(
    served: tuple[MixerService, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The reason quotes the caller's attribute name: escaped (mixerd.attribute.logsafe) and cut.
    _, target = served
    name = "evil\nWARNING forged \x1b[31m" + "x" * 300
    msg = CA(words=[name], strings={-1: -1}, int64s={-1: 1})
    with caplog.at_level(logging.WARNING):
        err = await _raw(target, "Check", check_pb2.CheckRequest(attributes=msg).SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    [line] = [r.getMessage() for r in caplog.records if "rejected Mixer" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line
    assert "evil\\nWARNING forged \\x1b[31m" in line and "more characters]" in line


async def test_a_big_delta_report_leaves_the_event_loop_responsive(runtime: Runtime) -> None:
    n = 10_000
    req = report_pb2.ReportRequest(default_words=[f"w{i}" for i in range(n)])
    for i in range(n):
        req.attributes.add().strings.update({~((i + j) % n): ~i for j in range(40)})
    data = req.SerializeToString()
    service = MixerService(runtime.dispatcher)  # default limits: 10,000 sets, 400,000 values fit
    # Counted, not timed: a coroutine that only yields gets one turn each time the decode gives the
    # loop back. 400,000 values in slices of about 5,000 units give it dozens of turns; a decode
    # that held the loop throughout would give it none. (Wall-clock gaps would make this test
    # depend on how busy the machine is.)
    turns = 0
    done = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not done.is_set():
            await asyncio.sleep(0)
            turns += 1

    await service.Report(data, context=None)  # once to warm up, then measured
    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    await service.Report(data, context=None)
    during = turns - before
    done.set()
    await other
    await service.aclose()
    assert during >= 40, during
