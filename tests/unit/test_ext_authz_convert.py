"""Data-driven tests of mixerd.api.ext_authz (request, quotas, verdict) (cases in tests/data/ext_authz_cases.yaml)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from mixerd.adapter import CheckResult, QuotaArgs, QuotaResult, Status
from mixerd.api.ext_authz import quotas as quota_mod
from mixerd.api.ext_authz import request as request_mod
from mixerd.api.ext_authz import verdict as verdict_mod
from mixerd.attribute import IPAddress
from mixerd.config import HeaderAction, QuotaSpecBindingSpec, QuotaSpecSpec, parse_text
from mixerd.runtime import CheckOutcome, HeaderOperation, QuotaOutcome, QuotaPlan, RouteDirective

CASES_FILE = Path(__file__).resolve().parent.parent / "data" / "ext_authz_cases.yaml"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!ip", lambda loader, node: IPAddress.parse(loader.construct_scalar(node)))
_Loader.add_constructor(
    "!ts",
    lambda loader, node: dt.datetime.fromisoformat(loader.construct_scalar(node).replace("Z", "+00:00")),
)

CASES: dict[str, Any] = yaml.load(CASES_FILE.read_text("utf-8"), Loader=_Loader)  # a SafeLoader subclass


def _ids(section: str) -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in CASES[section]]


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """Turn map values into plain dicts so they compare with the YAML."""
    return {k: dict(v) if hasattr(v, "items") else v for k, v in attrs.items()}


@pytest.mark.parametrize("case", _ids("check_requests"))
def test_check_request_attributes(case: dict[str, Any]) -> None:
    request = json_format.ParseDict(case["request"], external_auth_pb2.CheckRequest())
    if "error" in case:
        with pytest.raises(request_mod.BadRequest) as info:
            attrs = request_mod.check_request_attributes(request)
            quota_mod.quota_args(attrs)
        assert case["error"] in str(info.value)
        return
    attrs = request_mod.check_request_attributes(request)
    assert _plain(attrs) == case["attributes"]


@pytest.mark.parametrize("case", _ids("http_requests"))
def test_http_request_attributes(case: dict[str, Any]) -> None:
    def run() -> dict[str, Any]:
        return request_mod.http_request_attributes(
            case["method"],
            case["target"],
            [(k, v) for k, v in case["headers"]],
            now=case["now"],
            prefix=case.get("prefix", ""),
            extension_headers=case.get("extension_headers", False),
        )

    if "error" in case:
        with pytest.raises(request_mod.BadRequest) as info:
            run()
        assert case["error"] in str(info.value)
        return
    assert _plain(run()) == case["attributes"]


def _plan(config: str | None) -> QuotaPlan:
    if not config:
        return QuotaPlan()
    parsed = parse_text(config)
    assert not parsed.errors
    assert all(not r.issues for r in parsed.resources), [r.issues for r in parsed.resources]
    specs = {
        (r.key.namespace, r.key.name): r.spec for r in parsed.resources if isinstance(r.spec, QuotaSpecSpec)
    }
    bindings = [r.spec for r in parsed.resources if isinstance(r.spec, QuotaSpecBindingSpec)]
    return QuotaPlan.build(specs, bindings)


def _quota_cases() -> list[Any]:
    out = []
    for c in CASES["quotas"]:
        subs = c.get("cases") or [{"attributes": c["attributes"], "quotas": c["quotas"]}]
        for i, sub in enumerate(subs):
            out.append(pytest.param(c.get("config"), sub, id=f"{c['name']} [{i}]"))
    return out


@pytest.mark.parametrize(("config", "case"), _quota_cases())
def test_quota_selection(config: str | None, case: dict[str, Any]) -> None:
    got = quota_mod.quota_args(case["attributes"], _plan(config))
    expected = case["quotas"]
    if expected is None:
        assert got is None
    else:
        assert got == {name: QuotaArgs(amount=n) for name, n in expected.items()}


def _op(name: str, value: str = "", action: str = "REPLACE") -> HeaderOperation:
    return HeaderOperation(name, value, HeaderAction[action])


def _outcome(spec: dict[str, Any]) -> CheckOutcome:
    st = spec.get("status") or {}
    directive = None
    if "directive" in spec:
        d = spec["directive"]
        directive = RouteDirective(
            tuple(_op(*op) for op in d.get("request", ())),
            tuple(_op(*op) for op in d.get("response", ())),
            d.get("code", 0),
            d.get("body", ""),
        )
    quotas = {}
    for name, q in (spec.get("quotas") or {}).items():
        qst = q.get("status") or {}
        reset = q.get("reset_after")
        quotas[name] = QuotaOutcome(
            QuotaResult(
                status=Status(qst.get("code", 0), qst.get("message", "")),
                amount=q.get("amount", 0),
                limit=q.get("limit"),
                remaining=q.get("remaining"),
                reset_after=None if reset is None else dt.timedelta(seconds=reset),
            ),
            None,
            q.get("reason", ""),
        )
    return CheckOutcome(
        CheckResult(Status(st.get("code", 0), st.get("message", ""))),
        directive,
        None,
        quotas,
        reason=spec.get("reason", ""),
    )


@pytest.mark.parametrize("case", _ids("verdicts"))
def test_verdicts(case: dict[str, Any]) -> None:
    if "error" in case:
        verdict = verdict_mod.error_verdict(case["error"]["code"], case["error"]["message"])
    else:
        requested = {n: QuotaArgs(amount=a) for n, a in (case.get("requested") or {}).items()}
        verdict = verdict_mod.decide(_outcome(case["outcome"]), requested or None)
    got = json_format.MessageToDict(verdict_mod.encode_grpc(verdict))
    assert got == case["grpc"]
    answer = verdict_mod.encode_http(verdict)
    assert answer.status == case["http"]["status"]
    assert [list(h) for h in answer.headers] == case["http"]["headers"]
    assert answer.body == case["http"]["body"]
    assert len(answer.body.encode()) <= verdict_mod.MAX_BODY


def test_long_messages_are_cut_on_a_character_boundary() -> None:
    v = verdict_mod.decide(CheckOutcome(CheckResult(Status(7, "é" * 150))))
    assert v.body == "é" * 98 + "..."
    assert v.message == "é" * 150  # the gRPC status keeps the whole message


def test_status_mapping_covers_every_code() -> None:
    expected = {3: 400, 16: 401, 7: 403, 9: 403, 5: 404, 8: 429, 14: 503, 4: 504}
    for code in range(1, 17):
        assert verdict_mod.http_status_for(code) == expected.get(code, 403)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a", {"a": 1}), ("a=2,b", {"a": 2, "b": 1}), (" a = 3 ,, a=1 ", {"a": 3}), ("", {})],
)
def test_parse_quota_list(text: str, expected: dict[str, int]) -> None:
    assert quota_mod.parse_quota_list(text) == expected


@pytest.mark.parametrize("text", ["=2", "a=x", "a=-1", "a=0", "a=\u00b2", "a=1" + "0" * 18])
def test_parse_quota_list_rejects(text: str) -> None:
    with pytest.raises(request_mod.BadRequest):
        quota_mod.parse_quota_list(text)
