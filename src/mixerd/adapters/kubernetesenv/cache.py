"""Pod metadata cache of the ``kubernetesenv`` adapter (pure: objects in, outputs out, no I/O).

Kubernetes objects (as the API serves them, or as written in a pods file) are reduced to small
frozen records: :class:`PodInfo` for pods, :class:`ControllerInfo` for ReplicaSets and
ReplicationControllers (needed only to walk owner references). :class:`PodCache` indexes pods by
``namespace/name``, by uid (``kubernetes://<name>.<namespace>``) and by pod IP, and turns a pod into
the ``kubernetes`` template's output fields.

Lookup rules (Mixer's ``kubernetesenv.go``):

* a uid ``kubernetes://<pod>.<ns>`` names pod ``<ns>/<pod>`` (split at the *last* dot: pod names may
  contain dots, namespaces cannot); a uid that is an IP address is looked up by IP; any other uid is
  used as a ``namespace/name`` key as is;
* a pod IP shared by several pods (completed Jobs) resolves to the most recently created pod.
  mixerd leaves ``hostNetwork`` pods out of the IP index: their IP is the node's, shared by every
  such pod on the node, so it identifies no pod (Mixer picked the newest of them). They are still
  found by uid.

Workload rule (Mixer's ``cache.go``, written down):

1. the pod's first owner reference with ``controller: true`` is its controller; a pod without one
   is its own workload: name = pod name, owner = the pod's ``selfLink``, or when the API server
   no longer sets it (Kubernetes >= 1.20) the link it used to set, ``/api/v1/namespaces/<ns>/pods/<name>``;
2. a ReplicaSet or ReplicationController controller known to the cache is replaced by *its*
   controller, recursively (ReplicaSet ``reviews-v1-5d9f8c7b6`` -> Deployment ``reviews-v1``); one
   without a controller stays;
3. mixerd addition: a ReplicaSet the cache does not know (no ReplicaSet watch, a pods file without
   ReplicaSets, or an event not yet seen) whose name is ``<deployment>-<hash>`` where ``<hash>`` is
   the pod's ``pod-template-hash`` label is taken to belong to Deployment ``<deployment>`` (API
   version ``apps/v1``), which is how Deployments name their ReplicaSets;
4. every other controller kind (StatefulSet, DaemonSet, Job ...) is the workload as is;
5. workload name = the controller's name, workload namespace = the pod's namespace, workload uid =
   ``istio://<ns>/workloads/<name>``, owner =
   ``kubernetes://apis/<apiVersion>/namespaces/<ns>/<lower-case kind>s/<name>``, e.g.
   ``kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1``.

Outputs hold only what is known (an empty label map or service account is left out), so the
``| "unknown"`` defaults of an instance's ``attributeBindings`` apply to the rest. Per pod the
source and destination outputs are computed once and memoized until the pod or an owning
controller changes; a lookup is a few dict operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from mixerd.attribute import IPAddress, parse_ip

__all__ = [
    "KUBE_PREFIX",
    "ControllerInfo",
    "OwnerRef",
    "PodCache",
    "PodInfo",
    "Workload",
    "key_from_uid",
    "parse_controller",
    "parse_object",
    "parse_pod",
]

KUBE_PREFIX: Final = "kubernetes://"
CONTROLLER_KINDS: Final = frozenset({"ReplicaSet", "ReplicationController"})
_MAX_OWNER_DEPTH: Final = 8
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_PORTS: Final[Mapping[int, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    api_version: str
    controller: bool = False


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the adapter needs of a pod."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    service_account: str = ""
    pod_ip: IPAddress | None = None
    host_ip: IPAddress | None = None
    host_network: bool = False
    self_link: str = ""
    owners: tuple[OwnerRef, ...] = ()
    ports: Mapping[int, str] = field(default_factory=lambda: _NO_PORTS)
    """containerPort -> name of the (first) container declaring it."""
    created: str = ""
    """``metadata.creationTimestamp`` (RFC 3339, compares as text)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def uid(self) -> str:
        return f"{KUBE_PREFIX}{self.name}.{self.namespace}"


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    """A ReplicaSet or ReplicationController: only its identity and owners matter."""

    kind: str
    namespace: str
    name: str
    owners: tuple[OwnerRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Workload:
    uid: str
    name: str
    namespace: str
    owner: str


# --- parsing Kubernetes objects ------------------------------------------------------------------


def _map(obj: Any, what: str) -> Mapping[str, Any]:
    if obj is None:
        return _EMPTY
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what}: expected a map, got {type(obj).__name__}")
    return obj


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what}.{key}: expected a string, got {value!r}")
    return value


def _ip(text: str, what: str) -> IPAddress | None:
    if not text:
        return None
    try:
        return parse_ip(text)
    except ValueError:
        raise ValueError(f"{what}: '{text}' is not an IP address") from None


def _owners(meta: Mapping[str, Any]) -> tuple[OwnerRef, ...]:
    refs = meta.get("ownerReferences")
    if not refs:
        return ()
    if not isinstance(refs, list):
        raise ValueError("metadata.ownerReferences: expected a list")
    out = []
    for i, ref in enumerate(refs):
        r = _map(ref, f"metadata.ownerReferences[{i}]")
        out.append(
            OwnerRef(
                kind=_str(r, "kind", "ownerReference"),
                name=_str(r, "name", "ownerReference"),
                api_version=_str(r, "apiVersion", "ownerReference"),
                controller=r.get("controller") is True,
            )
        )
    return tuple(out)


def _meta(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    meta = _map(obj.get("metadata"), "metadata")
    name = _str(meta, "name", "metadata")
    if not name:
        raise ValueError("metadata.name is missing")
    namespace = _str(meta, "namespace", "metadata") or "default"
    return meta, namespace, name


def _timestamp(meta: Mapping[str, Any]) -> str:
    value = meta.get("creationTimestamp")
    if value is None:
        return ""
    if hasattr(value, "isoformat"):  # a YAML file may hold a real timestamp
        return str(value.isoformat())
    return str(value)


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """A pod object (API JSON or YAML) -> :class:`PodInfo`; ``ValueError`` if malformed."""
    meta, namespace, name = _meta(obj)
    where = f"pod {namespace}/{name}"
    try:
        labels = _map(meta.get("labels"), "metadata.labels")
        spec = _map(obj.get("spec"), "spec")
        status = _map(obj.get("status"), "status")
        ports: dict[int, str] = {}
        containers = spec.get("containers") or []
        if not isinstance(containers, list):
            raise ValueError("spec.containers: expected a list")
        for i, c in enumerate(containers):
            container = _map(c, f"spec.containers[{i}]")
            cname = _str(container, "name", f"spec.containers[{i}]")
            for j, p in enumerate(container.get("ports") or ()):
                port = _map(p, f"spec.containers[{i}].ports[{j}]").get("containerPort")
                if isinstance(port, int) and not isinstance(port, bool) and port > 0:
                    ports.setdefault(port, cname)
        service_account = _str(spec, "serviceAccountName", "spec") or _str(spec, "serviceAccount", "spec")
        return PodInfo(
            namespace=namespace,
            name=name,
            labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}) if labels else _EMPTY,
            service_account=service_account,
            pod_ip=_ip(_str(status, "podIP", "status"), "status.podIP"),
            host_ip=_ip(_str(status, "hostIP", "status"), "status.hostIP"),
            host_network=spec.get("hostNetwork") is True,
            self_link=_str(meta, "selfLink", "metadata"),
            owners=_owners(meta),
            ports=MappingProxyType(ports) if ports else _NO_PORTS,
            created=_timestamp(meta),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_controller(kind: str, obj: Mapping[str, Any]) -> ControllerInfo:
    """A ReplicaSet or ReplicationController object -> :class:`ControllerInfo`."""
    meta, namespace, name = _meta(obj)
    try:
        return ControllerInfo(kind, namespace, name, _owners(meta))
    except ValueError as exc:
        raise ValueError(f"{kind} {namespace}/{name}: {exc}") from None


def parse_object(obj: Mapping[str, Any], default_kind: str = "") -> PodInfo | ControllerInfo | None:
    """A pod or controller by its ``kind`` (``default_kind`` when the object has none);
    ``None`` for kinds the cache does not keep (Deployment, Service ...)."""
    kind = obj.get("kind") or default_kind
    if kind == "Pod":
        return parse_pod(obj)
    if kind in CONTROLLER_KINDS:
        return parse_controller(str(kind), obj)
    return None


def key_from_uid(uid: str) -> str:
    """Mixer's ``keyFromUID``: ``kubernetes://<pod>.<ns>`` -> ``<ns>/<pod>``; other text as is."""
    full = uid.removeprefix(KUBE_PREFIX)
    dot = full.rfind(".")
    if dot != -1:
        return f"{full[dot + 1 :]}/{full[:dot]}"
    return full


def _is_ip(text: str) -> IPAddress | None:
    if not text or text.startswith(KUBE_PREFIX) or not (text[0].isdigit() or ":" in text):
        return None
    try:
        return parse_ip(text)
    except ValueError:
        return None


# --- the cache -------------------------------------------------------------------------------------


class PodCache:
    """Pods and their controllers, indexed for the attribute generator."""

    __slots__ = ("__weakref__", "_by_ip", "_by_key", "_by_uid", "_controllers", "_ips", "_memo", "generation")

    def __init__(self) -> None:
        self._by_key: dict[str, PodInfo] = {}
        self._by_uid: dict[str, PodInfo] = {}
        self._ips: dict[IPAddress, dict[str, str]] = {}
        """pod IP -> {pod key: creation time} of every pod with that IP."""
        self._by_ip: dict[IPAddress, PodInfo] = {}
        """pod IP -> the newest pod with that IP."""
        self._controllers: dict[tuple[str, str, str], ControllerInfo] = {}
        self._memo: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.generation = 0
        """Bumped on every change (tests and metrics)."""

    # -- size ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def controllers(self) -> int:
        return len(self._controllers)

    def pods(self) -> list[PodInfo]:
        return list(self._by_key.values())

    # -- updates ---------------------------------------------------------------------------------

    def upsert(self, item: PodInfo | ControllerInfo) -> None:
        if isinstance(item, PodInfo):
            self.upsert_pod(item)
        else:
            self.upsert_controller(item)

    def delete(self, item: PodInfo | ControllerInfo) -> None:
        if isinstance(item, PodInfo):
            self.delete_pod(item.namespace, item.name)
        else:
            self.delete_controller(item.kind, item.namespace, item.name)

    def upsert_pod(self, pod: PodInfo) -> None:
        key = pod.key
        old = self._by_key.get(key)
        if old is not None:
            self._unindex_ip(old)
        self._by_key[key] = pod
        self._by_uid[pod.uid] = pod
        self._memo.pop(key, None)
        if pod.pod_ip is not None and not pod.host_network:
            self._ips.setdefault(pod.pod_ip, {})[key] = pod.created
            self._elect(pod.pod_ip)
        self.generation += 1

    def delete_pod(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        old = self._by_key.pop(key, None)
        if old is None:
            return
        self._by_uid.pop(old.uid, None)
        self._memo.pop(key, None)
        self._unindex_ip(old)
        self.generation += 1

    def upsert_controller(self, ctl: ControllerInfo) -> None:
        ident = (ctl.kind, ctl.namespace, ctl.name)
        old = self._controllers.get(ident)
        self._controllers[ident] = ctl
        if old is None or old.owners != ctl.owners:
            self._memo.clear()
        self.generation += 1

    def delete_controller(self, kind: str, namespace: str, name: str) -> None:
        if self._controllers.pop((kind, namespace, name), None) is not None:
            self._memo.clear()
            self.generation += 1

    def replace(self, kinds: Iterable[str], items: Iterable[PodInfo | ControllerInfo]) -> None:
        """Make the objects of ``kinds`` (``Pod``, ``ReplicaSet``, ...) exactly ``items`` (a re-list)."""
        wanted = set(kinds)
        if "Pod" in wanted:
            self._by_key.clear()
            self._by_uid.clear()
            self._ips.clear()
            self._by_ip.clear()
        for ident in [i for i in self._controllers if i[0] in wanted]:
            del self._controllers[ident]
        self._memo.clear()
        for item in items:
            self.upsert(item)
        self.generation += 1

    def copy_from(self, other: PodCache) -> None:
        """Start from ``other``'s content (a replacement handler serving until its own list arrives)."""
        self.replace(["Pod", *CONTROLLER_KINDS], [*other._by_key.values(), *other._controllers.values()])

    def _unindex_ip(self, pod: PodInfo) -> None:
        ip = pod.pod_ip
        if ip is None:
            return
        holders = self._ips.get(ip)
        if holders is None or holders.pop(pod.key, None) is None:
            return
        if holders:
            self._elect(ip)
        else:
            del self._ips[ip]
            self._by_ip.pop(ip, None)

    def _elect(self, ip: IPAddress) -> None:
        holders = self._ips[ip]
        newest = max(holders.items(), key=lambda kv: (kv[1], kv[0]))[0]
        self._by_ip[ip] = self._by_key[newest]

    # -- lookups ---------------------------------------------------------------------------------

    def pod_by_ip(self, ip: IPAddress) -> PodInfo | None:
        return self._by_ip.get(ip)

    def pod(self, uid: str) -> PodInfo | None:
        """The pod a uid (``kubernetes://<pod>.<ns>``), an IP text or a ``ns/name`` key names."""
        pod = self._by_uid.get(uid)
        if pod is not None:
            return pod
        if uid.startswith(KUBE_PREFIX):
            # "kubernetes://<name>.<ns>" is indexed by uid already; only a dot-less rest can differ
            rest = uid[len(KUBE_PREFIX) :]
            return None if "." in rest else self._by_key.get(rest)
        ip = _is_ip(uid)
        if ip is not None:
            return self._by_ip.get(ip)
        return self._by_key.get(key_from_uid(uid))

    def workload(self, pod: PodInfo) -> Workload:
        ref = self._root_controller(pod.namespace, pod.owners, pod.labels, 0)
        ns = pod.namespace
        if ref is None:
            name = pod.name
            owner = pod.self_link or f"/api/v1/namespaces/{ns}/pods/{name}"
        else:
            name = ref.name
            owner = f"{KUBE_PREFIX}apis/{ref.api_version}/namespaces/{ns}/{ref.kind.lower()}s/{name}"
        return Workload(f"istio://{ns}/workloads/{name}", name, ns, owner)

    def _root_controller(
        self, namespace: str, owners: tuple[OwnerRef, ...], labels: Mapping[str, str], depth: int
    ) -> OwnerRef | None:
        for ref in owners:
            if not ref.controller:
                continue
            if ref.kind in CONTROLLER_KINDS and depth < _MAX_OWNER_DEPTH:
                ctl = self._controllers.get((ref.kind, namespace, ref.name))
                if ctl is not None:
                    root = self._root_controller(namespace, ctl.owners, _EMPTY, depth + 1)
                    if root is not None:
                        return root
                elif ref.kind == "ReplicaSet":
                    pod_hash = labels.get("pod-template-hash", "")
                    suffix = f"-{pod_hash}"
                    if pod_hash and ref.name.endswith(suffix) and len(ref.name) > len(suffix):
                        return OwnerRef("Deployment", ref.name[: -len(suffix)], "apps/v1", True)
            return ref
        return None

    def outputs(self, pod: PodInfo) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pod's (source, destination) output fields, memoized. Callers must not mutate them."""
        memo = self._memo.get(pod.key)
        if memo is None:
            memo = (self._fields(pod, "source_"), self._fields(pod, "destination_"))
            self._memo[pod.key] = memo
        return memo

    def _fields(self, pod: PodInfo, side: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if pod.labels:
            out[side + "labels"] = pod.labels
        out[side + "pod_name"] = pod.name
        out[side + "namespace"] = pod.namespace
        out[side + "pod_uid"] = pod.uid
        if pod.service_account:
            out[side + "service_account_name"] = pod.service_account
        if pod.pod_ip is not None:
            out[side + "pod_ip"] = pod.pod_ip
        if pod.host_ip is not None:
            out[side + "host_ip"] = pod.host_ip
        wl = self.workload(pod)
        out[side + "workload_uid"] = wl.uid
        out[side + "workload_name"] = wl.name
        out[side + "workload_namespace"] = wl.namespace
        if wl.owner:
            out[side + "owner"] = wl.owner
        return out

    def generate(
        self,
        source_uid: str,
        source_ip: IPAddress | None,
        destination_uid: str,
        destination_ip: IPAddress | None,
        destination_port: int,
    ) -> dict[str, Any]:
        """The ``kubernetes`` template's outputs for one instance: only the fields that are known.

        Each side is looked up by uid when it has one, else by IP (an unspecified or unknown IP
        finds nothing); the destination container is the one declaring ``destination_port``.
        """
        out: dict[str, Any] = {}
        if destination_uid:
            pod = self.pod(destination_uid)
        elif destination_ip is not None:
            pod = self._by_ip.get(destination_ip)
        else:
            pod = None
        if pod is not None:
            out.update(self.outputs(pod)[1])
            if destination_port > 0:
                container = pod.ports.get(destination_port)
                if container:
                    out["destination_container_name"] = container
        if source_uid:
            pod = self.pod(source_uid)
        elif source_ip is not None:
            pod = self._by_ip.get(source_ip)
        else:
            pod = None
        if pod is not None:
            out.update(self.outputs(pod)[0])
        return out
