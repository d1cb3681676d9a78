"""Resources that bite: the node agent puts each container in cgroups (v1) made from its resources.

A Job whose container goes over `limits.memory` is killed by the kernel and reported as a kubelet does
(`OOMKilled`, exit code 137) and the Job fails; the same work under a higher limit completes. The same CPU-bound
work runs several times slower under `limits.cpu: 200m` than unlimited, side by side on the same node.
"""

from __future__ import annotations

import pytest

from optimodel_localcluster.cluster import LocalCluster

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
