"""JWT authentication (RequestAuthentication): key sets, token verification, Istio's attributes.

Pure except for awaiting a :class:`KeyProvider` (the JWKS fetcher, :mod:`mixerd.runtime.jwks`,
or an inline ``jwks``); time comes from the runtime's clock.

* **Keys decide the algorithm.** Each JSON Web Key is read with the algorithm its own ``alg``
  names, else the one its type implies (RSA -> RS256, EC P-256 -> ES256, OKP Ed25519 -> EdDSA).
  A token is verified only with keys whose algorithm equals the token's ``alg``; the token's
  header never chooses how a key is used. Shared-secret keys (``oct``, ``HS*``), private keys and
  ``alg: none`` are refused, so neither an unsigned token nor an HMAC signed with a public key
  passes.
* **Where the token is.** The rule's ``fromHeaders`` (name and prefix) and ``fromParams``; by
  default ``Authorization: Bearer <token>`` and the query parameter ``access_token``, as Istio.
  A request without a token is not an error: the request is simply not authenticated (an
  AuthorizationPolicy decides whether a token is required).
* **Which rule.** The token's ``iss`` selects the rule with that issuer among the workload's
  rules whose locations hold it. A token present but invalid (malformed, unknown issuer, bad
  signature, unknown key id, expired, not yet valid, wrong audience) is an
  :class:`AuthnError`: the request is answered 401 (UNAUTHENTICATED) with the reason.
* **Cached per token.** A verified token's result is kept (bounded, oldest first out) until
  the token expires, so a client that sends the same token again costs one dict
  lookup; a failure is not cached.
* **Attributes** (Istio's): ``request.auth.principal`` = ``iss/sub``, ``request.auth.audiences``
  (comma-separated), ``request.auth.presenter`` (``azp``), ``request.auth.claims`` (a string map:
  nested claims as dotted keys, ``tenant.role``; lists comma-joined) and
  ``request.auth.raw_claims`` (the payload's JSON). Authorization policies read the claims as
  they are (a list claim matches when one item does).
* **Upstream headers.** ``outputClaimToHeaders`` copies claims to request headers,
  ``outputPayloadToHeader`` the base64url payload; unless ``forwardOriginalToken`` the header
  that carried the token is removed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt
from jwt import PyJWK

from mixerd.attribute import MISSING
from mixerd.config import HeaderAction
from mixerd.config.security import JwtRule

__all__ = [
    "DEFAULT_LEEWAY",
    "Authenticated",
    "AuthnError",
    "CompiledJwtRule",
    "KeyProvider",
    "KeySet",
    "StaticKeys",
    "TokenCache",
    "UnknownKeyError",
    "auth_attributes",
    "find_token",
    "parse_jwks",
    "token_locations",
    "upstream_headers",
    "verify_token",
]

DEFAULT_LEEWAY: Final = 60.0
"""Seconds of clock skew allowed on ``exp`` and ``nbf`` (Envoy's jwt_authn default)."""

_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


class AuthnError(Exception):
    """A token was presented and is not valid; ``str()`` is the reason a caller may see."""


class UnknownKeyError(AuthnError):
    """The token names a key id the key set does not have (the keys are then fetched again)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[PyJWK, ...]
    problems: tuple[str, ...] = ()
    """Keys of the set that were left out, and why."""

    def by_kid(self, kid: str | None) -> tuple[PyJWK, ...]:
        if kid is None:
            return self.keys
        return tuple(k for k in self.keys if k.key_id == kid)


def parse_jwks(data: bytes | str) -> KeySet:
    """A JSON Web Key Set -> :class:`KeySet` of its usable public keys; raises ``ValueError``
    when the document is not a key set or has no usable key."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    raw_keys = doc.get("keys") if isinstance(doc, Mapping) else None
    if not isinstance(raw_keys, list):
        raise ValueError('not a JSON Web Key Set (expected {"keys": [...]})')
    keys: list[PyJWK] = []
    problems: list[str] = []
    for i, raw in enumerate(raw_keys):
        if not isinstance(raw, Mapping):
            problems.append(f"keys[{i}]: not an object")
            continue
        kty = raw.get("kty")
        family = _FAMILIES.get(kty) if isinstance(kty, str) else None
        if family is None:
            problems.append(f"keys[{i}]: kty {kty!r} is not a public key type (RSA, EC, OKP)")
            continue
        if "d" in raw:
            problems.append(f"keys[{i}]: a private key; only public keys are used")
            continue
        alg = raw.get("alg")
        if alg is not None and alg not in family:
            problems.append(f"keys[{i}]: algorithm {alg!r} does not fit a {kty} key")
            continue
        try:
            key = PyJWK(dict(raw))
        except (jwt.exceptions.PyJWTError, ValueError, TypeError) as exc:
            problems.append(f"keys[{i}]: {exc}")
            continue
        if key.algorithm_name not in family:
            problems.append(f"keys[{i}]: algorithm {key.algorithm_name} does not fit a {kty} key")
            continue
        keys.append(key)
    if not keys:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ValueError(f"no usable public key{detail}")
    return KeySet(tuple(keys), tuple(problems))


class KeyProvider(Protocol):
    """Where a rule's keys come from."""

    def current(self) -> KeySet | None:
        """The keys in hand (``None`` before the first successful fetch)."""

    async def ready(self) -> KeySet | None:
        """The keys, waiting (bounded) for a first fetch that is under way."""

    async def refresh(self) -> KeySet | None:
        """Fetch again now, because a token named an unknown key id (rate-limited)."""


class StaticKeys:
    """An inline ``jwks``."""

    __slots__ = ("keys",)

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def current(self) -> KeySet | None:
        return self.keys

    async def ready(self) -> KeySet | None:
        return self.keys

    async def refresh(self) -> KeySet | None:
        return self.keys


@dataclass(frozen=True, slots=True, eq=False)
class CompiledJwtRule:
    rule: JwtRule
    keys: KeyProvider
    source: str
    """``namespace/name`` of the RequestAuthentication."""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        if self.rule.from_headers or self.rule.from_params:
            return tuple((h.name, h.prefix) for h in self.rule.from_headers)
        return (("authorization", "Bearer "),)

    @property
    def params(self) -> tuple[str, ...]:
        if self.rule.from_headers or self.rule.from_params:
            return self.rule.from_params
        return ("access_token",)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A verified token."""

    principal: str
    audiences: tuple[str, ...]
    presenter: str
    claims: Mapping[str, Any]
    raw_claims: str
    expires: float | None
    """``exp`` (seconds since the epoch), when the token has one."""


TokenLocation = tuple[str, str, int, bool]
"""Where a token may be: ``(header name, lower-case prefix, its length, False)`` or
``(query parameter, "", 0, True)``."""


def token_locations(rules: Sequence[CompiledJwtRule]) -> tuple[TokenLocation, ...]:
    """The token locations of ``rules`` in their order, without repeats (a repeated location
    finds what its first use found); computed once per workload."""
    found: dict[TokenLocation, None] = {}
    for r in rules:
        found.update(((name, prefix.lower(), len(prefix), False), None) for name, prefix in r.headers)
        found.update(((p, "", 0, True), None) for p in r.params)
    return tuple(found)


def find_token(
    bag: Mapping[str, Any], headers: Mapping[str, Any] | None, locations: Sequence[TokenLocation]
) -> tuple[str, str] | None:
    """The first token in one of ``locations`` (:func:`token_locations`): ``(token, header name
    or "")``. ``headers`` is the bag's ``request.headers`` when it is a mapping, else None."""
    params: Any = MISSING
    for name, prefix, n, param in locations:
        if param:
            if params is MISSING:
                params = bag.get("request.query_params")
            value = params.get(name) if isinstance(params, Mapping) else None
            if isinstance(value, str) and value:
                return value, ""
            continue
        if headers is None:
            continue
        value = headers.get(name)
        if value and isinstance(value, str):
            if n:
                if value[:n].lower() != prefix:
                    continue
                value = value[n:]
            value = value.strip()
            if value:
                return value, name
    return None


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def unverified_issuer(token: str) -> tuple[Mapping[str, Any], str]:
    """The token's header and ``iss`` before verification (to choose the rule and keys)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthnError("malformed token (expected a JWS in compact form: three dot-separated parts)")
    try:
        header = _b64json(parts[0])
        payload = _b64json(parts[1])
    except (ValueError, UnicodeError):
        raise AuthnError("malformed token (header or payload is not base64url JSON)") from None
    if not isinstance(header, Mapping) or not isinstance(payload, Mapping):
        raise AuthnError("malformed token (header or payload is not a JSON object)")
    iss = payload.get("iss")
    return header, iss if isinstance(iss, str) else ""


def verify_token(
    token: str,
    header: Mapping[str, Any],
    rule: JwtRule,
    keys: KeySet,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> Authenticated:
    """Verify ``token`` against ``rule`` with ``keys`` at time ``now`` (seconds since the epoch)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise AuthnError("unsigned token (alg none) refused")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthnError("malformed token (kid is not a string)")
    candidates = keys.by_kid(kid)
    if kid is not None and not candidates:
        raise UnknownKeyError(f"unknown key id '{kid[:64]}'")
    usable = [k for k in candidates if k.algorithm_name == alg]
    if not usable:
        raise AuthnError(f"no key for the token's algorithm {alg[:16]} (the keys decide the algorithm)")
    payload: Any = None
    for k in usable:
        try:
            payload = jwt.decode(
                token,
                k.key,
                algorithms=[k.algorithm_name],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise AuthnError(f"malformed token ({type(exc).__name__})") from None
    if payload is None:
        raise AuthnError("signature verification failed")
    if payload.get("iss") != rule.issuer:
        raise AuthnError("issuer not allowed")
    exp = payload.get("exp")
    if exp is not None:
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AuthnError("malformed token (exp is not a number)")
        if now > exp + leeway:
            raise AuthnError("token expired")
    nbf = payload.get("nbf")
    if nbf is not None:
        if isinstance(nbf, bool) or not isinstance(nbf, int | float):
            raise AuthnError("malformed token (nbf is not a number)")
        if now + leeway < nbf:
            raise AuthnError("token not yet valid")
    aud = payload.get("aud")
    audiences = tuple(a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str))
    if rule.audiences and not set(audiences) & set(rule.audiences):
        raise AuthnError("audience not allowed")
    sub = payload.get("sub")
    azp = payload.get("azp")
    return Authenticated(
        principal=f"{rule.issuer}/{sub if isinstance(sub, str) else ''}",
        audiences=audiences,
        presenter=azp if isinstance(azp, str) else "",
        claims=payload,
        raw_claims=json.dumps(payload, separators=(",", ":"), sort_keys=True),
        expires=float(exp) if exp is not None else None,
    )


def _flat_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_flat_text(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _flatten(claims: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for k, v in claims.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            _flatten(v, name + ".", out)
        else:
            out[name] = _flat_text(v)


def auth_attributes(auth: Authenticated) -> dict[str, Any]:
    """Istio's ``request.auth.*`` attributes of a verified token."""
    flat: dict[str, str] = {}
    _flatten(auth.claims, "", flat)
    out: dict[str, Any] = {
        "request.auth.principal": auth.principal,
        "request.auth.claims": flat,
        "request.auth.raw_claims": auth.raw_claims,
    }
    if auth.audiences:
        out["request.auth.audiences"] = ",".join(auth.audiences)
    if auth.presenter:
        out["request.auth.presenter"] = auth.presenter
    return out


def claim(claims: Mapping[str, Any], dotted: str) -> Any:
    node: Any = claims
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def upstream_headers(
    rule: JwtRule, auth: Authenticated, token_header: str
) -> tuple[tuple[str, str, HeaderAction], ...]:
    """Request header operations for the upstream: ``(name, value, action)``."""
    ops: list[tuple[str, str, HeaderAction]] = []
    if token_header and not rule.forward_original_token:
        ops.append((token_header, "", HeaderAction.REMOVE))
    for c in rule.output_claim_to_headers:
        value = claim(auth.claims, c.claim)
        if value is not None:
            ops.append((c.header, _flat_text(value), HeaderAction.REPLACE))
    if rule.output_payload_to_header:
        encoded = base64.urlsafe_b64encode(auth.raw_claims.encode()).decode().rstrip("=")
        ops.append((rule.output_payload_to_header, encoded, HeaderAction.REPLACE))
    return tuple(ops)


class TokenCache:
    """Verified tokens -> what their verification gave, bounded (the oldest verified goes first)
    and expiring with the token (or after ``max_age`` seconds for a token without ``exp``)."""

    __slots__ = ("entries", "max_age", "size")

    def __init__(self, size: int = 10_000, max_age: float = 300.0) -> None:
        self.size = size
        self.max_age = max_age
        self.entries: dict[Any, tuple[Any, float]] = {}

    def get(self, key: Any, now: float) -> Any:
        hit = self.entries.get(key)
        if hit is None:
            return None
        value, until = hit
        if now > until:
            del self.entries[key]
            return None
        return value

    def put(self, key: Any, value: Any, expires: float | None, now: float) -> None:
        until = now + self.max_age
        if expires is not None:
            until = min(until, expires + DEFAULT_LEEWAY)
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = (value, until)
