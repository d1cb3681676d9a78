"""Resources that bite: the node agent puts each container in cgroups (v1) made from its resources.

A Job whose container goes over `limits.memory` is killed by the kernel and reported as a kubelet does
(`OOMKilled`, exit code 137) and the Job fails; the same work under a higher limit completes. The same CPU-bound
work runs several times slower under `limits.cpu: 200m` than unlimited, side by side on the same node, and a model
server capped at 100m answers the same heavy requests slower than an unlimited one (interleaved).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_server.sample_artifact import write_sample_artifact

from _cluster_helpers import Json, apply, get, wait_for

pytestmark = pytest.mark.cluster

ALLOCATE = "import time; block = bytearray(300 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); print('held', len(block))"


def _job(name: str, memory: str) -> str:
    return f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: optimodel/jobs
        command: [python, -c, "{ALLOCATE}"]
        resources: {{limits: {{memory: {memory}, cpu: "1"}}}}
"""


def _terminated(cluster: LocalCluster, namespace: str, job: str) -> Json | None:
    for pod in get(cluster, namespace, "pods", "-l", f"job-name={job}")["items"]:
        for status in pod["status"].get("containerStatuses") or []:
            if status["state"].get("terminated"):
                return status["state"]["terminated"]
    return None


def test_a_job_over_its_memory_limit_is_oomkilled_and_fails(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, namespace, _job("over", "100Mi") + "---" + _job("within", "600Mi"))
    over = wait_for("the over-limit container ends", lambda: _terminated(local_cluster, namespace, "over"), 120)
    assert (over["reason"], over["exitCode"]) == ("OOMKilled", 137), over
    within = wait_for("the within-limit container ends", lambda: _terminated(local_cluster, namespace, "within"), 120)
    assert (within["reason"], within["exitCode"]) == ("Completed", 0), within

    def failed() -> bool:
        conditions = get(local_cluster, namespace, "job", "over").get("status", {}).get("conditions") or []
        return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)

    wait_for("the Job over its limit fails", failed, 60)


BUSY = ("import time; t, c = time.perf_counter(), time.process_time(); sum(i * i for i in range(6_000_000)); "
        "print(f'elapsed {time.perf_counter() - t:.3f} cpu {time.process_time() - c:.3f}')")


def _busy_pod(name: str, cpu_limit: str | None) -> str:
    resources = f"resources: {{limits: {{cpu: {cpu_limit}}}}}" if cpu_limit else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: cpu-0}}
  containers:
  - name: main
    image: optimodel/jobs
    command: [python, -c, "{BUSY}"]
    {resources}
"""


def _times(cluster: LocalCluster, namespace: str, pod: str) -> tuple[float, float] | None:
    """Wall-clock and CPU seconds of the pod's work, once it has finished."""
    status = get(cluster, namespace, "pod", pod)["status"]
    if status.get("phase") != "Succeeded":
        return None
    words = cluster.kubectl("logs", pod, "-n", namespace).stdout.strip().splitlines()[-1].split()
    return float(words[1]), float(words[3])


def test_cpu_limited_work_runs_slower_than_unlimited_work(local_cluster: LocalCluster, namespace: str) -> None:
    # Each round runs both at once on the same node, so machine load (shared, 2 cores) hits both alike.
    slower, capped_share = [], []
    for round_ in range(2):
        apply(local_cluster, namespace, _busy_pod(f"free-{round_}", None) + "---" + _busy_pod(f"capped-{round_}", '"200m"'))
        free = wait_for("the unlimited pod finishes", lambda: _times(local_cluster, namespace, f"free-{round_}"), 180)
        capped = wait_for("the capped pod finishes", lambda: _times(local_cluster, namespace, f"capped-{round_}"), 300)
        slower.append(capped[0] / free[0])
        capped_share.append(capped[1] / capped[0])
    # The quota holds the capped pod to 0.2 CPU-seconds a second (a little over at period edges), whatever the
    # load; the unlimited one gets what the node has free, so the same work takes it less wall-clock time.
    assert max(capped_share) < 0.3, capped_share
    assert min(slower) > 1.3, slower


SERVER_PORT = 8080
STORE_MOUNT = "/var/lib/optimodel/store"
REPO = Path(__file__).resolve().parents[2]
# The pods run this checkout's server (the venv's editable install may point at another checkout).
SERVER_PYTHONPATH = ":".join(str(REPO / d) for d in ("model_server", "contracts"))
FEATURES = 64
HEAVY_ROWS = 8192  # a request whose decoding and inference take tens of CPU-milliseconds: many 100m quota periods


def _server_pod(name: str, manifest: str, store_dir: Path, cpu_limit: str | None) -> Json:
    container: Json = {
        "name": "server",
        "image": "optimodel/server:dev",
        "args": ["--manifest", manifest, "--port", str(SERVER_PORT), "--model-name", "mlp", "--revision", name,
                 "--pool", "cpu", "--intra-op-threads", "1"],
        "env": [{"name": "PYTHONPATH", "value": SERVER_PYTHONPATH}],
        "ports": [{"containerPort": SERVER_PORT, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "store", "mountPath": STORE_MOUNT, "readOnly": True}],
    }
    if cpu_limit:
        container["resources"] = {"limits": {"cpu": cpu_limit}}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "limits-server"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "cpu-0"}, "containers": [container],
                 "volumes": [{"name": "store", "hostPath": {"path": str(store_dir), "type": "Directory"}}]},
    }


def _ready_ip(cluster: LocalCluster, namespace: str, pod: str) -> str | None:
    status = get(cluster, namespace, "pod", pod)["status"]
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return status.get("podIP") if ready else None


def _timed_request(client: httpx.Client, ip: str, body: bytes) -> float:
    started = time.perf_counter()
    answer = client.post(f"http://{ip}:{SERVER_PORT}/v2/models/mlp/infer", content=body,
                         headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    return elapsed


def test_a_cpu_limited_model_server_answers_slower_than_an_unlimited_one(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    manifest = f"{STORE_MOUNT}/{Path(write_sample_artifact(str(store_dir))).relative_to(store_dir)}"
    pods = [_server_pod("free", manifest, store_dir, None), _server_pod("capped", manifest, store_dir, "100m")]
    apply(local_cluster, namespace, json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    ips = {name: wait_for(f"server pod {name} ready", lambda n=name: _ready_ip(local_cluster, namespace, n), 240)
           for name in ("free", "capped")}
    data = np.random.default_rng(0).standard_normal((HEAVY_ROWS, FEATURES)).astype(np.float32)
    # Encoded once: the client's own JSON work must not weigh on both sides of the ratio.
    body = json.dumps({"inputs": [{"name": "features", "shape": [HEAVY_ROWS, FEATURES], "datatype": "FP32",
                                   "data": data.ravel().tolist()}]}).encode()
    times: dict[str, list[float]] = {"free": [], "capped": []}
    with httpx.Client(timeout=120) as client:
        for name in ips:  # one untimed request each: first-call allocations are not the quota's doing
            _timed_request(client, ips[name], body)
        # Interleaved, alternating which goes first, so load on the shared machine hits both alike.
        for round_ in range(6):
            order = ("free", "capped") if round_ % 2 == 0 else ("capped", "free")
            for name in order:
                times[name].append(_timed_request(client, ips[name], body))
    ratio = statistics.median(times["capped"]) / statistics.median(times["free"])
    # Each heavy request needs more CPU time than a 100m quota grants in one 100 ms period (10 ms), so the capped server
    # is throttled mid-request; the unlimited one runs it straight through.
    assert ratio > 1.5, (ratio, times)
