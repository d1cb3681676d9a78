"""The parts meet in the real cluster without the operator: an optimization Job made by hand writes a
verified int8 artifact from a pod, a model-server Deployment serves it on its pod IP, and Prometheus
scrapes the server's metrics (including the namespace label the rollout analysis will select on).

The operator builds the same kinds of objects itself (tests/e2e/test_loop.py); this test keeps the
component contract visible on its own: Job config in, artifact out, server up, metrics scraped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_api_client import PrometheusConnect

from optimodel_contracts.artifacts import read_manifest
from optimodel_jobs.zoo import build
from optimodel_localcluster.cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STORE_MOUNT = "/var/lib/optimodel/store"
# Pods see the host's file system with their volumes bind-mounted on top (node agent): a mount at a
# path the host uses (the checkout lives under /work here) would hide it from the pod.
WORK_MOUNT = "/var/lib/optimodel/work"


def _wait_for_job(cluster: LocalCluster, namespace: str, name: str, timeout: float) -> str:
    """'Complete' or 'Failed' as soon as the Job says so; 'timeout' otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
        for condition in job.get("status", {}).get("conditions", []):
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return condition["type"]
        time.sleep(1)
    return "timeout"


def _job(config: dict, store_dir: Path) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "optimize-mlp"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"optimodel.io/pool": "cpu"},
                    "containers": [{
                        "name": "optimize",
                        "image": "optimodel/jobs:dev",  # no command: the node agent's entrypoint table
                        "args": ["--config", "/etc/optimodel/config.json"],
                        "resources": {"limits": {"cpu": "1"}},
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/optimodel"},
                            {"name": "store", "mountPath": STORE_MOUNT},
                            {"name": "work", "mountPath": WORK_MOUNT},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "optimize-mlp"}},
                        {"name": "store", "hostPath": {"path": str(store_dir), "type": "Directory"}},
                        {"name": "work", "emptyDir": {}},
                    ],
                }
            },
        },
    }


def _server(manifest_uri: str, store_dir: Path) -> dict:
    labels = {"app": "mlp-server"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlp-server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
                "spec": {
                    "nodeSelector": {"optimodel.io/pool": "cpu"},
                    "containers": [{
                        "name": "server",
                        "image": "optimodel/server:dev",
                        "args": ["--manifest", manifest_uri, "--port", "8080", "--revision", "r1", "--pool", "cpu",
                                 "--drift-interval-s", "1"],
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                           "periodSeconds": 1},
                        "volumeMounts": [{"name": "store", "mountPath": STORE_MOUNT, "readOnly": True}],
                    }],
                    "volumes": [{"name": "store", "hostPath": {"path": str(store_dir), "type": "Directory"}}],
                },
            },
        },
    }


def test_job_optimizes_server_serves_prometheus_scrapes(local_cluster: LocalCluster, namespace: str,
                                                        tmp_path: Path) -> None:
    model = build("digits-mlp-tiny")  # made locally and cached by the optimizer's zoo
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    config = {
        "name": "mlp",
        "source": model.source_config(),
        "evaluation": {"dataset": str(model.evaluation), "metric": "accuracy", "maxDrop": 0.03},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "latency": {"batchSizes": [1], "iterations": 8, "warmup": 2, "rounds": 2, "measureMemory": False},
        "pools": [{"name": "cpu"}],
        "store": STORE_MOUNT,
        "workDir": WORK_MOUNT,
    }
    kubectl = local_cluster.kubectl
    kubectl("create", "configmap", "optimize-mlp", "-n", namespace, f"--from-literal=config.json={json.dumps(config)}")
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_job(config, store_dir)))
    outcome = _wait_for_job(local_cluster, namespace, "optimize-mlp", timeout=420)
    logs = kubectl("logs", "-n", namespace, "job/optimize-mlp", check=False).stdout
    assert outcome == "Complete", f"optimization Job ended {outcome}:\n{logs[-3000:]}"
    assert "int8" in logs, "the Job's own progress and table reach `kubectl logs`"

    # The Job wrote through the pod's mount; the same blob is visible on the host folder.
    manifests = sorted(store_dir.glob("manifests/int8/*.json"))
    assert manifests, f"no int8 manifest in {store_dir}"
    manifest = read_manifest(str(manifests[0]))
    assert manifest.gate.passed and manifest.gate.deployable
    in_pod_uri = f"{STORE_MOUNT}/{manifests[0].relative_to(store_dir)}"

    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_server(in_pod_uri, store_dir)))
    kubectl("rollout", "status", "-n", namespace, "deployment/mlp-server", "--timeout=180s", timeout=200)
    pod = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=mlp-server", "-o", "json").stdout)["items"][0]
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith("10.244."), "the server binds inside its own pod network namespace"

    spec = manifest.inputs[0]
    features = int(np.prod([d for d in spec.shape[1:] if d]))
    rows = np.load(model.evaluation)
    batch = np.asarray(rows[spec.name][:4], dtype=np.float32).reshape(4, features)
    body = {"inputs": [{"name": spec.name, "shape": [4, features], "datatype": "FP32",
                        "data": batch.ravel().tolist()}]}
    with httpx.Client(base_url=f"http://{pod_ip}:8080", timeout=10) as client:
        for _ in range(20):
            answer = client.post(f"/v2/models/{manifest.name}/infer", json=body)
            assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert outputs and outputs[0]["shape"][0] == 4

    prometheus = PrometheusConnect(url=local_cluster.prometheus_url, disable_ssl=True)
    query = f'sum(optimodel_requests_total{{namespace="{namespace}", code="200"}})'
    deadline = time.monotonic() + 60
    value = 0.0
    while time.monotonic() < deadline:
        result = prometheus.custom_query(query)
        value = float(result[0]["value"][1]) if result else 0.0
        if value >= 20:
            break
        time.sleep(1)
    assert value >= 20, f"Prometheus saw {value} successful requests from the served pod"
