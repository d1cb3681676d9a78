"""The default topology, config validation and pod address allocation."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from optimodel_localcluster.node_agent.config import NodeAgentConfig, load_config
from optimodel_localcluster.node_agent.ipam import AddressesExhausted, allocate_address


def test_default_topology_has_cpu_and_gpu_pools() -> None:
    nodes = {n.name: n for n in NodeAgentConfig().nodes()}
    assert sorted(nodes) == ["cpu-0", "cpu-1", "gpu-0"]
    cpu, gpu = nodes["cpu-0"], nodes["gpu-0"]
    assert cpu.labels["optimodel.io/pool"] == "cpu" and cpu.labels["pool"] == "cpu"
    assert cpu.labels["kubernetes.io/hostname"] == "cpu-0" and cpu.labels["kubernetes.io/arch"] == "amd64"
    assert cpu.taints == [] and "nvidia.com/gpu" not in cpu.capacity
    assert gpu.labels["nvidia.com/gpu.present"] == "true"
    assert gpu.taints == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert int(gpu.capacity["nvidia.com/gpu"]) >= 1
    assert {n.pod_cidr for n in nodes.values()} == {ipaddress.IPv4Network(f"10.244.{i}.0/24") for i in (1, 2, 3)}
    assert len({n.kubelet_port for n in nodes.values()}) == 3


def test_config_file_overrides_and_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"pools": [{"name": "cpu", "count": 3}], "backoff_initial_seconds": 1}))
    config = load_config(path)
    assert [n.name for n in config.nodes()] == ["cpu-0", "cpu-1", "cpu-2"]
    assert config.backoff_initial_seconds == 1
    path.write_text(json.dumps({"poools": []}))
    with pytest.raises(ValidationError, match="poools"):
        load_config(path)
    with pytest.raises(ValueError, match="cannot read node agent config"):
        load_config(tmp_path / "missing.json")


def test_config_rejects_inconsistent_networks() -> None:
    with pytest.raises(ValidationError, match="outside pod_network"):
        NodeAgentConfig(bridge_address=ipaddress.IPv4Address("10.0.0.1"))
    with pytest.raises(ValidationError, match="room for only"):
        NodeAgentConfig(pod_network=ipaddress.IPv4Network("10.244.0.0/23"))
    with pytest.raises(ValidationError, match="unique"):
        NodeAgentConfig(pools=[{"name": "a", "count": 1}, {"name": "a", "count": 1}])


def test_path_puts_the_venv_first() -> None:
    config = NodeAgentConfig(path_prefix=["/venv/bin"])
    assert config.path.startswith("/venv/bin:") and config.path.endswith("/bin")


def test_allocation_takes_the_lowest_free_address_after_the_gateway_slot() -> None:
    cidr = ipaddress.IPv4Network("10.244.1.0/24")
    used = {ipaddress.IPv4Address("10.244.1.2")}
    assert allocate_address(cidr, used) == ipaddress.IPv4Address("10.244.1.3")
    assert allocate_address(cidr, set()) == ipaddress.IPv4Address("10.244.1.2")
    assert allocate_address(cidr, set(), reserved=[ipaddress.IPv4Address("10.244.1.2")]) == ipaddress.IPv4Address(
        "10.244.1.3")


def test_allocation_reports_exhaustion() -> None:
    cidr = ipaddress.IPv4Network("10.244.1.0/30")  # hosts .1 (gateway slot) and .2
    with pytest.raises(AddressesExhausted, match="no free pod address left in 10.244.1.0/30"):
        allocate_address(cidr, {ipaddress.IPv4Address("10.244.1.2")})
