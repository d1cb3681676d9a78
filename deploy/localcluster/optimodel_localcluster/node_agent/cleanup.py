"""`node_agent cleanup`: remove everything the agent may have left behind (idempotent)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from . import network, records, runtime
from .agent import pid_file, running_agent_pid, wait_for_exit
from .config import NodeAgentConfig

log = logging.getLogger(__name__)


def _remove_mountpoints(state_dir: Path) -> list[str]:
    """Empty mount points the shims created on the host (a folder or file only if still empty)."""
    record = records.mountpoints_record(state_dir)
    removed: list[str] = []
    try:
        paths = sorted(set(record.read_text().split("\n")) - {""}, key=len, reverse=True)
    except OSError:
        return removed
    for text in paths:
        path = Path(text)
        try:
            if path.is_dir() and not path.is_symlink():
                # Remove the created chain bottom-up, only where nothing else was put inside.
                for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                    folder.rmdir()
                path.rmdir()
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
            removed.append(text)
        except OSError:
            continue  # not empty: something real lives there now; leave it
    record.unlink(missing_ok=True)
    return removed


def cleanup(state_dir: Path, config: NodeAgentConfig) -> list[str]:
    removed: list[str] = []
    pid = running_agent_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, 30):
            os.kill(pid, signal.SIGKILL)
        removed.append(f"node agent {pid}")
    pid_file(state_dir).unlink(missing_ok=True)
    for directory, record in records.load_all(state_dir).items():
        for name, container in record.containers.items():
            if container.handle is not None and runtime.is_alive(container.handle):
                runtime.signal_group(container.handle, signal.SIGKILL)
                removed.append(f"process group {container.handle.shim_pid} ({record.namespace}/{record.name}/{name})")
        network.delete_pod_network(record.uid)
    removed += network.delete_everything(config.bridge_name)
    removed += [f"mount point {p}" for p in _remove_mountpoints(state_dir)]
    return removed
