"""The node agent against the real control plane: pods run, serve, finish, restart, schedule by pool and stop.

Each test works in its own namespace; workloads are plain shell / `python -m http.server` commands (the agent
runs any command on the host userland). The test process reaches pods directly at their pod IPs over the
agent's bridge, as another pod would.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from optimodel_localcluster.cluster import LocalCluster

from _cluster_helpers import Json, apply, get, wait_for

pytestmark = pytest.mark.cluster


def pods(cluster: LocalCluster, namespace: str, selector: str) -> list[Json]:
    return get(cluster, namespace, "pods", "-l", selector)["items"]


def container_pid(pod: Json, index: int = 0) -> int:
    return int(pod["status"]["containerStatuses"][index]["containerID"].removeprefix("optimodel://"))


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers:
      - name: write-page
        image: busybox
        command: [sh, -c, 'echo "served by $(POD_NAME) on $(NODE)" > /site/index.html']
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        volumeMounts: [{name: site, mountPath: /site}]
      containers:
      - name: http
        image: python:3.11-slim
        command: [python, -m, http.server, "8080", --directory, /site]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
        volumeMounts: [{name: site, mountPath: /site, readOnly: true}]
      volumes: [{name: site, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def test_deployment_pods_become_ready_and_serve_http_through_the_service_endpoints(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, DEPLOYMENT)
    local_cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=120s")
    running = pods(local_cluster, namespace, "app=web")
    assert len(running) == 2
    for pod in running:
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        assert pod["status"]["podIP"].startswith("10.244.")
        assert pod["spec"]["nodeName"].startswith("cpu-")  # no toleration for the GPU pool

    def ready_addresses() -> list[str]:
        slices = get(local_cluster, namespace, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
        return sorted(
            address
            for item in slices
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint["addresses"]
        )

    addresses = wait_for("both pods in the Service's EndpointSlices", lambda: len(ready_addresses()) == 2 and ready_addresses())
    assert addresses == sorted(p["status"]["podIP"] for p in running)
    slices = get(local_cluster, namespace, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
    port = slices[0]["ports"][0]["port"]
    assert port == 8080
    pages = {httpx.get(f"http://{address}:{port}/index.html", timeout=5).text.strip() for address in addresses}
    assert pages == {f"served by {p['metadata']['name']} on {p['spec']['nodeName']}" for p in running}


def test_a_job_runs_to_succeeded(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, namespace, """
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: optimodel/jobs, command: [python, -c, "print('trained', 6 * 7)"]}
""")
    local_cluster.kubectl("wait", "-n", namespace, "job/ok", "--for=condition=Complete", "--timeout=120s")
    (pod,) = pods(local_cluster, namespace, "job-name=ok")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert local_cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout == "trained 42\n"


def test_a_failing_job_is_retried_then_marked_failed(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, namespace, """
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, command: [sh, -c, "echo giving up; exit 3"]}
""")
    local_cluster.kubectl("wait", "-n", namespace, "job/bad", "--for=condition=Failed", "--timeout=180s")
    job = get(local_cluster, namespace, "job/bad")
    assert job["status"]["failed"] == 2  # the first try and one retry (backoffLimit 1)
    reason = next(c["reason"] for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert reason == "BackoffLimitExceeded"
    tries = pods(local_cluster, namespace, "job-name=bad")
    assert len(tries) == 2
    for pod in tries:
        assert pod["status"]["phase"] == "Failed"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_gpu_pods_land_only_on_the_gpu_pool_and_untolerating_pods_never_do(
    local_cluster: LocalCluster, namespace: str
) -> None:
    gpu_nodes = {
        n["metadata"]["name"]
        for n in json.loads(local_cluster.kubectl("get", "nodes", "-l", "optimodel.io/pool=gpu", "-o", "json").stdout)["items"]
    }
    assert gpu_nodes
    apply(local_cluster, namespace, """
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu}
spec:
  replicas: 2
  selector: {matchLabels: {app: gpu}}
  template:
    metadata: {labels: {app: gpu}}
    spec:
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - {name: main, image: busybox, command: [sleep, "3600"], resources: {limits: {nvidia.com/gpu: 1}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  replicas: 5
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers:
      - {name: main, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: wants-gpu-pool-without-toleration}
spec:
  nodeSelector: {optimodel.io/pool: gpu}
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
""")
    local_cluster.kubectl("rollout", "status", "-n", namespace, "deployment/gpu", "--timeout=120s")
    local_cluster.kubectl("rollout", "status", "-n", namespace, "deployment/plain", "--timeout=120s")
    assert {p["spec"]["nodeName"] for p in pods(local_cluster, namespace, "app=gpu")} <= gpu_nodes
    plain_nodes = [p["spec"]["nodeName"] for p in pods(local_cluster, namespace, "app=plain")]
    assert len(plain_nodes) == 5 and not set(plain_nodes) & gpu_nodes

    def unschedulable() -> str | None:
        pod = get(local_cluster, namespace, "pod/wants-gpu-pool-without-toleration")
        scheduled = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None)
        return scheduled and scheduled["status"] == "False" and scheduled.get("message", "")

    message = wait_for("the scheduler to refuse the untolerating pod", unschedulable, timeout=60)
    assert "1 node(s) had untolerated taint" in message, message
    assert "nodeName" not in get(local_cluster, namespace, "pod/wants-gpu-pool-without-toleration")["spec"]


def test_deleting_a_pod_stops_its_processes_and_network(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, namespace, """
apiVersion: v1
kind: Pod
metadata: {name: sleeper, labels: {app: sleeper}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - {name: main, image: busybox, command: [sh, -c, "trap 'echo bye; exit 0' TERM; sleep 3600 & wait"]}
""")
    local_cluster.kubectl("wait", "-n", namespace, "pod/sleeper", "--for=condition=Ready", "--timeout=120s")
    pod = get(local_cluster, namespace, "pod/sleeper")
    pid = container_pid(pod)
    uid = pod["metadata"]["uid"]
    assert Path(f"/proc/{pid}").exists()
    assert Path(f"/run/netns/omc-{uid}").exists()
    local_cluster.kubectl("delete", "-n", namespace, "pod/sleeper", "--timeout=60s")
    wait_for(f"process {pid} to be gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=15, interval=0.2)
    assert not Path(f"/run/netns/omc-{uid}").exists()
    assert local_cluster.kubectl("get", "-n", namespace, "pod/sleeper", check=False).returncode != 0


def test_crashing_container_is_restarted_with_backoff_and_logs_stay_readable(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, """
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: main, image: busybox, command: [sh, -c, "echo run at $(date +%s%N); exit 4"]}
""")

    def restarted() -> Json | None:
        pod = get(local_cluster, namespace, "pod/crasher")
        statuses = pod["status"].get("containerStatuses") or []
        return pod if statuses and statuses[0]["restartCount"] >= 1 and statuses[0].get("lastState") else None

    pod = wait_for("a restart", restarted, timeout=90)
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 4
    assert pod["status"]["phase"] == "Running"  # restartPolicy Always keeps the pod Running while it restarts
    wait_for("CrashLoopBackOff", lambda: "CrashLoopBackOff" in json.dumps(get(local_cluster, namespace, "pod/crasher")
                                                                         ["status"]["containerStatuses"]), timeout=60)
    logs = local_cluster.kubectl("logs", "-n", namespace, "pod/crasher").stdout
    assert logs.startswith("run at ")
    previous = local_cluster.kubectl("logs", "-n", namespace, "pod/crasher", "--previous").stdout
    assert previous.startswith("run at ") and previous != logs
    uid = pod["metadata"]["uid"]
    log_file = local_cluster.layout.root / "pods" / f"{namespace}_crasher_{uid}" / "main.log"
    assert log_file.read_text() == logs


def test_nodes_heartbeat_through_leases(local_cluster: LocalCluster) -> None:
    def renew_times() -> dict[str, str]:
        leases = json.loads(local_cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "json").stdout)
        return {item["metadata"]["name"]: item["spec"]["renewTime"] for item in leases["items"]}

    first = renew_times()
    assert {"cpu-0", "cpu-1", "gpu-0"} <= set(first)
    wait_for("every node lease to be renewed",
             lambda: all(renew_times()[name] != first[name] for name in ("cpu-0", "cpu-1", "gpu-0")), timeout=30)
    for node in json.loads(local_cluster.kubectl("get", "nodes", "-l", "optimodel.io/pool", "-o", "json").stdout)["items"]:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
        assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
