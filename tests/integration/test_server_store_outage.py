"""The model server against the local cluster's S3 store (SeaweedFS), through s3fs as a pod reads it.

Started while the store is stopped, the server (a process on the host, and a pod with the operator's probes)
stays alive and unready, says it is retrying (cause, attempt, next try), and becomes ready by itself once the
store runs again: no restart. Against the running store, a corrupted blob, a missing manifest and rejected keys
are refused at once, never retried.

The store is shared by every test of the cluster: whatever happens, it is started again before the test ends.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import LocalCluster

from _cluster_helpers import apply, get, wait_for

pytestmark = pytest.mark.cluster

FEATURES = 64
PORT = 8080
REPO = Path(__file__).resolve().parents[2]
# The pod runs this checkout's server, as tests/integration/test_analysis_prometheus.py does.
SERVER_PYTHONPATH = ":".join(str(REPO / d) for d in ("model_server", "contracts"))


def _secret_env(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    data = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any AWS_/FSSPEC_ setting of its own, plus ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    return {**clean, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def _python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=_clean_env(env), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def writer_env(local_cluster: LocalCluster) -> dict[str, str]:
    """The keys `dev up` wrote for pods, with the host's endpoint in place of the in-cluster one."""
    env = _secret_env(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    return {**env, "AWS_ENDPOINT_URL": local_cluster.s3_endpoint}


@pytest.fixture
def artifact(writer_env: dict[str, str]) -> Iterator[str]:
    """A sample artifact in a folder of its own in the store's bucket; its manifest's s3:// URI. Removed after."""
    store = f"s3://{seaweedfs.BUCKET}/tests/server-outage-{uuid.uuid4().hex[:10]}/store"
    uri = _python(
        "from optimodel_server.sample_artifact import write_sample_artifact\n"
        f"print(write_sample_artifact({store!r}, hidden=16))", writer_env).strip()
    assert uri.startswith(f"{store}/manifests/mlp/"), uri
    yield uri
    _python(f"import fsspec\nfs = fsspec.filesystem('s3')\nif fs.exists({store!r}): fs.rm({store!r}, recursive=True)",
            writer_env)


def _corrupt_blob(uri: str, env: dict[str, str]) -> None:
    _python(
        "import fsspec\n"
        "from optimodel_contracts.artifacts import read_manifest, store_root_of\n"
        f"manifest = read_manifest({uri!r})\n"
        f"blob = store_root_of({uri!r}) + '/' + manifest.blob\n"
        "data = bytearray(fsspec.open(blob, 'rb').open().read())\n"
        "data[len(data) // 2] ^= 0xFF\n"
        "with fsspec.open(blob, 'wb') as handle:\n"
        "    handle.write(bytes(data))\n", env)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m optimodel_server` on loopback, as a pod runs it (keys and endpoint from the environment)."""

    def __init__(self, uri: str, env: dict[str, str], cache: Path, *flags: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cache.parent / f"server-{self.port}.log"
        self._log_handle = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "optimodel_server", "--manifest", uri, "--model-name", "mlp",
             "--host", "127.0.0.1", "--port", str(self.port), "--cache-dir", str(cache), *flags],
            stdout=self._log_handle, stderr=subprocess.STDOUT, text=True, env=_clean_env(env),
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready_body(self) -> dict[str, Any] | None:
        assert self.process.poll() is None, f"the server exited:\n{self.output()[-3000:]}"
        try:
            return httpx.get(f"{self.base}/v2/health/ready", timeout=2).json()
        except httpx.TransportError:
            return None

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.base}/metrics", timeout=2).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
        raise AssertionError(f"no sample {name}")

    def stop(self) -> int:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()
        return self.process.returncode


def _infer(base: str) -> httpx.Response:
    body = {"inputs": [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32", "data": [0.5] * FEATURES}]}
    return httpx.post(f"{base}/v2/models/mlp/infer", json=body, timeout=10)


def test_a_server_started_while_the_store_is_stopped_becomes_ready_when_it_returns(
    local_cluster: LocalCluster, writer_env: dict[str, str], artifact: str, tmp_path: Path
) -> None:
    weed = local_cluster.process("seaweedfs")
    server: Server | None = None
    store_back_at: float | None = None
    try:
        assert weed.stop(), "the S3 store was running"
        # Default back-off (1 s doubling to 30 s): the figures below are what a pod would see.
        server = Server(artifact, writer_env, tmp_path / "cache")
        retrying = wait_for("the server reports retrying twice", lambda: (
            (b := server.ready_body()) is not None and b.get("attempt", 0) >= 2 and b), timeout=120, interval=0.5)
        assert retrying["state"] == "Retrying" and retrying["cause"] == "HostUnreachable", retrying
        assert "EndpointConnectionError" in retrying["reason"] or "Connect" in retrying["reason"], retrying
        assert httpx.get(f"{server.base}/v2/health/live", timeout=2).status_code == 200
        assert httpx.get(f"{server.base}/v2/health/ready", timeout=2).status_code == 503
        assert _infer(server.base).status_code == 503
        assert server.metric("optimodel_artifact_fetch_retrying") == 1
        assert server.metric("optimodel_model_ready") == 0
        pid = server.process.pid

        local_cluster.up()  # starts the store again and waits for its bucket to answer
        store_back_at = time.monotonic()
        wait_for("the server becomes ready without a restart", lambda: (
            (b := server.ready_body()) is not None and b.get("ready") is True), timeout=120, interval=0.25)
        ready_after_s = time.monotonic() - store_back_at
        assert server.process.pid == pid and server.process.poll() is None, "the same process, never restarted"
        answer = _infer(server.base)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 4], answer.text
        attempts = server.metric("optimodel_artifact_fetch_attempts_total")
        assert attempts >= 3, attempts
        assert server.metric("optimodel_artifact_fetch_retrying") == 0
        assert server.metric("optimodel_model_ready") == 1
        # The back-off is capped at 30 s, and one failing s3 attempt lasts a few seconds (botocore's own tries).
        assert ready_after_s <= 60, f"ready {ready_after_s:.1f} s after the store answered"
        print(f"[outage] attempts={attempts:.0f} ready_after_store_s={ready_after_s:.1f}")
    finally:
        if not weed.is_running():
            local_cluster.up()  # the store is shared: it runs again whatever happened above
        code = server.stop() if server is not None else None
    assert code == 0, server.output()[-3000:]
    output = server.output()
    assert "ARTIFACT STORE UNAVAILABLE (HostUnreachable), attempt 1" in output, output[-3000:]
    assert "the artifact store answered at attempt" in output, output[-3000:]


def _refused_at_once(server: Server) -> dict[str, Any]:
    body = wait_for("the server refuses the artifact", lambda: (
        (b := server.ready_body()) is not None and b.get("state") not in (None, "Loading") and b), timeout=120,
        interval=0.25)
    assert body["state"] == "Refused", body
    time.sleep(3.0)  # three of the first back-off periods: a refused artifact is not fetched again
    assert server.metric("optimodel_artifact_fetch_attempts_total") == 1
    assert server.ready_body()["state"] == "Refused"
    assert httpx.get(f"{server.base}/v2/health/live", timeout=2).status_code == 200
    return body


def test_a_corrupted_blob_in_the_running_store_is_refused_at_once(
    writer_env: dict[str, str], artifact: str, tmp_path: Path
) -> None:
    _corrupt_blob(artifact, writer_env)
    server = Server(artifact, writer_env, tmp_path / "cache")
    try:
        body = _refused_at_once(server)
        assert "HashMismatch" in body["reason"], body
    finally:
        code = server.stop()
    assert code == 0, server.output()[-3000:]


def test_a_missing_manifest_in_the_running_store_is_refused_at_once(
    writer_env: dict[str, str], artifact: str, tmp_path: Path
) -> None:
    missing = artifact.rsplit("/", 1)[0] + "/" + "0" * 64 + ".json"
    server = Server(missing, writer_env, tmp_path / "cache")
    try:
        body = _refused_at_once(server)
        assert "ManifestMissing" in body["reason"], body
    finally:
        code = server.stop()
    assert code == 0, server.output()[-3000:]


def test_rejected_keys_are_refused_at_once(writer_env: dict[str, str], artifact: str, tmp_path: Path) -> None:
    wrong = {**writer_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    server = Server(artifact, wrong, tmp_path / "cache")
    try:
        body = _refused_at_once(server)
        assert any(word in body["reason"] for word in ("CredentialsInvalid", "PermissionDenied")), body
    finally:
        code = server.stop()
    assert code == 0, server.output()[-3000:]


def _server_pod(manifest_uri: str) -> dict[str, Any]:
    """A server pod as the operator builds one (builders/server.py: probes, restricted security context, keys
    from a Secret), with a liveness probe strict enough that a failing one would restart it within seconds."""
    keys = [{"name": k, "valueFrom": {"secretKeyRef": {"name": "store-keys", "key": k}}}
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server", "labels": {"app": "outage-server"}},
        "spec": {
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "server", "image": "optimodel/server:dev",
                "args": ["--manifest", manifest_uri, "--model-name", "mlp", "--port", str(PORT),
                         "--cache-dir", "/cache", "--intra-op-threads", "1"],
                "env": [{"name": "PYTHONPATH", "value": SERVER_PYTHONPATH}, *keys],
                "ports": [{"containerPort": PORT, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1,
                                   "failureThreshold": 2},
                "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 2,
                                  "failureThreshold": 2, "initialDelaySeconds": 5},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}},
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }


def _pod_view(cluster: LocalCluster, namespace: str) -> tuple[bool, int, str | None]:
    """(Ready condition true, the container's restart count, the pod IP) of the server pod."""
    status = get(cluster, namespace, "pod", "server").get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    return ready, restarts, status.get("podIP")


def _pod_ready_body(ip: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://{ip}:{PORT}/v2/health/ready", timeout=2).json()
    except (httpx.TransportError, ValueError):
        return None


def test_a_server_pod_started_while_the_store_is_stopped_turns_ready_without_a_restart(
    local_cluster: LocalCluster, namespace: str, artifact: str
) -> None:
    keys = _secret_env(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    assert keys["AWS_ENDPOINT_URL"] == seaweedfs.IN_CLUSTER_ENDPOINT, "the pod reaches the store through its Service"
    apply(local_cluster, namespace, json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-keys"},
                                                "type": "Opaque", "stringData": keys}))
    weed = local_cluster.process("seaweedfs")
    try:
        assert weed.stop(), "the S3 store was running"
        apply(local_cluster, namespace, json.dumps(_server_pod(artifact)))
        ip = wait_for("the pod runs and has an IP", lambda: _pod_view(local_cluster, namespace)[2], timeout=120)
        retrying = wait_for("the pod's server reports retrying twice", lambda: (
            (b := _pod_ready_body(ip)) is not None and b.get("attempt", 0) >= 2 and b), timeout=120, interval=0.5)
        assert retrying["state"] == "Retrying" and retrying["cause"] == "HostUnreachable", retrying
        # Long enough for the strict liveness probe (every 2 s, 2 failures) to have restarted a failing server.
        time.sleep(10)
        ready, restarts, _ = _pod_view(local_cluster, namespace)
        assert not ready and restarts == 0, (ready, restarts)

        local_cluster.up()
        store_back_at = time.monotonic()
        wait_for("the pod turns Ready", lambda: _pod_view(local_cluster, namespace)[0], timeout=120, interval=0.5)
        ready_after_s = time.monotonic() - store_back_at
    finally:
        if not weed.is_running():
            local_cluster.up()  # the store is shared: it runs again whatever happened above
    ready, restarts, ip_now = _pod_view(local_cluster, namespace)
    assert ready and restarts == 0 and ip_now == ip, (ready, restarts, ip_now, ip)
    answer = _infer(f"http://{ip}:{PORT}")
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 4], answer.text
    logs = local_cluster.kubectl("logs", "-n", namespace, "server", check=False).stdout
    assert "ARTIFACT STORE UNAVAILABLE (HostUnreachable), attempt 1" in logs, logs[-3000:]
    print(f"[outage pod] ready_after_store_s={ready_after_s:.1f}")
