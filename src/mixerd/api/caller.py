"""Who is calling mixerd: the SPIFFE identity of the client certificate a caller presented.

The caller of mixerd is a proxy (an Envoy sidecar or gateway, nginx), not the request it asks
about: Istio's ``source.principal`` / ``source.user`` name the *request's* peer. So the identity
of the connection to mixerd has an attribute of its own, ``mixerd.caller.principal``: the one
``spiffe://`` URI SAN of the client certificate (``spiffe://cluster.local/ns/istio-system/sa/
istio-ingressgateway-service-account``), in full, with its ``spiffe://``. Every front-end sets it
through this module (Mixer API Check, quotas and Report, ext_authz gRPC and HTTP, rate limit,
access log) when its listener verifies client certificates (``--tls-client-ca``) and the
connection presented one with a SPIFFE ID; otherwise it is absent. mixerd alone sets it: a value
a caller sends among its Mixer API attributes is dropped.

A certificate with no ``spiffe://`` URI SAN, or with more than one (the SPIFFE X.509-SVID format
allows exactly one), gives no principal. Front-ends read the connection only when their listener
verifies client certificates, so plaintext and server-only TLS listeners pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CALLER_PRINCIPAL",
    "grpc_caller",
    "peercert_caller",
    "set_caller",
    "spiffe_id",
    "transport_caller",
]

CALLER_PRINCIPAL: Final = "mixerd.caller.principal"
"""The attribute holding the caller's SPIFFE ID (declared in mixerd's attribute manifest)."""

_SCHEME: Final = "spiffe://"
_MAX_LENGTH: Final = 2048  # the SPIFFE ID spec's limit


def spiffe_id(uris: Iterable[str]) -> str | None:
    """The one ``spiffe://`` URI among a certificate's URI SANs; None for none or several."""
    found: str | None = None
    for uri in uris:
        if uri.startswith(_SCHEME) and len(_SCHEME) < len(uri) <= _MAX_LENGTH:
            if found is not None:
                return None
            found = uri
    return found


def grpc_caller(context: Any) -> str | None:
    """The SPIFFE ID of a gRPC call's client certificate (a ``grpc.aio.ServicerContext``).

    gRPC puts a certificate's SPIFFE ID in the auth context as ``peer_spiffe_id`` when the
    certificate has exactly one URI SAN and it is a valid SPIFFE ID (gRPC >= 1.29); the URI SANs
    themselves are ``peer_uri``, read when a certificate has other URIs besides.
    """
    auth = context.auth_context()
    found = auth.get("peer_spiffe_id")
    if found:
        return str(found[0].decode("utf-8", "replace"))
    uris = auth.get("peer_uri")
    if not uris:
        return None
    return spiffe_id(u.decode("utf-8", "replace") for u in uris)


def peercert_caller(cert: Mapping[str, Any] | None) -> str | None:
    """The SPIFFE ID of a certificate as Python's ``ssl`` decodes it (``getpeercert()``)."""
    if not cert:
        return None
    return spiffe_id(value for kind, value in cert.get("subjectAltName", ()) if kind == "URI")


def transport_caller(transport: Any) -> str | None:
    """The SPIFFE ID of the client certificate of an asyncio TLS transport (None: plaintext, or
    no certificate)."""
    if transport is None:
        return None
    return peercert_caller(transport.get_extra_info("peercert"))


def set_caller(values: dict[str, Any], principal: str | None) -> None:
    """Give ``values`` (a request's attributes) the caller's principal, or make sure it has none."""
    if principal is None:
        values.pop(CALLER_PRINCIPAL, None)
    else:
        values[CALLER_PRINCIPAL] = principal
