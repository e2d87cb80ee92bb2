"""The ``kubernetesenv`` adapter's params (pure, no I/O).

Mixer's params (``mixer/adapter/kubernetesenv/config/config.proto``), camelCase or snake_case:

==============================  =========  =====================================================
field                           default    meaning
==============================  =========  =====================================================
``kubeconfigPath``              (none)     kubeconfig file for the API source; without it the
                                           ``KUBECONFIG`` environment variable, then the in-cluster
                                           service account
``cacheRefreshDuration``        5m         API source: how long one watch request runs before it
                                           is renewed (resuming, not re-listing); file source: how
                                           often the file is checked for changes
``clusterRegistriesNamespace``  (none)     accepted and ignored: mixerd watches one cluster (Mixer
                                           read remote-cluster secrets from this namespace)
==============================  =========  =====================================================

mixerd-specific params:

=================  =======================  =========================================================
``podsFile``       (none)                   a YAML file of pods (and optionally ReplicaSets and
                                            ReplicationControllers) to use instead of an API
                                            server: VMs, demos, tests. Multi-document YAML, a
                                            ``kind: List`` (e.g. ``kubectl get pods -A -o yaml``) or a
                                            top-level list; objects without ``kind`` are pods.
``source``         ``file`` with podsFile,  ``kubernetes`` (list + watch the API server) or ``file``
                   else ``kubernetes``      (``podsFile``); the two sources are exclusive
=================  =======================  =========================================================

The environment variable ``MIXERD_KUBERNETESENV_PODS_FILE`` supplies ``podsFile`` to handlers that
set neither ``podsFile`` nor ``kubeconfigPath`` nor ``source``: it lets an unchanged Istio config
(whose ``kubernetesenv`` handler has no params) run on VMs or in tests from a pods file.
"""

from __future__ import annotations

import datetime as _dt
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixerd.adapter import ConfigError, Params

__all__ = ["DEFAULT_CONFIG", "PODS_FILE_ENV", "KubeEnvParams", "Source", "parse_params"]

PODS_FILE_ENV: Final = "MIXERD_KUBERNETESENV_PODS_FILE"

_KNOWN: Final = (
    "kubeconfig_path",
    "cache_refresh_duration",
    "cluster_registries_namespace",
    "pods_file",
    "source",
)

DEFAULT_CONFIG: Final[Mapping[str, Any]] = {"cacheRefreshDuration": "300s"}


class Source(enum.Enum):
    KUBERNETES = "kubernetes"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class KubeEnvParams:
    source: Source = Source.KUBERNETES
    kubeconfig_path: str = ""
    cache_refresh: _dt.timedelta = _dt.timedelta(minutes=5)
    cluster_registries_namespace: str = ""
    pods_file: str = ""


def parse_params(
    config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> tuple[KubeEnvParams, list[ConfigError]]:
    p = Params(config)
    env = os.environ if environ is None else environ
    kubeconfig = p.str("kubeconfig_path")
    refresh = p.duration("cache_refresh_duration", default=_dt.timedelta(minutes=5), positive=True)
    registries = p.str("cluster_registries_namespace")
    pods_file = p.str("pods_file")
    if not (pods_file or kubeconfig or p.has("source")):
        pods_file = env.get(PODS_FILE_ENV, "")
    default_source = Source.FILE if pods_file else Source.KUBERNETES
    source = p.enum("source", Source, default_source)
    if source is Source.FILE:
        if not pods_file:
            p.error(p.raw("pods_file")[0], "required when source is file")
        if kubeconfig:
            p.error(p.raw("kubeconfig_path")[0], "only used with source kubernetes (podsFile is set)")
    elif pods_file:
        p.error(p.raw("pods_file")[0], "only read with source file (source is kubernetes)")
    errors = p.errors + p.unknown_fields(_KNOWN)
    return KubeEnvParams(source, kubeconfig, refresh, registries, pods_file), errors
