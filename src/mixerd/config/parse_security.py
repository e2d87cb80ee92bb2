"""Parsing the security kinds (:mod:`mixerd.config.security`) with field-path problems.

Called from :mod:`mixerd.config.parse` through its kind table. Every problem names its field
(``spec.rules[0].from[1].source.ipBlocks[2]: '10.0.0/8' is not an IP address or CIDR block``);
what Istio accepts but mixerd cannot evaluate is refused with the reason and what to use instead.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from mixerd.config.model import Issue, Key
from mixerd.config.security import (
    WHEN_KEYS,
    AccessRule,
    AuthorizationPolicySpec,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    ClaimToHeader,
    JwtHeader,
    JwtRule,
    RbacConfigSpec,
    RbacTarget,
    RequestAuthenticationSpec,
    RoleConstraint,
    RoleRef,
    ServiceRoleBindingSpec,
    ServiceRoleSpec,
    Subject,
)

if TYPE_CHECKING:
    from mixerd.config.parse import _Fields

__all__ = [
    "parse_authorization_policy",
    "parse_rbac_config",
    "parse_request_authentication",
    "parse_service_role",
    "parse_service_role_binding",
    "split_when_key",
]

_ACTIONS: Final = ("ALLOW", "DENY", "AUDIT")
RBAC_KEYS: Final = ("destination.labels", "destination.name", "destination.namespace", "destination.user")
"""Keys a ServiceRole constraint may use beyond :data:`WHEN_KEYS` (Istio 1.4)."""
_PUBLIC_KTY: Final = ("RSA", "EC", "OKP")


def _patterns(f: _Fields, name: str, *, lower: bool = False) -> tuple[str, ...]:
    """Istio value patterns: ``*`` may only stand alone, at the start or at the end."""
    out: list[str] = []
    for path, item in f.items(name):
        if not isinstance(item, str | int) or isinstance(item, bool) or item == "":
            f.issues.append(Issue(path, f"expected a non-empty string, got {item!r}"))
            continue
        text = str(item)
        if "*" in text[1:-1] or text == "**":
            f.issues.append(
                Issue(path, f"'{text}': '*' may only stand alone, at the start (suffix match) or at the end")
            )
            continue
        out.append(text.lower() if lower else text)
    return tuple(out)


def _ip_blocks(f: _Fields, name: str) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in f.items(name):
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            f.issues.append(Issue(path, f"{item!r} is not an IP address or CIDR block"))
            continue
        out.append(str(item))
    return tuple(out)


def _ports(f: _Fields, name: str) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in f.items(name):
        text = str(item)
        if isinstance(item, bool) or not text.isdigit() or not 0 < int(text) < 65536:
            f.issues.append(Issue(path, f"{item!r} is not a port number (1-65535)"))
            continue
        out.append(str(int(text)))
    return tuple(out)


def _int_ports(f: _Fields, name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in _ports(f, name))


def _selector(f: _Fields) -> Mapping[str, str] | None:
    path, raw = f.raw("selector")
    if raw is None:
        return None
    s = f.sub(raw, path)
    labels = s.string_map("match_labels")
    s.done()
    return labels


def split_when_key(key: str, *, rbac: bool = False) -> tuple[str, tuple[str, ...]] | str:
    """``request.auth.claims[a][b]`` -> ``("request.auth.claims", ("a", "b"))``; a message when
    the key is malformed or not one of :data:`WHEN_KEYS` (with ``rbac``, also the ServiceRole
    constraint keys of :data:`RBAC_KEYS`)."""
    attribute, sep, rest = key.partition("[")
    index: list[str] = []
    if sep:
        rest = "[" + rest
        while rest:
            if not rest.startswith("[") or "]" not in rest:
                return f"malformed key '{key}' (expected name[index]...)"
            part, _, rest = rest[1:].partition("]")
            if not part:
                return f"malformed key '{key}': empty [] index"
            index.append(part)
    keys = WHEN_KEYS + RBAC_KEYS if rbac else WHEN_KEYS
    if attribute not in keys:
        known = ", ".join(keys)
        return f"unsupported key '{attribute}' (mixerd evaluates: {known})"
    takes_index = attribute in ("request.headers", "request.auth.claims", "destination.labels")
    if takes_index and not index:
        return f"'{attribute}' needs a name in brackets, e.g. {attribute}[name]"
    if not takes_index and index:
        return f"'{attribute}' takes no [index]"
    if attribute in ("request.headers", "destination.labels") and len(index) > 1:
        return f"{attribute} takes one [name]"
    return attribute, tuple(index)


_REFUSED_SOURCE: Final = {
    "remoteIpBlocks": "remoteIpBlocks is not supported: mixerd sees one client address (source.ip, which the "
    "HTTP endpoint takes from X-Real-IP / X-Forwarded-For); use ipBlocks",
    "notRemoteIpBlocks": "notRemoteIpBlocks is not supported: mixerd sees one client address (source.ip); "
    "use notIpBlocks",
}


def _source(f: _Fields) -> AuthzSource:
    for name, why in _REFUSED_SOURCE.items():
        path, raw = f.raw(name)
        if raw is not None:
            f.issues.append(Issue(path, why))
    src = AuthzSource(
        principals=_patterns(f, "principals"),
        not_principals=_patterns(f, "not_principals"),
        request_principals=_patterns(f, "request_principals"),
        not_request_principals=_patterns(f, "not_request_principals"),
        namespaces=_patterns(f, "namespaces"),
        not_namespaces=_patterns(f, "not_namespaces"),
        ip_blocks=_ip_blocks(f, "ip_blocks"),
        not_ip_blocks=_ip_blocks(f, "not_ip_blocks"),
    )
    f.done()
    return src


def _operation(f: _Fields) -> AuthzOperation:
    op = AuthzOperation(
        hosts=_patterns(f, "hosts", lower=True),
        not_hosts=_patterns(f, "not_hosts", lower=True),
        ports=_ports(f, "ports"),
        not_ports=_ports(f, "not_ports"),
        methods=_patterns(f, "methods"),
        not_methods=_patterns(f, "not_methods"),
        paths=_patterns(f, "paths"),
        not_paths=_patterns(f, "not_paths"),
    )
    f.done()
    return op


def _condition(f: _Fields) -> AuthzCondition | None:
    key = f.text("key", required=True)
    values = _patterns(f, "values")
    not_values = _patterns(f, "not_values")
    f.done()
    if not key:
        return None
    split = split_when_key(key)
    if isinstance(split, str):
        f.issues.append(Issue(f.at("key"), split))
        return None
    if not values and not not_values:
        f.issues.append(Issue(f.path, "needs values or notValues"))
        return None
    attribute, index = split
    return AuthzCondition(key, attribute, index, values, not_values)


def parse_authorization_policy(f: _Fields, key: Key) -> AuthorizationPolicySpec:
    selector = _selector(f)
    apath, raw_action = f.raw("action")
    action = "ALLOW"
    if raw_action is not None:
        action = str(raw_action).upper()
        if action == "CUSTOM":
            f.issues.append(
                Issue(
                    apath,
                    "CUSTOM is not supported: send an authorization instance to a handler of an external "
                    "authorization adapter (such as opa) with a rule instead",
                )
            )
        elif action not in _ACTIONS:
            f.issues.append(Issue(apath, f"unknown action {raw_action!r} (expected ALLOW, DENY or AUDIT)"))
    ppath, raw_provider = f.raw("provider")
    if raw_provider is not None:
        f.issues.append(Issue(ppath, "provider is only for action CUSTOM, which mixerd does not support"))
    rules: list[AuthzRule] = []
    for rpath, raw_rule in f.items("rules"):
        r = f.sub(raw_rule, rpath)
        sources: list[AuthzSource] = []
        for spath, raw_from in r.items("from"):
            fr = r.sub(raw_from, spath)
            path, raw_source = fr.raw("source")
            fr.done()
            if raw_source is None:
                f.issues.append(Issue(f"{spath}.source", "missing"))
                continue
            sources.append(_source(r.sub(raw_source, path)))
        operations: list[AuthzOperation] = []
        for opath, raw_to in r.items("to"):
            to = r.sub(raw_to, opath)
            path, raw_op = to.raw("operation")
            to.done()
            if raw_op is None:
                f.issues.append(Issue(f"{opath}.operation", "missing"))
                continue
            operations.append(_operation(r.sub(raw_op, path)))
        when: list[AuthzCondition] = []
        for wpath, raw_when in r.items("when"):
            cond = _condition(r.sub(raw_when, wpath))
            if cond is not None:
                when.append(cond)
        r.done()
        rules.append(AuthzRule(tuple(sources), tuple(operations), tuple(when)))
    f.done()
    return AuthorizationPolicySpec(selector, action, tuple(rules))


def _jwks_text(f: _Fields, name: str) -> str:
    path, raw = f.raw(name)
    if raw is None:
        return ""
    if isinstance(raw, Mapping):
        raw = json.dumps(raw)
    if not isinstance(raw, str):
        f.issues.append(Issue(path, f"expected a JSON Web Key Set (JSON text), got {type(raw).__name__}"))
        return ""
    problem = jwks_problem(raw)
    if problem:
        f.issues.append(Issue(path, problem))
        return ""
    return raw


def jwks_problem(text: str) -> str:
    """Why ``text`` is not a usable public JSON Web Key Set (``""`` when it is)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    keys = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(keys, list) or not keys:
        return 'expected a JSON Web Key Set: {"keys": [...]} with at least one key'
    for i, k in enumerate(keys):
        kty = k.get("kty") if isinstance(k, Mapping) else None
        if kty not in _PUBLIC_KTY:
            return (
                f"keys[{i}]: kty {kty!r} is not a public key type (RSA, EC or OKP); "
                "shared secrets (oct) are refused"
            )
        if "d" in k:
            return f"keys[{i}]: is a private key; publish only the public part"
    return ""


def parse_request_authentication(f: _Fields, key: Key) -> RequestAuthenticationSpec:
    selector = _selector(f)
    rules: list[JwtRule] = []
    for jpath, raw in f.items("jwt_rules"):
        j = f.sub(raw, jpath)
        issuer = j.text("issuer", required=True)
        audiences = j.strings("audiences")
        uri = j.text("jwks_uri")
        jwks = _jwks_text(j, "jwks")
        headers: list[JwtHeader] = []
        for hpath, raw_h in j.items("from_headers"):
            h = j.sub(raw_h, hpath)
            headers.append(JwtHeader(h.text("name", required=True).lower(), h.text("prefix")))
            h.done()
        params = j.strings("from_params")
        forward = j.flag("forward_original_token")
        payload_header = j.text("output_payload_to_header").lower()
        claims: list[ClaimToHeader] = []
        for cpath, raw_c in j.items("output_claim_to_headers"):
            c = j.sub(raw_c, cpath)
            claims.append(
                ClaimToHeader(c.text("header", required=True).lower(), c.text("claim", required=True))
            )
            c.done()
        tpath, raw_timeout = j.raw("timeout")
        j.done()
        if uri and not uri.startswith(("http://", "https://")):
            f.issues.append(Issue(j.at("jwksUri"), f"'{uri}' is not an http:// or https:// URL"))
        if not uri and not jwks and "jwks" not in (j.data or {}):
            f.issues.append(
                Issue(
                    j.at("jwksUri"),
                    "missing: give jwksUri or jwks (mixerd does not discover keys from the issuer)",
                )
            )
        if raw_timeout is not None:
            f.issues.append(Issue(tpath, "not supported: mixerd fetches keys with its own timeout (5 s)"))
        rules.append(
            JwtRule(
                issuer=issuer,
                audiences=audiences,
                jwks_uri=uri,
                jwks=jwks,
                from_headers=tuple(headers),
                from_params=params,
                forward_original_token=forward,
                output_payload_to_header=payload_header,
                output_claim_to_headers=tuple(claims),
            )
        )
    f.done()
    return RequestAuthenticationSpec(selector, tuple(rules))


def parse_service_role(f: _Fields, key: Key) -> ServiceRoleSpec:
    rules: list[AccessRule] = []
    for rpath, raw in f.items("rules"):
        r = f.sub(raw, rpath)
        constraints: list[RoleConstraint] = []
        for cpath, raw_c in r.items("constraints"):
            c = r.sub(raw_c, cpath)
            ckey = c.text("key", required=True)
            values = _patterns(c, "values")
            c.done()
            if ckey:
                split = split_when_key(ckey, rbac=True)
                if isinstance(split, str):
                    f.issues.append(Issue(c.at("key"), split))
                    continue
                constraints.append(RoleConstraint(ckey, split[0], split[1], values))
        rules.append(
            AccessRule(
                services=_patterns(r, "services", lower=True),
                paths=_patterns(r, "paths"),
                not_paths=_patterns(r, "not_paths"),
                methods=_patterns(r, "methods"),
                not_methods=_patterns(r, "not_methods"),
                ports=_int_ports(r, "ports"),
                not_ports=_int_ports(r, "not_ports"),
                constraints=tuple(constraints),
            )
        )
        r.done()
    f.done()
    return ServiceRoleSpec(tuple(rules))


def parse_service_role_binding(f: _Fields, key: Key) -> ServiceRoleBindingSpec:
    subjects: list[Subject] = []
    for spath, raw in f.items("subjects"):
        s = f.sub(raw, spath)
        props = s.string_map("properties")
        for prop in props:
            split = split_when_key(prop, rbac=True)
            if isinstance(split, str):
                f.issues.append(Issue(s.at(f"properties.{prop}"), split))
            elif "*" in props[prop][1:-1]:
                f.issues.append(
                    Issue(s.at(f"properties.{prop}"), "'*' may only stand alone, at the start or at the end")
                )
        subjects.append(
            Subject(
                user=s.text("user"),
                group=s.text("group"),
                properties=props,
                names=_patterns(s, "names"),
                not_names=_patterns(s, "not_names"),
                namespaces=_patterns(s, "namespaces"),
                not_namespaces=_patterns(s, "not_namespaces"),
                ips=_ip_blocks(s, "ips"),
                not_ips=_ip_blocks(s, "not_ips"),
            )
        )
        if subjects[-1].group:
            f.issues.append(Issue(s.at("group"), "not supported (as in Istio 1.4); use properties"))
        s.done()
    role_ref: RoleRef | None = None
    rpath, raw_ref = f.raw("role_ref")
    role = f.text("role")
    if raw_ref is not None:
        r = f.sub(raw_ref, rpath)
        kind = r.text("kind", required=True)
        name = r.text("name", required=True)
        r.done()
        if kind and kind != "ServiceRole":
            f.issues.append(Issue(r.at("kind"), f"expected ServiceRole, got {kind!r}"))
        role_ref = RoleRef(kind or "ServiceRole", name)
    elif role:
        role_ref = RoleRef("ServiceRole", role.removeprefix("/"))
    else:
        f.issues.append(Issue(f.at("roleRef"), "missing (a binding names its ServiceRole)"))
    mpath, raw_mode = f.raw("mode")
    mode = "ENFORCED" if raw_mode is None else str(raw_mode).upper()
    if mode not in ("ENFORCED", "PERMISSIVE"):
        f.issues.append(Issue(mpath, f"unknown mode {raw_mode!r} (expected ENFORCED or PERMISSIVE)"))
    f.raw("actions")  # Istio 1.4 reserved field, never used
    f.done()
    return ServiceRoleBindingSpec(tuple(subjects), role_ref, mode)


def _target(f: _Fields, name: str) -> RbacTarget:
    path, raw = f.raw(name)
    if raw is None:
        return RbacTarget()
    t = f.sub(raw, path)
    target = RbacTarget(_patterns(t, "services", lower=True), t.strings("namespaces"))
    t.done()
    return target


_RBAC_MODES: Final = ("OFF", "ON", "ON_WITH_INCLUSION", "ON_WITH_EXCLUSION")


def parse_rbac_config(f: _Fields, key: Key) -> RbacConfigSpec:
    mpath, raw_mode = f.raw("mode")
    mode = "OFF" if raw_mode is None else str(raw_mode).upper()
    if mode not in _RBAC_MODES:
        f.issues.append(Issue(mpath, f"unknown mode {raw_mode!r} (expected one of {', '.join(_RBAC_MODES)})"))
    epath, raw_enf = f.raw("enforcement_mode")
    enforcement = "ENFORCED" if raw_enf is None else str(raw_enf).upper()
    if enforcement not in ("ENFORCED", "PERMISSIVE"):
        f.issues.append(
            Issue(epath, f"unknown enforcementMode {raw_enf!r} (expected ENFORCED or PERMISSIVE)")
        )
    spec = RbacConfigSpec(mode, _target(f, "inclusion"), _target(f, "exclusion"), enforcement)
    f.done()
    return spec
