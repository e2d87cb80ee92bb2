"""The list adapter against Mixer's own tables (shared/conformance/list_cases.json).

* ``handler_cases`` (list_test.go): each served list is served by a real local HTTP server
  (aiohttp on 127.0.0.1:0) and fetched through the handler's ``refresh``. The expected code is
  ``expected_code_per_list_go``, not ``table_code``: list_test.go never asserts the table's codes
  (it compares the code only when a call returns a Go error, and no row expects one), and its
  tables say ``NOT_FOUND`` for a miss, while list.go answers ``PERMISSION_DENIED`` (7), which is
  what list_integration_test.go asserts. ``expected_code_per_list_go`` is the table's in/out
  verdict mapped through list.go's rule (see the conformance README).
* ``validate_cases`` (list_test.go TestValidateConfig): which field is invalid.
* ``integration_scenarios`` (list_integration_test.go): full CHECK calls from attributes through
  the listentry instance to the result: code, message, ``ValidDuration``, ``ValidUseCount``. Mixer's
  dispatcher prefixes a non-OK message with ``<handler>:``; the adapter's own message is the rest.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from functools import cache
from typing import Any

import pytest
import yaml
from aiohttp import web

from mixerd.adapter import Code
from mixerd.adapter.testing import AdapterHarness
from mixerd.adapters.list import LISTCHECKER_INFO, ListHandler
from mixerd.adapters.list.config import parse_params
from mixerd.attribute import IPAddress, load_manifests
from tests.conformance_data import conformance_dir, params


@cache
def cases() -> dict[str, Any]:
    return json.loads((conformance_dir() / "list_cases.json").read_text())  # type: ignore[no-any-return]


@cache
def mixer_testdata_manifest() -> dict[str, Any]:
    """mixer/testdata/config/attributes.yaml: the manifest Mixer's integration tests load."""
    return dict(load_manifests((conformance_dir() / "istio-attributes.yaml").read_text()))


def decode(value: Any) -> Any:
    """An attribute value in the conformance encoding, as mixerd represents it."""
    if not isinstance(value, dict) or "@type" not in value:
        return value
    if value["@type"] == "ip":
        return IPAddress(base64.b64decode(value["bytes"]))
    if value["@type"] == "string_map":
        return dict(value["value"])
    raise AssertionError(f"no decoding for {value}")


def served_body(served: Mapping[str, Any]) -> bytes:
    if "body" in served:
        return str(served["body"]).encode()
    # ghodss/yaml.Marshal(listPayload{WhiteList: [...]})
    return yaml.safe_dump({"whitelist": served["whitelist"]}, default_flow_style=False).encode()


@pytest.fixture
async def list_server() -> AsyncIterator[str]:
    """Serves every handler case's list at /<case id>."""
    app = web.Application()
    bodies = {c["id"]: served_body(c["served_list"]) for c in cases()["handler_cases"] if c["served_list"]}

    async def serve(request: web.Request) -> web.Response:
        body = bodies.get(request.match_info["case"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="text/plain")

    app.router.add_get("/{case}", serve)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def settled(handler: ListHandler) -> None:
    """Wait for the fetch the handler starts by itself, so that the test's calls are the only ones."""
    async with asyncio.timeout(5):
        while handler.fetches == 0 or handler.refreshing:
            await asyncio.sleep(0.005)


# --- handler_cases ------------------------------------------------------------------------------------


def handler_case_ids() -> list[str]:
    return [c["id"] for c in cases()["handler_cases"]]


def test_the_tables_are_all_here() -> None:
    data = cases()
    assert len(data["handler_cases"]) == 6
    assert sum(len(c["cases"]) for c in data["handler_cases"]) == 29
    assert len(data["validate_cases"]) == 13
    assert len(data["integration_scenarios"]) == 4


@pytest.mark.parametrize("case_id", handler_case_ids())
async def test_handler_case(case_id: str, list_server: str) -> None:
    case = next(c for c in cases()["handler_cases"] if c["id"] == case_id)
    config = params(case["config"])
    if "providerUrl" in config:
        config["providerUrl"] = f"{list_server}/{case_id}"
    harness = AdapterHarness(
        LISTCHECKER_INFO,
        config,
        {"entry": ("listentry", {"value": "source.name"})},
        manifest=mixer_testdata_manifest(),
    )
    try:
        handler = harness.handler
        assert isinstance(handler, ListHandler)
        if case["served_list"] is not None:
            await settled(handler)
            assert await handler.refresh(), handler.last_error
        for row in case["cases"]:
            result = await harness.check("entry", {"source.name": row["value"]})
            want = Code[row["expected_code_per_list_go"]]
            assert result.status.code == want, (row, result)
            if want == Code.PERMISSION_DENIED:
                suffix = "is blacklisted" if config.get("blacklist") else "is not whitelisted"
                assert result.status.message == f"{row['value']} {suffix}"
            if row["in_list"] is not None:
                assert (result.status.code == Code.OK) == (row["in_list"] != bool(config.get("blacklist")))
    finally:
        await harness.close()


# --- validate_cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(13))
def test_validate_case(index: int) -> None:
    case = cases()["validate_cases"][index]
    errors = AdapterHarness.validate(LISTCHECKER_INFO, params(case["config"]))
    assert errors == parse_params(params(case["config"]))[1]
    field = case["expect_invalid_field"]
    if field is None:
        assert errors == [], case
    else:
        assert errors, case
        assert {e.path.split("[")[0] for e in errors} == {field}, (case, errors)


# --- integration_scenarios ----------------------------------------------------------------------------


def scenario_resources(scenario: Mapping[str, Any]) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(handler name, handler params, instance name, instance params) from the legacy-kind YAML."""
    handler = instance = None
    for text in scenario["configs"]:
        doc = yaml.safe_load(text)
        meta = doc["metadata"]
        if doc["kind"] == "listchecker":
            handler = (f"{meta['name']}.listchecker.{meta['namespace']}", doc["spec"])
        elif doc["kind"] == "listentry":
            instance = (meta["name"], doc["spec"])
    assert handler is not None and instance is not None
    return handler[0], handler[1], instance[0], instance[1]


@pytest.mark.parametrize("index", range(4))
async def test_integration_scenario(index: int) -> None:
    scenario = cases()["integration_scenarios"][index]
    handler_name, config, instance_name, instance_params = scenario_resources(scenario)
    harness = AdapterHarness(
        LISTCHECKER_INFO,
        config,
        {instance_name: ("listentry", instance_params)},
        manifest=mixer_testdata_manifest(),
    )
    try:
        for call, want in zip(scenario["calls"], scenario["want"]["Returns"], strict=True):
            assert call["kind"] == "CHECK"
            attrs = {k: decode(v) for k, v in call["attrs"].items()}
            result = await harness.check(instance_name, attrs)
            expected = want["Check"]
            status = expected["Status"]
            assert result.status.code == status.get("code", 0)
            if status.get("message"):
                prefix = f"{handler_name}:"
                assert status["message"].startswith(prefix)
                assert result.status.message == status["message"][len(prefix) :]
            else:
                assert result.status.message == ""
            assert result.valid_duration == dt.timedelta(microseconds=expected["ValidDuration"] // 1000)
            assert result.valid_use_count == expected["ValidUseCount"]
    finally:
        await harness.close()
