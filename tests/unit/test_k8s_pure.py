"""The sans-IO parts of the Kubernetes config store: URL, connection config, kinds, mirror, Events."""

from __future__ import annotations

import base64
import datetime as _dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixerd.config import Key, ResourceError, Severity
from mixerd.config.k8s.api import KubeConfigError
from mixerd.config.k8s.kinds import KINDS, plural
from mixerd.config.k8s.mirror import Mirror, ObjectRef
from mixerd.config.k8s.status import MAX_MESSAGE, EventRecorder
from mixerd.config.k8s.target import connection, is_k8s_url, parse_url
from mixerd.config.model import LEGACY_KINDS
from mixerd.config.parse import _PARSERS
from tests.support.certs import CA

# --- URL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kubeconfig", "namespaces", "context"),
    [
        ("k8s://", "", (), ""),
        ("k8s:///etc/kube/config", "/etc/kube/config", (), ""),
        ("k8s://?kubeconfig=/etc/kube/config", "/etc/kube/config", (), ""),
        ("k8s://?namespaces=a,b,a", "", ("a", "b"), ""),
        ("k8s:///k?namespaces=istio-system&context=prod", "/k", ("istio-system",), "prod"),
    ],
)
def test_url_forms(url: str, kubeconfig: str, namespaces: tuple[str, ...], context: str) -> None:
    target = parse_url(url)
    assert (target.kubeconfig, target.namespaces, target.context) == (kubeconfig, namespaces, context)
    assert is_k8s_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("k8s://apiserver:6443", "a host in a k8s:// URL is not supported"),
        ("k8s:/x", "expected k8s://"),
        ("k8s://?namespace=a", "unknown parameter 'namespace'"),
        ("k8s://?namespaces=a&namespaces=b", "given more than once"),
        ("k8s://?namespaces=Team_A", "'Team_A' is not a namespace name"),
        ("k8s:///a?kubeconfig=/b", "not both"),
        ("k8s://?context=", "needs a context name"),
    ],
)
def test_bad_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_file_paths_are_not_urls() -> None:
    assert not is_k8s_url("/etc/mixerd/config")
    assert not is_k8s_url("k8s-config/")


# --- connection config ----------------------------------------------------------------------------


def _kubeconfig(tmp: Path, cluster: dict[str, Any], user: dict[str, Any], name: str = "kc") -> Path:
    doc = {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "ctx", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "c"}},
        ],
        "current-context": "ctx",
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("kube CA")


def test_kubeconfig_token_and_ca_data(tmp_path: Path, ca: CA) -> None:
    ca_data = base64.b64encode(ca.pem).decode()
    path = _kubeconfig(
        tmp_path, {"server": "https://10.0.0.1:6443", "certificate-authority-data": ca_data}, {"token": "t0k"}
    )
    config = connection(parse_url(f"k8s://{path}"), environ={})
    assert config.server == "https://10.0.0.1:6443"
    assert config.headers()["Authorization"] == "Bearer t0k"
    assert "t0k" not in repr(config.source)


def test_kubeconfig_ca_file_and_client_certificate(tmp_path: Path, ca: CA) -> None:
    (tmp_path / "ca.crt").write_bytes(ca.pem)
    client = ca.issue("mixerd")
    (tmp_path / "tls.crt").write_bytes(client.cert_pem)
    (tmp_path / "tls.key").write_bytes(client.key_pem)
    path = _kubeconfig(
        tmp_path,
        {"server": "https://k:6443", "certificate-authority": "ca.crt"},
        {"client-certificate": "tls.crt", "client-key": "tls.key"},
    )
    config = connection(parse_url(f"k8s://?kubeconfig={path}"), environ={})
    assert config.ssl_context is not None and "Authorization" not in config.headers()
    data = _kubeconfig(
        tmp_path,
        {"server": "https://k:6443", "certificate-authority": "ca.crt"},
        {
            "client-certificate-data": base64.b64encode(client.cert_pem).decode(),
            "client-key-data": base64.b64encode(client.key_pem).decode(),
        },
        name="kc-data",
    )
    assert connection(parse_url(f"k8s://{data}"), environ={}).ssl_context is not None


def test_kubeconfig_context_parameter(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path, {"server": "https://k:6443"}, {"token": "t"})
    config = connection(parse_url(f"k8s://{path}?context=other"), environ={})
    assert "Authorization" not in config.headers()  # the other context has no user
    with pytest.raises(KubeConfigError, match="no context named 'nope'"):
        connection(parse_url(f"k8s://{path}?context=nope"), environ={})


def test_insecure_skip_tls_verify_is_refused(tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path, {"server": "https://k:6443", "insecure-skip-tls-verify": True}, {"token": "t"}
    )
    with pytest.raises(KubeConfigError, match="always verifies"):
        connection(parse_url(f"k8s://{path}"), environ={})


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    local = _kubeconfig(tmp_path, {"server": "http://127.0.0.1:8001"}, {}, name="local")
    assert connection(parse_url(f"k8s://{local}"), environ={}).server == "http://127.0.0.1:8001"
    remote = _kubeconfig(tmp_path, {"server": "http://10.1.2.3:8080"}, {}, name="remote")
    with pytest.raises(KubeConfigError, match="plain http"):
        connection(parse_url(f"k8s://{remote}"), environ={})


def test_exec_plugins_are_refused(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path, {"server": "https://k:6443"}, {"exec": {"command": "aws"}})
    with pytest.raises(KubeConfigError, match="'exec' plugin"):
        connection(parse_url(f"k8s://{path}"), environ={})


def test_in_cluster_service_account(tmp_path: Path, ca: CA) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_bytes(ca.pem)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = connection(parse_url("k8s://"), environ=env, sa_dir=tmp_path, home=tmp_path)
    assert config.server == "https://10.96.0.1:443"
    assert config.headers()["Authorization"] == "Bearer sa-token"
    (tmp_path / "token").write_text("rotated\n")  # projected tokens rotate: read per request
    assert config.headers()["Authorization"] == "Bearer rotated"


def test_kubeconfig_env_wins_then_home(tmp_path: Path) -> None:
    env_path = _kubeconfig(tmp_path, {"server": "https://from-env:6443"}, {}, name="env")
    config = connection(parse_url("k8s://"), environ={"KUBECONFIG": f"{env_path}:/nope"}, home=tmp_path)
    assert config.server == "https://from-env:6443"
    (tmp_path / ".kube").mkdir()
    _kubeconfig(tmp_path / ".kube", {"server": "https://from-home:6443"}, {}, name="config")
    assert connection(parse_url("k8s://"), environ={}, home=tmp_path).server == "https://from-home:6443"


def test_nothing_to_connect_with(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        connection(parse_url("k8s://"), environ={}, home=tmp_path)


# --- kinds ----------------------------------------------------------------------------------------


def test_plurals_match_istio_crd_names() -> None:
    names = {k.kind: k.plural for k in KINDS}
    assert names["prometheus"] == "prometheuses"
    assert names["kubernetes"] == "kuberneteses"
    assert names["listentry"] == "listentries"
    assert names["cloudwatch"] == "cloudwatches"
    assert names["signalfx"] == "signalfxs"
    assert names["solarwinds"] == "solarwindses"
    assert names["QuotaSpecBinding"] == "quotaspecbindings"
    assert names["AuthorizationPolicy"] == "authorizationpolicies"
    assert plural("policy") == "policies" and plural("gateway") == "gateways"


def test_every_kind_the_parser_knows_is_read() -> None:
    config_kinds = {k.kind for k in KINDS if k.group == "config.istio.io"}
    assert set(_PARSERS) | set(LEGACY_KINDS) <= config_kinds
    others = {(k.group, k.version, k.kind) for k in KINDS if k.group != "config.istio.io"}
    assert others == {
        ("security.istio.io", "v1beta1", "AuthorizationPolicy"),
        ("security.istio.io", "v1beta1", "RequestAuthentication"),
        ("rbac.istio.io", "v1alpha1", "ServiceRole"),
        ("rbac.istio.io", "v1alpha1", "ServiceRoleBinding"),
        ("rbac.istio.io", "v1alpha1", "ClusterRbacConfig"),
    }
    assert len({k.resource for k in KINDS}) == len(KINDS)


def test_collection_paths() -> None:
    rules = next(k for k in KINDS if k.kind == "rule")
    assert rules.path() == "/apis/config.istio.io/v1alpha2/rules"
    assert rules.path("team-a") == "/apis/config.istio.io/v1alpha2/namespaces/team-a/rules"
    cluster = next(k for k in KINDS if k.kind == "ClusterRbacConfig")
    assert cluster.path("team-a") == "/apis/rbac.istio.io/v1alpha1/clusterrbacconfigs"


# --- mirror ---------------------------------------------------------------------------------------

RULES = next(k for k in KINDS if k.kind == "rule")


def obj(name: str, rv: str, ns: str = "istio-system", kind: str = "rule", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "config.istio.io/v1alpha2",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": rv,
            "uid": f"uid-{name}",
            "generation": 2,
        },
        "spec": spec or {"match": "true"},
    }


def test_list_then_events() -> None:
    m = Mirror()
    assert m.replace("rules", RULES, [obj("a", "1"), obj("b", "2")])
    assert not m.replace("rules", RULES, [obj("a", "1"), obj("b", "2")])  # same versions: no change
    assert m.apply("rules", RULES, "MODIFIED", obj("a", "3", match="false"))
    assert not m.apply("rules", RULES, "MODIFIED", obj("a", "3", match="false"))  # replayed
    assert not m.apply("rules", RULES, "BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert m.apply("rules", RULES, "DELETED", obj("b", "4"))
    assert not m.apply("rules", RULES, "DELETED", obj("b", "4"))
    keys = [r.key for r in m.result().resources]
    assert keys == [Key("rule", "istio-system", "a")]
    assert m.result().resources[0].spec.match == "false"  # type: ignore[union-attr]


def test_relist_is_the_new_truth() -> None:
    m = Mirror()
    m.replace("rules", RULES, [obj("a", "1"), obj("b", "2")])
    assert m.replace("rules", RULES, [obj("b", "2"), obj("c", "5")])
    assert sorted(r.key.name for r in m.result().resources) == ["b", "c"]


def test_items_without_kind_get_it_from_the_table() -> None:
    m = Mirror()
    item = obj("a", "1")
    del item["kind"], item["apiVersion"]
    m.replace("rules", RULES, [item])
    assert m.result().resources[0].key == Key("rule", "istio-system", "a")


def test_parse_problems_and_foreign_objects_go_the_file_way() -> None:
    m = Mirror()
    bad = obj("bad", "1", match="true", actions=[{"instances": ["x"]}])
    unknown = obj("odd", "2", kind="Rule")
    m.replace("rules", RULES, [bad, unknown])
    result = m.result()
    (resource,) = result.resources
    assert [(i.path, i.message) for i in resource.issues] == [("spec.actions[0].handler", "missing")]
    (error,) = result.errors
    assert error.key_or_file == Key("Rule", "istio-system", "odd")
    assert "unknown kind 'Rule' (did you mean 'rule'?)" in error.message
    policies = next(k for k in KINDS if k.kind == "AuthorizationPolicy")
    ap = {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7"},
        "spec": {},
    }
    m.replace("aps", policies, [ap])
    parsed = m.result()
    assert len(parsed.resources) + len(parsed.ignored) + len(parsed.errors) == 3  # whatever a file would give


def test_refs_point_at_the_objects() -> None:
    m = Mirror()
    m.replace("rules", RULES, [obj("a", "11")])
    ref = m.refs()[Key("rule", "istio-system", "a")]
    assert ref == ObjectRef("config.istio.io/v1alpha2", "rule", "istio-system", "a", "uid-a", "11", 2)
    assert ref.as_involved_object()["uid"] == "uid-a"


# --- Events ---------------------------------------------------------------------------------------

KEY = Key("rule", "istio-system", "a")
REF = ObjectRef("config.istio.io/v1alpha2", "rule", "istio-system", "a", "uid-a", "11", 2)
NOW = _dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=_dt.UTC)


def test_event_body_and_dedup() -> None:
    rec = EventRecorder("mixerd-0")
    problem = ResourceError(KEY, "spec.match", "unknown attribute 'x'")
    (event,) = rec.pending([problem], {KEY: REF}, NOW)
    assert event.path == "/api/v1/namespaces/istio-system/events"
    body = event.body
    assert body["involvedObject"] == {
        "apiVersion": "config.istio.io/v1alpha2",
        "kind": "rule",
        "name": "a",
        "namespace": "istio-system",
        "uid": "uid-a",
        "resourceVersion": "11",
    }
    assert body["type"] == "Warning" and body["reason"] == "InvalidConfig"
    assert body["message"] == "not applied: spec.match: unknown attribute 'x'"
    assert body["firstTimestamp"] == "2026-01-02T03:04:05Z" and body["source"]["host"] == "mixerd-0"
    assert body["metadata"] == {"generateName": "a.", "namespace": "istio-system"}
    rec.written(event)
    assert rec.pending([problem], {KEY: REF}, NOW) == []  # not one per rebuild
    regen = ObjectRef("config.istio.io/v1alpha2", "rule", "istio-system", "a", "uid-a", "12", 3)
    assert len(rec.pending([problem], {KEY: regen}, NOW)) == 1  # a new generation


def test_event_again_after_the_problem_went_away() -> None:
    rec = EventRecorder()
    problem = ResourceError(KEY, "", "handler 'h' not found")
    for e in rec.pending([problem], {KEY: REF}, NOW):
        rec.written(e)
    assert rec.pending([], {KEY: REF}, NOW) == []
    assert len(rec.pending([problem], {KEY: REF}, NOW)) == 1


def test_unwritten_event_is_offered_again() -> None:
    rec = EventRecorder()
    problem = ResourceError(KEY, "", "broken")
    assert len(rec.pending([problem], {KEY: REF}, NOW)) == 1  # the POST failed: not marked
    assert len(rec.pending([problem], {KEY: REF}, NOW)) == 1


def test_only_errors_of_cluster_objects() -> None:
    rec = EventRecorder()
    problems = [
        ResourceError(KEY, "", "a warning", Severity.WARNING),
        ResourceError("some/file.yaml", "", "file problem"),
        ResourceError(Key("rule", "istio-system", "unknown"), "", "not from the cluster"),
    ]
    assert rec.pending(problems, {KEY: REF}, NOW) == []


def test_long_messages_are_cut_and_cluster_objects_use_default() -> None:
    rec = EventRecorder()
    cluster_ref = ObjectRef("rbac.istio.io/v1alpha1", "ClusterRbacConfig", "", "default", "u", "1", 1)
    key = Key("ClusterRbacConfig", "istio-system", "default")
    (event,) = rec.pending([ResourceError(key, "", "x" * 5000)], {key: cluster_ref}, NOW)
    assert event.path == "/api/v1/namespaces/default/events"
    assert "namespace" not in event.body["involvedObject"]
    assert len(event.body["message"]) <= MAX_MESSAGE + len("not applied: ")
