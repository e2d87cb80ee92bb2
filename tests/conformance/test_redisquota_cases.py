"""redisquota against Mixer's own tables (shared/conformance/redisquota_cases.json), on a real
``redis-server`` started for this module."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Code, ConfigError, Env, InstanceInfo, ManualClock, QuotaArgs, QuotaResult
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.redisquota import INFO, RedisQuotaHandler
from mixerd.templates import QuotaInstance as Instance
from tests.conformance_data import conformance_dir, params
from tests.support.redis_server import start_redis


@cache
def cases() -> dict[str, Any]:
    return json.loads((conformance_dir() / "redisquota_cases.json").read_text())  # type: ignore[no-any-return]


def build(config: Mapping[str, Any], clock: ManualClock) -> tuple[RedisQuotaHandler, Env]:
    builder = INFO.builder(config, {})
    assert builder.validate() == []
    env = Env("redisquota.conformance", clock=clock)
    handler = builder.build(env)
    assert isinstance(handler, RedisQuotaHandler)
    return handler, env


async def close(handler: RedisQuotaHandler, env: Env) -> None:
    await handler.close()
    await env.aclose()


# -- TestHandleQuota: 5 sequences, 64 steps, against one Redis -----------------------------------


def test_all_64_steps_are_there() -> None:
    assert sum(len(s["steps"]) for s in cases()["handle_quota_sequences"]) == 64


@pytest.mark.parametrize("sequence", cases()["handle_quota_sequences"], ids=lambda s: s["name"])
async def test_handle_quota_sequence(sequence: dict[str, Any], redis_server_module: Any) -> None:
    redis_server_module.flush()
    clock = ManualClock()
    # a timeout a busy machine does not hit: these sequences test counting, not outages
    config = {
        "quotas": params(sequence["quotas"]),
        "redisServerUrl": redis_server_module.address,
        "timeout": "2s",
    }
    handler, env = build(config, clock)
    instance = Instance(sequence["instance"]["name"], sequence["instance"]["dimensions"])
    offset = 0.0
    try:
        for step in sequence["steps"]:
            clock.advance(step["now_offset_seconds"] - offset)
            offset = step["now_offset_seconds"]
            got = await handler.handle_quota(
                instance, QuotaArgs(step["amount"], step["best_effort"], step["dedup_id"])
            )
            where = f"step {step['step']}"
            assert got.amount == step["expect_amount"], where
            assert got.valid_duration == dt.timedelta(seconds=step["expect_valid_duration_seconds"]), where
            if step["expect_amount"] > 0:
                assert got.status.code == Code.OK, where
            else:
                assert got.status.code == Code.RESOURCE_EXHAUSTED, where
                assert got.status.message == "redisquota: Resource exhausted", where
        assert handler.stats.failures == 0
    finally:
        await close(handler, env)


# -- TestBuilderValidate: exact messages, in order ------------------------------------------------


@pytest.mark.parametrize("case", cases()["validate_cases"], ids=lambda c: c["name"])
def test_validate(case: dict[str, Any]) -> None:
    config = params(case["config"])
    if config.get("redisServerUrl") == "<MOCK_REDIS_ADDRESS>":
        config["redisServerUrl"] = "127.0.0.1:6379"  # validation does not connect, any address will do
    instances = {name: InstanceInfo(name, "quota") for name in case["quota_types"]}
    errors: list[ConfigError] = INFO.builder(config, instances).validate()
    assert [str(e) for e in errors] == case["expect_errors"]


# -- integration scenarios: Mixer's configs and a Check call each ---------------------------------

# Mixer's runtime prefixes a handler's status message with the handler's name; mixerd's adapter
# returns the message itself.
_HANDLER_PREFIX = "handler.redisquota.istio-system:"


def scenario_harness(case: dict[str, Any], address: str, **params: Any) -> AdapterHarness:
    """The scenario's handler and quota instance, built as the runtime builds them (the instance's
    dimension expressions are compiled and evaluated by mixerd.lang)."""
    docs = [d for d in yaml.safe_load_all(case["configs"][0]) if d]
    handler = next(d for d in docs if d["kind"] == "redisquota")
    quota = next(d for d in docs if d["kind"] == "quota")
    params.setdefault("timeout", "2s")  # counting, not outages: a busy machine must not time out
    config = dict(handler["spec"], redisServerUrl=address, **params)
    assert config["quotas"][0]["rateLimitAlgorithm"] == case["rate_limit_algorithm"]
    # Mixer names the legacy `kind: quota` instance requestCount.quota.istio-system; the harness
    # names instances <name>.instance.<namespace>, so the quota entry follows.
    short = quota["metadata"]["name"]
    assert config["quotas"][0]["name"] == f"{short}.quota.istio-system"
    config["quotas"] = [dict(config["quotas"][0], name=f"{short}.instance.istio-system")]
    return AdapterHarness(
        INFO, config, {short: ("quota", {"dimensions": quota["spec"]["dimensions"]})}, clock=ManualClock()
    )


def scenario_cases(down: bool) -> list[dict[str, Any]]:
    return [c for c in cases()["integration_scenarios"] if ("set_error" in c) is down]


def test_all_9_scenarios_are_there() -> None:
    assert (len(scenario_cases(False)), len(scenario_cases(True))) == (8, 1)


async def run_scenario(case: dict[str, Any], harness: AdapterHarness) -> QuotaResult:
    [call] = case["calls"]
    [(short, args)] = call["quotas"].items()
    [want_returns] = case["want"]["Returns"]
    want = want_returns["Quota"][short]
    try:
        got = await harness.quota(short, call["attrs"], QuotaArgs(args["amount"], args["bestEffort"]))
    finally:
        await harness.close()
    assert got.amount == want["Amount"]
    assert got.valid_duration == dt.timedelta(microseconds=want["ValidDuration"] / 1000)
    status = want.get("Status") or {"code": 0, "message": ""}
    assert got.status.code == status["code"]
    if status["code"] == Code.RESOURCE_EXHAUSTED:
        assert got.status.message == status["message"].removeprefix(_HANDLER_PREFIX)
    return got


@pytest.mark.parametrize("case", scenario_cases(down=False), ids=lambda c: c["id"])
async def test_integration_scenario(case: dict[str, Any], redis_server_module: Any) -> None:
    redis_server_module.flush()
    await run_scenario(case, scenario_harness(case, redis_server_module.address))


@pytest.mark.parametrize("case", scenario_cases(down=True), ids=lambda c: c["id"])
async def test_integration_scenario_redis_down(case: dict[str, Any], tmp_path: Path) -> None:
    # "the redis server is closed after Mixer starts and before the call"
    server = start_redis(tmp_path / "redis")
    address = server.address
    server.stop()
    # Mixer's only behaviour was to fail closed: UNAVAILABLE, amount 0. mixerd words the message
    # differently (it names the server and the reason) instead of "redisquota: Service Unavailable".
    got = await run_scenario(case, scenario_harness(case, address, failurePolicy="FAIL_CLOSE"))
    assert got.status.message == "redisquota: quota backend unavailable (FAIL_CLOSE)" and address
    # mixerd's default fails open: the request is granted, with a short validity
    harness = scenario_harness(case, address)
    try:
        got = await harness.quota("requestCount", {}, QuotaArgs(30, best_effort=True))
    finally:
        await harness.close()
    assert (got.status.code, got.amount, got.valid_duration) == (Code.OK, 30, dt.timedelta(seconds=1))
