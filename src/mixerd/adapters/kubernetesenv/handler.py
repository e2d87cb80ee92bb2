"""The ``kubernetesenv`` handler: the ``kubernetes`` attribute generator over a :class:`PodCache`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixerd.adapter import Builder, ConfigError, Env, Handler, InstanceInfo
from mixerd.adapters.kubernetesenv.cache import PodCache
from mixerd.adapters.kubernetesenv.config import KubeEnvParams, Source, parse_params
from mixerd.adapters.kubernetesenv.sources import ApiSource, FileSource
from mixerd.config.k8s.api import resolve_config

__all__ = ["KubernetesEnvBuilder", "KubernetesEnvHandler"]


class KubernetesEnvHandler(Handler):
    """Generates pod and workload attributes for the source and destination of a request."""

    def __init__(self, cache: PodCache, source: FileSource | ApiSource) -> None:
        self.cache = cache
        self.source = source
        self._generate = cache.generate

    def generate_kubernetes(self, instance: Any) -> dict[str, Any]:
        """Only the output fields that are known (see :meth:`PodCache.generate`)."""
        return self._generate(
            instance.source_uid,
            instance.source_ip,
            instance.destination_uid,
            instance.destination_ip,
            instance.destination_port,
        )

    @property
    def synced(self) -> bool:
        """Whether the pods have been loaded / listed at least once."""
        return self.source.synced

    async def wait_synced(self, timeout: float | None = None) -> bool:
        return await self.source.wait_synced(timeout)

    def close(self) -> None:
        """Nothing to release: the watch task belongs to the handler's ``Env`` (it closes its client)."""


class KubernetesEnvBuilder(Builder):
    """Validates the params; ``build`` loads the pods file or resolves the API connection config
    (raising on a missing file or an unusable kubeconfig) and starts the source."""

    def __init__(self, config: Mapping[str, Any], instances: Mapping[str, InstanceInfo]) -> None:
        super().__init__(config, instances)
        self.params: KubeEnvParams
        self.params, self._errors = parse_params(config)

    def validate(self) -> list[ConfigError]:
        return list(self._errors)

    def build(self, env: Env) -> KubernetesEnvHandler:
        params = self.params
        cache = PodCache()
        refresh = params.cache_refresh.total_seconds()
        source: FileSource | ApiSource
        if params.source is Source.FILE:
            source = FileSource(params.pods_file, cache, env, refresh)
        else:
            source = ApiSource(resolve_config(params.kubeconfig_path), cache, env, watch_seconds=int(refresh))
        return KubernetesEnvHandler(cache, source)
