"""The node agent's cgroup arithmetic and files (the kubelet's rules), on a folder laid out like cgroupfs v1.
tests/integration/test_node_agent_limits.py shows the real kernel enforcing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimodel_localcluster.node_agent import cgroups
from optimodel_localcluster.node_agent.cgroups import Limits, limits_of


@pytest.mark.parametrize(("resources", "expected"), [
    ({}, Limits()),
    ({"limits": {"cpu": "500m", "memory": "64Mi"}}, Limits(cpu_quota_us=50_000, cpu_shares=512, memory_bytes=64 * 2**20)),
    ({"requests": {"cpu": "250m"}, "limits": {"cpu": "2"}}, Limits(cpu_quota_us=200_000, cpu_shares=256)),
    ({"requests": {"cpu": "1m"}}, Limits(cpu_shares=2)),  # the kernel's minimum share
    ({"limits": {"cpu": "1m"}}, Limits(cpu_quota_us=1_000, cpu_shares=2)),  # the kubelet's minimum quota
    ({"limits": {"memory": "1G"}}, Limits(memory_bytes=10**9)),
])
def test_limits_follow_the_kubelet(resources: dict, expected: Limits) -> None:
    assert limits_of({"resources": resources}) == expected


def _fake_root(tmp_path: Path) -> Path:
    for controller in cgroups.CONTROLLERS:
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    return tmp_path


def test_create_writes_each_limit_and_unlimited_means_minus_one(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    dirs = cgroups.create(root, "uid-1", "main", Limits(cpu_quota_us=20_000, cpu_shares=204, memory_bytes=2**26,
                                                         pids_max=64))
    read = {name: (path.parent / name).read_text().strip() for name, path in
            [("cpu.cfs_quota_us", dirs["cpu"] / "x"), ("cpu.shares", dirs["cpu"] / "x"),
             ("memory.limit_in_bytes", dirs["memory"] / "x"), ("pids.max", dirs["pids"] / "x")]}
    assert read == {"cpu.cfs_quota_us": "20000", "cpu.shares": "204", "memory.limit_in_bytes": str(2**26),
                    "pids.max": "64"}
    assert dirs["memory"] == root / "memory" / "optimodel" / "uid-1" / "main"
    # The same container started again without limits: its cgroups are reset, not left as they were.
    cgroups.create(root, "uid-1", "main", Limits())
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "-1"
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == "-1"


def test_the_shim_reads_the_kernels_oom_counter_from_the_open_file(tmp_path: Path) -> None:
    import os

    from optimodel_localcluster.node_agent.shim import _oom_kills

    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    fd = os.open(tmp_path / "memory.oom_control", os.O_RDONLY)
    try:
        assert _oom_kills(fd) == 3
        assert _oom_kills(fd) == 3, "read again from the start, as after the container's exit"
    finally:
        os.close(fd)
    assert _oom_kills(None) == 0


def test_available_needs_every_controller(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    assert cgroups.available(root)
    (root / "pids" / "cgroup.procs").unlink()
    assert not cgroups.available(root)


def test_remove_takes_the_pods_tree_away(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    for container in ("a", "b"):
        for path in cgroups.container_dirs(root, "uid-2", container).values():
            path.mkdir(parents=True)  # empty, as cgroupfs shows a cgroup with no process left
    cgroups.remove(root, "uid-2")
    assert not any((root / c / "optimodel" / "uid-2").exists() for c in cgroups.CONTROLLERS)
    cgroups.remove(root, "uid-2")  # twice: nothing left, no error
