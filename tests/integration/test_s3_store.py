"""The local cluster's S3 store (SeaweedFS) through fsspec/s3fs, as the Jobs, the servers and the operator
use it: keys and endpoint from the environment botocore reads, the bucket `dev up` created, and the
read-only identity the operator gets refused writes. Also from a pod, through the Service."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import LocalCluster

from _cluster_helpers import apply, get, wait_for

pytestmark = pytest.mark.cluster


def _secret_env(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    data = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def writer_env(local_cluster: LocalCluster) -> Iterator[dict[str, str]]:
    """The writer's Secret as `dev up` wrote it, with the host's endpoint in place of the in-cluster one."""
    env = _secret_env(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    assert env["AWS_ENDPOINT_URL"] == seaweedfs.IN_CLUSTER_ENDPOINT
    yield {**env, "AWS_ENDPOINT_URL": local_cluster.s3_endpoint}


def test_put_and_get_through_s3fs_with_the_endpoint_from_the_environment(writer_env: dict[str, str]) -> None:
    key = f"{seaweedfs.BUCKET}/tests/{uuid.uuid4().hex}"
    code = f"""
import os, fsspec, s3fs
fs = fsspec.filesystem("s3")
assert isinstance(fs, s3fs.S3FileSystem)
payload = os.urandom(9 * 1024 * 1024 + 17)  # more than one 4 MiB chunk of the filer, and one multipart part
with fsspec.open("s3://{key}/blob.bin", "wb") as handle:
    handle.write(payload)
fs.invalidate_cache()
with fsspec.open("s3://{key}/blob.bin", "rb") as handle:
    assert handle.read() == payload, "read back differs"
print(sorted(p.rsplit("/", 1)[1] for p in fs.ls("s3://{key}")), fs.size("s3://{key}/blob.bin"))
fs.rm("s3://{key}", recursive=True)
"""
    result = _python(code, writer_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["['blob.bin']", str(9 * 1024 * 1024 + 17)]


def test_artifacts_round_trip_through_the_contracts(writer_env: dict[str, str], tmp_path: Path) -> None:
    """write_artifact, read_manifest, fetch_verified: what the Jobs, the operator and the servers call."""
    store = f"s3://{seaweedfs.BUCKET}/tests/{uuid.uuid4().hex}"
    code = f"""
import hashlib, pathlib
from optimodel_contracts.artifacts import ArtifactManifest, GateVerdict, Lineage, TensorSpec
from optimodel_contracts.artifacts import fetch_verified, read_manifest, write_artifact
model = pathlib.Path({str(tmp_path)!r}) / "model.onnx"
model.write_bytes(b"pretend-onnx-bytes" * 100_000)
manifest = ArtifactManifest(
    name="int8", inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 64])],
    outputs=[TensorSpec(name="logits", dtype="float32", shape=[None, 10])], task="classification",
    metrics={{"accuracy": 0.97}}, gate=GateVerdict(passed=True, reason="ok", deployable=True),
    lineage=Lineage(source_sha256="a" * 64, spec_hash="b" * 64, seed=0))
uri = write_artifact({store!r}, model, manifest)
assert uri.startswith({store!r} + "/manifests/int8/"), uri
back = read_manifest(uri)
_, local = fetch_verified(uri, pathlib.Path({str(tmp_path)!r}) / "fetched")
assert local.read_bytes() == model.read_bytes()
print(back.sha256 == hashlib.sha256(model.read_bytes()).hexdigest(), back.size_bytes)
import fsspec; fsspec.filesystem("s3").rm({store!r}, recursive=True)
"""
    result = _python(code, writer_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", str(len(b"pretend-onnx-bytes") * 100_000)]


def test_the_operators_identity_reads_and_may_not_write(local_cluster: LocalCluster,
                                                         writer_env: dict[str, str]) -> None:
    key = f"s3://{seaweedfs.BUCKET}/tests/{uuid.uuid4().hex}.json"
    wrote = _python(f"import fsspec\nwith fsspec.open({key!r}, 'w') as h: h.write('{{\"ok\": 1}}')", writer_env)
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    reader = _secret_env(local_cluster, seaweedfs.OPERATOR_NAMESPACE, seaweedfs.OPERATOR_SECRET)
    reader["AWS_ENDPOINT_URL"] = local_cluster.s3_endpoint
    assert reader["AWS_ACCESS_KEY_ID"] != writer_env["AWS_ACCESS_KEY_ID"]
    read = _python(f"import fsspec\nwith fsspec.open({key!r}, 'r') as h: print(h.read())", reader)
    assert read.returncode == 0, read.stderr[-3000:]
    assert json.loads(read.stdout) == {"ok": 1}
    refused = _python(f"import fsspec\nwith fsspec.open({key!r}, 'w') as h: h.write('tampered')", reader)
    assert refused.returncode != 0 and ("AccessDenied" in refused.stderr or "PermissionError" in refused.stderr), \
        refused.stderr[-2000:]
    _python(f"import fsspec; fsspec.filesystem('s3').rm({key!r})", writer_env)


def test_a_pod_reaches_the_store_through_the_service_with_the_secret(local_cluster: LocalCluster,
                                                                      namespace: str) -> None:
    env = _secret_env(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    data = {k: base64.b64encode(v.encode()).decode() for k, v in env.items()}
    apply(local_cluster, namespace, json.dumps({"apiVersion": "v1", "kind": "Secret",
                                                "metadata": {"name": "store"}, "data": data}))
    key = f"s3://{seaweedfs.BUCKET}/tests/{namespace}/from-pod.txt"
    code = (f"import fsspec\nwith fsspec.open({key!r}, 'w') as h: h.write('hello from a pod')\n"
            f"print(fsspec.open({key!r}, 'r').open().read())")
    refs = [{"name": k, "valueFrom": {"secretKeyRef": {"name": "store", "key": k}}}
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s3-client"},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "python", "command": ["python", "-c", code],
                                                              "env": refs}]}}
    apply(local_cluster, namespace, json.dumps(pod))
    phase = wait_for("the pod to finish", lambda: get(local_cluster, namespace, "pod", "s3-client")["status"].get("phase")
                     in ("Succeeded", "Failed") and get(local_cluster, namespace, "pod", "s3-client")["status"]["phase"],
                     timeout=120)
    logs = local_cluster.kubectl("logs", "-n", namespace, "s3-client", check=False).stdout
    assert phase == "Succeeded", logs[-3000:]
    assert logs.strip().endswith("hello from a pod")
