"""The chart as users meet it: real `helm` (built from the Go module proxy) against the local cluster.

A bad value is refused by `helm install` naming it, and nothing is installed; `helm upgrade --install` gives a
running operator (the one `optimodel demo` installs) that brings an example to Ready; `helm upgrade` to a changed
value rolls the operator and leaves serving models untouched; `helm uninstall` leaves the models serving and the
CRD in place (Helm never deletes what a chart's crds/ installed). The operator is installed again at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import (
    CHART, HELM_RELEASE, OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, install_operator, post_when_routed,
)
from optimodel_operator.examples import Published, publish
from optimodel_operator.testing.cluster import condition, get_model, install_crd, scale_operator, wait_for
from optimodel_operator.testing.rollout import digits_revision, evaluation_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STORE = Path("/var/lib/optimodel/store/tests/helm")
CRD = "optimizedmodels.optimodel.io"


@pytest.fixture(scope="module")
def published(local_cluster: LocalCluster) -> Iterator[Published]:
    install_crd(local_cluster.kubectl)
    yield publish()
    # Leave the operator installed (as the demo does) but stopped, like every module that installs it.
    install_operator(local_cluster, report=lambda _: None)
    scale_operator(local_cluster.kubectl, 0)


def _releases(cluster: LocalCluster) -> list[str]:
    return json.loads(cluster.helm("list", "--all-namespaces", "--all", "--output", "json").stdout or "[]")


def _operator_pods(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The operator's pods, less those on their way out (a rollout's old pod lingers while it stops)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l",
                                      "app.kubernetes.io/name=optimodel-operator", "-o", "json").stdout)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _serving(cluster: LocalCluster, namespace: str) -> dict[str, tuple[str, int]]:
    """Each serving Deployment's uid and generation, and each of its pods' uid: what an untouched model keeps."""
    out: dict[str, tuple[str, int]] = {}
    for kind in ("deployments", "pods"):
        items = json.loads(cluster.kubectl("get", kind, "-n", namespace, "-l",
                                           "optimodel.io/model=digits,optimodel.io/revision", "-o", "json").stdout)["items"]
        for item in items:
            if kind == "pods" and item["status"].get("phase") != "Running":
                continue
            out[f"{kind}/{item['metadata']['name']}"] = (item["metadata"]["uid"], item["metadata"].get("generation", 0))
    return out


def _answers(cluster: LocalCluster, namespace: str, rows: np.ndarray) -> None:
    service = json.loads(cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    answer = post_when_routed(f"http://{service['spec']['clusterIP']}:80/v2/models/digits/infer", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"][0] == len(rows)


@pytest.mark.parametrize(("setting", "named"), [
    ("operator.replicas=two", "/operator/replicas"),
    ("rbac.scope=everywhere", "/rbac/scope"),
])
def test_helm_install_refuses_a_bad_value_naming_it_and_installs_nothing(
    local_cluster: LocalCluster, setting: str, named: str
) -> None:
    result = local_cluster.helm("install", "refused", str(CHART), "--namespace", "optimodel-refused",
                                "--set", setting, check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert "refused" not in [release["name"] for release in _releases(local_cluster)]
    assert local_cluster.kubectl("get", "namespace", "optimodel-refused", check=False).returncode != 0


def test_install_reconciles_an_example_upgrade_rolls_only_the_operator_uninstall_leaves_models_serving(
    local_cluster: LocalCluster, namespace: str, published: Published
) -> None:
    # Install (the demo's path: helm upgrade --install with the local cluster's values).
    install_operator(local_cluster, report=lambda _: None)
    [release] = [r for r in _releases(local_cluster) if r["name"] == HELM_RELEASE]
    assert (release["namespace"], release["status"]) == (OPERATOR_NAMESPACE, "deployed")
    notes = local_cluster.helm("get", "notes", HELM_RELEASE, "--namespace", OPERATOR_NAMESPACE).stdout
    assert f"rollout status deployment/{OPERATOR_DEPLOYMENT}" in notes and "kubectl get optimizedmodels" in notes
    assert "WARNING" not in notes, "the local values name a Prometheus and a default store"
    [pod] = _operator_pods(local_cluster)
    wait_for(lambda: json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n", OPERATOR_NAMESPACE,
                                                      "-o", "json").stdout)["spec"].get("holderIdentity")
             == pod["metadata"]["name"], 120, "the chart's operator holds the Lease")
    # 120 s: the pod `rollout restart` replaced may not give the Lease up (SIGTERM during its start-up, or a
    # kill after its grace period); then it expires (15 s) after up to 30 s of grace, and the standby polls.

    # The chart's ServiceAccount may do the operator's job and nothing more.
    account = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_DEPLOYMENT}"

    def can(*what: str) -> bool:
        return local_cluster.kubectl("auth", "can-i", *what, account, check=False).stdout.strip() == "yes"

    assert can("create", "jobs.batch", "-n", namespace) and can("patch", "optimizedmodels.optimodel.io/status",
                                                                 "-n", namespace)
    assert can("patch", "deployments.apps/scale", "-n", namespace)
    for forbidden in (("get", "secrets", "-n", namespace), ("list", "nodes"), ("delete", "pods", "-n", namespace),
                      ("delete", "customresourcedefinitions.apiextensions.k8s.io"), ("create", "clusterroles"),
                      ("update", "leases.coordination.k8s.io", "-n", namespace)):
        assert not can(*forbidden), f"the operator may {' '.join(forbidden)}"
    manifest = digits_revision("digits", STORE / namespace, 1, "source", published=published)
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    def ready() -> dict[str, Any] | None:
        obj = get_model(local_cluster.kubectl, namespace, "digits")
        current = obj and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and (condition(obj, "Ready") or {}).get("status") == "True" else None

    model = wait_for(ready, 300, "the example Ready under the chart's operator", interval=1)
    rows = evaluation_rows(published)[:8]
    _answers(local_cluster, namespace, rows)
    serving = _serving(local_cluster, namespace)
    assert any(key.startswith("pods/") for key in serving) and any(key.startswith("deployments/") for key in serving)

    # Upgrade to changed values (a setting, and the chart's default of two replicas): the operator's pod is
    # replaced (its configuration changed) and one of the two acts; the model is not touched.
    revision_before = release["revision"]
    local_cluster.helm("upgrade", HELM_RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--reuse-values",
                       "--set", "operator.analysis.prometheusTimeoutSeconds=4", "--set", "operator.replicas=2",
                       "--wait", "--timeout=180s", timeout=240)
    local_cluster.kubectl("rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE,
                          "--timeout=120s", timeout=140)
    [release] = [r for r in _releases(local_cluster) if r["name"] == HELM_RELEASE]
    assert int(release["revision"]) == int(revision_before) + 1
    pods = wait_for(lambda: (found := _operator_pods(local_cluster)) and len(found) == 2 and found, 120,
                    "two operator replicas")
    names = sorted(p["metadata"]["name"] for p in pods)
    assert pod["metadata"]["name"] not in names, "the operator rolled"
    holder = wait_for(lambda: json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n",
                                                               OPERATOR_NAMESPACE, "-o", "json").stdout)["spec"]
                      .get("holderIdentity") in names and "held", 120, "one of the two holds the Lease")
    assert holder
    [standby] = [n for n in names if n != json.loads(local_cluster.kubectl(
        "get", "lease", "optimodel-operator", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)["spec"]["holderIdentity"]]
    wait_for(lambda: "stands by" in local_cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, standby).stdout, 60,
             "the other replica stands by")
    config = json.loads(local_cluster.kubectl("get", "configmap", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE,
                                              "-o", "json").stdout)["data"]
    assert config["OPTIMODEL_PROMETHEUS_TIMEOUT_SECONDS"] == "4"
    time.sleep(5)  # the new operator has reconciled the model by now: it must have changed nothing
    assert _serving(local_cluster, namespace) == serving
    after = get_model(local_cluster.kubectl, namespace, "digits")
    assert after is not None and after["status"]["stableRevision"] == model["status"]["stableRevision"]
    assert (condition(after, "Ready") or {}).get("status") == "True"

    # Uninstall: the operator goes; the CRD, the model and its servers stay and answer.
    local_cluster.helm("uninstall", HELM_RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", timeout=180)
    wait_for(lambda: not _operator_pods(local_cluster), 120, "the operator's pods gone")
    assert local_cluster.kubectl("get", "deployment", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE,
                                 check=False).returncode != 0
    assert local_cluster.kubectl("get", "crd", CRD, check=False).returncode == 0, "Helm leaves crds/ in place"
    assert get_model(local_cluster.kubectl, namespace, "digits") is not None
    assert _serving(local_cluster, namespace) == serving
    _answers(local_cluster, namespace, rows)
