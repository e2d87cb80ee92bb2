"""The stdio adapter: params, line formats (with the stock ``accesslog`` instance), severities,
filtering, files and rotation, the bounded queue and flushing on close."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Env, ManualClock
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.stdio import (
    INFO,
    Level,
    RotatingFileSink,
    StdioHandler,
    json_value,
    parse_config,
    rotated_files,
    text_value,
)
from mixerd.attribute import IPAddress
from mixerd.templates import LogEntryInstance, MetricInstance
from tests.conformance_data import conformance_dir

CONFORMANCE = conformance_dir()
T0 = dt.datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)


def build(config: Mapping[str, Any], clock: ManualClock | None = None) -> StdioHandler:
    builder = INFO.builder(config, {})
    assert builder.validate() == []
    handler = builder.build(Env("stdio.istio-system", clock=clock or ManualClock()))
    assert isinstance(handler, StdioHandler)
    return handler


def entry(
    severity: str = "info", name: str = "log.instance.istio-system", **variables: Any
) -> LogEntryInstance:
    return LogEntryInstance(name, variables=variables, timestamp=T0, severity=severity)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def settle(handler: StdioHandler, lines_expected: int) -> None:
    for _ in range(2000):
        if handler.queued == 0 and handler.written + handler.dropped >= lines_expected:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{handler.written} lines written, {handler.queued} queued")


# -- params ---------------------------------------------------------------------------------------


def test_defaults_are_mixers() -> None:
    cfg, errors = parse_config({})
    assert errors == []
    assert cfg.log_stream.name == "STDOUT"
    assert cfg.output_as_json is True
    assert (cfg.output_level, cfg.metric_level) == (Level.INFO, Level.INFO)
    assert cfg.max_bytes_before_rotation == 100 * 1024 * 1024
    assert (cfg.max_days_before_rotation, cfg.max_rotated_files, cfg.max_queued_lines) == (30, 1000, 10000)
    assert cfg.severity_levels["WARN"] is Level.WARNING
    assert cfg.severity_levels["fatal"] is Level.ERROR
    assert cfg.severity_levels["informational"] is Level.INFO
    assert len(cfg.severity_levels) == 14


def test_snake_case_keys_and_severity_overrides() -> None:
    cfg, errors = parse_config({"output_as_json": False, "severity_levels": {"Info": "ERROR", "debug": 0}})
    assert errors == []
    assert cfg.output_as_json is False
    assert cfg.severity_levels["Info"] is Level.ERROR
    assert cfg.severity_levels["debug"] is Level.INFO
    assert cfg.severity_levels["WARN"] is Level.WARNING  # defaults stay


@pytest.mark.parametrize(
    ("config", "want"),
    [
        (
            {"logStream": "FILE"},
            "outputPath: need a valid output path when using a FILE or ROTATED_FILE log stream",
        ),
        ({"logStream": "ROTATED_FILE"}, "outputPath: need a valid output path"),
        (
            {"outputPath": "/tmp/x.log"},
            "outputPath: cannot specify an output path when using a STDOUT or STDERR",
        ),
        ({"logStream": "PIPE"}, "logStream: expected one of STDOUT, STDERR, FILE, ROTATED_FILE"),
        ({"outputLevel": "DEBUG"}, "outputLevel: expected one of INFO, WARNING, ERROR"),
        ({"severityLevels": {"Info": "LOUD"}}, "severityLevels.Info: expected one of INFO, WARNING, ERROR"),
        ({"severityLevels": ["Info"]}, "severityLevels: expected a map"),
        ({"maxMegabytesBeforeRotation": 0}, "maxMegabytesBeforeRotation: must be > 0"),
        ({"maxRotatedFiles": -1}, "maxRotatedFiles: must be >= 0"),
        ({"maxQueuedLines": 0}, "maxQueuedLines: must be >= 1"),
        ({"outputAsJSON": True}, "outputAsJSON: unknown field"),
    ],
)
def test_validation_errors(config: Mapping[str, Any], want: str) -> None:
    errors = [str(e) for e in INFO.builder(config, {}).validate()]
    assert any(e.startswith(want) for e in errors), errors


def test_harness_refuses_bad_config() -> None:
    with pytest.raises(HarnessConfigError, match="outputPath"):
        AdapterHarness(INFO, {"logStream": "FILE"})


# -- value formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "as_json", "as_text"),
    [
        ("GET", '"GET"', "GET"),
        ("", '""', '""'),
        ('say "hi"', '"say \\"hi\\""', '"say \\"hi\\""'),
        ("a=b", '"a=b"', '"a=b"'),
        ("héllo", '"héllo"', "héllo"),
        (200, "200", "200"),
        (True, "true", "true"),
        (1.5, "1.5", "1.5"),
        (3.0, "3", "3"),
        (1e20, "100000000000000000000", "100000000000000000000"),
        (math.nan, '"NaN"', "NaN"),
        (-math.inf, '"-Inf"', "-Inf"),
        (None, "null", "null"),
        (dt.timedelta(milliseconds=23), '"23ms"', "23ms"),
        (dt.timedelta(minutes=1, seconds=30), '"1m30s"', "1m30s"),
        (T0, '"2020-01-02T03:04:05.123456Z"', "2020-01-02T03:04:05.123456Z"),
        (IPAddress.parse("10.0.0.1"), '"10.0.0.1"', "10.0.0.1"),
        (IPAddress.parse("::1"), '"::1"', "::1"),
        ({"b": "2", "a": "1"}, '{"a":"1","b":"2"}', '{"a":"1","b":"2"}'),
        (b"\x00\x01", '"AAE="', '"AAE="'),
    ],
)
def test_value_formats(value: Any, as_json: str, as_text: str) -> None:
    assert json_value(value) == as_json
    assert text_value(value) == as_text


# -- the stock accesslog instance -----------------------------------------------------------------

OPTIONAL_STDIO = CONFORMANCE / "stock-telemetry-config" / "rendered" / "optional-stdio.yaml"
ACCESSLOG_PARAMS = next(
    d["spec"]["params"]
    for d in yaml.safe_load_all(OPTIONAL_STDIO.read_text())
    if d and d["kind"] == "instance" and d["metadata"]["name"] == "accesslog"
)
STOCK_HANDLER_PARAMS = next(
    d["spec"]["params"]
    for d in yaml.safe_load_all(OPTIONAL_STDIO.read_text())
    if d and d["kind"] == "handler"
)
BAG: dict[str, Any] = {
    "context.protocol": "http",
    "context.reporter.kind": "inbound",
    "connection.mtls": True,
    "source.ip": IPAddress(bytes([10, 0, 0, 1])),
    "source.labels": {"app": "productpage", "version": "v1"},
    "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
    "source.workload.name": "productpage-v1",
    "source.namespace": "default",
    "destination.ip": IPAddress.parse("10.0.0.2"),
    "destination.service.host": "reviews.default.svc.cluster.local",
    "destination.workload.name": "reviews-v1",
    "request.time": T0,
    "response.time": T0 + dt.timedelta(milliseconds=23),
    "response.duration": dt.timedelta(milliseconds=23),
    "response.code": 200,
    "response.size": 295,
    "request.method": "GET",
    "request.path": "/reviews/0",
    "request.useragent": "curl/7.64.0",
    "request.headers": {"x-request-id": "4d5c", ":authority": "reviews:9080"},
    "request.total_size": 512,
    "response.total_size": 1024,
}


async def test_accesslog_json_line(tmp_path: Path) -> None:
    assert STOCK_HANDLER_PARAMS == {"outputAsJson": True}
    out = tmp_path / "access.log"
    harness = AdapterHarness(
        INFO,
        {**STOCK_HANDLER_PARAMS, "logStream": "FILE", "outputPath": str(out)},
        instances={"accesslog": ("logentry", ACCESSLOG_PARAMS)},
    )
    await harness.report("accesslog", [BAG])
    await harness.close()
    (line,) = lines(out)
    pairs = json.loads(line, object_pairs_hook=list)
    keys = [k for k, _ in pairs]
    assert keys[:3] == ["level", "time", "instance"]
    assert keys[3:] == sorted(ACCESSLOG_PARAMS["variables"])
    got = dict(pairs)
    assert got["level"] == "info"  # severity "Info" is not in the map: INFO
    assert got["time"] == "2020-01-02T03:04:05.123456Z"
    assert got["instance"] == "accesslog.instance.istio-system"
    assert got["sourceIp"] == "10.0.0.1"
    assert got["destinationIp"] == "10.0.0.2"
    assert got["sourceApp"] == "productpage"
    assert got["latency"] == "23ms"
    assert got["responseCode"] == 200
    assert got["responseTimestamp"] == "2020-01-02T03:04:05.146456Z"
    assert got["requestId"] == "4d5c"
    assert got["httpAuthority"] == "reviews:9080"
    assert got["connection_security_policy"] == "mutual_tls"
    assert got["reporter"] == "destination"
    assert got["apiClaims"] == ""
    assert got["xForwardedFor"] == "0.0.0.0"
    assert got["receivedBytes"] == 512
    assert line.startswith('{"level":"info","time":"2020-01-02T03:04:05.123456Z",'
                           '"instance":"accesslog.instance.istio-system","apiClaims":"",')  # fmt: skip


async def test_accesslog_text_line(tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    harness = AdapterHarness(
        INFO,
        {"outputAsJson": False, "logStream": "FILE", "outputPath": str(out)},
        instances={"accesslog": ("logentry", ACCESSLOG_PARAMS)},
    )
    await harness.report("accesslog", [BAG])
    await harness.close()
    (line,) = lines(out)
    when, level, instance, rest = line.split("\t")
    assert (when, level, instance) == (
        "2020-01-02T03:04:05.123456Z",
        "info",
        "accesslog.instance.istio-system",
    )
    pairs = rest.split(" ")
    assert [p.split("=", 1)[0] for p in pairs] == sorted(ACCESSLOG_PARAMS["variables"])
    expected = [
        'apiClaims=""',
        "latency=23ms",
        "method=GET",
        "url=/reviews/0",
        "sourceIp=10.0.0.1",
        "responseCode=200",
        "userAgent=curl/7.64.0",
        "responseTimestamp=2020-01-02T03:04:05.146456Z",
    ]
    assert set(expected) <= set(pairs)


# -- severities, levels, metrics ------------------------------------------------------------------


async def test_severity_mapping_and_output_level(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    h = build(
        {
            "logStream": "FILE",
            "outputPath": str(out),
            "outputLevel": "WARNING",
            "severityLevels": {"Info": "ERROR"},
        }
    )
    h.handle_logentry(
        [
            entry("info", n=1),
            entry("WARN", n=2),
            entry("Info", n=3),
            entry("whatever", n=4),
            entry("fatal", n=5),
            entry("warning", n=6),
        ]
    )
    h.handle_metric([MetricInstance("m.instance.istio-system", 1, {})])  # metricLevel INFO < WARNING
    await h.close()
    got = [(d["level"], d["n"]) for d in map(json.loads, lines(out))]
    assert got == [("warn", 2), ("error", 3), ("error", 5), ("warn", 6)]


async def test_metric_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    clock = ManualClock(dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.UTC))
    h = build({"logStream": "FILE", "outputPath": str(out), "metricLevel": "WARNING"}, clock)
    h.handle_metric(
        [MetricInstance("requestcount.instance.istio-system", 1, {"svc": "reviews", "code": 200, "app": "x"})]
    )
    h.handle_metric([])
    await h.close()
    assert lines(out) == [
        '{"level":"warn","time":"2021-05-06T07:08:09.000000Z","instance":"requestcount.instance.istio-system",'
        '"value":1,"app":"x","code":200,"svc":"reviews"}'
    ]


async def test_entry_without_timestamp_uses_the_clock(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    h = build({"logStream": "FILE", "outputPath": str(out), "outputAsJson": False})
    h.handle_logentry([LogEntryInstance("log.instance.istio-system", severity="ERR")])
    await h.close()
    assert lines(out) == ["2020-01-01T00:00:00.000000Z\terror\tlog.instance.istio-system"]


async def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    h = build({"logStream": "STDOUT"})
    h.handle_logentry([entry(a="b")])
    await h.close()
    assert capsys.readouterr().out == (
        '{"level":"info","time":"2020-01-02T03:04:05.123456Z","instance":"log.instance.istio-system","a":"b"}\n'
    )


async def test_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    h = build({"logStream": "STDERR", "outputAsJson": False})
    h.handle_logentry([entry(a="b c")])
    await h.close()
    assert (
        capsys.readouterr().err == '2020-01-02T03:04:05.123456Z\tinfo\tlog.instance.istio-system\ta="b c"\n'
    )


# -- files and rotation ---------------------------------------------------------------------------


async def test_file_appends(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_text("earlier\n")
    h = build({"logStream": "FILE", "outputPath": str(out)})
    h.handle_logentry([entry(n=1)])
    await h.close()
    assert len(lines(out)) == 2
    assert lines(out)[0] == "earlier"


def test_missing_directory_fails_the_build(tmp_path: Path) -> None:
    builder = INFO.builder({"logStream": "FILE", "outputPath": str(tmp_path / "no" / "such.log")}, {})
    assert builder.validate() == []
    with pytest.raises(FileNotFoundError):
        builder.build(Env("stdio"))


def test_a_fifo_nobody_reads_fails_the_build_instead_of_blocking(tmp_path: Path) -> None:
    # Regression: opening the output waited for a reader, on the event loop (mixerd never became
    # ready, or a config change froze every request).
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for stream in ("FILE", "ROTATED_FILE"):
        builder = INFO.builder({"logStream": stream, "outputPath": str(fifo)}, {})
        assert builder.validate() == []
        outcome: list[object] = []

        def build(b: Any = builder, out: list[object] = outcome) -> None:
            try:
                out.append(b.build(Env("stdio")))
            except OSError as exc:
                out.append(exc)

        t = threading.Thread(target=build, daemon=True)
        t.start()
        t.join(5)
        if t.is_alive():  # the old behaviour: release the blocked open() before failing
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            pytest.fail(f"{stream}: building the handler blocked on a FIFO nobody reads")
        (error,) = outcome
        assert isinstance(error, OSError) and "a FIFO that nobody reads" in str(error), (stream, error)
        assert str(fifo) in str(error)


async def test_a_fifo_with_a_reader_is_an_output(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        h = build({"logStream": "FILE", "outputPath": str(fifo)})
        h.handle_logentry([entry(n=1)])
        await h.close()
        assert json.loads(os.read(reader, 65536))["n"] == 1
    finally:
        os.close(reader)


async def test_rotation_by_size_keeps_max_files(tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    clock = ManualClock()
    h = build(  # lines are ~120 bytes: a file holds two
        {
            "logStream": "ROTATED_FILE",
            "outputPath": str(out),
            "maxMegabytesBeforeRotation": 250 / (1024 * 1024),
            "maxRotatedFiles": 2,
        },
        clock,
    )
    for n in range(10):
        h.handle_logentry([entry(n=n, pad="x" * 20)])
        await settle(h, n + 1)
        clock.advance(1)
    await h.close()
    rotated = rotated_files(str(out))
    assert len(rotated) == 2
    current = [json.loads(x)["n"] for x in lines(out)]
    kept = [json.loads(x)["n"] for _, _, p in rotated for x in lines(Path(p))]
    assert kept + current == list(range(10 - len(kept) - len(current), 10))
    assert all(os.path.getsize(p) <= 250 for _, _, p in rotated)
    assert os.path.getsize(out) <= 250
    assert rotated[0][2].startswith(str(out) + ".2020")


def test_rotated_files_older_than_max_days_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "a.log"
    now = dt.datetime(2020, 3, 1, tzinfo=dt.UTC)
    for stamp in ("20200101T000000.000000Z", "20200228T120000.000000Z", "20200229T000000.000000Z-1"):
        (tmp_path / f"a.log.{stamp}").write_text("x\n")
    (tmp_path / "a.log.backup").write_text("not ours\n")
    sink = RotatingFileSink(str(out), max_bytes=10, max_days=2, max_files=0, now=lambda: now)
    removed = sink.prune(now)
    assert [os.path.basename(p) for p in removed] == ["a.log.20200101T000000.000000Z"]
    assert [os.path.basename(p) for _, _, p in rotated_files(str(out))] == [
        "a.log.20200228T120000.000000Z",
        "a.log.20200229T000000.000000Z-1",
    ]
    assert (tmp_path / "a.log.backup").exists()
    sink.write("0123456789\n")  # larger than max_bytes: written whole into the (empty) file
    sink.write("x\n")  # rotates first
    assert sink.rotations == 1
    sink.close()
    assert out.read_text() == "x\n"


# -- queue, flushing, blocking --------------------------------------------------------------------


async def test_queue_overflow_drops_oldest_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.log"
    h = build({"logStream": "FILE", "outputPath": str(out), "maxQueuedLines": 3})
    with caplog.at_level(logging.WARNING):
        h.handle_logentry([entry(n=n) for n in range(10)])  # no await: the writer cannot run
        assert h.dropped == 7
        assert h.queued == 3
        await h.close()
    assert [json.loads(x)["n"] for x in lines(out)] == [7, 8, 9]
    assert any("7 lines dropped" in r.getMessage() for r in caplog.records)


async def test_close_flushes_everything(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    h = build({"logStream": "FILE", "outputPath": str(out)})
    for n in range(50):
        h.handle_logentry([entry(n=n * 100 + i) for i in range(100)])
        if n % 10 == 0:
            await asyncio.sleep(0)
    await h.close()
    assert len(lines(out)) == 5000
    assert h.dropped == 0
    assert h.written == 5000
    h.handle_logentry([entry()])  # after close: dropped, not written
    assert h.dropped == 1


class BlockingSink:
    """An output whose writes block until released, and whose close waits for the write in
    progress (as a buffered file's lock makes it)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = threading.Event()
        self.closed = threading.Event()
        self.data: list[str] = []
        self._lock = threading.Lock()

    def write(self, data: str) -> None:
        with self._lock:
            self.writing.set()
            self.release.wait(30)
            self.data.append(data)

    def close(self) -> None:
        with self._lock:
            self.closed.set()


async def test_close_gives_up_on_a_blocked_output_in_bounded_time() -> None:
    # Regression: a blocked output (a FIFO nobody reads) kept the write, and then the sink's
    # close, in event-loop executor threads that the loop and the process wait for on exit:
    # mixerd never exited after SIGTERM.
    cfg, _ = parse_config({})
    sink = BlockingSink()
    reported: list[tuple[int, str]] = []
    h = StdioHandler(cfg, Env("stdio", on_drop=lambda n, reason: reported.append((n, reason))), sink)
    h.flush_timeout = 0.05
    h.handle_logentry([entry(n=1)])
    assert await asyncio.to_thread(sink.writing.wait, 5)  # the writer is now stuck in the sink
    h.handle_logentry([entry(n=2), entry(n=3)])
    started = time.monotonic()
    await h.close()
    assert time.monotonic() - started < 2.0  # the flush timeout (0.05 s), not the output, bounds it
    assert h.dropped == 3  # two queued, one held by the blocked output
    assert reported == [(3, "shutdown")]
    writers = [t for t in threading.enumerate() if t.name == "mixerd-stdio:stdio"]
    assert writers and all(t.daemon for t in writers)  # the process does not wait for it
    assert not sink.closed.is_set()
    sink.release.set()  # the output takes the data after all: the writer closes the sink, and ends
    assert await asyncio.to_thread(sink.closed.wait, 5)
    for t in writers:
        await asyncio.to_thread(t.join, 5)
        assert not t.is_alive()


def test_without_an_event_loop_lines_are_written_in_place(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    h = build({"logStream": "FILE", "outputPath": str(out)})
    h.handle_logentry([entry(n=1)])
    assert len(lines(out)) == 1
    asyncio.run(h.close())


async def test_drops_reach_the_env_with_their_reason(tmp_path: Path) -> None:
    reported: list[tuple[int, str]] = []
    builder = INFO.builder(
        {"logStream": "FILE", "outputPath": str(tmp_path / "o.log"), "maxQueuedLines": 3}, {}
    )
    assert builder.validate() == []
    env = Env(
        "stdio.istio-system", clock=ManualClock(), on_drop=lambda n, reason: reported.append((n, reason))
    )
    h = builder.build(env)
    assert isinstance(h, StdioHandler)
    h.handle_logentry([entry(n=n) for n in range(10)])  # no await: the writer cannot run
    await h.close()
    h.handle_logentry([entry()])
    assert reported == [(1, "queue_full")] * 7 + [(1, "shutdown")]
    assert env.drops == h.dropped == 8
