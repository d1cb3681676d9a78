"""Node, node status and Lease bodies the agent writes."""

from __future__ import annotations

import datetime as dt

from optimodel_localcluster.node_agent.config import NodeAgentConfig
from optimodel_localcluster.node_agent.nodes import lease_object, merged_taints, node_object, node_status

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def gpu_node():
    return next(n for n in NodeAgentConfig().nodes() if n.name == "gpu-0")


def test_node_object_carries_labels_taints_and_cidr() -> None:
    body = node_object(gpu_node())
    assert body["metadata"]["labels"]["optimodel.io/pool"] == "gpu"
    assert body["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert body["spec"]["podCIDR"] == "10.244.3.0/24" and body["spec"]["podCIDRs"] == ["10.244.3.0/24"]


def test_status_reports_ready_with_endpoint_and_version() -> None:
    node = gpu_node()
    status = node_status(node, [], NOW, "boot")
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    assert status["allocatable"]["nvidia.com/gpu"] == node.capacity["nvidia.com/gpu"]
    assert status["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": node.kubelet_port}}
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    later = node_status(node, status["conditions"], NOW + dt.timedelta(minutes=1), "boot")
    ready = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["lastHeartbeatTime"] == "2026-01-01T00:01:00Z"


def test_taints_added_by_others_are_kept() -> None:
    ours = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    theirs = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
              {"key": "nvidia.com/gpu", "value": "old", "effect": "NoSchedule"}]
    assert merged_taints(theirs, ours) == [ours[0], theirs[0]]


def test_lease_is_owned_by_its_node() -> None:
    lease = lease_object("cpu-0", "uid-1", 40, NOW)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert lease["spec"] == {"holderIdentity": "cpu-0", "leaseDurationSeconds": 40,
                             "renewTime": "2026-01-01T00:00:00.000000Z"}


def test_a_silenced_node_sends_no_heartbeat_while_the_others_go_on(tmp_path) -> None:  # noqa: ANN001
    import threading

    from optimodel_localcluster.node_agent.nodes import NodeKeeper, set_silenced, silenced_nodes

    class Recorder:
        """Stands in for the API server: records which node each heartbeat was for."""

        def __init__(self) -> None:
            self.paths: list[str] = []

        def get(self, path: str) -> dict:
            self.paths.append(path)
            return {"metadata": {}, "spec": {}, "status": {}}

        def put(self, path: str, body: dict) -> dict:
            self.paths.append(path)
            return body

        def merge_patch(self, path: str, body: dict) -> dict:
            self.paths.append(path)
            return body

    set_silenced(tmp_path, "cpu-1", True)
    assert silenced_nodes(tmp_path) == {"cpu-1"}
    api, stop = Recorder(), threading.Event()
    keeper = NodeKeeper(api, NodeAgentConfig(), stop)  # type: ignore[arg-type]
    runner = threading.Thread(target=keeper.run, args=(lambda: silenced_nodes(tmp_path),))
    runner.start()
    stop.wait(0.5)
    stop.set()
    runner.join(5)
    beats = {p.rsplit("/", 2)[-2] if p.endswith("/status") else p.rsplit("/", 1)[-1] for p in api.paths}
    assert {"cpu-0", "gpu-0"} <= beats and "cpu-1" not in beats, api.paths
    set_silenced(tmp_path, "cpu-1", False)
    assert silenced_nodes(tmp_path) == set() and not (tmp_path / "silenced-nodes").exists()
