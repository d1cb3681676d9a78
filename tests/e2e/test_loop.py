"""The loop, end to end: the operator in a pod (installed with the chart, as `optimodel demo` does), real optimization Jobs, real model-server pods, traffic through kube-proxy.

(a) apply → Ready, each pool serves the expected variant, a request through the model's ClusterIP
answers the source model's classes on held-out data; (b) a variant that fails the gate is never
deployed, and `auto` falls back to one that passed; (c) a Job that fails leaves a condition with the
reason and no Deployment; (d) the operator pod killed while the Job runs: one Job, the revision
completes; (e) deleting the resource removes every child; (f) a replicas-only edit scales without a
new revision or Job.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, post_when_routed
from optimodel_operator.examples import Published, load_example
from optimodel_operator.testing.cluster import condition, events_for, get_model, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _wait(cluster: LocalCluster, namespace: str, name: str, accept: Any, what: str, timeout: float = 300) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_model(cluster.kubectl, namespace, name)
        if obj is None or (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj if accept(obj) else None

    try:
        return wait_for(probe, timeout, f"{namespace}/{name}: {what}", interval=1)
    except AssertionError:
        logs = cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, f"deploy/{OPERATOR_DEPLOYMENT}", "--tail=40",
                               check=False).stdout
        raise AssertionError(f"{what} not reached; status: {json.dumps((get_model(cluster.kubectl, namespace, name) or {}).get('status'))[:3000]}\n"
                             f"operator log:\n{logs}") from None


def _ready(obj: dict[str, Any]) -> bool:
    return (condition(obj, "Ready") or {}).get("status") == "True"


def _items(cluster: LocalCluster, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", namespace, "-l", f"optimodel.io/model={name}", "-o", "json",
                          "--show-managed-fields").stdout
    return json.loads(out)["items"]


TEST_STORES = Path("/var/lib/optimodel/store/tests")


@pytest.fixture(scope="module", autouse=True)
def _fresh_stores() -> Iterator[None]:
    """The module's stores go when it ends: the next run's Jobs run again instead of reusing them."""
    yield
    shutil.rmtree(TEST_STORES, ignore_errors=True)


def _digits(namespace: str, name: str = "digits") -> dict[str, Any]:
    """The demo's example with a store of the test's own, so earlier runs' results are not reused."""
    manifest = copy.deepcopy(load_example("digits"))
    manifest["metadata"]["name"] = name
    manifest["spec"]["artifacts"] = {"uri": f"file://{TEST_STORES / namespace}"}
    return manifest


def _infer(address: str, name: str, rows: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    answer = post_when_routed(f"{address}/v2/models/{name}/infer", body)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"]).argmax(axis=1)


def test_apply_to_ready_each_pool_serves_its_variant_and_the_service_answers(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    import onnxruntime as ort

    _apply(local_cluster, namespace, _digits(namespace))
    obj = _wait(local_cluster, namespace, "digits", _ready, "Ready")
    local_cluster.kubectl("wait", "--for=condition=Ready", "om/digits", "-n", namespace, "--timeout=5s")
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    pools = {p["name"]: p for p in status["pools"]}
    assert pools["gpu"]["variant"] == "fp16", "the gpu pool names fp16 explicitly"
    passed = {v["name"] for v in status["variants"] if v["gate"] == "Passed"}
    # auto serves a variant that passed and is faster than the source beyond noise, else the source; either
    # way the pool's message says why.
    assert pools["cpu"]["variant"] in passed | {"source"}, pools["cpu"]
    assert "auto" in pools["cpu"]["message"], pools["cpu"]
    assert "CUDAExecutionProvider" in pools["gpu"]["providerFallback"], "no GPU here: the CPU fallback is recorded"
    # Each pool's Deployment runs the chosen artifact on that pool's nodes.
    for deployment in _items(local_cluster, "deployments", namespace, "digits"):
        labels = deployment["metadata"]["labels"]
        pool = pools[labels["optimodel.io/pool"]]
        assert labels["optimodel.io/variant"] == pool["variant"]
        assert deployment["metadata"]["annotations"]["optimodel.io/artifact-sha256"] == pool["sha256"]
        assert deployment["status"].get("availableReplicas") == pool["replicas"]
        manager = {m["manager"] for m in deployment["metadata"]["managedFields"]}
        assert "optimodel" in manager, "applied by the operator (its field manager)"
    nodes = {p["metadata"]["labels"]["optimodel.io/pool"]: p["spec"]["nodeName"]
             for p in _items(local_cluster, "pods", namespace, "digits") if "optimodel.io/pool" in p["metadata"]["labels"]}
    assert nodes["gpu"] == "gpu-0" and nodes["cpu"].startswith("cpu-")
    jobs = _items(local_cluster, "jobs", namespace, "digits")
    assert sorted(j["metadata"]["labels"]["optimodel.io/provider"] for j in jobs) == ["cpu", "cuda"]
    job_nodes = {p["metadata"]["labels"]["optimodel.io/provider"]: p["spec"]["nodeName"]
                 for p in _items(local_cluster, "pods", namespace, "digits") if "optimodel.io/provider" in p["metadata"]["labels"]}
    assert job_nodes["cuda"] == "gpu-0", "the cuda Job is measured on the gpu pool's node"
    # The operator itself runs as a pod with its ServiceAccount.
    operator_pods = json.loads(local_cluster.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)["items"]
    assert [p["spec"]["serviceAccountName"] for p in operator_pods] == ["optimodel-operator"]
    # A request through the model's ClusterIP (kube-proxy) answers the source model's classes on held-out rows.
    service = json.loads(local_cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    address = f"http://{service['spec']['clusterIP']}:80"
    held_out = np.load(operator_in_cluster.evaluation)
    rows = np.asarray(held_out["x"][:64], dtype=np.float32).reshape(64, -1)
    served = _infer(address, "digits", rows)
    source = ort.InferenceSession(str(operator_in_cluster.onnx), providers=["CPUExecutionProvider"])
    expected = source.run(None, {source.get_inputs()[0].name: rows})[0].argmax(axis=1)
    agreement = float((served == expected).mean())
    assert agreement >= 0.97, f"served classes agree with the source on {agreement:.1%} of 64 held-out rows"
    reasons = {e["reason"] for e in events_for(local_cluster.kubectl, namespace, "digits")}
    assert {"JobCreated", "VariantPassed", "GatePassed", "DeploymentCreated", "Promoted"} <= reasons, reasons
    row = local_cluster.kubectl("get", "om", "digits", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:3] == ["Succeeded", "True"] and f"gpu={pools['gpu']['variant']}" in " ".join(row)


def test_a_variant_that_fails_the_gate_is_never_deployed_and_auto_falls_back(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    strict = _digits(namespace, "strict")
    # int8 must fit in a budget no artifact meets: the gate refuses it.
    strict["spec"]["optimizations"][0]["gate"] = {"maxSizeMiB": 0.000001}
    strict["spec"]["nodePools"] = [strict["spec"]["nodePools"][0] | {"variant": "int8"}]
    fallback = copy.deepcopy(strict)
    fallback["metadata"]["name"] = "fallback"
    fallback["spec"]["nodePools"][0]["variant"] = "auto"
    _apply(local_cluster, namespace, strict)
    _apply(local_cluster, namespace, fallback)
    refused = _wait(local_cluster, namespace, "strict", lambda o: o["status"].get("phase") == "Failed", "Failed")
    gated = condition(refused, "Gated")
    assert gated["status"] == "False" and gated["reason"] == "GateFailed"
    assert "int8 failed the gate" in gated["message"]
    assert _items(local_cluster, "deployments", namespace, "strict") == [], "nothing of a refused revision is deployed"
    served = _wait(local_cluster, namespace, "fallback", _ready, "Ready")
    cpu = served["status"]["pools"][0]
    assert cpu["variant"] not in ("int8", None) and "auto" in cpu["message"]
    int8 = next(v for v in served["status"]["variants"] if v["name"] == "int8")
    assert int8["gate"] == "Failed"


def test_a_failed_job_leaves_its_reason_and_no_deployment(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    broken = _digits(namespace, "broken")
    broken["spec"]["evaluation"]["dataset"] = "file:///var/lib/optimodel/models/digits-mlp-tiny/missing.npz"
    broken["spec"]["nodePools"] = broken["spec"]["nodePools"][:1]
    _apply(local_cluster, namespace, broken)
    obj = _wait(local_cluster, namespace, "broken", lambda o: o["status"].get("phase") == "Failed", "Failed")
    optimized = condition(obj, "Optimized")
    assert optimized["status"] == "False"
    assert optimized["reason"] == "DatasetUnreadable", optimized
    assert "missing.npz" in optimized["message"]
    assert condition(obj, "Degraded")["status"] == "True"
    assert _items(local_cluster, "deployments", namespace, "broken") == []


def test_operator_killed_while_the_job_runs_makes_one_job_and_finishes(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    manifest = _digits(namespace, "restart")
    # A spec of its own (so no earlier run record serves it) with a slower pruned variant.
    manifest["spec"]["evaluation"]["maxDrop"] = 0.025
    manifest["spec"]["nodePools"] = manifest["spec"]["nodePools"][:1]
    _apply(local_cluster, namespace, manifest)
    wait_for(lambda: _items(local_cluster, "jobs", namespace, "restart"), 60, "the optimization Job", interval=0.5)
    local_cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}",
                          "--wait=false")
    obj = _wait(local_cluster, namespace, "restart", _ready, "Ready after the operator restarted")
    jobs = _items(local_cluster, "jobs", namespace, "restart")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert obj["status"]["variants"][0]["gate"] in ("Passed", "Failed")


def test_deleting_the_resource_removes_every_child(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    manifest = _digits(namespace, "doomed")
    manifest["spec"]["nodePools"] = manifest["spec"]["nodePools"][:1]
    _apply(local_cluster, namespace, manifest)
    _wait(local_cluster, namespace, "doomed", _ready, "Ready")
    assert _items(local_cluster, "deployments", namespace, "doomed") and _items(local_cluster, "services", namespace, "doomed")
    local_cluster.kubectl("delete", "om", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")

    def gone() -> bool:
        return not any(_items(local_cluster, kind, namespace, "doomed") for kind in ("jobs", "deployments", "services", "pods"))

    wait_for(gone, 120, "the garbage collector to remove every child", interval=1)


def test_replicas_only_edit_scales_without_a_new_revision_or_job(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    manifest = _digits(namespace, "scaled")
    manifest["spec"]["nodePools"] = manifest["spec"]["nodePools"][:1]
    _apply(local_cluster, namespace, manifest)
    before = _wait(local_cluster, namespace, "scaled", _ready, "Ready")
    jobs_before = sorted(j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace, "scaled"))
    manifest["spec"]["nodePools"][0]["replicas"] = 1
    _apply(local_cluster, namespace, manifest)
    after = _wait(local_cluster, namespace, "scaled",
                  lambda o: _ready(o) and o["status"]["pools"][0]["replicas"] == 1, "Ready with 1 replica")
    assert after["metadata"]["generation"] == 2
    assert after["status"]["currentRevision"] == before["status"]["currentRevision"]
    assert sorted(j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace, "scaled")) == jobs_before
    (deployment,) = _items(local_cluster, "deployments", namespace, "scaled")
    assert deployment["spec"]["replicas"] == 1
    time.sleep(1)
    assert len([p for p in _items(local_cluster, "pods", namespace, "scaled")
                if "optimodel.io/pool" in p["metadata"]["labels"] and not p["metadata"].get("deletionTimestamp")]) <= 2
