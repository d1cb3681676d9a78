"""kwok's pin, build entry and command line, and the simulated cluster's ports (no cluster needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from optimodel_localcluster import kwok
from optimodel_localcluster.build import KWOK_GOBUILD_DIR, kwok_binaries_dir, kwok_binary
from optimodel_localcluster.paths import KWOK_VERSION, SIMULATED_PORTS, LocalClusterError, Ports


def test_the_go_module_pins_the_version_paths_names() -> None:
    go_mod = (KWOK_GOBUILD_DIR / "go.mod").read_text()
    assert "tool sigs.k8s.io/kwok/cmd/kwok" in go_mod
    assert f"sigs.k8s.io/kwok {KWOK_VERSION} " in go_mod
    assert (KWOK_GOBUILD_DIR / "go.sum").read_text().count(f"sigs.k8s.io/kwok {KWOK_VERSION}") == 2
    assert kwok_binary() == kwok_binaries_dir() / "kwok"
    assert kwok_binaries_dir().parts[-3:] == ("kwok", KWOK_VERSION, "bin")


def test_every_port_of_the_simulated_cluster_differs_from_the_shared_clusters() -> None:
    shared = set(dataclasses.astuple(Ports()))
    own = dataclasses.astuple(SIMULATED_PORTS)
    assert len(set(own)) == len(own)
    assert shared.isdisjoint(own)
    with pytest.raises(LocalClusterError, match="ports of its own"):
        kwok.SimulatedCluster(Path("/nonexistent-state"), Ports())


def test_kwok_manages_only_annotated_nodes_with_the_stock_stages() -> None:
    argv = kwok.argv(Path("/state/kubeconfig"), Path("/cache/stages"), SIMULATED_PORTS)
    assert argv[0] == str(kwok_binary())
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    assert "--manage-all-nodes" not in " ".join(argv)
    assert f"--server-address=127.0.0.1:{SIMULATED_PORTS.kwok}" in argv
    configs = [a.removeprefix("--config=") for a in argv if a.startswith("--config=")]
    assert [Path(c).name for c in configs] == [Path(s).name for s in kwok.STAGE_FILES]
    assert {Path(s).parts[2] for s in kwok.STAGE_FILES} == {"node", "pod"}


def test_a_simulated_node_is_annotated_for_kwok_labelled_with_its_pool_and_tainted() -> None:
    node = kwok.node("kwok-003", "sim")
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["metadata"]["labels"]["optimodel.io/pool"] == "sim"
    assert node["spec"]["taints"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
    assert kwok.TOLERATION == {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
    assert node["status"]["allocatable"]["pods"] == "110"
