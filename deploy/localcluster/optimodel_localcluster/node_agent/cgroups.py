"""Each container's processes in cgroups (v1) made from its resources, as the kubelet's cgroup driver does.

A container with `limits.cpu` gets a CFS quota (`cpu.cfs_quota_us` = millicores x 100 per 100 ms period), so it
runs at most that much CPU however many cores the node has; `requests.cpu` sets its `cpu.shares` (1024 a core).
`limits.memory` is `memory.limit_in_bytes` (and the memory+swap limit, so it cannot swap past it): going over it
gets the container's process killed by the kernel's OOM killer, which the shim reads back from
`memory.oom_control` (`oom_kill`, read by the shim) and reports as `OOMKilled`, exit code 137. Every container gets a `pids.max`.

The cgroups live under `<root>/<controller>/optimodel/<pod uid>/<container>`; the shim moves the container's
process into them before it execs the command, so every process the command starts is in them too. Without a
writable cgroup v1 hierarchy (e.g. a cgroup v2 host), containers run unconfined, as before, and the agent says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

log = logging.getLogger("optimodel.node-agent.cgroups")

CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000
MIN_SHARES = 2
DEFAULT_PIDS_MAX = 4096


@dataclass(frozen=True)
class Limits:
    """What one container's cgroups enforce; None: unlimited."""

    cpu_quota_us: int | None = None
    cpu_shares: int | None = None
    memory_bytes: int | None = None
    pids_max: int = DEFAULT_PIDS_MAX


def limits_of(container: Mapping[str, Any], pids_max: int = DEFAULT_PIDS_MAX) -> Limits:
    """The kubelet's arithmetic: quota from limits.cpu (at least 1 ms a period), shares from requests.cpu (or
    limits.cpu when no request is given, as the API server defaults it), memory from limits.memory."""
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    quota = None
    if "cpu" in limits:
        millicores = Decimal(parse_quantity(limits["cpu"])) * 1000
        quota = max(int(millicores * CFS_PERIOD_US / 1000), 1000)
    shares = None
    requested_cpu = requests.get("cpu", limits.get("cpu"))
    if requested_cpu is not None:
        shares = max(int(Decimal(parse_quantity(requested_cpu)) * 1024), MIN_SHARES)
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else None
    return Limits(cpu_quota_us=quota, cpu_shares=shares, memory_bytes=memory, pids_max=pids_max)


def available(root: Path) -> bool:
    """A writable cgroup v1 hierarchy for every controller we use."""
    return all((root / c / "cgroup.procs").is_file() and os.access(root / c, os.W_OK) for c in CONTROLLERS)


def container_dirs(root: Path, pod_uid: str, container: str) -> dict[str, Path]:
    return {controller: root / controller / "optimodel" / pod_uid / container for controller in CONTROLLERS}


def create(root: Path, pod_uid: str, container: str, limits: Limits) -> dict[str, Path]:
    """Make (or reset) the container's cgroups with `limits`; returns them by controller."""
    dirs = container_dirs(root, pod_uid, container)
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    cpu, memory, pids = dirs["cpu"], dirs["memory"], dirs["pids"]
    _write(cpu / "cpu.cfs_period_us", CFS_PERIOD_US)
    _write(cpu / "cpu.cfs_quota_us", limits.cpu_quota_us if limits.cpu_quota_us is not None else -1)
    _write(cpu / "cpu.shares", limits.cpu_shares if limits.cpu_shares is not None else 1024)
    if limits.memory_bytes is not None:
        # memsw must stay >= the memory limit at every moment: raise it first, lower it last.
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            _write(memsw, -1)
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        if memsw.exists():
            _write(memsw, limits.memory_bytes)
    else:
        if (memory / "memory.memsw.limit_in_bytes").exists():
            _write(memory / "memory.memsw.limit_in_bytes", -1)
        _write(memory / "memory.limit_in_bytes", -1)
    _write(pids / "pids.max", limits.pids_max)
    return dirs


def remove(root: Path, pod_uid: str, container: str | None = None) -> None:
    """Remove a container's cgroups (or, without `container`, the pod's whole tree); best effort: a cgroup
    that still holds a process stays until the next attempt."""
    for controller in CONTROLLERS:
        pod_dir = root / controller / "optimodel" / pod_uid
        targets = [pod_dir / container] if container else sorted(p for p in pod_dir.glob("*") if p.is_dir())
        for path in [*targets, *([] if container else [pod_dir])]:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.debug("cgroup %s not removed: %s", path, error)


def _write(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")
