"""The simulated nodes: pools, labels, taints, capacity, the pod network and the agent's timings.

`NodeAgentConfig()` is the default topology of the local cluster (pools `cpu` and `gpu`); a JSON file
passed with `--config` overrides any field. `NodeAgentConfig.nodes()` expands pools into the concrete
nodes the agent registers, each with its own pod CIDR and kubelet port.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KUBELET_VERSION = "v1.36.3"
# Names of every host-side object the agent creates start with these, so cleanup can find them.
NETNS_PREFIX = "omc-"
VETH_PREFIX = "omcv"


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class PoolConfig(BaseModel):
    """One node pool: `count` identical nodes named `<name>-0`, `<name>-1`, ..."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(ge=1, le=50)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    capacity: dict[str, str] = Field(default_factory=dict)


def _default_pools() -> list[PoolConfig]:
    base_capacity = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
    return [
        PoolConfig(name="cpu", count=2, capacity=dict(base_capacity)),
        PoolConfig(
            name="gpu",
            count=1,
            labels={"nvidia.com/gpu.present": "true"},
            taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")],
            # Four: the demo's model keeps one while a test session schedules a few of its own.
            capacity={**base_capacity, "nvidia.com/gpu": "4"},
        ),
    ]


def _default_entrypoints() -> dict[str, list[str]]:
    # Image repository (registry and tag stripped) -> the command its container would run.
    return {
        "optimodel/server": ["python", "-m", "optimodel_server"],
        # The gpu pools' image (onnxruntime-gpu in a real image); here, the same server on the host.
        "optimodel/server-gpu": ["python", "-m", "optimodel_server"],
        "optimodel/model-server": ["python", "-m", "optimodel_server"],
        "optimodel/jobs": ["python", "-m", "optimodel_jobs"],
        "optimodel/optimizer": ["python", "-m", "optimodel_jobs"],
        "optimodel/operator": ["python", "-m", "optimodel_operator"],
    }


def _default_path_prefix() -> list[str]:
    # The venv running the agent: its python and console scripts come first on every container's PATH.
    return [str(Path(sys.executable).parent)]


class NodeAgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[PoolConfig] = Field(default_factory=_default_pools)
    pod_network: ipaddress.IPv4Network = ipaddress.IPv4Network("10.244.0.0/16")
    bridge_name: str = Field(default="omc0", max_length=15)
    bridge_address: ipaddress.IPv4Address = ipaddress.IPv4Address("10.244.0.1")
    # The service range (kube-apiserver's --service-cluster-ip-range), routed onto the bridge for the host.
    service_network: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/16")
    # dnsPolicy ClusterFirst: the kube-dns Service's address and the cluster domain (the kubelet's
    # --cluster-dns / --cluster-domain).
    cluster_dns: list[ipaddress.IPv4Address] = Field(default_factory=lambda: [ipaddress.IPv4Address("10.96.0.10")])
    cluster_domain: str = "cluster.local"
    node_prefix_length: int = Field(default=24, ge=16, le=28)
    kubelet_port_base: int = Field(default=21250, ge=1024, le=65000)
    lease_duration_seconds: int = 40
    lease_renew_seconds: float = 10.0
    node_status_update_seconds: float = 10.0
    sync_period_seconds: float = Field(default=0.5, gt=0)
    resync_seconds: float = Field(default=30.0, gt=0)
    backoff_initial_seconds: float = Field(default=10.0, ge=0)
    backoff_max_seconds: float = Field(default=300.0, ge=0)
    path_prefix: list[str] = Field(default_factory=_default_path_prefix)
    base_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    entrypoints: dict[str, list[str]] = Field(default_factory=_default_entrypoints)
    # Containers' resources enforced by cgroups (v1) under this root (cgroups.py); None: unconfined.
    cgroup_root: Path | None = Path("/sys/fs/cgroup")
    pids_max: int = Field(default=4096, ge=16)

    @model_validator(mode="after")
    def _check(self) -> NodeAgentConfig:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        if self.bridge_address not in self.pod_network:
            raise ValueError(f"bridge_address {self.bridge_address} is outside pod_network {self.pod_network}")
        if self.node_prefix_length < self.pod_network.prefixlen:
            raise ValueError("node_prefix_length must be at least the pod network's prefix length")
        subnets = 2 ** (self.node_prefix_length - self.pod_network.prefixlen)
        # Subnet 0 holds the bridge's own address; nodes take the next ones.
        if sum(p.count for p in self.pools) > subnets - 1:
            raise ValueError(f"{self.pod_network} has room for only {subnets - 1} node subnets")
        return self

    @property
    def path(self) -> str:
        return ":".join([*self.path_prefix, self.base_path])

    def nodes(self) -> list[NodeSpec]:
        subnets = self.pod_network.subnets(new_prefix=self.node_prefix_length)
        next(subnets)  # reserved for the bridge
        result: list[NodeSpec] = []
        for pool in self.pools:
            for index in range(pool.count):
                name = f"{pool.name}-{index}"
                labels = {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "optimodel.io/pool": pool.name,
                    "pool": pool.name,
                    **pool.labels,
                }
                result.append(
                    NodeSpec(
                        name=name,
                        pool=pool.name,
                        labels=labels,
                        taints=[t.model_dump() for t in pool.taints],
                        capacity=dict(pool.capacity),
                        pod_cidr=next(subnets),
                        kubelet_port=self.kubelet_port_base + len(result),
                    )
                )
        return result


@dataclass(frozen=True)
class NodeSpec:
    name: str
    pool: str
    labels: dict[str, str]
    taints: list[dict[str, str]]
    capacity: dict[str, str]
    pod_cidr: ipaddress.IPv4Network
    kubelet_port: int


def load_config(path: Path | None) -> NodeAgentConfig:
    """The default topology, or the JSON file at `path` (unknown keys are an error)."""
    if path is None:
        return NodeAgentConfig()
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"cannot read node agent config {path}: {error}") from error
    return NodeAgentConfig.model_validate_json(text)
