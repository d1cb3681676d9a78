"""Object storage as users have it, end to end: the source model, the datasets and the artifact store all
live in a bucket of the local cluster's S3 store (SeaweedFS), the Jobs and the servers read and write them
through fsspec/s3fs with keys from a Secret named in spec.artifacts.credentials (by secretKeyRef), the
operator reads run records and manifests with its own read-only keys, and the model reaches Ready, served
from the bucket. Nothing of it is on a host path."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import s3fs

from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, post_when_routed
from optimodel_operator.examples import Published, load_example
from optimodel_operator.testing.cluster import condition, get_model, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SECRET = "store-keys"


def _secret(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    data = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


@pytest.fixture(scope="module")
def bucket(local_cluster: LocalCluster) -> s3fs.S3FileSystem:
    """The bucket as a user's laptop sees it: the writer's keys, the gateway's host address."""
    keys = _secret(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    return s3fs.S3FileSystem(key=keys["AWS_ACCESS_KEY_ID"], secret=keys["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=local_cluster.s3_endpoint, use_listings_cache=False)


@pytest.fixture
def prefix(bucket: s3fs.S3FileSystem, namespace: str) -> Iterator[str]:
    """A folder of the bucket for this test (model, data, store), removed afterwards."""
    folder = f"{seaweedfs.BUCKET}/e2e/{namespace}-{uuid.uuid4().hex[:6]}"
    try:
        yield folder
    finally:
        bucket.rm(folder, recursive=True)


def _spec_in_the_bucket(folder: str) -> dict[str, Any]:
    """The demo's digits example with every location in the bucket; one pool and two variants (int8 reads
    the evaluation set, pruned fine-tunes on the training set) so it fits a 2-core machine."""
    manifest = copy.deepcopy(load_example("digits"))
    spec = manifest["spec"]
    spec["source"]["uri"] = f"s3://{folder}/digits/model.pt"
    spec["evaluation"]["dataset"] = f"s3://{folder}/digits/evaluation.npz"
    spec["optimizations"] = [o for o in spec["optimizations"] if o["name"] in ("int8", "pruned")]
    pruned = next(o for o in spec["optimizations"] if o["name"] == "pruned")
    pruned["prune"]["dataset"] = f"s3://{folder}/digits/train.npz"
    spec["nodePools"] = [spec["nodePools"][0] | {"replicas": 1, "variant": "auto"}]
    spec["artifacts"] = {"uri": f"s3://{folder}/store", "credentials": {"name": SECRET}}
    return manifest


def _wait_ready(cluster: LocalCluster, namespace: str, name: str, timeout: float = 900) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_model(cluster.kubectl, namespace, name)
        if obj is None or (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        if obj["status"].get("phase") == "Failed":
            return obj
        return obj if (condition(obj, "Ready") or {}).get("status") == "True" else None

    try:
        obj = wait_for(probe, timeout, f"{namespace}/{name} Ready", interval=2)
    except AssertionError:
        obj = get_model(cluster.kubectl, namespace, name) or {}
    if (condition(obj, "Ready") or {}).get("status") != "True":
        logs = cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, f"deploy/{OPERATOR_DEPLOYMENT}", "--tail=40",
                               check=False).stdout
        raise AssertionError(f"not Ready; status: {json.dumps(obj.get('status'))[:3000]}\noperator log:\n{logs}")
    return obj


def _labelled(cluster: LocalCluster, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", namespace, "-l", f"optimodel.io/model={name}", "-o", "json").stdout
    return json.loads(out)["items"]


def _aws_env(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod_spec["containers"][0].get("env", []) if e["name"].startswith("AWS_")}


def test_source_datasets_and_artifacts_in_a_bucket_reach_ready_and_serve(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, bucket: s3fs.S3FileSystem,
    prefix: str,
) -> None:
    import onnxruntime as ort

    published = operator_in_cluster
    # The namespace enforces the Pod Security Standard `restricted` (admission refuses any pod that breaks it):
    # with an object store, every pod the operator makes must be admitted.
    local_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                          "pod-security.kubernetes.io/enforce-version=latest")
    refused = local_cluster.kubectl("run", "unrestricted", "--image=optimodel/server", "-n", namespace,
                                    "--dry-run=server", check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr, refused.stderr
    # What a user brings, uploaded to the bucket; nothing below reads the host folder it came from.
    for local in (published.model, published.evaluation, published.train):
        bucket.put_file(str(local), f"{prefix}/digits/{local.name}")
    assert sorted(p.rsplit("/", 1)[1] for p in bucket.ls(f"{prefix}/digits")) == ["evaluation.npz", "model.pt",
                                                                                   "train.npz"]
    # The user's Secret in the model's namespace: the store's keys and its in-cluster endpoint.
    keys = _secret(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    assert keys["AWS_ENDPOINT_URL"] == seaweedfs.IN_CLUSTER_ENDPOINT
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "type": "Opaque",
              "stringData": keys}
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))
    manifest = _spec_in_the_bucket(prefix)
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    obj = _wait_ready(local_cluster, namespace, "digits")
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    # Both kinds of pod the operator makes exist, so both were admitted under restricted.
    admitted = {p["metadata"]["labels"].get("app.kubernetes.io/component")
                for p in _labelled(local_cluster, "pods", namespace, "digits")}
    assert admitted == {"optimizer", "server"}, admitted
    (pool,) = status["pools"]
    passed = {v["name"] for v in status["variants"] if v["gate"] == "Passed"}
    assert pool["variant"] in passed | {"source"}, status["variants"]  # auto: a faster variant, else the source

    # The artifacts are in the bucket: the served manifest and its blob, verified by content.
    (deployment,) = _labelled(local_cluster, "deployments", namespace, "digits")
    annotations = deployment["metadata"]["annotations"]
    manifest_uri = annotations["optimodel.io/manifest"]
    sha256 = annotations["optimodel.io/artifact-sha256"]
    assert manifest_uri.startswith(f"s3://{prefix}/store/manifests/"), manifest_uri
    stored = json.loads(bucket.cat_file(manifest_uri.removeprefix("s3://")))
    assert stored["sha256"] == sha256 == pool["sha256"]
    blob = f"{prefix}/store/{stored['blob']}"
    assert bucket.size(blob) == stored["size_bytes"]
    records = [p for p in bucket.find(f"{prefix}/store/runs") if p.endswith(".json")]
    assert len(records) == len(_labelled(local_cluster, "jobs", namespace, "digits")), "one run record per Job"

    # Jobs and servers got the keys by reference, and no host path: everything went through S3.
    jobs = _labelled(local_cluster, "jobs", namespace, "digits")
    assert jobs, "an optimization Job ran"
    server_pod_spec = deployment["spec"]["template"]["spec"]
    for pod_spec in [j["spec"]["template"]["spec"] for j in jobs] + [server_pod_spec]:
        env = _aws_env(pod_spec)
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
        assert all("value" not in e for e in env.values()), "no key's value in a pod spec"
        assert not [v for v in pod_spec.get("volumes", []) if "hostPath" in v], pod_spec.get("volumes")
    assert keys["AWS_SECRET_ACCESS_KEY"] not in json.dumps(obj) + json.dumps(jobs) + json.dumps(deployment)
    # Nor in what people and tools read: the events, the operator's log, the Jobs' and the servers' logs.
    events = local_cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    operator_log = local_cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, f"deploy/{OPERATOR_DEPLOYMENT}",
                                         "--tail=-1").stdout
    pod_logs = "".join(local_cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], "--all-containers",
                                             check=False).stdout
                       for pod in _labelled(local_cluster, "pods", namespace, "digits"))
    assert "digits" in events and operator_log and pod_logs, "each text read has content"
    for text in (events, operator_log, pod_logs):
        assert keys["AWS_SECRET_ACCESS_KEY"] not in text and keys["AWS_ACCESS_KEY_ID"] not in text

    # Served from the bucket: a request through the model's Service answers as the source model does.
    service = json.loads(local_cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    held_out = np.load(published.evaluation)
    rows = np.asarray(held_out["x"][:64], dtype=np.float32).reshape(64, -1)
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    answer = post_when_routed(f"http://{service['spec']['clusterIP']}:80/v2/models/digits/infer", body)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    served = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"]).argmax(axis=1)
    source = ort.InferenceSession(str(published.onnx), providers=["CPUExecutionProvider"])
    expected = source.run(None, {source.get_inputs()[0].name: rows})[0].argmax(axis=1)
    agreement = float((served == expected).mean())
    assert agreement >= 0.97, f"served classes agree with the source on {agreement:.1%} of 64 held-out rows"
