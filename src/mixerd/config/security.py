"""Security resources: Istio's authentication and authorization policies, as parsed values.

Kinds (each checked against its group and version):

* ``security.istio.io/v1beta1``: ``RequestAuthentication`` (JWT rules: issuer, keys, where the
  token is read, what is passed upstream) and ``AuthorizationPolicy`` (ALLOW / DENY / AUDIT
  rules over sources, operations and conditions);
* ``rbac.istio.io/v1alpha1``: ``ServiceRole``, ``ServiceRoleBinding`` and the mesh switch
  ``ClusterRbacConfig`` (or the older ``RbacConfig``), with Istio 1.4's semantics.

Everything here is a frozen value; matching lives in :mod:`mixerd.runtime.authz`, which compiles
these specs into closures when a snapshot is put in force. Value patterns follow Istio: ``*``
alone matches any value, ``abc*`` a prefix, ``*abc`` a suffix, anything else exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "AUTHORIZATION_POLICY",
    "CLUSTER_RBAC_CONFIG",
    "DRY_RUN_ANNOTATION",
    "RBAC_CONFIG",
    "RBAC_GROUP",
    "REQUEST_AUTHENTICATION",
    "SECURITY_GROUP",
    "SECURITY_KINDS",
    "SERVICE_ROLE",
    "SERVICE_ROLE_BINDING",
    "WHEN_KEYS",
    "AccessRule",
    "AuthorizationPolicySpec",
    "AuthzCondition",
    "AuthzOperation",
    "AuthzRule",
    "AuthzSource",
    "ClaimToHeader",
    "JwtHeader",
    "JwtRule",
    "RbacConfigSpec",
    "RbacTarget",
    "RequestAuthenticationSpec",
    "RoleConstraint",
    "RoleRef",
    "ServiceRoleBindingSpec",
    "ServiceRoleSpec",
    "Subject",
]

SECURITY_GROUP: Final = "security.istio.io/v1beta1"
RBAC_GROUP: Final = "rbac.istio.io/v1alpha1"

AUTHORIZATION_POLICY: Final = "AuthorizationPolicy"
REQUEST_AUTHENTICATION: Final = "RequestAuthentication"
SERVICE_ROLE: Final = "ServiceRole"
SERVICE_ROLE_BINDING: Final = "ServiceRoleBinding"
CLUSTER_RBAC_CONFIG: Final = "ClusterRbacConfig"
RBAC_CONFIG: Final = "RbacConfig"

SECURITY_KINDS: Final[Mapping[str, str]] = {
    AUTHORIZATION_POLICY: SECURITY_GROUP,
    REQUEST_AUTHENTICATION: SECURITY_GROUP,
    SERVICE_ROLE: RBAC_GROUP,
    SERVICE_ROLE_BINDING: RBAC_GROUP,
    CLUSTER_RBAC_CONFIG: RBAC_GROUP,
    RBAC_CONFIG: RBAC_GROUP,
}
"""Security kind -> the ``apiVersion`` it is read in."""

DRY_RUN_ANNOTATION: Final = "istio.io/dry-run"
"""``"true"`` on an AuthorizationPolicy: decide, count, log and record, but never deny."""

WHEN_KEYS: Final = (
    "request.headers",
    "source.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
"""The ``when`` keys mixerd evaluates (``request.headers`` and ``request.auth.claims`` take
``[name]``; claims may nest: ``request.auth.claims[a][b]``)."""


# --- RequestAuthentication -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JwtHeader:
    """Read the token from header ``name``, after ``prefix`` (``Bearer `` for Authorization)."""

    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ClaimToHeader:
    """Copy claim ``claim`` (dotted for nested claims) to request header ``header``."""

    header: str
    claim: str


@dataclass(frozen=True, slots=True)
class JwtRule:
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    """Inline JSON Web Key Set (a JSON text)."""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestAuthenticationSpec:
    selector: Mapping[str, str] | None
    """``selector.matchLabels``; ``None`` selects every workload of the namespace."""
    jwt_rules: tuple[JwtRule, ...] = ()


# --- AuthorizationPolicy ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthzSource:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzOperation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzCondition:
    key: str
    """As written: ``request.auth.claims[groups]``."""
    attribute: str
    """The key without its index: ``request.auth.claims``."""
    index: tuple[str, ...] = ()
    """The ``[...]`` parts of the key: ``("groups",)``."""
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """Matches when one of ``sources`` (any, when empty), one of ``operations`` (any, when
    empty) and every condition match."""

    sources: tuple[AuthzSource, ...] = ()
    operations: tuple[AuthzOperation, ...] = ()
    when: tuple[AuthzCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationPolicySpec:
    selector: Mapping[str, str] | None
    action: str = "ALLOW"
    """``ALLOW``, ``DENY`` or ``AUDIT``."""
    rules: tuple[AuthzRule, ...] = ()
    """No rules: an ALLOW policy allows nothing, a DENY or AUDIT policy matches nothing."""


# --- ServiceRole / ServiceRoleBinding / ClusterRbacConfig (rbac.istio.io/v1alpha1) --------------


@dataclass(frozen=True, slots=True)
class RoleConstraint:
    key: str
    """As written: ``destination.labels[version]``."""
    attribute: str
    index: tuple[str, ...]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessRule:
    services: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    constraints: tuple[RoleConstraint, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceRoleSpec:
    rules: tuple[AccessRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Subject:
    user: str = ""
    group: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    not_names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    not_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoleRef:
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class ServiceRoleBindingSpec:
    subjects: tuple[Subject, ...] = ()
    role_ref: RoleRef | None = None
    mode: str = "ENFORCED"
    """``ENFORCED`` or ``PERMISSIVE`` (decided and recorded, never denies: a dry run)."""


@dataclass(frozen=True, slots=True)
class RbacTarget:
    services: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RbacConfigSpec:
    mode: str = "OFF"
    """``OFF``, ``ON``, ``ON_WITH_INCLUSION`` or ``ON_WITH_EXCLUSION``."""
    inclusion: RbacTarget = RbacTarget()
    exclusion: RbacTarget = RbacTarget()
    enforcement_mode: str = "ENFORCED"
