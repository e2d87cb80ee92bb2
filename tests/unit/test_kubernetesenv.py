"""kubernetesenv without an API server: the pod cache, the workload rules, the static pods file
source (tests/data/pods.yaml) and the stock Istio ``attributes`` instance with its bindings."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.adapter import Env, ManualClock
from mixerd.adapter.testing import AdapterHarness, HarnessConfigError
from mixerd.adapters.kubernetesenv import INFO, KubernetesEnvHandler, PodCache
from mixerd.adapters.kubernetesenv.cache import (
    ControllerInfo,
    OwnerRef,
    PodInfo,
    key_from_uid,
    parse_object,
    parse_pod,
)
from mixerd.adapters.kubernetesenv.config import Source, parse_params
from mixerd.adapters.kubernetesenv.sources import FileSource, load_pods_file
from mixerd.attribute import IPAddress, stock_manifest
from mixerd.config.k8s.api import (
    KubeConfigError,
    in_cluster_config,
    load_kubeconfig,
    resolve_config,
)
from mixerd.templates import TEMPLATES, KubernetesInstance, compile_instance, compile_output_mapper
from tests.conformance_data import conformance_dir

REPO = Path(__file__).resolve().parents[2]
PODS = REPO / "tests" / "data" / "pods.yaml"

PRODUCTPAGE = "kubernetes://productpage-v1-6b746f74dc-9stvs.default"
REVIEWS = "kubernetes://reviews-v2-7d7b8c9f4c-x2x7p.default"
RATINGS = "kubernetes://ratings-0.default"
DEBUG = "kubernetes://debug-shell.tools"
EXPORTER = "kubernetes://node-exporter-abcde.kube-system"
OUTPUT_FIELDS = set(TEMPLATES["kubernetes"].outputs)


def pod(name: str, ns: str = "default", **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {},
        "status": {},
    }
    for key, value in fields.items():
        section, _, leaf = key.partition("__")
        obj[section][leaf] = value
    return obj


def owned(kind: str, name: str, api: str = "apps/v1", controller: bool = True) -> list[dict[str, Any]]:
    return [{"apiVersion": api, "kind": kind, "name": name, "controller": controller}]


def file_cache() -> PodCache:
    c = PodCache()
    c.replace(["Pod", "ReplicaSet", "ReplicationController"], load_pods_file(PODS))
    return c


def instance(
    source_uid: str = "",
    source_ip: str | None = None,
    destination_uid: str = "",
    destination_ip: str | None = None,
    destination_port: int = 0,
) -> KubernetesInstance:
    return KubernetesInstance(
        "attributes.instance.istio-system",
        source_uid=source_uid,
        source_ip=IPAddress.parse(source_ip) if source_ip else None,
        destination_uid=destination_uid,
        destination_ip=IPAddress.parse(destination_ip) if destination_ip else None,
        destination_port=destination_port,
    )


# --- parsing and keys -------------------------------------------------------------------------------


def test_key_from_uid_splits_at_the_last_dot() -> None:
    assert key_from_uid("kubernetes://reviews-v1-abc.default") == "default/reviews-v1-abc"
    assert key_from_uid("kubernetes://my.dotted.pod.prod") == "prod/my.dotted.pod"
    assert key_from_uid("name.ns") == "ns/name"
    assert key_from_uid("kubernetes://ns/name") == "ns/name"


def test_parse_pod_reads_what_the_adapter_needs() -> None:
    info = parse_pod(
        {
            "metadata": {
                "name": "p",
                "labels": {"app": "a", "n": 1},
                "selfLink": "/api/v1/namespaces/default/pods/p",
                "creationTimestamp": "2020-01-01T00:00:00Z",
                "ownerReferences": owned("Job", "j", "batch/v1", controller=False),
            },
            "spec": {
                "serviceAccount": "legacy-sa",
                "containers": [
                    {"name": "one", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
                    {"name": "two", "ports": [{"containerPort": 80}, {"containerPort": "x"}]},
                ],
            },
            "status": {"podIP": "10.0.0.1", "hostIP": "192.168.0.1"},
        }
    )
    assert info.namespace == "default"  # a pod without a namespace lives in "default"
    assert dict(info.labels) == {"app": "a", "n": "1"}
    assert info.service_account == "legacy-sa"
    assert dict(info.ports) == {80: "one", 81: "one"}  # the first container declaring a port wins
    assert info.pod_ip == IPAddress.parse("10.0.0.1") and len(info.pod_ip.packed) == 16
    assert info.owners == (OwnerRef("Job", "j", "batch/v1", False),)
    assert info.uid == "kubernetes://p.default" and info.key == "default/p"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"metadata": {}}, "metadata.name is missing"),
        (pod("p", status__podIP="not-an-ip"), "status.podIP"),
        (pod("p", spec__containers={"a": 1}), "spec.containers"),
        ({"metadata": {"name": "p", "ownerReferences": {"kind": "x"}}}, "ownerReferences"),
        ({"metadata": {"name": "p", "labels": ["a"]}}, "metadata.labels"),
    ],
)
def test_malformed_pods_are_errors_naming_the_pod(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pod(obj)


def test_parse_object_by_kind() -> None:
    assert isinstance(parse_object({"kind": "Pod", "metadata": {"name": "p"}}), PodInfo)
    rs = parse_object({"kind": "ReplicaSet", "metadata": {"name": "r", "namespace": "n"}})
    assert rs == ControllerInfo("ReplicaSet", "n", "r")
    assert parse_object({"kind": "Service", "metadata": {"name": "s"}}) is None
    assert isinstance(parse_object({"metadata": {"name": "p"}}, "Pod"), PodInfo)


# --- workloads ----------------------------------------------------------------------------------------


def workload_of(objs: list[dict[str, Any]], name: str, ns: str = "default") -> tuple[str, str, str]:
    c = PodCache()
    for obj in objs:
        item = parse_object(obj)
        assert item is not None
        c.upsert(item)
    p = c.pod(f"kubernetes://{name}.{ns}")
    assert p is not None
    wl = c.workload(p)
    assert wl.namespace == ns
    assert wl.uid == f"istio://{ns}/workloads/{wl.name}"
    return wl.name, wl.owner, wl.uid


def test_a_replicaset_owned_by_a_deployment_gives_the_deployment() -> None:
    objs = [
        pod("web-5f7-x", metadata__ownerReferences=owned("ReplicaSet", "web-5f7")),
        {
            "kind": "ReplicaSet",
            "metadata": {"name": "web-5f7", "ownerReferences": owned("Deployment", "web")},
        },
    ]
    assert workload_of(objs, "web-5f7-x") == (
        "web",
        "kubernetes://apis/apps/v1/namespaces/default/deployments/web",
        "istio://default/workloads/web",
    )


def test_an_unknown_replicaset_named_after_the_pod_template_hash_gives_the_deployment() -> None:
    objs = [
        pod(
            "web-5f7-x",
            metadata__ownerReferences=owned("ReplicaSet", "web-5f7"),
            metadata__labels={"pod-template-hash": "5f7"},
        )
    ]
    assert workload_of(objs, "web-5f7-x")[:2] == (
        "web",
        "kubernetes://apis/apps/v1/namespaces/default/deployments/web",
    )


def test_an_unknown_replicaset_without_the_hash_is_the_workload_itself() -> None:
    objs = [pod("web-5f7-x", metadata__ownerReferences=owned("ReplicaSet", "web-5f7"))]
    assert workload_of(objs, "web-5f7-x")[:2] == (
        "web-5f7",
        "kubernetes://apis/apps/v1/namespaces/default/replicasets/web-5f7",
    )


def test_a_replicaset_without_a_controller_is_the_workload() -> None:
    objs = [
        pod("r-1", metadata__ownerReferences=owned("ReplicaSet", "r")),
        {
            "kind": "ReplicaSet",
            "metadata": {"name": "r", "ownerReferences": owned("Deployment", "d", controller=False)},
        },
    ]
    assert workload_of(objs, "r-1")[0] == "r"


def test_a_replication_controller_and_its_owner() -> None:
    objs = [
        pod("rc-1", metadata__ownerReferences=owned("ReplicationController", "rc", "v1")),
        {
            "kind": "ReplicationController",
            "metadata": {
                "name": "rc",
                "ownerReferences": owned("DeploymentConfig", "app", "apps.openshift.io/v1"),
            },
        },
    ]
    assert workload_of(objs, "rc-1")[:2] == (
        "app",
        "kubernetes://apis/apps.openshift.io/v1/namespaces/default/deploymentconfigs/app",
    )
    assert workload_of(objs[:1], "rc-1")[:2] == (
        "rc",
        "kubernetes://apis/v1/namespaces/default/replicationcontrollers/rc",
    )


def test_only_the_controller_reference_counts() -> None:
    objs = [
        pod(
            "p",
            metadata__ownerReferences=[
                *owned("ConfigMap", "not-me", "v1", controller=False),
                *owned("StatefulSet", "db"),
            ],
        )
    ]
    assert workload_of(objs, "p")[:2] == (
        "db",
        "kubernetes://apis/apps/v1/namespaces/default/statefulsets/db",
    )


def test_a_bare_pod_is_its_own_workload() -> None:
    assert workload_of([pod("solo", "ns1")], "solo", "ns1")[:2] == (
        "solo",
        "/api/v1/namespaces/ns1/pods/solo",
    )
    linked = pod("solo", "ns1", metadata__selfLink="/api/v1/namespaces/ns1/pods/solo-link")
    assert workload_of([linked], "solo", "ns1")[1] == "/api/v1/namespaces/ns1/pods/solo-link"


def test_owner_cycles_end() -> None:
    objs = [
        pod("p", metadata__ownerReferences=owned("ReplicaSet", "a")),
        {"kind": "ReplicaSet", "metadata": {"name": "a", "ownerReferences": owned("ReplicaSet", "b")}},
        {"kind": "ReplicaSet", "metadata": {"name": "b", "ownerReferences": owned("ReplicaSet", "a")}},
    ]
    assert workload_of(objs, "p")[0] in ("a", "b")


def test_a_replicaset_arriving_later_changes_the_memoized_workload() -> None:
    c = PodCache()
    c.upsert(parse_pod(pod("web-5f7-x", metadata__ownerReferences=owned("ReplicaSet", "web-5f7"))))
    first = c.generate("kubernetes://web-5f7-x.default", None, "", None, 0)
    assert first["source_workload_name"] == "web-5f7"
    c.upsert(
        ControllerInfo("ReplicaSet", "default", "web-5f7", (OwnerRef("Deployment", "web", "apps/v1", True),))
    )
    assert c.generate("kubernetes://web-5f7-x.default", None, "", None, 0)["source_workload_name"] == "web"
    c.delete_controller("ReplicaSet", "default", "web-5f7")
    assert (
        c.generate("kubernetes://web-5f7-x.default", None, "", None, 0)["source_workload_name"] == "web-5f7"
    )


# --- the IP index -------------------------------------------------------------------------------------


def test_a_shared_ip_resolves_to_the_newest_pod() -> None:
    c = PodCache()
    old = parse_pod(
        pod("job-old", status__podIP="10.1.1.1", metadata__creationTimestamp="2020-01-01T00:00:00Z")
    )
    new = parse_pod(
        pod("job-new", status__podIP="10.1.1.1", metadata__creationTimestamp="2020-01-02T00:00:00Z")
    )
    ip = IPAddress(bytes([10, 1, 1, 1]))  # the 4-byte form finds the 16-byte one
    c.upsert(new)
    c.upsert(old)
    assert c.pod_by_ip(ip) == new
    assert c.pod("10.1.1.1") == new  # a uid that is an IP address
    c.delete_pod("default", "job-new")
    assert c.pod_by_ip(ip) == old
    moved = parse_pod(pod("job-old", status__podIP="10.1.1.2"))
    c.upsert(moved)
    assert c.pod_by_ip(ip) is None
    assert c.pod_by_ip(IPAddress.parse("10.1.1.2")) == moved


def test_host_network_pods_are_not_found_by_ip() -> None:
    c = file_cache()
    node = IPAddress.parse("10.128.0.5")
    assert c.pod_by_ip(node) is None
    assert c.pod(EXPORTER) is not None


def test_replace_and_copy() -> None:
    c = file_cache()
    assert len(c) == 5 and c.controllers == 1
    other = PodCache()
    other.copy_from(c)
    assert len(other) == 5 and other.controllers == 1
    assert other.generate(REVIEWS, None, "", None, 0) == c.generate(REVIEWS, None, "", None, 0)
    c.replace(["Pod"], [parse_pod(pod("only"))])
    assert [p.name for p in c.pods()] == ["only"] and c.controllers == 1
    assert c.pod_by_ip(IPAddress.parse("10.44.0.11")) is None


# --- generate over the pods file ------------------------------------------------------------------------


@pytest.fixture
async def harness() -> AsyncIterator[AdapterHarness]:
    h = AdapterHarness(
        INFO,
        {"podsFile": str(PODS)},
        {
            "attributes": (
                "kubernetes",
                {
                    "source_uid": 'source.uid | ""',
                    "source_ip": 'source.ip | ip("0.0.0.0")',
                    "destination_uid": 'destination.uid | ""',
                    "destination_ip": 'destination.ip | ip("0.0.0.0")',
                    "destination_port": "destination.port | 0",
                },
            )
        },
    )
    yield h
    await h.close()


async def test_lookup_by_uid_fills_both_sides(harness: AdapterHarness) -> None:
    out = await harness.generate(
        "attributes", {"source.uid": REVIEWS, "destination.uid": PRODUCTPAGE, "destination.port": 9080}
    )
    assert set(out) <= OUTPUT_FIELDS
    assert out["source_pod_name"] == "reviews-v2-7d7b8c9f4c-x2x7p"
    assert out["source_workload_name"] == "reviews-v2"
    assert out["source_workload_uid"] == "istio://default/workloads/reviews-v2"
    assert out["source_service_account_name"] == "bookinfo-reviews"
    assert out["source_pod_uid"] == REVIEWS
    assert out["destination_workload_name"] == "productpage-v1"
    assert (
        out["destination_owner"] == "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1"
    )
    assert out["destination_container_name"] == "productpage"
    assert out["destination_pod_ip"] == IPAddress.parse("10.44.0.11")
    assert out["destination_host_ip"] == IPAddress.parse("10.128.0.5")
    assert dict(out["destination_labels"]) == {
        "app": "productpage",
        "version": "v1",
        "pod-template-hash": "6b746f74dc",
    }
    assert out["destination_namespace"] == "default"


async def test_lookup_by_ip_when_the_uid_is_empty(harness: AdapterHarness) -> None:
    out = await harness.generate(
        "attributes",
        {
            "source.ip": IPAddress.parse("10.44.0.99"),
            "destination.ip": IPAddress.parse("fd00:10:44::12"),
            "destination.port": 9102,
        },
    )
    assert out["source_pod_name"] == "debug-shell" and out["source_namespace"] == "tools"
    assert out["source_workload_name"] == "debug-shell"
    assert "source_labels" not in out and "source_service_account_name" not in out
    assert out["destination_pod_name"] == "ratings-0"
    assert out["destination_container_name"] == "metrics-exporter"
    assert out["destination_owner"] == "kubernetes://apis/apps/v1/namespaces/default/statefulsets/ratings"


@pytest.mark.parametrize(
    ("port", "container"), [(9080, "ratings"), (9081, "ratings"), (15090, "istio-proxy")]
)
async def test_destination_container_by_port(harness: AdapterHarness, port: int, container: str) -> None:
    out = await harness.generate("attributes", {"destination.uid": RATINGS, "destination.port": port})
    assert out["destination_container_name"] == container


@pytest.mark.parametrize("port", [0, 1234])
async def test_no_container_for_other_ports(harness: AdapterHarness, port: int) -> None:
    out = await harness.generate("attributes", {"destination.uid": RATINGS, "destination.port": port})
    assert out["destination_pod_name"] == "ratings-0"
    assert "destination_container_name" not in out


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"source.uid": "kubernetes://nobody.default", "destination.uid": "kubernetes://nobody.default"},
        {"source.ip": IPAddress.parse("10.9.9.9"), "destination.ip": IPAddress.parse("0.0.0.0")},
        {"source.ip": IPAddress.parse("10.128.0.5")},  # a node IP: only host-network pods have it
    ],
)
async def test_unknown_pods_give_no_outputs(harness: AdapterHarness, attrs: dict[str, Any]) -> None:
    assert await harness.generate("attributes", attrs) == {}


async def test_a_uid_that_is_not_found_does_not_fall_back_to_the_ip(harness: AdapterHarness) -> None:
    out = await harness.generate(
        "attributes", {"source.uid": "kubernetes://gone.default", "source.ip": IPAddress.parse("10.44.0.99")}
    )
    assert out == {}


async def test_generate_is_a_plain_sync_method(harness: AdapterHarness) -> None:
    handler = harness.handler
    assert isinstance(handler, KubernetesEnvHandler)
    assert handler.synced and await handler.wait_synced(0)
    out = handler.generate_kubernetes(instance(source_uid=DEBUG))
    assert out["source_workload_name"] == "debug-shell"


# --- the stock Istio config ---------------------------------------------------------------------------


@cache
def stock_attributes_instance() -> Mapping[str, Any]:
    path = conformance_dir() / "stock-telemetry-config" / "rendered" / "instances.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["metadata"]["name"] == "attributes":
            return doc["spec"]  # type: ignore[no-any-return]
    raise AssertionError("no attributes instance in the stock config")


def stock_pipeline() -> tuple[Any, Any]:
    spec = stock_attributes_instance()
    assert spec["compiledTemplate"] == "kubernetes"
    manifest = stock_manifest()
    builder = compile_instance("attributes.instance.istio-system", "kubernetes", spec["params"], manifest)
    mapper = compile_output_mapper("kubernetes", spec["attributeBindings"], manifest)
    return builder, mapper


def stock_handler() -> KubernetesEnvHandler:
    # the stock handler has `params: null`; a pods file stands in for the cluster
    builder = INFO.builder({"podsFile": str(PODS)}, {})
    assert builder.validate() == []
    handler = builder.build(Env("kubernetesenv.handler.istio-system", clock=ManualClock()))
    assert isinstance(handler, KubernetesEnvHandler)
    return handler


def test_the_stock_attributes_instance_produces_workload_attributes() -> None:
    builder, mapper = stock_pipeline()
    handler = stock_handler()
    bag = {"source.uid": REVIEWS, "destination.uid": PRODUCTPAGE, "destination.port": 9080}
    attrs = mapper.map(handler.generate_kubernetes(builder.build(bag)))
    assert attrs["source.workload.name"] == "reviews-v2"
    assert attrs["source.workload.namespace"] == "default"
    assert attrs["source.workload.uid"] == "istio://default/workloads/reviews-v2"
    assert attrs["source.name"] == "reviews-v2-7d7b8c9f4c-x2x7p"
    assert attrs["source.uid"] == REVIEWS
    assert attrs["source.owner"] == "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2"
    assert attrs["source.serviceAccount"] == "bookinfo-reviews"
    assert attrs["source.ip"] == IPAddress.parse("10.44.1.7")
    assert dict(attrs["source.labels"])["version"] == "v2"
    assert attrs["destination.workload.name"] == "productpage-v1"
    assert attrs["destination.container.name"] == "productpage"
    assert attrs["destination.namespace"] == "default"
    assert attrs["destination.ip"] == IPAddress.parse("10.44.0.11")
    assert attrs["destination.labels"]["app"] == "productpage"


def test_the_stock_bindings_default_what_is_unknown() -> None:
    builder, mapper = stock_pipeline()
    handler = stock_handler()
    attrs = mapper.map(handler.generate_kubernetes(builder.build({"source.uid": DEBUG})))
    assert attrs["source.name"] == "debug-shell"
    assert dict(attrs["source.labels"]) == {}  # emptyStringMap(): the pod has no labels
    assert attrs["source.serviceAccount"] == "unknown"  # and no service account
    assert attrs["destination.name"] == "unknown"
    assert attrs["destination.namespace"] == "default"
    assert attrs["destination.workload.name"] == "unknown"
    assert attrs["destination.container.name"] == "unknown"
    assert attrs["destination.ip"] == IPAddress.parse("0.0.0.0")
    # source.ip defaults to 0.0.0.0 in the instance: an unspecified IP finds nothing
    nothing = mapper.map(handler.generate_kubernetes(builder.build({})))
    assert nothing["source.workload.name"] == "unknown" and nothing["source.namespace"] == "default"


# --- the file source ------------------------------------------------------------------------------------


def test_pods_file_formats(tmp_path: Path) -> None:
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        "kind: Pod\nmetadata: {name: a}\n---\n"
        "- metadata: {name: b, namespace: x}\n---\n"
        "kind: PodList\nitems:\n- metadata: {name: c}\n---\n"
        "kind: ReplicaSetList\nitems:\n- metadata: {name: r}\n---\n"
        "kind: Service\nmetadata: {name: s}\n"
    )
    items = load_pods_file(multi)
    assert [(type(i).__name__, i.name) for i in items] == [
        ("PodInfo", "a"),
        ("PodInfo", "b"),
        ("PodInfo", "c"),
        ("ControllerInfo", "r"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: a}\n---\nkind: List\nitems:\n- 7\n")
    with pytest.raises(ValueError, match=r"bad.yaml: document 2.items\[0\]: expected a Kubernetes object"):
        load_pods_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_pods_file(broken)


async def test_the_pods_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump(pod("one", status__podIP="10.0.0.1")))
    c = PodCache()
    source = FileSource(str(path), c, Env("t"), 3600)
    assert [p.name for p in c.pods()] == ["one"]
    assert not await source.reload_if_changed()
    path.write_text(yaml.safe_dump_all([pod("one"), pod("two")]))
    os.utime(path, ns=(1, 1))
    assert await source.reload_if_changed()
    assert sorted(p.name for p in c.pods()) == ["one", "two"] and source.loads == 2
    path.write_text("kind: [")  # a broken file keeps the pods we have
    os.utime(path, ns=(2, 2))
    assert not await source.reload_if_changed()
    assert len(c) == 2


def test_a_missing_pods_file_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AdapterHarness(INFO, {"podsFile": str(tmp_path / "absent.yaml")})


# --- params and connection config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "paths"),
    [
        ({}, []),
        (None, []),
        ({"kubeconfigPath": "/k", "cacheRefreshDuration": "30s", "clusterRegistriesNamespace": "x"}, []),
        ({"podsFile": "/p.yaml"}, []),
        ({"source": "file"}, ["podsFile"]),
        ({"source": "kubernetes", "podsFile": "/p.yaml"}, ["podsFile"]),
        ({"podsFile": "/p.yaml", "kubeconfigPath": "/k"}, ["kubeconfigPath"]),
        ({"source": "cloud"}, ["source"]),
        ({"cacheRefreshDuration": "0s"}, ["cacheRefreshDuration"]),
        ({"kubeconfig": "/k"}, ["kubeconfig"]),
    ],
)
def test_params(config: dict[str, Any] | None, paths: list[str]) -> None:
    assert [e.path for e in parse_params(config)[1]] == paths


def test_default_source() -> None:
    assert parse_params({})[0].source is Source.KUBERNETES
    assert parse_params({"pods_file": "/p"})[0].source is Source.FILE
    assert parse_params(INFO.default_config)[1] == []


def test_an_invalid_config_is_refused_by_the_harness() -> None:
    with pytest.raises(HarnessConfigError, match="podsFile"):
        AdapterHarness(INFO, {"source": "file"})


def write_kubeconfig(path: Path, user: Mapping[str, Any], server: str = "https://127.0.0.1:6443") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ctx",
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": dict(user)}],
            }
        )
    )
    return path


def test_kubeconfig_token_and_token_file(tmp_path: Path) -> None:
    cfg = load_kubeconfig(write_kubeconfig(tmp_path / "a", {"token": "abc"}))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.headers()["Authorization"] == "Bearer abc"
    assert cfg.ssl_context is not None
    (tmp_path / "tok").write_text("first\n")
    cfg = load_kubeconfig(write_kubeconfig(tmp_path / "b", {"tokenFile": "tok"}))
    assert cfg.headers()["Authorization"] == "Bearer first"
    (tmp_path / "tok").write_text("rotated\n")
    assert cfg.headers()["Authorization"] == "Bearer rotated"
    cfg = load_kubeconfig(write_kubeconfig(tmp_path / "c", {"username": "u", "password": "p"}))
    assert cfg.headers()["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec"),
        ({"auth-provider": {"name": "gcp"}}, "auth-provider"),
    ],
)
def test_kubeconfig_plugins_are_refused(tmp_path: Path, user: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeConfigError, match=message):
        load_kubeconfig(write_kubeconfig(tmp_path / "k", user))


def test_kubeconfig_errors(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        load_kubeconfig(tmp_path / "absent")
    with pytest.raises(KubeConfigError, match="no http"):
        load_kubeconfig(write_kubeconfig(tmp_path / "k", {}, server="unix:///sock"))
    (tmp_path / "nocontext").write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(KubeConfigError, match="no current-context"):
        load_kubeconfig(tmp_path / "nocontext")


def test_resolve_config_order(tmp_path: Path) -> None:
    explicit = write_kubeconfig(tmp_path / "explicit", {"token": "explicit"}, server="http://127.0.0.1:1")
    from_env = write_kubeconfig(tmp_path / "env", {"token": "env"}, server="http://127.0.0.1:2")
    environ = {"KUBECONFIG": f"{from_env}{os.pathsep}{explicit}"}
    assert resolve_config(str(explicit), environ).server == "http://127.0.0.1:1"
    assert resolve_config("", environ).server == "http://127.0.0.1:2"
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        resolve_config("", {}, tmp_path / "sa")


def test_in_cluster_config_needs_the_service_account(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match="token"):
        in_cluster_config(environ, tmp_path)
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(KubeConfigError, match="cluster CA"):
        in_cluster_config(environ, tmp_path)
