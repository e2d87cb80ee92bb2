"""deploy/: the Kubernetes manifests, validated offline.

* Every manifest, and every object the kustomize overlays render, against the Kubernetes OpenAPI
  schemas bundled by ``kubernetes-validate`` (strict: unknown fields are errors), for the oldest
  Kubernetes the manifests target (1.25) and the newest the package knows.
* The overlays are rendered by :func:`render_kustomization`, a small renderer for the subset of
  kustomize they use (``resources``, ``patches`` with strategic merge, ``images``); anything else
  in a kustomization is refused. Its output is compared with ``kubectl kustomize`` (kubectl ships
  kustomize; both are offline).
* The CRDs are what ``scripts/gen_crds.py`` writes, structural, and cover every kind mixerd reads;
  custom resources (the overlays' quota config, mixerd's default config, Istio's stock config and
  samples) validate against the CRDs' openAPIV3Schema with ``jsonschema``, and the fields the CRDs
  type are fields mixerd reads.
* Cross-references: selectors match labels, probe and Service ports exist and are mixerd's,
  RBAC covers every kind, the grace period covers the drain, the pod meets the restricted Pod
  Security Standard, every path mixerd writes is a mounted volume.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from mixerd.adapters.kubernetesenv.sources import RESOURCES as KUBERNETESENV_RESOURCES
from mixerd.cli.validate import load_snapshot
from mixerd.config.model import (
    API_VERSION,
    GENERIC_KINDS,
    LEGACY_KINDS,
    QUOTA_SPEC,
    QUOTA_SPEC_BINDING,
    IgnoredResource,
    Resource,
)
from mixerd.config.parse import parse_document
from mixerd.console.store import sqlite_path
from mixerd.server.settings import Settings, add_arguments, parse_address
from tests.conformance_data import conformance_dir

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("single", "scaled")
K8S_VERSIONS = ("1.25", kv_utils.latest_version())
"""The oldest Kubernetes the manifests target (apiextensions v1, autoscaling/v2, policy/v1 are all
GA there) and the newest whose schemas kubernetes-validate bundles."""

Obj = dict[str, Any]


# --- a renderer for the kustomize subset deploy/ uses ---------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}
"""Kubernetes' patchMergeKey of the lists a strategic merge patch of deploy/ can reach; other lists
are replaced whole, as Kubernetes' strategic merge does for lists without a merge key."""


class UnsupportedKustomization(ValueError):
    pass


def load_yaml_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes' strategic merge for maps and merge-keyed lists; ``null`` deletes a field."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise UnsupportedKustomization(f"patch directive {k} is not supported by this renderer")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = strategic_merge({}, v, k) if isinstance(v, dict) else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            for i, existing in enumerate(merged):
                if existing.get(merge_key) == item.get(merge_key):
                    merged[i] = strategic_merge(existing, item, key)
                    break
            else:
                merged.append(strategic_merge({}, item, key))
        return merged
    return copy.deepcopy(patch)


def _identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def render_kustomization(directory: Path) -> list[Obj]:
    """The objects ``kustomize build directory`` gives, for the subset deploy/ uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: {sorted(unknown)} not supported by this renderer")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render_kustomization(path) if path.is_dir() else load_yaml_docs(path))
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        ident = _identity(obj)
        assert ident not in seen, f"{directory}: {ident} defined twice"
        seen.add(ident)
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: patch {entry}: only 'path' patches are supported")
        for patch in load_yaml_docs(directory / entry["path"]):
            targets = [i for i, obj in enumerate(objects) if _identity(obj) == _identity(patch)]
            assert len(targets) == 1, f"{directory}: patch {entry['path']} matches {len(targets)} objects"
            objects[targets[0]] = strategic_merge(objects[targets[0]], patch)
    for image in kustomization.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise UnsupportedKustomization(f"{directory}: image {image}: only name/newName/newTag")
        for obj in objects:
            for container in _pod_containers(obj):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    name, tag = image.get("newName", name), image.get("newTag", tag)
                    container["image"] = f"{name}:{tag}" if tag else name
    return objects


def _pod_containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def _normalized(obj: Any, key: str = "") -> Any:
    """Lists with a merge key sorted by it: kustomize's merge places patched entries first."""
    if isinstance(obj, dict):
        return {k: _normalized(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [_normalized(v) for v in obj]
        if key in MERGE_KEYS and all(isinstance(i, dict) for i in items):
            items.sort(key=lambda i: str(i.get(MERGE_KEYS[key])))
        return items
    return obj


# --- what is in deploy/ ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render_kustomization(DEPLOY / "overlays" / name) for name in OVERLAYS}


def _kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def _patch_files() -> set[Path]:
    out: set[Path] = set()
    for d in _kustomization_dirs():
        for entry in yaml.safe_load((d / "kustomization.yaml").read_text()).get("patches", []):
            out.add((d / entry["path"]).resolve())
    return out


def _manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that holds whole objects (not kustomizations, not patches)."""
    patches = _patch_files()
    return sorted(
        p
        for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml" and p.resolve() not in patches and "systemd" not in p.parts
    )


@functools.cache
def _crds() -> list[Obj]:
    files = sorted(p for p in (DEPLOY / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for p in files for doc in load_yaml_docs(p)]


def _crd_for(api_version: str, kind: str) -> Obj | None:
    group, _, version = api_version.partition("/")
    for crd in _crds():
        spec = crd["spec"]
        versions = {v["name"] for v in spec["versions"]}
        if spec["group"] == group and spec["names"]["kind"] == kind and version in versions:
            return crd
    return None


def _is_custom(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0].endswith(".istio.io")


def _gen_crds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", REPO / "scripts" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_crds"] = module
    spec.loader.exec_module(module)
    return module


def _kubernetes_validate(obj: Obj, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {path}: {exc.message}")


def _validate_custom(obj: Obj) -> None:
    crd = _crd_for(obj["apiVersion"], obj["kind"])
    assert crd is not None, f"no CRD in deploy/crds for {obj['apiVersion']} {obj['kind']}"
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = _prune_nulls({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}, schema)
    errors = sorted(jsonschema.Draft7Validator(_as_jsonschema(schema)).iter_errors(body), key=str)
    assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
    )


def _prune_nulls(value: Any, schema: Obj) -> Any:
    """What the API server does before validating a custom resource: a ``null`` for a field that
    is not ``nullable`` is dropped (Istio's own config writes ``params:`` and ``description:``)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is None:
                out[k] = v
            elif v is not None or sub.get("nullable"):
                out[k] = _prune_nulls(v, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_nulls(v, schema["items"]) for v in value]
    return value


def _as_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 extensions read as JSON Schema: int-or-string is a oneOf of both."""
    if isinstance(schema, dict):
        out = {k: _as_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        out.pop("nullable", None)
        if schema.get("x-kubernetes-int-or-string"):
            out["type"] = ["integer", "string"]
        elif schema.get("nullable"):
            out["type"] = [schema["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_as_jsonschema(v) for v in schema]
    return schema


# --- kubernetes-validate --------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_files_validate(path: Path, version: str) -> None:
    for obj in load_yaml_docs(path):
        if _is_custom(obj):
            _validate_custom(obj)
        else:
            _kubernetes_validate(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlays_validate(rendered: dict[str, list[Obj]], overlay: str, version: str) -> None:
    for obj in rendered[overlay]:
        if _is_custom(obj):
            _validate_custom(obj)
        else:
            _kubernetes_validate(obj, version)


def test_kubernetes_validate_rejects_what_the_api_server_would() -> None:
    """The validation above can fail: a misspelt field and a wrong type are errors."""
    deployment = _one(render_kustomization(DEPLOY / "overlays" / "single"), "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 15014
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


# --- the renderer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", _kustomization_dirs(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_renderer_agrees_with_kubectl_kustomize(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (which ships kustomize) is not installed: only this repository's renderer ran")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    theirs = {_identity(o): _normalized(o) for o in yaml.safe_load_all(done.stdout) if o}
    ours = {_identity(o): _normalized(o) for o in render_kustomization(directory)}
    assert ours.keys() == theirs.keys()
    for ident, obj in ours.items():
        assert obj == theirs[ident], ident


def test_renderer_merges_and_refuses() -> None:
    base = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["p"]}]}}
    patch = {
        "spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": None, "valueFrom": {"k": 1}}]}]}
    }
    merged = strategic_merge(base, patch)
    assert merged["spec"]["containers"][0]["env"] == [{"name": "X", "valueFrom": {"k": 1}}]
    assert merged["spec"]["containers"][0]["args"] == ["p"]
    assert strategic_merge({"args": ["a", "b"]}, {"args": ["c"]}) == {"args": ["c"]}
    with pytest.raises(UnsupportedKustomization):
        strategic_merge({"a": 1}, {"$patch": "delete"})


def test_renderer_refuses_unsupported_fields(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(UnsupportedKustomization, match="namePrefix"):
        render_kustomization(tmp_path)


# --- CRDs -------------------------------------------------------------------------------------------


def test_crds_are_what_the_generator_writes() -> None:
    for rel, content in _gen_crds().render().items():
        assert (REPO / rel).read_text() == content, f"{rel} is out of date: run python scripts/gen_crds.py"


def test_crds_cover_every_kind_mixerd_reads() -> None:
    kinds = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in _crds()}
    group = API_VERSION.split("/")[0]
    for kind in (*GENERIC_KINDS, QUOTA_SPEC, QUOTA_SPEC_BINDING, *LEGACY_KINDS):
        assert (group, kind) in kinds, kind
    for policy in ("AuthorizationPolicy", "RequestAuthentication"):
        assert ("security.istio.io", policy) in kinds
    for rbac in ("ServiceRole", "ServiceRoleBinding", "ClusterRbacConfig"):
        assert ("rbac.istio.io", rbac) in kinds


def test_crd_names_are_istios() -> None:
    plurals = {c["spec"]["names"]["kind"]: c["spec"]["names"]["plural"] for c in _crds()}
    # Istio 1.1's CRD names for the irregular ones.
    assert plurals["prometheus"] == "prometheuses"
    assert plurals["kubernetes"] == "kuberneteses"
    assert plurals["listentry"] == "listentries"
    assert plurals["signalfx"] == "signalfxs"
    assert plurals["solarwinds"] == "solarwindses"
    assert plurals["AuthorizationPolicy"] == "authorizationpolicies"
    for crd in _crds():
        spec = crd["spec"]
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert spec["scope"] == ("Cluster" if spec["names"]["kind"] == "ClusterRbacConfig" else "Namespaced")


def _structural_problems(schema: Obj, path: str) -> Iterator[str]:
    """The rules of a structural schema that a hand-written schema could break."""
    typed = schema.get("type") or schema.get("x-kubernetes-int-or-string")
    if not typed and not schema.get("x-kubernetes-preserve-unknown-fields"):
        yield f"{path}: no type"
    if "properties" in schema and "additionalProperties" in schema:
        yield f"{path}: properties and additionalProperties together"
    for word in ("anyOf", "oneOf", "allOf", "not", "$ref"):
        if word in schema:
            yield f"{path}: {word} is not used by these CRDs (structural schemas restrict it)"
    for name, sub in schema.get("properties", {}).items():
        yield from _structural_problems(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _structural_problems(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from _structural_problems(schema["items"], f"{path}[]")


@pytest.mark.parametrize("crd", _crds(), ids=lambda c: c["metadata"]["name"])
def test_crd_schemas_are_structural(crd: Obj) -> None:
    (version,) = crd["spec"]["versions"]
    assert version["served"] and version["storage"]
    schema = version["schema"]["openAPIV3Schema"]
    assert list(_structural_problems(schema, "")) == []
    jsonschema.Draft7Validator.check_schema(_as_jsonschema(schema))


def _custom_resources_elsewhere() -> list[tuple[str, Obj]]:
    """Real Mixer config: mixerd's default config, the docs' examples, Istio 1.4's stock config and
    samples (legacy kinds included)."""
    paths = [
        REPO / "src/mixerd/server/data/default-config.yaml",
        *sorted((REPO / "docs/examples").glob("*.yaml")),
    ]
    shared = conformance_dir()
    paths += sorted((shared / "stock-telemetry-config" / "rendered").glob("*.yaml"))
    paths += sorted((shared / "mixer-testdata-config").rglob("*.yaml"))
    out: list[tuple[str, Obj]] = []
    for path in paths:
        for doc in load_yaml_docs(path):
            if isinstance(doc, dict) and _is_custom(doc) and _crd_for(doc["apiVersion"], doc["kind"]):
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def test_crds_accept_real_mixer_config() -> None:
    resources = _custom_resources_elsewhere()
    kinds = {doc["kind"] for _, doc in resources}
    assert {"rule", "instance", "handler", "attributemanifest", "QuotaSpec", "QuotaSpecBinding"} <= kinds
    assert kinds & set(LEGACY_KINDS), "no legacy kind in the samples"
    for where, doc in resources:
        try:
            _validate_custom(doc)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_crd_schema_rejects_wrong_types() -> None:
    rule = {"apiVersion": API_VERSION, "kind": "rule", "metadata": {"name": "r"}}
    with pytest.raises(AssertionError, match="actions"):
        _validate_custom({**rule, "spec": {"actions": {"handler": "h"}}})
    with pytest.raises(AssertionError, match="operation"):
        _validate_custom({**rule, "spec": {"requestHeaderOperations": [{"name": "x", "operation": "SET"}]}})


def _example(schema: Obj) -> Any:
    """A value of every typed field of ``schema``."""
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("x-kubernetes-int-or-string"):
        return "STRING"
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            return {name: _example(sub) for name, sub in schema["properties"].items()}
        if isinstance(schema.get("additionalProperties"), dict):
            return {"key": _example(schema["additionalProperties"])}
        return {}
    if kind == "array":
        return [_example(schema["items"])]
    return {"string": "x", "integer": 1, "boolean": True}[kind]


@pytest.mark.parametrize("crd", _crds(), ids=lambda c: c["metadata"]["name"])
def test_crd_fields_are_fields_mixerd_reads(crd: Obj) -> None:
    """A CRD types only fields mixerd's parser knows (mixerd reports the others itself)."""
    spec = crd["spec"]
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    doc = {
        "apiVersion": f"{spec['group']}/{spec['versions'][0]['name']}",
        "kind": spec["names"]["kind"],
        "metadata": {"name": "example", "namespace": "default"},
        "spec": _example(schema),
    }
    parsed = parse_document(doc)
    if isinstance(parsed, IgnoredResource):
        # Kinds of other groups until mixerd parses them, and the proxy-side HTTPAPISpec kinds.
        assert spec["group"] != "config.istio.io" or spec["names"]["kind"].startswith("HTTPAPISpec")
        return
    assert isinstance(parsed, Resource), parsed
    unknown = [f"{i.path}: {i.message}" for i in parsed.issues if "unknown field" in i.message]
    assert unknown == []


# --- cross-references -----------------------------------------------------------------------------


def _one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def _container(deployment: Obj) -> Obj:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pods(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment = _one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    services = [o for o in objects if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"mixerd", "mixerd-headless"}
    for service in services:
        assert _selects(service["spec"]["selector"], pod_labels)
    assert _selects(_one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert _selects(constraint["labelSelector"]["matchLabels"], pod_labels)
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_are_mixerds(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment = _one(objects, "Deployment")
    container = _container(deployment)
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = Settings()
    assert by_name == {
        "grpc-mixer": parse_address(defaults.grpc_address)[1],
        "http-monitoring": parse_address(defaults.monitoring_address)[1],
        "prometheus": parse_address(defaults.prometheus_address)[1],
        "http-authz": parse_address(defaults.http_authz_address)[1],
    }
    # Mixer's Service port names and numbers (istio-policy / istio-telemetry).
    assert (by_name["grpc-mixer"], by_name["http-monitoring"], by_name["prometheus"]) == (9091, 15014, 42422)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for service in services.values():
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in by_name, port
            assert port["port"] == by_name[port["targetPort"]]
            assert port["name"] == port["targetPort"]
    assert {p["name"] for p in services["mixerd"]["spec"]["ports"]} == set(by_name)
    assert services["mixerd-headless"]["spec"]["clusterIP"] == "None"
    monitoring = by_name["http-monitoring"]
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert by_name.get(probe["port"], probe["port"]) == monitoring
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == monitoring
    assert annotations["prometheus.io/path"] == "/metrics"


def test_probe_paths_are_served() -> None:
    app = (REPO / "src/mixerd/server/app.py").read_text()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert f'add_get("{path}"' in app


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_restricted_and_writes_only_to_volumes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    deployment = _one(rendered[overlay], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    container = _container(deployment)
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in ctx
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert "/tmp" in mounts
    env = _env(container)
    state_home = env["XDG_STATE_HOME"]["value"]
    assert state_home in mounts
    store = env["MIXERD_CONSOLE_STORE"]
    if "value" in store:  # SQLite: its directory is a mounted volume
        assert str(sqlite_path(store["value"]).parent) in mounts
    namespace = _one(rendered[overlay], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_drains_within_the_grace_period(rendered: dict[str, list[Obj]], overlay: str) -> None:
    deployment = _one(rendered[overlay], "Deployment")
    container = _container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(_env(container)["MIXERD_DRAIN_TIMEOUT"]["value"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # 10 s beyond the drain to flush queued reports and close handlers before SIGKILL.
    assert grace >= pre_stop + drain + 10
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    # Endpoints drop a terminating pod at once; the probe notices a drain within the preStop too.
    readiness = container["readinessProbe"]
    assert readiness["failureThreshold"] * readiness["periodSeconds"] <= pre_stop


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_settings_are_mixerds(rendered: dict[str, list[Obj]], overlay: str) -> None:
    container = _container(_one(rendered[overlay], "Deployment"))
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={})
    settings = Settings.from_args(parser.parse_args(container["args"]))  # mixerd serve's own flags
    assert settings.config_url == "k8s://" and settings.k8s_write_status
    fields = {f"MIXERD_{name.upper()}" for name in Settings.__dataclass_fields__}
    for name in _env(container):
        assert name in fields or name == "XDG_STATE_HOME", f"{name} is not a mixerd setting"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"mixerd:{version}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_in_mixerds_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    namespace = _one(objects, "Namespace")["metadata"]["name"]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == namespace, _identity(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_covers_every_kind(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    role = _one(objects, "ClusterRole")
    binding = _one(objects, "ClusterRoleBinding")
    deployment = _one(objects, "Deployment")
    account = _one(objects, "ServiceAccount")

    def granted(group: str, resource: str, verb: str) -> bool:
        return any(
            group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
            for rule in role["rules"]
        )

    for crd in _crds():
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for verb in ("get", "list", "watch"):
            assert granted(group, plural, verb), crd["metadata"]["name"]
    for resource in KUBERNETESENV_RESOURCES:
        group, plural = _gen_crds().group_and_resource(resource.path)
        for verb in ("get", "list", "watch"):
            assert granted(group, plural, verb), resource.path
    assert granted("", "events", "create") and granted("events.k8s.io", "events", "create")
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    assert account["metadata"]["name"] == pod["serviceAccountName"]


def test_overlays_differ_where_they_should(rendered: dict[str, list[Obj]]) -> None:
    single, scaled = rendered["single"], rendered["scaled"]
    assert _one(single, "Deployment")["spec"]["replicas"] == 1
    assert not [o for o in single if o["kind"] == "HorizontalPodAutoscaler"], "memquota counts per replica"
    assert _one(_custom(single), "handler")["spec"]["compiledAdapter"] == "memquota"
    hpa = _one(scaled, "HorizontalPodAutoscaler")
    deployment = _one(scaled, "Deployment")
    assert 2 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert _one(_custom(scaled), "handler")["spec"]["compiledAdapter"] == "redisquota"
    store = _env(_container(deployment))["MIXERD_CONSOLE_STORE"]
    assert set(store) == {"name", "valueFrom"}, "the PostgreSQL URL holds a password: from a Secret only"
    assert store["valueFrom"]["secretKeyRef"]["key"] == "url"


def _custom(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if _is_custom(o)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_config_is_valid_mixerd_config(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    """The overlays' Mixer config passes `mixerd validate`, with the namespace mixerd runs in as the
    config default namespace (MIXERD_DEFAULT_NAMESPACE from the pod's namespace)."""
    objects = rendered[overlay]
    deployment = _one(objects, "Deployment")
    env = _env(_container(deployment))
    assert env["MIXERD_DEFAULT_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump_all(_custom(objects)))
    snapshot = load_snapshot([config], deployment["metadata"]["namespace"])
    assert not snapshot.errors, snapshot.errors
    assert len(snapshot.resources) == len(_custom(objects))


# --- docs/kubernetes.md ---------------------------------------------------------------------------

DOC = REPO / "docs" / "kubernetes.md"


def _doc_yaml_blocks() -> list[Any]:
    text = DOC.read_text()
    blocks = text.split("```yaml\n")[1:]
    return [yaml.safe_load(block.split("```", 1)[0]) for block in blocks]


def test_doc_port_table_is_the_services(rendered: dict[str, list[Obj]]) -> None:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit() and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = int(cells[0])
    service = next(
        o for o in rendered["single"] if o["kind"] == "Service" and o["metadata"]["name"] == "mixerd"
    )
    assert rows == {p["name"]: p["port"] for p in service["spec"]["ports"]}


def test_doc_paths_exist() -> None:
    text = DOC.read_text()
    for path in ("deploy/crds/", "deploy/base/", "deploy/overlays/single/", "deploy/overlays/scaled/"):
        assert f"`{path}`" in text and (REPO / path).is_dir()
    for path in (
        "Dockerfile",
        "deploy/systemd/mixerd.env",
        "deploy/systemd/mixerd.sysusers",
        "docs/examples/envoy.yaml",
    ):
        assert path in text and (REPO / path).is_file()


def _doc_patches() -> list[Obj]:
    return [b for b in _doc_yaml_blocks() if isinstance(b, dict) and b.get("kind") == "Deployment"]


@pytest.mark.parametrize("index", range(len(_doc_patches())))
def test_doc_patches_render_and_validate(index: int, tmp_path: Path) -> None:
    """The doc's Deployment patches (global config in istio-system; TLS), applied to an overlay."""
    patch = _doc_patches()[index]
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    kustomization = {"resources": [str(DEPLOY / "overlays" / "single")], "patches": [{"path": "patch.yaml"}]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    deployment = _one(render_kustomization(tmp_path), "Deployment")
    for version in K8S_VERSIONS:
        _kubernetes_validate(deployment, version)
    container = _container(deployment)
    env = _env(container)
    for wanted in patch["spec"]["template"]["spec"]["containers"][0]["env"]:
        assert env[wanted["name"]] == {k: v for k, v in wanted.items() if v is not None}
    fields = {f"MIXERD_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(env) <= fields | {"XDG_STATE_HOME"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for name in ("MIXERD_TLS_CERT", "MIXERD_TLS_KEY", "MIXERD_TLS_CLIENT_CA"):
        if name in env:
            assert str(Path(env[name]["value"]).parent) in mounts


def test_doc_has_both_patches() -> None:
    names = [
        {e["name"] for e in p["spec"]["template"]["spec"]["containers"][0]["env"]} for p in _doc_patches()
    ]
    assert {"MIXERD_DEFAULT_NAMESPACE"} in names
    assert any("MIXERD_TLS_CERT" in n for n in names)


def test_doc_envoy_cluster_names_the_headless_service(rendered: dict[str, list[Obj]]) -> None:
    (clusters,) = [b for b in _doc_yaml_blocks() if isinstance(b, dict) and "clusters" in b]
    (cluster,) = clusters["clusters"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    headless = next(o for o in rendered["scaled"] if o["metadata"]["name"] == "mixerd-headless")
    meta = headless["metadata"]
    assert address["address"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert address["port_value"] in {p["port"] for p in headless["spec"]["ports"]}
    assert cluster["type"] == "STRICT_DNS"
