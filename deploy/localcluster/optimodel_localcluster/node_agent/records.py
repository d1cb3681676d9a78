"""What the agent writes to the state directory, so a restarted agent (or `cleanup`) finds everything.

<state-dir>/
  node-agent.pid
  mountpoints.txt                      mount points the shims had to create on the host (removed by cleanup)
  pods/<namespace>_<pod>_<uid>/
    pod.json                           PodRecord: node, netns, IP, per container restart count and run handle
    <container>.log                    the current run's stdout+stderr
    <container>.previous.log           the run before (`kubectl logs --previous`)
    run/<container>.json|.pid|.exit    the shim's spec, its child pid, and the exit status
    volumes/<volume>/                  emptyDir, configMap, secret, downwardAPI, projected volumes
  pvc/<namespace>_<claim>/             persistentVolumeClaim volumes
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .runtime import RunHandle


@dataclass
class ContainerRecordState:
    restart_count: int = 0
    crashes: int = 0
    handle: RunHandle | None = None
    # The Terminated of the last finished run (JSON of status.Terminated + started/finished), if any.
    last_exit: dict[str, Any] | None = None
    done: bool = False  # finished for good (init container succeeded, or no restart under the policy)


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    node: str
    host_network: bool
    pod_ip: str | None = None
    netns: str | None = None
    start_time: str | None = None
    terminal: bool = False
    containers: dict[str, ContainerRecordState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PodRecord:
        containers = {}
        for name, raw in (body.get("containers") or {}).items():
            handle = RunHandle(**raw["handle"]) if raw.get("handle") else None
            containers[name] = ContainerRecordState(
                restart_count=raw.get("restart_count", 0), crashes=raw.get("crashes", 0), handle=handle,
                last_exit=raw.get("last_exit"), done=raw.get("done", False),
            )
        fields = {k: body.get(k) for k in ("uid", "namespace", "name", "node", "host_network", "pod_ip", "netns",
                                           "start_time", "terminal")}
        return cls(**fields, containers=containers)  # type: ignore[arg-type]


def pods_root(state_dir: Path) -> Path:
    return state_dir / "pods"


def pod_dir(state_dir: Path, namespace: str, name: str, uid: str) -> Path:
    return pods_root(state_dir) / f"{namespace}_{name}_{uid}"


def save(directory: Path, record: PodRecord) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / "pod.json.tmp"
    temporary.write_text(json.dumps(record.to_json(), indent=1))
    os.replace(temporary, directory / "pod.json")


def load_all(state_dir: Path) -> dict[Path, PodRecord]:
    records: dict[Path, PodRecord] = {}
    root = pods_root(state_dir)
    if not root.is_dir():
        return records
    for directory in sorted(root.iterdir()):
        try:
            records[directory] = PodRecord.from_json(json.loads((directory / "pod.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def mountpoints_record(state_dir: Path) -> Path:
    return state_dir / "mountpoints.txt"
