"""JWT validation (mixerd.runtime.authn, through the security gate) against tests/data/authz_jwt.yaml,
and the per-token cache, the attributes and the upstream headers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Code, ManualClock
from mixerd.config import StaticAdapterCatalog, build_snapshot, parse_documents
from mixerd.runtime import RuntimeMetrics
from mixerd.runtime.authn import KeySet, parse_jwks
from mixerd.runtime.security import SecurityTable, build_security
from tests.support.jwt_issuer import Issuer

TABLE = yaml.safe_load((Path(__file__).parent.parent / "data" / "authz_jwt.yaml").read_text())
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


class FakeKeys:
    """A jwksUri's keys: ``current`` until a refresh, then ``rotated``."""

    def __init__(self, current: KeySet, rotated: KeySet | None) -> None:
        self.keys = current
        self.rotated = rotated
        self.refreshes = 0

    def current(self) -> KeySet | None:
        return self.keys

    async def ready(self) -> KeySet | None:
        return self.keys

    async def refresh(self) -> KeySet | None:
        self.refreshes += 1
        if self.rotated is not None:
            self.keys = self.rotated
        return self.keys


class FakeFetcher:
    def __init__(self, keys: FakeKeys) -> None:
        self.keys = keys

    def provider(self, uri: str) -> FakeKeys:
        return self.keys


def gate(
    rule: dict[str, Any],
    fetcher: Any,
    extra: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    more_rules: list[dict[str, Any]] = (),  # type: ignore[assignment]
    reads_auth: bool = True,
) -> SecurityTable:
    docs = [
        {
            "apiVersion": "security.istio.io/v1beta1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "foo"},
            "spec": {
                "jwtRules": [{"jwksUri": "http://127.0.0.1:1/jwks.json", **r} for r in (rule, *more_rules)]
            },
        },
        *extra,
    ]
    parsed = parse_documents((d, None) for d in docs)
    snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
    assert not snapshot.errors, [str(e) for e in snapshot.errors]
    metrics = RuntimeMetrics()
    table, problems = build_security(
        snapshot.security,
        "istio-system",
        clock=ManualClock(),
        decisions=metrics.counter("mixerd_authz_decisions", "x", ["policy", "action", "dry_run"]),
        jwks=fetcher,
        wall=lambda: NOW,
        reads_auth=reads_auth,
    )
    assert not problems and table is not None
    return table


def token_for(issuer: Issuer, case: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iss": issuer.issuer, "iat": int(NOW)}
    for k, v in {**TABLE["defaults"]["claims"], **case.get("claims", {})}.items():
        if k in ("exp_in", "nbf_in"):
            if v is not None:
                claims[k[:3]] = int(NOW + v)
        elif v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    sign = case["sign"]
    if sign == "forge_hmac":
        return issuer.forge_hmac(claims)
    if sign == "forge_none":
        return issuer.forge_none(claims)
    if sign == "garbage":
        return "not.a-token"
    if sign == "tamper":
        head, _, sig = issuer.mint(claims).split(".")
        forged = (
            base64.urlsafe_b64encode(json.dumps({**claims, "sub": "root"}).encode()).rstrip(b"=").decode()
        )
        return f"{head}.{forged}.{sig}"
    kid = case.get("kid", "")
    return issuer.mint(claims, sign, kid=kid)


def bag(token: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return {"destination.namespace": "foo", "request.headers": headers, "request.host": "api.test"}


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
async def test_jwt_table(issuer: Issuer, case: dict[str, Any]) -> None:
    keys = parse_jwks(issuer.jwks(*case.get("jwks", TABLE["defaults"]["jwks"])))
    rotated = parse_jwks(issuer.jwks(*case["rotate_to"])) if "rotate_to" in case else None
    fake = FakeKeys(keys, rotated)
    table = gate({**TABLE["defaults"]["rule"], **case.get("rule", {})}, FakeFetcher(fake))
    verdict = await table.check(bag(token_for(issuer, case)))
    assert verdict is not None
    if "principal" in case:
        assert verdict.code == Code.OK, verdict.message
        assert verdict.bag.get("request.auth.principal") == case["principal"]
    else:
        assert verdict.code == Code.UNAUTHENTICATED
        assert verdict.message.startswith(f"invalid JWT: {case['error']}"), verdict.message
        ((name, value, _),) = verdict.deny_headers
        assert name == "www-authenticate"
        assert value.startswith('Bearer realm="api.test", error="invalid_token"')
    assert fake.refreshes == (
        1 if case.get("error", "").startswith("unknown key id") or "rotate_to" in case else 0
    )


async def test_no_token_is_not_an_error(issuer: Issuer) -> None:
    table = gate({"issuer": issuer.issuer}, FakeFetcher(FakeKeys(parse_jwks(issuer.jwks()), None)))
    verdict = await table.check(bag(None))
    assert verdict is not None and verdict.code == Code.OK
    assert verdict.bag is None  # the rules see the request's own attributes, no request.auth.*


async def test_attributes_headers_and_cache(issuer: Issuer) -> None:
    fake = FakeKeys(parse_jwks(issuer.jwks()), None)
    table = gate(
        {
            "issuer": issuer.issuer,
            "outputClaimToHeaders": [
                {"header": "x-tenant", "claim": "tenant.name"},
                {"header": "x-groups", "claim": "groups"},
            ],
            "outputPayloadToHeader": "x-jwt-payload",
        },
        FakeFetcher(fake),
    )
    claims = {
        "iss": issuer.issuer,
        "sub": "bob",
        "aud": ["a", "b"],
        "azp": "cli",
        "exp": int(NOW + 60),
        "tenant": {"name": "foo", "role": "admin"},
        "groups": ["x", "y"],
    }
    token = issuer.mint(claims)
    verdict = await table.check(bag(token))
    assert verdict is not None and verdict.code == Code.OK
    b = verdict.bag
    assert b.get("request.auth.principal") == f"{issuer.issuer}/bob"
    assert b.get("request.auth.audiences") == "a,b"
    assert b.get("request.auth.presenter") == "cli"
    assert b.get("request.auth.claims")["tenant.role"] == "admin"
    assert b.get("request.auth.claims")["groups"] == "x,y"
    assert json.loads(b.get("request.auth.raw_claims")) == claims
    ops = {name: (value, action.name) for name, value, action in verdict.request_headers}
    assert ops["authorization"] == ("", "REMOVE")  # forwardOriginalToken is false
    assert ops["x-tenant"] == ("foo", "REPLACE")
    assert ops["x-groups"] == ("x,y", "REPLACE")
    payload = ops["x-jwt-payload"][0]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) == claims
    # The second check of the same token is a cache hit: no keys needed.
    fake.keys = KeySet(())
    again = await table.check(bag(token))
    assert again is not None and again.code == Code.OK
    # A token from elsewhere is verified (and fails: no keys now).
    other = await table.check(bag(issuer.mint({**claims, "sub": "carol"})))
    assert other is not None and other.code == Code.UNAUTHENTICATED


async def test_cached_token_expires_with_the_token(issuer: Issuer) -> None:
    now = [NOW]
    fake = FakeKeys(parse_jwks(issuer.jwks()), None)
    table = gate({"issuer": issuer.issuer}, FakeFetcher(fake))
    table.wall = lambda: now[0]
    token = issuer.mint({"iss": issuer.issuer, "sub": "a", "exp": int(NOW + 10)})
    first = await table.check(bag(token))
    assert first is not None and first.code == Code.OK
    now[0] = NOW + 10 + 61
    late = await table.check(bag(token))
    assert late is not None and late.message == "invalid JWT: token expired"


def test_jwks_refuses_secret_and_private_keys(issuer: Issuer) -> None:
    with pytest.raises(ValueError, match="not a public key type"):
        parse_jwks(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    ks = parse_jwks(json.dumps({"keys": [{**issuer.jwk("rsa1"), "alg": "HS256"}, issuer.jwk("ec")]}))
    assert [k.key_id for k in ks.keys] == ["ec"]
    assert "algorithm 'HS256' does not fit a RSA key" in ks.problems[0]


def test_the_rules_bag_gets_the_token_attributes_only_when_the_config_reads_them() -> None:
    from mixerd.attribute import builtin_manifest
    from mixerd.config import parse_text
    from mixerd.runtime.security import rules_read_auth

    def snapshot(match: str) -> Any:
        text = (
            "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: d, namespace: istio-system}\n"
            "spec: {compiledAdapter: denier}\n---\n"
            "apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: c, namespace: istio-system}\n"
            "spec: {compiledTemplate: checknothing}\n---\n"
            "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: istio-system}\n"
            f"spec: {{match: '{match}', actions: [{{handler: d, instances: [c]}}]}}\n"
        )
        snap = build_snapshot(
            parse_text(text).resources,
            adapters=StaticAdapterCatalog({"denier": ("checknothing",)}),
            base_manifest=builtin_manifest(),
        )
        assert not snap.errors, [str(e) for e in snap.errors]
        return snap

    assert rules_read_auth(snapshot('request.auth.principal == "x"'))
    assert not rules_read_auth(snapshot('request.method == "DELETE"'))


def _claims(issuer: Issuer, sub: str, **extra: Any) -> dict[str, Any]:
    return {"iss": issuer.issuer, "sub": sub, "exp": int(NOW + 60), **extra}


async def test_policies_read_the_token_when_the_rules_bag_does_not_get_its_attributes(issuer: Issuer) -> None:
    only_admins = {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "admins", "namespace": "foo"},
        "spec": {
            "rules": [
                {
                    "from": [{"source": {"requestPrincipals": [f"{issuer.issuer}/*"]}}],
                    "when": [{"key": "request.auth.claims[role]", "values": ["admin"]}],
                }
            ]
        },
    }
    fake = FakeKeys(parse_jwks(issuer.jwks()), None)
    for reads_auth in (False, True):
        table = gate({"issuer": issuer.issuer}, FakeFetcher(fake), [only_admins], reads_auth=reads_auth)
        admin = issuer.mint(_claims(issuer, "ann", role="admin"))
        viewer = issuer.mint(_claims(issuer, "vic", role="viewer"))
        # Each token twice (verified, then cached), alternating: the same request but for its
        # token is decided by that token's claims every time.
        for _ in range(2):
            for token, code in ((admin, Code.OK), (viewer, Code.PERMISSION_DENIED)):
                verdict = await table.check(bag(token))
                assert verdict is not None and verdict.code == code, verdict
                if reads_auth:
                    principal = verdict.bag.get("request.auth.principal")  # type: ignore[union-attr]
                    assert principal == f"{issuer.issuer}/{'ann' if token is admin else 'vic'}"
                else:
                    assert verdict.bag is None  # the rules see the request's own attributes
        assert (await table.check(bag(None))).code == Code.PERMISSION_DENIED  # type: ignore[union-attr]


async def test_token_locations_are_tried_in_the_rules_order(issuer: Issuer) -> None:
    other = Issuer("https://other.test")
    keys = parse_jwks(json.dumps({"keys": [issuer.jwk("rsa1"), {**other.jwk("ec"), "kid": "other"}]}))
    table = gate(
        {"issuer": other.issuer, "fromParams": ["tok"]},
        FakeFetcher(FakeKeys(keys, None)),
        more_rules=[{"issuer": issuer.issuer}],
    )
    by_param = other.mint(_claims(other, "p"), "ec", kid="other")
    by_header = issuer.mint(_claims(issuer, "h"))
    request = {**bag(by_header), "request.query_params": {"tok": by_param}}
    verdict = await table.check(request)
    assert verdict is not None and verdict.code == Code.OK, verdict
    # The first rule's parameter comes before the second rule's header.
    assert verdict.bag.get("request.auth.principal") == f"{other.issuer}/p"
    assert verdict.request_headers == ()  # a parameter token: no header to remove
    verdict = await table.check(bag(by_header))
    assert verdict is not None and verdict.bag.get("request.auth.principal") == f"{issuer.issuer}/h"
    assert [(n, a.name) for n, _, a in verdict.request_headers] == [("authorization", "REMOVE")]
