"""Node objects and heartbeats: what a kubelet registers and keeps fresh.

Body builders are pure; `NodeKeeper` registers the nodes and renews their Leases (every
`lease_renew_seconds`) and status (every `node_status_update_seconds`).
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import KUBELET_VERSION, NodeAgentConfig, NodeSpec
from .kubeapi import ApiError, KubeApi
from .status import rfc3339

Json = dict[str, Any]
log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
HOST_IP = "127.0.0.1"
_CONDITIONS = (
    # type, healthy status, reason, message
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_object(node: NodeSpec) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": dict(node.labels),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "optimodel.io/simulated-by": "optimodel-node-agent",
            },
        },
        "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)], "taints": list(node.taints)},
    }


def merged_taints(existing: list[Json], ours: list[dict[str, str]]) -> list[Json]:
    """Our taints plus those others added (the node lifecycle controller's not-ready taints, cordons)."""
    keys = {(t["key"], t["effect"]) for t in ours}
    return [*ours, *[t for t in existing if (t["key"], t["effect"]) not in keys]]


def node_info(boot_id: str) -> Json:
    uname = platform.uname()
    return {
        "machineID": _machine_id(),
        "systemUUID": _machine_id(),
        "bootID": boot_id,
        "kernelVersion": uname.release,
        "osImage": "optimodel local node (host processes)",
        "containerRuntimeVersion": "optimodel://0.1.0",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }


def _machine_id() -> str:
    try:
        return open("/etc/machine-id").read().strip()
    except OSError:
        return uuid.UUID(int=uuid.getnode()).hex


def node_status(node: NodeSpec, previous: list[Json], now: dt.datetime, boot_id: str) -> Json:
    before = {c["type"]: c for c in previous}
    conditions = []
    for kind, status, reason, message in _CONDITIONS:
        old = before.get(kind)
        transition = old["lastTransitionTime"] if old and old.get("status") == status else rfc3339(now)
        conditions.append({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": rfc3339(now), "lastTransitionTime": transition,
        })
    return {
        "capacity": dict(node.capacity),
        "allocatable": dict(node.capacity),
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": node.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": node.kubelet_port}},
        "nodeInfo": node_info(boot_id),
    }


def lease_object(node_name: str, node_uid: str | None, duration: int, now: dt.datetime) -> Json:
    metadata: Json = {"name": node_name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": duration, "renewTime": micro_time(now)},
    }


class NodeKeeper:
    def __init__(self, api: KubeApi, config: NodeAgentConfig, stop: threading.Event) -> None:
        self.api = api
        self.config = config
        self.nodes = config.nodes()
        self.stop = stop
        self.boot_id = str(uuid.uuid4())
        self.uids: dict[str, str] = {}
        self.pod_cidrs: dict[str, str] = {n.name: str(n.pod_cidr) for n in self.nodes}

    def register_all(self) -> None:
        for node in self.nodes:
            self.register(node)

    def register(self, node: NodeSpec) -> None:
        path = f"/api/v1/nodes/{node.name}"
        existing = self.api.get(path)
        if existing is None:
            try:
                existing = self.api.create("/api/v1/nodes", node_object(node))
                log.info("registered node %s (pod CIDR %s)", node.name, node.pod_cidr)
            except ApiError as error:
                if error.status != 409:
                    raise
                existing = self.api.get(path) or {}
        else:
            spec = existing.get("spec") or {}
            patch: Json = {"metadata": {"labels": dict(node.labels)},
                           "spec": {"taints": merged_taints(spec.get("taints") or [], node.taints)}}
            existing = self.api.merge_patch(path, patch)
            cidr = (existing.get("spec") or {}).get("podCIDR")
            if cidr and cidr != str(node.pod_cidr):
                # podCIDR is immutable once set: keep using what the Node says.
                log.warning("node %s keeps its pod CIDR %s (config says %s)", node.name, cidr, node.pod_cidr)
                self.pod_cidrs[node.name] = cidr
        self.uids[node.name] = existing.get("metadata", {}).get("uid", "")
        self.update_status(node, existing)
        self.renew_lease(node)

    def update_status(self, node: NodeSpec, current: Json | None = None) -> None:
        path = f"/api/v1/nodes/{node.name}"
        if current is None:
            current = self.api.get(path)
            if current is None:
                log.warning("node %s disappeared; registering it again", node.name)
                self.register(node)
                return
        previous = (current.get("status") or {}).get("conditions") or []
        status = node_status(node, previous, dt.datetime.now(dt.timezone.utc), self.boot_id)
        self.api.merge_patch(f"{path}/status", {"status": status})

    def renew_lease(self, node: NodeSpec) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node.name}"
        now = dt.datetime.now(dt.timezone.utc)
        body = lease_object(node.name, self.uids.get(node.name), self.config.lease_duration_seconds, now)
        existing = self.api.get(path)
        if existing is None:
            try:
                self.api.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", body)
            except ApiError as error:
                if error.status != 409:
                    raise
            return
        existing["spec"] = {**(existing.get("spec") or {}), **body["spec"]}
        self.api.put(path, existing)

    def run(self, silenced: Callable[[], set[str]] = lambda: set()) -> None:
        """Heartbeats until `stop` is set; none for the nodes `silenced` names (a node lost, for fault tests)."""
        next_lease = 0.0
        next_status = 0.0
        while not self.stop.is_set():
            clock = time.monotonic()
            quiet = silenced()
            if clock >= next_lease:
                for node in self.nodes:
                    if node.name not in quiet:
                        self._guarded(self.renew_lease, node)
                next_lease = clock + self.config.lease_renew_seconds
            if clock >= next_status:
                for node in self.nodes:
                    if node.name not in quiet:
                        self._guarded(self.update_status, node)
                next_status = clock + self.config.node_status_update_seconds
            self.stop.wait(max(0.2, min(next_lease, next_status) - time.monotonic()))

    def _guarded(self, action: Any, node: NodeSpec) -> None:
        try:
            action(node)
        except Exception as error:  # a heartbeat failure must not end the heartbeats
            log.warning("heartbeat for node %s failed: %s", node.name, error)


# A node "lost" on purpose: the agent stops its Lease renewals and status updates while its name is listed in
# this file of the state directory (one name per line), as a kubelet cut off from the API server would; its
# pods' processes go on, as they would on a real node whose network failed. Removing the name brings it back.
SILENCED_NODES_FILE = "silenced-nodes"


def silenced_nodes(state_dir: Path) -> set[str]:
    try:
        return {line.strip() for line in (state_dir / SILENCED_NODES_FILE).read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


def set_silenced(state_dir: Path, node: str, silent: bool) -> None:
    names = silenced_nodes(state_dir) - {node} | ({node} if silent else set())
    path = state_dir / SILENCED_NODES_FILE
    if names:
        path.write_text("".join(f"{n}\n" for n in sorted(names)))
    else:
        path.unlink(missing_ok=True)
