"""Faults under load, end to end: ``mixerd serve`` as a subprocess while its config is rewritten,
while it is stopped with SIGTERM in the middle of a report flood, while its Redis is killed and
frozen, and while an adapter's output is blocked.

Every wait is a poll with a deadline (``wait_for``); the only sleeps are pauses that pace the load
itself. Bounds are written for a busy 2-core machine (other test runs share it) and each says why
it is what it is; a hang or a lost answer fails them, scheduling noise should not.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixerd._proto.mixer.v1 import mixer_pb2_grpc
from mixerd.api.mixer_v1.client import build_check_request, build_report_request, decode_check_response
from tests.support.fifo import FifoReader
from tests.support.net import wait_for
from tests.support.postgres_server import PostgresProcess
from tests.support.redis_server import RedisProcess

from .mixerd_proc import MixerdProcess, start_mixerd
from .stock_telemetry import PODS, copy_stock_config, inbound_http

# -- shared helpers ----------------------------------------------------------------------------


@pytest.fixture
def mixerd_procs() -> Iterator[list[MixerdProcess]]:
    """Processes a test starts; any still running at the end is stopped (its exit code is the
    test's business, the fixture only makes sure nothing is left behind)."""
    procs: list[MixerdProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()


@dataclass
class Load:
    """Client threads calling ``call(stub, thread_index, sequence)`` in a loop until stopped; each
    thread has its own channel. ``call`` raises to count a failure (an ``AssertionError`` with a
    description, the ``grpc.RpcError`` itself, anything else); latencies are recorded."""

    address: str
    call: Callable[[mixer_pb2_grpc.MixerStub, int, int], None]
    threads: int = 3
    pause: float = 0.0
    """Seconds each thread waits between its calls (pacing, not synchronisation)."""
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, index: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            seq = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    self.call(stub, index, seq)
                    error = None
                except grpc.RpcError as exc:
                    error = f"{exc.code().name}: {exc.details()}"
                except AssertionError as exc:
                    error = str(exc)
                except Exception as exc:  # anything else is a failure too, not a dead thread
                    error = f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - started
                with self._lock:
                    self.calls += 1
                    self.latencies.append(took)
                    if error is not None:
                        self.failures.append(error)
                seq += 1
                if self.pause:
                    self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
            assert not t.is_alive(), f"{t.name} did not stop"

    @property
    def worst(self) -> float:
        with self._lock:
            return max(self.latencies, default=0.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def report_figures(name: str, **figures: Any) -> None:
    """Print measured figures (visible with ``pytest -s`` / ``-rP``)."""
    print(
        f"\n[{name}] "
        + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    )


# -- 1. config rewrites under load ---------------------------------------------------------------

# Two policies, each of three independent rules: a deny rule (its own denier handler, whose message
# names the policy and the user) and two header rules that tag every allowed request. An answer
# from a half-applied change (A's deny rule with B's handler, one tag from each policy, a deny rule
# from neither...) matches neither policy's table below.
POLICY = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: deny, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params: {{status: {{code: 7, message: "policy {p} denies {who}"}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec: {{compiledTemplate: checknothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: deny-user, namespace: istio-system}}
spec:
  match: request.headers["x-user"] == "{who}"
  actions: [{{handler: deny, instances: [nothing]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tag-one, namespace: istio-system}}
spec:
  requestHeaderOperations: [{{name: x-tag-one, values: ['"{p}"']}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tag-two, namespace: istio-system}}
spec:
  requestHeaderOperations: [{{name: x-tag-two, values: ['"{p}"']}}]
"""
POLICIES = {"A": POLICY.format(p="A", who="blocked"), "B": POLICY.format(p="B", who="evil")}

# Resources with errors, added to a policy: each is dropped with its error and the policy applies
# unchanged. Were either applied, every request would be denied (detectably: neither A nor B).
BROKEN = """
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-everyone, namespace: istio-system}
spec:
  match: reqest.size >= 0
  actions: [{handler: deny, instances: [nothing]}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny-all, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: "not a code"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-all, namespace: istio-system}
spec:
  actions: [{handler: deny-all, instances: [nothing]}]
"""
UNPARSEABLE = "kind: rule\nmetadata: [unclosed\n"  # the file keeps its last good content

USERS = ("alice", "blocked", "evil")


def _answers(p: str, denied: str) -> dict[str, tuple[str, str, tuple[tuple[str, str], ...]]]:
    """(status, message, request header operations) each user gets under policy ``p``."""
    tags = (("x-tag-one", p), ("x-tag-two", p))
    return {
        u: ("PERMISSION_DENIED", f"deny.handler.istio-system:policy {p} denies {u}", ())
        if u == denied
        else ("OK", "", tags)
        for u in USERS
    }


EXPECTED = {"A": _answers("A", "blocked"), "B": _answers("B", "evil")}


def _answer(stub: mixer_pb2_grpc.MixerStub, user: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    resp = stub.Check(build_check_request({"request.headers": {"x-user": user}}), timeout=5)
    decoded = decode_check_response(resp)
    ops = decoded.get("route_directive", {}).get("request_header_operations", [])
    return decoded["status"], decoded["message"], tuple(sorted((op["name"], op["value"]) for op in ops))


def _write_atomically(path: Path, text: str) -> None:
    """Write a sibling file the store ignores (not .yaml) and rename it over ``path``, as config
    managers (and Kubernetes' ConfigMap volumes) do: a reader sees the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_config_rewrites_under_check_load(tmp_path: Path, mixerd_procs: list[MixerdProcess]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    policy_file = config / "policy.yaml"
    policy_file.write_text(POLICIES["A"])
    # The store also rescans every 0.1 s (besides file events, which take about 0.5 s to arrive):
    # that lets 30 changes apply one by one within the test's time budget.
    mixerd = start_mixerd(tmp_path, [config], "--config-resync", "0.1")
    mixerd_procs.append(mixerd)

    seen: Counter[str] = Counter()

    def check(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
        user = USERS[(index + seq) % len(USERS)]
        got = _answer(stub, user)
        # every user's answer differs between A and B, so an answer names its policy
        policy = next((p for p, table in EXPECTED.items() if table[user] == got), None)
        assert policy is not None, f"{user}: {got} is the answer of neither policy"
        seen[policy] += 1

    with grpc.insecure_channel(mixerd.grpc_address) as channel:
        stub = mixer_pb2_grpc.MixerStub(channel)
        assert [_answer(stub, u) for u in USERS] == [EXPECTED["A"][u] for u in USERS]
    first_generation = json.loads(mixerd.http("/debug/config"))["generation"]

    def generation() -> int:
        return int(json.loads(mixerd.http("/debug/config"))["generation"])

    # 30 rewrites alternating B and A, every 5th with broken resources added, two that do not
    # parse at all (the file keeps its last good content; the problem changes). Each one differs
    # from the one before, so each is exactly one config change: the next rewrite waits until it
    # is applied, so that all 30 swaps happen under load (the pause after it is seeded pacing).
    rng = random.Random(20240601)
    rewrites = 30
    load = Load(mixerd.grpc_address, check, threads=3).start()
    try:
        for i in range(rewrites):
            text = POLICIES["BA"[i % 2]]  # A is in force at first
            if i % 5 == 3:
                text += BROKEN
            if i in (12, 24):
                text = UNPARSEABLE
            target = generation() + 1
            _write_atomically(policy_file, text)
            wait_for(lambda t=target: generation() >= t, timeout=10, what=f"rewrite {i} to be applied")
            time.sleep(rng.uniform(0.0, 0.05))  # pacing: some checks run on each config
        # the last rewrite (A, i = 29) is in force; a few more checks run on it
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            assert [_answer(stub, u) for u in USERS] == [EXPECTED["A"][u] for u in USERS]
        calls = load.calls
        wait_for(lambda: load.calls >= calls + 30, timeout=10, what="checks on the final config")
    finally:
        load.stop()

    status = json.loads(mixerd.http("/debug/config"))
    applied = status["generation"] - first_generation
    assert load.failures == [], load.failures[:10]
    assert status["snapshot"]["errors"] == [], status  # the final config is clean
    report_figures(
        "config rewrites",
        checks=load.calls,
        rewrites=rewrites,
        applied_changes=applied,
        answers_a=seen["A"],
        answers_b=seen["B"],
        worst_latency=load.worst,
        p99=percentile(load.latencies, 0.99),
    )
    # Meaningful: the load really ran across every config change.
    assert applied == rewrites, f"{applied} config changes applied for {rewrites} rewrites"
    assert min(seen["A"], seen["B"]) > 0, seen
    assert load.calls >= 300, f"only {load.calls} checks"
    # Nothing on the config or request path failed (errors are logged with their traceback).
    # Only those loggers: what a shared environment adds (an adapter entry point another checkout
    # installed and this one does not have, say) is not this test's business.
    failed = re.findall(r".* ERROR mixerd\.(?:runtime|config|api|lang)\..*", mixerd.log())
    assert failed == [], failed
    assert mixerd.stop() == 0, mixerd.log()[-3000:]


def test_in_place_rewrites_never_put_a_partial_file_in_force(
    tmp_path: Path, mixerd_procs: list[MixerdProcess]
) -> None:
    # A writer that rewrites the file in place (cp, a template renderer, an editor without
    # atomic saves): truncate, write the first documents, 80 ms later the rest. The store adopts
    # contents that read the same for the debounce, 0.5 s here (the default): far above the
    # writer's pause even when a busy machine stretches its 80 ms sleep. (Contents that stay half
    # written for longer than the debounce are indistinguishable from a finished file.) The resync
    # runs every 20 ms here so that it meets the half-written file on every rewrite.
    config = tmp_path / "config"
    config.mkdir()
    policy_file = config / "policy.yaml"
    policy_file.write_text(POLICIES["A"])
    mixerd = start_mixerd(tmp_path, [config], "--config-resync", "0.02", "--config-debounce", "0.5")
    mixerd_procs.append(mixerd)

    def check(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
        user = USERS[(index + seq) % len(USERS)]
        got = _answer(stub, user)
        assert any(table[user] == got for table in EXPECTED.values()), f"{user}: {got} is neither A nor B"

    load = Load(mixerd.grpc_address, check, threads=2).start()
    try:
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            for i in range(10):
                policy = "BA"[i % 2]
                text = POLICIES[policy]
                cut = text.index("---", text.index("deny-user"))  # the deny rule in, the tag rules not yet
                with open(policy_file, "w") as f:
                    f.write(text[:cut])
                    f.flush()
                    time.sleep(0.08)  # the writer is producing the rest (the fault's duration)
                    f.write(text[cut:])
                wait_for(
                    lambda p=policy: [_answer(stub, u) for u in USERS] == [EXPECTED[p][u] for u in USERS],
                    timeout=10,
                    what=f"policy {policy} in force",
                )
    finally:
        load.stop()
    assert load.failures == [], f"{len(load.failures)} of {load.calls} answers: {load.failures[:3]}"


# -- 2. SIGTERM during a report flood ----------------------------------------------------------

REPORT_SETS = 25
"""Attribute sets per Report (Envoy batches its reports too)."""
FLOOD_SETS = 100
"""Attribute sets per Report in the SIGTERM flood: every Report in flight at SIGTERM brings many."""
DRAIN_TIMEOUT = 5.0


def test_sigterm_during_report_flood_loses_no_acknowledged_report(
    tmp_path: Path, mixerd_procs: list[MixerdProcess]
) -> None:
    # The stock telemetry config, its stdio access log written to a FIFO: one JSON line per HTTP
    # report, carrying the report's x-request-id. The test does not read the FIFO until SIGTERM,
    # so nearly every acknowledged report is still in mixerd's memory then (the pipe holds some
    # 45 lines): the drain has thousands of lines to deliver, deterministically. The stdio queue
    # is large enough never to drop (drops are test 4's subject): this test is about SIGTERM.
    fifo = FifoReader(tmp_path / "access.fifo")
    try:
        config = copy_stock_config(
            tmp_path / "config",
            stdio_params={"logStream": "FILE", "outputPath": str(fifo.path), "maxQueuedLines": 1_000_000},
        )
        mixerd = start_mixerd(
            tmp_path,
            [config],
            "--drain-timeout",
            str(DRAIN_TIMEOUT),
            env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)},
        )
        mixerd_procs.append(mixerd)
        assert json.loads(mixerd.http("/debug/config"))["snapshot"]["errors"] == []

        acked: list[str] = []
        refused: list[str] = []
        terminated = threading.Event()
        base = inbound_http()

        def report(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
            ids = [f"r{index}-{seq}-{j}" for j in range(FLOOD_SETS)]
            sets = [{**base, "request.headers": {**base["request.headers"], "x-request-id": i}} for i in ids]
            try:
                stub.Report(build_report_request(sets), timeout=10)
            except grpc.RpcError as exc:
                if not terminated.is_set():
                    raise
                # after SIGTERM: refused (UNAVAILABLE) or cut off; either way not acknowledged
                refused.append(exc.code().name)
                time.sleep(0.01)  # pacing: do not spin on a closed port
                return
            acked.extend(ids)  # list.extend is atomic: threads share the list

        # SIGTERM once the flood is well under way; the clients keep sending through the shutdown
        # (4 threads: up to 4 Reports are in flight at SIGTERM, and must be answered and kept).
        load = Load(mixerd.grpc_address, report, threads=4).start()
        try:
            wait_for(lambda: len(acked) >= 5000, timeout=15, what="5000 acknowledged report sets")
            acked_at_sigterm = len(acked)
            terminated.set()
            sent_at = time.monotonic()
            mixerd.proc.send_signal(signal.SIGTERM)
            fifo.drain()  # the output flows again
            try:
                code = mixerd.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"mixerd still running 30 s after SIGTERM:\n{mixerd.log()[-3000:]}"
                ) from None
            exit_took = time.monotonic() - sent_at
        finally:
            load.stop()
        assert fifo.eof.wait(10), "the access log FIFO was not closed"
        data = fifo.data
    finally:
        fifo.close()

    log = mixerd.log()
    assert load.failures == [], load.failures[:10]
    assert code == 0, log[-3000:]
    written = [json.loads(line)["requestId"] for line in data.splitlines()]
    missing = set(acked) - set(written)
    in_pipe = data[: 1 << 16].count(b"\n")  # at most what the pipe held at SIGTERM
    report_figures(
        "sigterm flood",
        acked_sets=len(acked),
        acked_at_sigterm=acked_at_sigterm,
        unwritten_at_sigterm_at_least=acked_at_sigterm - in_pipe,
        written_lines=len(written),
        refused_after_sigterm=len(refused),
        exit_seconds=exit_took,
    )
    assert acked_at_sigterm - in_pipe > 1000  # the drain had work to do
    assert not missing, f"{len(missing)} acknowledged report sets are not in the access log"
    assert len(written) == len(set(written)), "a report set was written twice"
    # Written but not acknowledged: only sets whose answer was lost in the shutdown (calls cut off).
    assert len(set(written) - set(acked)) <= FLOOD_SETS * load.threads
    # Bound: the gRPC grace, the report queue's flush and the handlers' close each end within the
    # drain timeout here; the whole shutdown, thousands of lines included, takes about a second.
    assert exit_took < DRAIN_TIMEOUT, f"exit took {exit_took:.1f}s"
    assert "dropped" not in log and "not written" not in log, log[-3000:]


# -- 3. Redis killed and frozen under Quota calls ------------------------------------------------
# The handler-level behaviour (fail open / fail close, the outage tracker, abandoned replies after
# a stall) is tested against a real Redis in test_redisquota_redis.py with a manual clock; this
# test runs it end to end: Mixer API Checks asking for quota, through the dispatcher of a real
# ``mixerd serve``, with Redis killed (SIGKILL: connections reset) and frozen (SIGSTOP: connections
# open, nothing answers), on the real clock, and the recovery without anyone's help.

QUOTAS = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: {q}, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params: {{dimensions: {{user: 'request.headers["x-user"] | "anonymous"'}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: {q}-redis, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{address}"
    failurePolicy: {policy}
    quotas: [{{name: {q}.instance.istio-system, maxAmount: 1000000000, validDuration: 60s}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {q}, namespace: istio-system}}
spec:
  actions: [{{handler: {q}-redis, instances: [{q}]}}]
"""
REDIS_TIMEOUT = 0.1  # redisquota's default timeout (not set in the config above)
QUOTA_BOUND = REDIS_TIMEOUT + 0.5
"""A Quota answer comes within the Redis timeout plus 0.5 s for everything else (gRPC both ways,
a busy 2-core machine). A call waiting on a frozen Redis without a bound would wait for ever, or
until the check deadline (1 s) answered DEADLINE_EXCEEDED: both fail this bound."""
FAIL_CLOSE_MESSAGE = "redisquota: quota backend unavailable (FAIL_CLOSE)"
FAIL_OPEN_VALIDITY = "1s"  # grants made without Redis are valid 1 s; Redis grants for the window


@dataclass(frozen=True)
class QuotaCall:
    quota: str
    started: float
    ended: float
    answer: str
    """'redis' (granted by Redis), 'fail_open' (granted without Redis), 'fail_close' (denied)."""


def _ask(stub: mixer_pb2_grpc.MixerStub, quota: str, user: str) -> str:
    req = build_check_request({"request.headers": {"x-user": user}}, quotas={quota: 1})
    decoded = decode_check_response(stub.Check(req, timeout=5))
    assert decoded["status"] == "OK", decoded
    q = decoded["quotas"][quota]
    if q["status"] == "UNAVAILABLE" and quota == "closeq":
        # generic: no address, no Redis error; prefixed with the handler's name, as Mixer did
        assert q["message"] == f"closeq-redis.handler.istio-system:{FAIL_CLOSE_MESSAGE}", q
        assert q["granted_amount"] == 0, q
        return "fail_close"
    assert (q["status"], q["granted_amount"]) == ("OK", 1), q
    return "fail_open" if q["valid_duration"] == FAIL_OPEN_VALIDITY else "redis"


def test_redis_killed_and_frozen_during_quota_calls(
    tmp_path: Path, redis_server: RedisProcess, mixerd_procs: list[MixerdProcess]
) -> None:
    config = tmp_path / "quota.yaml"
    config.write_text(
        "---\n".join(
            QUOTAS.format(q=q, address=redis_server.address, policy=policy)
            for q, policy in (("openq", "FAIL_OPEN"), ("closeq", "FAIL_CLOSE"))
        )
    )
    mixerd = start_mixerd(tmp_path, [config])
    mixerd_procs.append(mixerd)
    assert json.loads(mixerd.http("/debug/config"))["snapshot"]["errors"] == []

    calls: list[QuotaCall] = []

    def call(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
        quota = ("openq", "closeq")[(index + seq) % 2]
        started = time.monotonic()
        answer = _ask(stub, quota, f"user{index}")
        calls.append(QuotaCall(quota, started, time.monotonic(), answer))

    def answered_by_redis_since(t: float) -> bool:
        """Both quotas were granted by Redis in calls started after ``t``."""
        return {c.quota for c in calls if c.started > t and c.answer == "redis"} == {"openq", "closeq"}

    def outage(start: Callable[[], None]) -> tuple[float, float]:
        """Start an outage under load and let it last long enough for calls to meet each state of
        the handler (the first failures, calls skipping Redis, retries every 0.5 s)."""
        start()
        began = time.monotonic()
        wait_for(
            lambda: time.monotonic() - began > 1.5 and sum(c.started > began for c in calls) >= 40,
            timeout=10,
            what="quota calls during the outage",
        )
        return began, time.monotonic()

    def recovery() -> float:
        """Seconds until Redis answers both handlers again, by itself."""
        began = time.monotonic()
        wait_for(lambda: answered_by_redis_since(began), timeout=10, what="quota answered by Redis again")
        return time.monotonic() - began

    load = Load(mixerd.grpc_address, call, threads=3, pause=0.01)
    load.start()
    try:
        wait_for(lambda: answered_by_redis_since(0), timeout=10, what="quota answered by Redis")
        frozen = outage(redis_server.freeze)
        redis_server.thaw()
        thawed_recovery = recovery()
        killed = outage(redis_server.kill)
        redis_server.start()  # the same port, empty (no keys, no scripts)
        restarted_recovery = recovery()
        # counting resumed in the new Redis, for both handlers
        keys = redis_server.command("KEYS", "*")
        assert b"openq" in keys and b"closeq" in keys, keys
    finally:
        load.stop()

    assert load.failures == [], load.failures[:10]

    def during(window: tuple[float, float]) -> list[QuotaCall]:
        return [c for c in calls if window[0] < c.started and c.ended < window[1]]

    for name, window in (("frozen", frozen), ("killed", killed)):
        answers = Counter((c.quota, c.answer) for c in during(window))
        # without Redis: FAIL_OPEN grants (for 1 s), FAIL_CLOSE denies, nothing else
        assert set(answers) == {("openq", "fail_open"), ("closeq", "fail_close")}, (name, answers)
    worst = max(c.ended - c.started for c in calls)
    worst_frozen = max(c.ended - c.started for c in during(frozen))
    report_figures(
        "redis faults",
        quota_calls=len(calls),
        during_freeze=len(during(frozen)),
        during_kill=len(during(killed)),
        worst_latency=worst,
        worst_latency_frozen=worst_frozen,
        worst_latency_killed=max(c.ended - c.started for c in during(killed)),
        p99=percentile([c.ended - c.started for c in calls], 0.99),
        recovery_after_thaw=thawed_recovery,
        recovery_after_restart=restarted_recovery,
    )
    assert worst < QUOTA_BOUND, f"a quota call took {worst:.3f}s"
    # Recovery needs no help: the handler retries Redis every 0.5 s while it is down (and at once
    # after a restart: a reset connection fails fast); 5 s leaves room for a busy machine.
    assert max(thawed_recovery, restarted_recovery) < 5.0
    assert mixerd.stop() == 0, mixerd.log()[-3000:]


# -- 4. a slow adapter: the stdio output blocked -------------------------------------------------

SLOW_QUEUE_LINES = 200
LATENCY_BOUND = 1.0
"""Check and Report answers while the stdio output is blocked. Writes happen off the request path,
so the blocked output must not show in them at all; 1 s allows for a flood of reports sharing
two busy cores with other tests (typical answers take a few ms). A request waiting on the output
would wait as long as the output stays blocked: the test keeps it blocked for seconds."""


def test_blocked_adapter_output_costs_no_latency_and_drops_are_counted(
    tmp_path: Path, mixerd_procs: list[MixerdProcess]
) -> None:
    # The access log goes to a FIFO the test does not read yet: once the pipe buffer (64 KiB,
    # about 60 access-log lines) is full, the stdio writer blocks in write(), its queue of 200
    # lines fills, and further lines push the oldest out (reason queue_full).
    fifo = FifoReader(tmp_path / "access.fifo")
    try:
        config = copy_stock_config(
            tmp_path / "config",
            stdio_params={
                "logStream": "FILE",
                "outputPath": str(fifo.path),
                "maxQueuedLines": SLOW_QUEUE_LINES,
            },
        )
        (config / "policy.yaml").write_text(POLICIES["A"])  # Checks have work to do too
        mixerd = start_mixerd(tmp_path, [config], env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)})
        mixerd_procs.append(mixerd)
        assert json.loads(mixerd.http("/debug/config"))["snapshot"]["errors"] == []

        acked: list[int] = []  # sets per acknowledged Report (list.append is atomic)
        base = inbound_http()

        def report(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
            sets = [
                {
                    **base,
                    "request.headers": {**base["request.headers"], "x-request-id": f"r{index}-{seq}-{j}"},
                }
                for j in range(REPORT_SETS)
            ]
            stub.Report(build_report_request(sets), timeout=10)
            acked.append(REPORT_SETS)  # counted once the call returned OK

        def check(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
            user = USERS[seq % len(USERS)]
            got = _answer(stub, user)
            assert got == EXPECTED["A"][user], (user, got)

        reports = Load(mixerd.grpc_address, report, threads=2).start()
        checks = Load(mixerd.grpc_address, check, threads=1, pause=0.005).start()
        try:
            handler = {"handler": "stdio.handler.istio-system", "reason": "queue_full"}
            wait_for(
                lambda: sum(acked) >= 4000 and mixerd.metric("mixerd_adapter_dropped_total", **handler) > 0,
                timeout=20,
                what="4000 report sets sent and lines dropped",
            )
        finally:
            reports.stop()
            checks.stop()
        sent = sum(acked)
        assert reports.failures == [] and checks.failures == [], (reports.failures[:5], checks.failures[:5])

        # Now read: the writer empties its queue into the FIFO, and every line sent is either read
        # here or counted as dropped; none is counted twice.
        fifo.drain()

        def accounted() -> bool:
            return fifo.lines + mixerd.metric("mixerd_adapter_dropped_total", **handler) == sent

        wait_for(accounted, timeout=10, what="delivered + dropped lines to add up to the lines sent")
        dropped = int(mixerd.metric("mixerd_adapter_dropped_total", **handler))
        delivered = fifo.lines
        assert mixerd.metric("mixerd_report_dropped_total", api="mixer") == 0  # all reached the adapter
        assert dropped > 0 and delivered > 0
        assert mixerd.stop() == 0, mixerd.log()[-3000:]
        wait_for(fifo.eof.is_set, timeout=5, what="mixerd to close the FIFO")
        assert fifo.lines == delivered, "lines were written after delivered + dropped reached what was sent"
        assert "not written before close" not in mixerd.log()
        lines = fifo.data.splitlines()
        assert all(json.loads(line)["instance"] == "accesslog.instance.istio-system" for line in lines)
    finally:
        fifo.close()

    report_figures(
        "blocked output",
        sets_sent=sent,
        lines_delivered=delivered,
        lines_dropped_queue_full=dropped,
        reports=reports.calls,
        report_worst=reports.worst,
        report_p99=percentile(reports.latencies, 0.99),
        checks=checks.calls,
        check_worst=checks.worst,
        check_p99=percentile(checks.latencies, 0.99),
    )
    assert reports.worst < LATENCY_BOUND and checks.worst < LATENCY_BOUND


def test_sigterm_while_adapter_output_is_blocked_exits_in_bounded_time(
    tmp_path: Path, mixerd_procs: list[MixerdProcess]
) -> None:
    # Regression: the stdio writer blocked in write() on an output nobody reads held an executor
    # thread that the event loop and the interpreter wait for on exit: after SIGTERM mixerd never
    # exited (until the output was read). The handler now gives up after its flush timeout (5 s).
    fifo = FifoReader(tmp_path / "access.fifo")
    try:
        config = copy_stock_config(
            tmp_path / "config",
            stdio_params={
                "logStream": "FILE",
                "outputPath": str(fifo.path),
                "maxQueuedLines": SLOW_QUEUE_LINES,
            },
        )
        mixerd = start_mixerd(tmp_path, [config], env={"MIXERD_KUBERNETESENV_PODS_FILE": str(PODS)})
        mixerd_procs.append(mixerd)
        handler = {"handler": "stdio.handler.istio-system"}
        base = inbound_http()
        sent = 0
        with grpc.insecure_channel(mixerd.grpc_address) as channel:
            stub = mixer_pb2_grpc.MixerStub(channel)
            while mixerd.metric("mixerd_adapter_dropped_total", reason="queue_full", **handler) == 0:
                assert sent < 10_000, "no line dropped: is the output not blocked?"
                stub.Report(build_report_request([base] * REPORT_SETS), timeout=10)
                sent += REPORT_SETS
        wait_for(
            lambda: (
                mixerd.metric("mixerd_report_batches_total", api="mixer") > 0
                and mixerd.metric("mixerd_report_queued", api="mixer") == 0
            ),
            timeout=10,
            what="the reports dispatched",
        )
        queue_full = int(mixerd.metric("mixerd_adapter_dropped_total", reason="queue_full", **handler))
        sent_at = time.monotonic()
        mixerd.proc.send_signal(signal.SIGTERM)
        try:
            code = mixerd.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("mixerd still running 30 s after SIGTERM (its output is blocked)") from None
        exit_took = time.monotonic() - sent_at
        log = mixerd.log()
        assert code == 0, log[-3000:]

        # What the pipe holds is readable after the exit; with the lines dropped it covers all sent.
        fifo.drain()
        assert fifo.eof.wait(10)
        delivered = fifo.lines
    finally:
        fifo.close()
    m = re.search(r"stdio: (\d+) lines not written before close \((\d+) of them in a write", log)
    assert m is not None, log[-3000:]
    at_shutdown, held = int(m[1]), int(m[2])
    report_figures(
        "blocked output at SIGTERM",
        sets_sent=sent,
        lines_delivered=delivered,
        dropped_queue_full=queue_full,
        dropped_shutdown=at_shutdown,
        exit_seconds=exit_took,
    )
    # Every line is delivered or counted as dropped; the lines of the write the output was blocked
    # in are counted as dropped, though the pipe may have taken part of them (at most `held`).
    assert sent <= delivered + queue_full + at_shutdown <= sent + held
    # Bound: the stdio handler gives up on the blocked output after its flush timeout (5 s); the
    # rest of the shutdown takes well under a second here. 10 s is the default drain timeout.
    assert exit_took < 10.0, f"exit took {exit_took:.1f}s"


# -- 6. the console's PostgreSQL stopped ---------------------------------------------------------


def test_postgresql_stopped_never_fails_a_check_or_report_and_the_console_recovers(
    tmp_path: Path, mixerd_procs: list[MixerdProcess], postgres_server: PostgresProcess
) -> None:
    # mixerd on its embedded default config (which records every report as a console hop and
    # every decision), its console in a real PostgreSQL. Checks and Reports keep flowing while
    # PostgreSQL is stopped for about two seconds: none may fail or slow down beyond the bound
    # (the writer queues off the request path), the API answers 503 while the database is away,
    # and once it is back the queued records arrive with no manual step.
    url = postgres_server.url("postgres", postgres_server.create_schema("faults"))
    mixerd = start_mixerd(tmp_path, None, "--console-store", url)
    mixerd_procs.append(mixerd)
    txn = "txn-pg-fault"

    def call(stub: mixer_pb2_grpc.MixerStub, index: int, seq: int) -> None:
        headers = {"x-user": "blocked" if seq % 5 == 0 else "alice", "x-transaction-id": f"{txn}-{index}"}
        if seq % 2:
            stub.Check(build_check_request({"request.headers": headers}), timeout=5)
        else:
            report = {
                "request.headers": headers,
                "context.reporter.kind": "inbound",
                "destination.workload.name": "cart",
                "destination.namespace": "shop",
            }
            stub.Report(build_report_request([report]), timeout=5)

    def transactions() -> list[Any]:
        return json.loads(mixerd.http("/api/v1/transactions?limit=1000"))["transactions"]  # type: ignore[no-any-return]

    def api_status() -> int:
        try:
            mixerd.http("/api/v1/decisions?limit=1")
        except urllib.error.HTTPError as exc:
            return exc.code
        return 200

    load = Load(mixerd.grpc_address, call, threads=2, pause=0.005).start()
    try:
        wait_for(lambda: len(transactions()) == 2, timeout=10, what="both threads' transactions stored")
        postgres_server.stop()
        wait_for(lambda: api_status() == 503, timeout=10, what="the API answering 503")
        assert "console store unavailable" in _error_body("/api/v1/transactions", mixerd)
        calls_before = load.calls
        wait_for(lambda: load.calls > calls_before + 100, timeout=20, what="calls while the database is down")
        wait_for(
            lambda: mixerd.metric("mixerd_console_store_available") == 0.0,
            timeout=10,
            what="the writer noticing",
        )
        queued_while_down = mixerd.metric("mixerd_console_queued")
        postgres_server.start()
        wait_for(lambda: api_status() == 200, timeout=20, what="the API answering again")
        wait_for(
            lambda: mixerd.metric("mixerd_console_queued") < max(queued_while_down, 1),
            timeout=20,
            what="the queued records written",
        )
    finally:
        load.stop()
        if not postgres_server.running:
            postgres_server.start()
    # Bound: the request path never waits for the database; a loaded 2-core machine still answers
    # a Check or a one-set Report well within a second.
    assert load.failures == [], load.failures[:3]
    assert load.worst < 1.0, f"worst call took {load.worst:.3f}s"
    assert queued_while_down > 0
    assert mixerd.metric("mixerd_console_dropped_total") == 0
    decisions = json.loads(mixerd.http("/api/v1/decisions?verdict=deny&limit=1000"))["decisions"]
    assert decisions and all(d["rule"] == "deny-blocked-users.rule.istio-system" for d in decisions)
    assert mixerd.stop() == 0, mixerd.log()[-3000:]


def _error_body(path: str, mixerd: MixerdProcess) -> str:
    try:
        mixerd.http(path)
    except urllib.error.HTTPError as exc:
        return exc.read().decode()
    raise AssertionError(f"{path} answered 200")
