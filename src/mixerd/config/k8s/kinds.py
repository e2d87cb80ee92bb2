"""The Kubernetes resource kinds mixerd reads its config from: one table, :data:`KINDS`.

Each entry names the API group, version, kind and plural (the collection path's last segment:
``/apis/config.istio.io/v1alpha2/namespaces/NS/rules``). Every object listed from these
collections goes through :func:`mixerd.config.parse.parse_documents`, the same path as a document
in a file: a kind the config model does not (yet) understand is reported or ignored exactly as it
would be in a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mixerd.config.model import (
    ADAPTER,
    API_VERSION,
    ATTRIBUTE_MANIFEST,
    HANDLER,
    INSTANCE,
    LEGACY_KINDS,
    QUOTA_SPEC,
    QUOTA_SPEC_BINDING,
    RULE,
    TEMPLATE,
)

__all__ = ["KINDS", "KubeKind", "plural"]


@dataclass(frozen=True, slots=True)
class KubeKind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def resource(self) -> str:
        """``plural.group``, as RBAC rules and ``kubectl get`` name it."""
        return f"{self.plural}.{self.group}"

    def path(self, namespace: str | None = None) -> str:
        """The collection path, across namespaces (``namespace`` None) or in one namespace."""
        base = f"/apis/{self.group}/{self.version}"
        if namespace is None or not self.namespaced:
            return f"{base}/{self.plural}"
        return f"{base}/namespaces/{namespace}/{self.plural}"


def plural(kind: str) -> str:
    """The plural Istio's CRDs use: lower case, ``-es`` after s, ch or sh, ``-ies`` for a final -y
    (``prometheuses``, ``cloudwatches``, ``listentries``, ``signalfxs``)."""
    k = kind.lower()
    if k.endswith(("s", "ch", "sh")):
        return k + "es"
    if k.endswith("y") and k[-2:-1] not in "aeiou":
        return k[:-1] + "ies"
    return k + "s"


_CONFIG_GROUP, _CONFIG_VERSION = API_VERSION.split("/")


def _config(kind: str) -> KubeKind:
    return KubeKind(_CONFIG_GROUP, _CONFIG_VERSION, kind, plural(kind))


KINDS: Final[tuple[KubeKind, ...]] = (
    *(
        _config(k)
        for k in (
            RULE,
            INSTANCE,
            HANDLER,
            ATTRIBUTE_MANIFEST,
            ADAPTER,
            TEMPLATE,
            QUOTA_SPEC,
            QUOTA_SPEC_BINDING,
        )
    ),
    *(_config(k) for k in sorted(LEGACY_KINDS)),
    KubeKind("security.istio.io", "v1beta1", "AuthorizationPolicy", "authorizationpolicies"),
    KubeKind("security.istio.io", "v1beta1", "RequestAuthentication", "requestauthentications"),
    KubeKind("rbac.istio.io", "v1alpha1", "ServiceRole", "serviceroles"),
    KubeKind("rbac.istio.io", "v1alpha1", "ServiceRoleBinding", "servicerolebindings"),
    KubeKind("rbac.istio.io", "v1alpha1", "ClusterRbacConfig", "clusterrbacconfigs", namespaced=False),
)
"""Every kind read from a cluster. Mixer's ``config.istio.io/v1alpha2`` kinds (with the legacy
per-adapter and per-template kinds), ``security.istio.io/v1beta1`` and ``rbac.istio.io/v1alpha1``
policies."""
