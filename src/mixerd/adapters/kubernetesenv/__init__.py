"""The ``kubernetesenv`` adapter: the ``kubernetes`` attribute generator (pod and workload metadata).

For every Check and Report it looks up the source and destination pods of the request (by uid
``kubernetes://<pod>.<namespace>``, or by IP when the uid is empty) and outputs their name,
namespace, labels, IPs, service account, workload (the Deployment, StatefulSet ... owning the pod)
and, for the destination, the container serving ``destination_port``. The stock Istio config binds
these outputs to ``source.workload.name``, ``destination.labels`` and so on (``attributeBindings``
of the ``attributes`` instance).

Pods come from the Kubernetes API (list + watch of pods, ReplicaSets and ReplicationControllers)
or, for VMs, demos and tests, from a static YAML file (``podsFile``)::

    apiVersion: config.istio.io/v1alpha2
    kind: handler
    metadata: {name: kubernetesenv, namespace: istio-system}
    spec:
      compiledAdapter: kubernetesenv
      params:
        podsFile: /etc/mixerd/pods.yaml       # or kubeconfigPath: ..., or nothing (in-cluster)

Params: :mod:`mixerd.adapters.kubernetesenv.config`; lookup and workload rules:
:mod:`mixerd.adapters.kubernetesenv.cache`; the API client: :mod:`mixerd.config.k8s.api`.
"""

from mixerd.adapter import Info
from mixerd.adapters.kubernetesenv.cache import PodCache, PodInfo, Workload
from mixerd.adapters.kubernetesenv.config import DEFAULT_CONFIG, KubeEnvParams, Source
from mixerd.adapters.kubernetesenv.handler import KubernetesEnvBuilder, KubernetesEnvHandler

__all__ = [
    "INFO",
    "KubeEnvParams",
    "KubernetesEnvBuilder",
    "KubernetesEnvHandler",
    "PodCache",
    "PodInfo",
    "Source",
    "Workload",
]

INFO = Info(
    name="kubernetesenv",
    description="Generates source/destination pod and workload attributes from Kubernetes metadata.",
    templates=("kubernetes",),
    builder=KubernetesEnvBuilder,
    default_config=DEFAULT_CONFIG,
)
