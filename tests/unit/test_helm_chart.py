"""The chart as `helm` itself renders it (Helm v3 built from the Go module proxy by `optimodel dev build`):
lint, what the objects must say (not golden copies), the schema refusing bad values by name, and the chart
agreeing with the kustomize base on what the operator may do."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from optimodel_localcluster.build import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "optimodel"
SETTINGS = REPO / "operator" / "optimodel_operator" / "controller" / "settings.py"
KUSTOMIZE_RBAC = REPO / "deploy" / "kustomize" / "base" / "rbac.yaml"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = helm_binary()
    assert binary.is_file(), f"helm is not built at {binary}: `optimodel dev build` (make bootstrap) builds it"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def render(*sets: str, namespace: str = "optimodel-system") -> list[dict[str, Any]]:
    args = [item for s in sets for item in ("--set", s)]
    result = helm("template", "optimodel", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def test_helm_lint_passes_strictly() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_replicas_act_once_under_pod_security_restricted() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "optimodel-operator"
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    container = spec["containers"][0]
    assert container["command"][:4] == ["optimodel", "operator", "run", "--leader-elect"]
    assert "--namespace" not in container["command"], "cluster scope watches every namespace"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {k: container["securityContext"][k] for k in RESTRICTED_CONTAINER} == RESTRICTED_CONTAINER
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}, "the Lease names its holder"
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert spec["affinity"]["podAntiAffinity"], "replicas spread over nodes"
    assert one(objects, "ServiceAccount")["metadata"]["name"] == spec["serviceAccountName"]


def test_images_default_to_the_app_version_and_come_from_values() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    config = one(render(), "ConfigMap")["data"]
    assert config["OPTIMODEL_JOB_IMAGE"] == f"optimodel/jobs:{app_version}"
    assert config["OPTIMODEL_SERVER_IMAGE"] == f"optimodel/server:{app_version}"
    assert config["OPTIMODEL_SERVER_GPU_IMAGE"] == f"optimodel/server-gpu:{app_version}"
    objects = render("image.operator.repository=ghcr.io/acme/optimodel-operator", "image.operator.tag=1.2.3",
                     "image.operator.pullPolicy=Always", "image.server.tag=9", "operator.prometheusUrl=http://p:9090")
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("ghcr.io/acme/optimodel-operator:1.2.3", "Always")
    config = one(objects, "ConfigMap")["data"]
    assert config["OPTIMODEL_SERVER_IMAGE"] == "optimodel/server:9"
    assert config["OPTIMODEL_PROMETHEUS_URL"] == "http://p:9090"


def test_the_configmap_sets_every_key_the_operator_reads() -> None:
    documented = set(re.findall(r"^\| (OPTIMODEL_[A-Z_]+)", SETTINGS.read_text(), re.MULTILINE))
    documented |= {k for pair in re.findall(r"^\| (OPTIMODEL_[A-Z_]+) / (OPTIMODEL_[A-Z_]+)", SETTINGS.read_text(),
                                            re.MULTILINE) for k in pair}
    assert len(documented) >= 10
    assert set(one(render(), "ConfigMap")["data"]) == documented


def test_a_changed_value_changes_the_pod_template_so_helm_upgrade_rolls_the_operator() -> None:
    def checksum(*sets: str) -> str:
        return one(render(*sets), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("operator.analysis.prometheusTimeoutSeconds=4")


def _rules(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return one(objects, kind, name)["rules"]


def test_cluster_rbac_is_the_kustomize_base_one_and_leaves_secrets_alone() -> None:
    objects = render()
    base = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(KUSTOMIZE_RBAC.read_text()) if d}
    assert _rules(objects, "ClusterRole", "optimodel-operator") == base[("ClusterRole", "optimodel-operator")]["rules"]
    assert (_rules(objects, "Role", "optimodel-operator-leader-election")
            == base[("Role", "optimodel-operator-leader-election")]["rules"])
    granted = {r for rule in _rules(objects, "ClusterRole", "optimodel-operator") for r in rule["resources"]}
    assert not granted & {"secrets", "configmaps", "nodes", "*"}
    assert all("*" not in rule["verbs"] for rule in _rules(objects, "ClusterRole", "optimodel-operator"))


def test_namespaced_rbac_grants_the_same_rules_only_in_the_watched_namespaces() -> None:
    objects = render("rbac.scope=namespaced", "rbac.watchNamespaces={team-a,team-b}")
    cluster_rules = _rules(render(), "ClusterRole", "optimodel-operator")
    roles = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "optimodel-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == [r for r in cluster_rules
                                 if not set(r["resources"]) & {"namespaces", "customresourcedefinitions"}]
    cluster_scoped = [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["name"] for o in cluster_scoped} == {"optimodel-operator-crd-reader"}
    assert one(objects, "ClusterRole")["rules"] == [{"apiGroups": ["apiextensions.k8s.io"],
                                                    "resources": ["customresourcedefinitions"],
                                                    "verbs": ["list", "watch"]}]
    command = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert [command[i + 1] for i, arg in enumerate(command) if arg == "--namespace"] == ["team-a", "team-b"]
    # Without a list, the release's own namespace.
    command = one(render("rbac.scope=namespaced", namespace="ml"), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["command"]
    assert [command[i + 1] for i, arg in enumerate(command) if arg == "--namespace"] == ["ml"]


def test_network_policy_admits_only_the_health_and_metrics_ports() -> None:
    policy = one(render("networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"),
                 "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8080, 8081]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert not [o for o in render("networkPolicy.enabled=false") if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize(("setting", "named"), [
    ("operator.replicas=two", "/operator/replicas"),
    ("rbac.scope=everywhere", "/rbac/scope"),
    ("image.operator.pullPolicy=Sometimes", "/image/operator/pullPolicy"),
    ("operator.prometheusUrl=prometheus:9090", "/operator/prometheusUrl"),
    ("operater.replicas=1", "operater"),
    ("jobs.memory=lots", "/jobs/memory"),
    ("rbac.watchNamespaces={Team_A}", "/rbac/watchNamespaces/0"),
])
def test_a_bad_value_is_refused_naming_it(setting: str, named: str) -> None:
    result = helm("template", "optimodel", str(CHART), "--set", setting)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "schema" in result.stderr and named in result.stderr, result.stderr


def test_the_chart_crd_is_the_generated_one() -> None:
    assert (CHART / "crds" / "optimizedmodels.optimodel.io.yaml").read_text() == (
        REPO / "crds" / "optimizedmodels.optimodel.io.yaml").read_text()


def test_helm_is_built_at_the_version_its_module_pins() -> None:
    from optimodel_localcluster.build import HELM_GOBUILD_DIR
    from optimodel_localcluster.paths import HELM_VERSION

    pinned = re.search(r"^\s*helm\.sh/helm/v3 (v\S+)", (HELM_GOBUILD_DIR / "go.mod").read_text(), re.MULTILINE)
    assert pinned and pinned.group(1) == HELM_VERSION
    assert f'Version:"{HELM_VERSION}"' in helm("version").stdout


def test_the_operator_reads_the_store_with_keys_from_a_named_secret_by_reference_only() -> None:
    def env(*sets: str) -> dict[str, Any]:
        container = one(render(*sets), "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("valueFrom") for e in container["env"]}

    assert not {k for k in env() if k.startswith("AWS_")}
    keys = env("operator.storeCredentialsSecret=store-keys")
    assert keys["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "store-keys", "key": "AWS_ACCESS_KEY_ID",
                                                          "optional": False}}
    assert keys["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "store-keys"
    assert keys["AWS_ENDPOINT_URL"]["secretKeyRef"]["optional"] is True
