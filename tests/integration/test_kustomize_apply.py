"""`kubectl apply -k` of the kustomize overlays against the real control plane.

The namespaced overlay gives an operator that acts in its own namespace and nowhere else: it writes the status
of a model there (here: refused, since the overlay names no default store) and never touches one in another
namespace; its ServiceAccount can do its job there and is forbidden elsewhere. The monitoring overlay passes the
API server's validation, the Prometheus Operator's CRDs included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.testing.cluster import condition, get_model, install_crd, wait_for
from optimodel_operator.testing.manifests import base_manifest

pytestmark = [pytest.mark.cluster]

OVERLAYS = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "overlays"
TEAM = "optimodel-team"  # the namespaced overlay's namespace
ACCOUNT = f"system:serviceaccount:{TEAM}:optimodel-operator"


@pytest.fixture
def namespaced_operator(local_cluster: LocalCluster) -> Iterator[None]:
    install_crd(local_cluster.kubectl)
    local_cluster.kubectl("apply", "-k", str(OVERLAYS / "namespaced"))
    try:
        local_cluster.kubectl("rollout", "status", "deployment/optimodel-operator", "-n", TEAM, "--timeout=120s",
                              timeout=140)
        yield
    finally:
        local_cluster.kubectl("delete", "-k", str(OVERLAYS / "namespaced"), "--ignore-not-found", "--wait=true",
                              timeout=180)


def _can(cluster: LocalCluster, verb: str, resource: str, namespace: str) -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={ACCOUNT}", check=False)
    return result.stdout.strip() == "yes"


def test_the_namespaced_overlay_acts_in_its_namespace_only(
    local_cluster: LocalCluster, namespaced_operator: None, namespace: str
) -> None:
    pods = json.loads(local_cluster.kubectl("get", "pods", "-n", TEAM, "-l", "app.kubernetes.io/name=optimodel-operator",
                                            "-o", "json").stdout)["items"]
    [pod] = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert f"--namespace={TEAM}" in pod["spec"]["containers"][0]["command"][-1:] or any(
        arg == "--namespace=$(POD_NAMESPACE)" for arg in pod["spec"]["containers"][0]["command"])
    wait_for(lambda: json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n", TEAM, "-o",
                                                      "json", check=False).stdout or "{}").get("spec", {})
             .get("holderIdentity") == pod["metadata"]["name"], 60, "the overlay's operator holds its Lease")

    assert _can(local_cluster, "patch", "optimizedmodels.optimodel.io/status", TEAM)
    assert _can(local_cluster, "create", "jobs.batch", TEAM)
    assert not _can(local_cluster, "list", "optimizedmodels.optimodel.io", namespace), "another namespace"
    assert not _can(local_cluster, "create", "deployments.apps", namespace)
    assert not _can(local_cluster, "get", "secrets", TEAM), "never Secrets"

    manifest = base_manifest("no-store")
    del manifest["spec"]["artifacts"]  # it names no artifact store, and the overlay sets no default
    for target in (TEAM, namespace):
        local_cluster.kubectl("apply", "-n", target, "-f", "-", input=json.dumps(manifest))

    def refused() -> dict | None:
        obj = get_model(local_cluster.kubectl, TEAM, "no-store")
        ready = condition(obj, "Ready") if obj else None
        return obj if ready and ready.get("status") == "False" else None

    obj = wait_for(refused, 90, "the model in the operator's namespace gets its status", interval=1)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "artifact" in json.dumps(obj["status"]["conditions"]).lower(), obj["status"]["conditions"]
    time.sleep(3)  # the other model would have been reconciled by now if the operator watched its namespace
    other = get_model(local_cluster.kubectl, namespace, "no-store")
    assert other is not None and not other.get("status"), "a namespace the operator does not watch is untouched"
    local_cluster.kubectl("delete", "optimizedmodel", "no-store", "-n", TEAM, "--wait=true")


def test_the_monitoring_overlay_passes_server_side_validation(local_cluster: LocalCluster, namespace: str) -> None:
    """Rendered by kubectl's kustomize and dry-run into a scratch namespace: the chart's release owns the
    overlay's names in optimodel-system here."""
    import yaml

    install_crd(local_cluster.kubectl)
    rendered = local_cluster.kubectl("kustomize", str(OVERLAYS / "monitoring")).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Namespace"]
    for obj in objects:
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds, kinds
    result = local_cluster.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                                   input=yaml.safe_dump_all(objects))
    assert result.returncode == 0, result.stderr
    assert "prometheusrule.monitoring.coreos.com/" in result.stdout and "(server dry run)" in result.stdout
