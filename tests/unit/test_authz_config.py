"""The security kinds in the config model: each problem with its field path; other kinds of the
security groups ignored with a reason; what mixerd cannot evaluate refused with what to do instead."""

from __future__ import annotations

import pytest

from mixerd.config import StaticAdapterCatalog, build_snapshot, parse_text

AP = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n"
RA = "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: r, namespace: foo}\n"
SR = "apiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRole\nmetadata: {name: s, namespace: foo}\n"

CASES = [
    (
        AP + "spec: {action: CUSTOM, provider: {name: x}}",
        [
            "spec.action: CUSTOM is not supported: send an authorization instance to a handler of an external "
            "authorization adapter (such as opa) with a rule instead",
            "spec.provider: provider is only for action CUSTOM, which mixerd does not support",
        ],
    ),
    (AP + "spec: {action: MAYBE}", ["spec.action: unknown action 'MAYBE' (expected ALLOW, DENY or AUDIT)"]),
    (
        AP + "spec: {rules: [{from: [{source: {principals: ['a*b'], remoteIpBlocks: [1.2.3.4]}}]}]}",
        [
            "spec.rules[0].from[0].source.remoteIpBlocks: remoteIpBlocks is not supported: mixerd sees one client "
            "address (source.ip, which the HTTP endpoint takes from X-Real-IP / X-Forwarded-For); use ipBlocks",
            "spec.rules[0].from[0].source.principals[0]: 'a*b': '*' may only stand alone, at the start (suffix "
            "match) or at the end",
        ],
    ),
    (
        AP + "spec: {rules: [{to: [{operation: {ports: [http], methods: [GET], pathz: [/]}}]}]}",
        [
            "spec.rules[0].to[0].operation.ports[0]: 'http' is not a port number (1-65535)",
            "spec.rules[0].to[0].operation.pathz: unknown field",
        ],
    ),
    (
        AP + "spec: {rules: [{when: [{key: 'request.headers', values: [x]}, {key: source.ip}]}]}",
        [
            "spec.rules[0].when[0].key: 'request.headers' needs a name in brackets, e.g. request.headers[name]",
            "spec.rules[0].when[1]: needs values or notValues",
        ],
    ),
    (
        AP + "spec: {selector: {matchLabels: {app: [x]}}}",
        ["spec.selector.matchLabels.app: expected a string, got ['x']"],
    ),
    (
        RA + "spec: {jwtRules: [{jwksUri: 'ftp://x'}]}",
        [
            "spec.jwtRules[0].issuer: missing",
            "spec.jwtRules[0].jwksUri: 'ftp://x' is not an http:// or https:// URL",
        ],
    ),
    (
        RA + "spec: {jwtRules: [{issuer: i}]}",
        [
            "spec.jwtRules[0].jwksUri: missing: give jwksUri or jwks (mixerd does not discover keys from the issuer)"
        ],
    ),
    (
        RA + 'spec: {jwtRules: [{issuer: i, jwks: \'{"keys": [{"kty": "RSA", "d": "x"}]}\'}]}',
        ["spec.jwtRules[0].jwks: keys[0]: is a private key; publish only the public part"],
    ),
    (
        SR + "spec: {rules: [{constraints: [{key: 'destination.labelz[app]', values: [x]}]}]}",
        [
            "spec.rules[0].constraints[0].key: unsupported key 'destination.labelz' (mixerd evaluates: "
            "request.headers, source.ip, source.namespace, source.principal, request.auth.principal, "
            "request.auth.audiences, request.auth.presenter, request.auth.claims, destination.ip, destination.port, "
            "connection.sni, destination.labels, destination.name, destination.namespace, destination.user)"
        ],
    ),
    (
        "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n"
        "spec: {}",
        [
            "apiVersion: unsupported version 'security.istio.io/v1alpha1' (expected security.istio.io/v1beta1 "
            "or security.istio.io/v1)"
        ],
    ),
]


@pytest.mark.parametrize(("text", "errors"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_problems_have_field_paths(text: str, errors: list[str]) -> None:
    parsed = parse_text(text)
    snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
    (r,) = parsed.resources
    prefix = f"{r.key}: "
    assert sorted(str(e).removeprefix(prefix) for e in snapshot.errors) == sorted(errors)
    assert not snapshot.security  # a resource with problems is dropped


def test_other_kinds_of_the_groups_are_ignored_and_good_ones_kept() -> None:
    parsed = parse_text(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: foo}\n"
        "---\n"
        + AP
        + "spec: {rules: [{}]}\n---\n"
        + AP.replace("name: p", "name: q")
        + "spec: {action: AUDIT}"
    )
    assert [i.kind for i in parsed.ignored] == ["PeerAuthentication"]
    snapshot = build_snapshot(parsed.resources, adapters=StaticAdapterCatalog({}))
    assert not snapshot.errors
    assert sorted(k.name for k in snapshot.security) == ["p", "q"]
