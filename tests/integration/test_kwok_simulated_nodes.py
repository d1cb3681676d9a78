"""kwok against a real control plane (issue 14, item 4): a simulated cluster of its own (not the shared one), one
kwok node Ready, one pod scheduled onto it by kube-scheduler and Running, a pod without the toleration kept off
it, and the API server's request counters readable as the scale benchmark reads them.

The first run builds kwok from the Go module proxy (a few minutes, cached under ~/.cache/optimodel/kwok/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from optimodel_localcluster.kwok import POOL_LABEL, TOLERATION, SimulatedCluster
from optimodel_localcluster.paths import Ports
from optimodel_operator.testing.cluster import wait_for
from optimodel_operator.testing.scripts import load_script

# Ports of their own again (the scale benchmark's simulated cluster may be running on paths.SIMULATED_PORTS).
TEST_PORTS = Ports(etcd_client=23990, etcd_peer=24000, apiserver=16643, controller_manager=20457, scheduler=20459,
                   prometheus=19290, kube_proxy_healthz=20456, kube_proxy_metrics=20449, coredns_health=20380,
                   coredns_ready=20381, kwok=20490)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    cluster = SimulatedCluster(tmp_path_factory.mktemp("kwok-cluster"), TEST_PORTS)
    try:
        cluster.up(timeout=180)
        yield cluster
    finally:
        cluster.wipe()
    assert cluster.leftovers() == []


def _pod(name: str, tolerate: bool) -> dict:
    spec = {"nodeSelector": {POOL_LABEL: "sim"}, "containers": [{"name": "server", "image": "optimodel/server:dev"}]}
    if tolerate:
        spec["tolerations"] = [TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _get(cluster: SimulatedCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_a_kwok_node_becomes_ready_and_runs_a_scheduled_pod(simulated: SimulatedCluster) -> None:
    simulated.add_nodes(["kwok-0"], "sim")

    def ready() -> bool:
        conditions = _get(simulated, "node", "kwok-0")["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, 60, "kwok-0 Ready")
    node = _get(simulated, "node", "kwok-0")
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok-")
    assert "optimodel.io/pool" in node["metadata"]["labels"]

    simulated.kubectl("apply", "-f", "-", input=json.dumps(_pod("served", tolerate=True)))
    simulated.kubectl("apply", "-f", "-", input=json.dumps(_pod("kept-off", tolerate=False)))

    def running() -> dict | None:
        pod = _get(simulated, "pod", "served", "-n", "default")
        return pod if pod["status"].get("phase") == "Running" else None

    pod = wait_for(running, 60, "the pod Running on kwok-0")
    assert pod["spec"]["nodeName"] == "kwok-0"  # placed by kube-scheduler, not by us
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    assert pod["status"]["podIP"].startswith("10.252.")
    kept_off = _get(simulated, "pod", "kept-off", "-n", "default")
    assert kept_off["spec"].get("nodeName") is None, "the simulated node is tainted: only pods that tolerate it land"
    unscheduled = [c for c in kept_off["status"].get("conditions") or [] if c["type"] == "PodScheduled"]
    assert unscheduled and unscheduled[0]["status"] == "False"


def test_the_api_servers_request_counters_read_as_the_benchmark_reads_them(simulated: SimulatedCluster) -> None:
    scale = load_script("benchmarks/scale.py", "optimodel_scale_benchmark")
    before = scale.parse_request_counts(scale.scrape(simulated))
    simulated.kubectl("create", "configmap", "counted", "-n", "default")
    after = scale.parse_request_counts(scale.scrape(simulated))
    delta = scale.counter_delta(before, after)
    assert delta.get(("POST", "configmaps", ""), 0) >= 1
    assert scale.classify(delta)["writes"] >= 1
