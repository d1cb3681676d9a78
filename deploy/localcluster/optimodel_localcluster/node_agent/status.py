"""Pod status from what the runtime knows: phase, conditions, container statuses (pure).

The pod worker keeps one `ContainerRecord` per container; `pod_status` turns them, the sandbox and the
previous conditions into the `status` the kubelet would write. Phase rules follow the kubelet's
`getPhase`: a container waiting after having run counts as stopped; Always/OnFailure keep a pod whose
containers stopped Running while they are restarted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]
ContainerState = Literal["waiting", "running", "terminated"]

# Reasons the kubelet uses for pod conditions.
CONTAINERS_NOT_READY = "ContainersNotReady"
CONTAINERS_NOT_INITIALIZED = "ContainersNotInitialized"
POD_COMPLETED = "PodCompleted"


def rfc3339(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    exit_code: int
    reason: str
    started_at: dt.datetime | None
    finished_at: dt.datetime
    message: str | None = None
    container_id: str | None = None

    def to_json(self) -> Json:
        body: Json = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(self.finished_at),
        }
        if self.message:
            body["message"] = self.message
        if self.container_id:
            body["containerID"] = self.container_id
        return body


@dataclass
class ContainerRecord:
    """What the runtime knows about one container right now."""

    name: str
    image: str
    state: ContainerState = "waiting"
    reason: str | None = "ContainerCreating"
    message: str | None = None
    started_at: dt.datetime | None = None
    terminated: Terminated | None = None  # set when state == "terminated"
    last_terminated: Terminated | None = None
    restart_count: int = 0
    pid: int | None = None
    ready: bool = False
    started: bool = False  # startupProbe passed (or none) while running
    sidecar: bool = False  # an init container with restartPolicy Always

    @property
    def container_id(self) -> str | None:
        return f"optimodel://{self.pid}" if self.pid else None

    def ever_ran(self) -> bool:
        return self.state != "waiting" or self.last_terminated is not None

    def succeeded(self) -> bool:
        return self.state == "terminated" and self.terminated is not None and self.terminated.exit_code == 0

    def to_json(self) -> Json:
        state: Json
        if self.state == "running":
            state = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == "terminated" and self.terminated is not None:
            state = {"terminated": self.terminated.to_json()}
        else:
            waiting: Json = {"reason": self.reason or "ContainerCreating"}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        body: Json = {
            "name": self.name,
            "image": self.image,
            "imageID": f"optimodel-local://{self.image}",
            "state": state,
            "lastState": {"terminated": self.last_terminated.to_json()} if self.last_terminated else {},
            "ready": self.ready and self.state == "running",
            "restartCount": self.restart_count,
            "started": self.started and self.state == "running",
        }
        container_id = self.container_id if self.state != "waiting" else None
        if container_id is None and self.state == "terminated" and self.terminated is not None:
            container_id = self.terminated.container_id
        if container_id:
            body["containerID"] = container_id
        return body


@dataclass
class Sandbox:
    pod_ip: str | None
    ready: bool


@dataclass
class PodView:
    """Everything `pod_status` needs beyond the pod object."""

    init: list[ContainerRecord]
    containers: list[ContainerRecord]
    sandbox: Sandbox | None
    host_ip: str
    start_time: dt.datetime | None
    terminal_after_deletion: bool = False  # every process stopped because the pod is being deleted
    readiness_gates_ok: bool = True
    extra_message: str | None = None


@dataclass
class _Counts:
    running: int = 0
    waiting: int = 0
    stopped: int = 0
    succeeded: int = 0
    failed_names: list[str] = field(default_factory=list)


def _count(records: list[ContainerRecord]) -> _Counts:
    counts = _Counts()
    for record in records:
        if record.state == "running":
            counts.running += 1
        elif record.state == "terminated":
            counts.stopped += 1
            if record.succeeded():
                counts.succeeded += 1
            else:
                counts.failed_names.append(record.name)
        elif record.last_terminated is not None:
            # Waiting to be restarted after having run (e.g. CrashLoopBackOff).
            counts.stopped += 1
        else:
            counts.waiting += 1
    return counts


def initialized(init: list[ContainerRecord]) -> bool:
    for record in init:
        if record.sidecar:
            if not (record.state == "running" and record.started):
                return False
        elif not record.succeeded():
            return False
    return True


def init_failed_for_good(init: list[ContainerRecord], restart_policy: str) -> bool:
    return restart_policy == "Never" and any(
        r.state == "terminated" and not r.succeeded() and not r.sidecar for r in init
    )


def pod_phase(restart_policy: str, view: PodView) -> str:
    if init_failed_for_good(view.init, restart_policy):
        return "Failed"
    counts = _count(view.containers)
    if view.terminal_after_deletion:
        return "Succeeded" if counts.succeeded == len(view.containers) else "Failed"
    if not initialized(view.init):
        return "Pending"
    if counts.waiting > 0:
        return "Pending"
    if counts.running > 0:
        return "Running"
    if counts.stopped > 0:
        if restart_policy == "Always":
            return "Running"
        if counts.succeeded == counts.stopped and all(r.state == "terminated" for r in view.containers):
            return "Succeeded"
        if restart_policy == "OnFailure":
            return "Running"
        if all(r.state == "terminated" for r in view.containers):
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    kind: str, ok: bool, reason: str | None, message: str | None, previous: dict[str, Json], now: dt.datetime
) -> Json:
    status = "True" if ok else "False"
    before = previous.get(kind)
    transition = before.get("lastTransitionTime") if before and before.get("status") == status else None
    body: Json = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition or rfc3339(now),
    }
    if not ok or reason:
        if reason:
            body["reason"] = reason
        if message:
            body["message"] = message
    return body


def pod_conditions(pod: Json, view: PodView, phase: str, now: dt.datetime) -> list[Json]:
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    completed = phase == "Succeeded"
    not_done_init = [r.name for r in view.init if not (r.succeeded() or (r.sidecar and r.started))]
    sidecars = [r for r in view.init if r.sidecar]
    unready = [r.name for r in [*sidecars, *view.containers] if not (r.ready and r.state == "running")]
    containers_ready = not unready
    init_ok = initialized(view.init) or completed
    ours: list[Json] = [
        _condition("PodReadyToStartContainers", bool(view.sandbox and view.sandbox.ready), None, None, previous, now),
        _condition(
            "Initialized",
            init_ok,
            POD_COMPLETED if completed and view.init else (None if init_ok else CONTAINERS_NOT_INITIALIZED),
            None if init_ok else f"containers with incomplete status: [{' '.join(not_done_init)}]",
            previous,
            now,
        ),
    ]
    ready_reason = POD_COMPLETED if completed else CONTAINERS_NOT_READY
    ready_message = None if completed else f"containers with unready status: [{' '.join(unready)}]"
    ours.append(
        _condition(
            "ContainersReady",
            containers_ready,
            None if containers_ready else ready_reason,
            None if containers_ready else ready_message,
            previous,
            now,
        )
    )
    pod_ready = containers_ready and view.readiness_gates_ok
    ours.append(
        _condition(
            "Ready",
            pod_ready,
            None if pod_ready else ready_reason,
            None if pod_ready else (ready_message if not containers_ready else "the status of pod readiness gate is not \"True\""),
            previous,
            now,
        )
    )
    owned = {c["type"] for c in ours}
    # Keep conditions written by others (PodScheduled from the scheduler, DisruptionTarget, readiness gates).
    kept = [c for kind, c in previous.items() if kind not in owned]
    return kept + ours


def readiness_gates_ok(pod: Json) -> bool:
    gates = [g["conditionType"] for g in (pod.get("spec") or {}).get("readinessGates") or []]
    conditions = {c["type"]: c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return all(conditions.get(gate) == "True" for gate in gates)


def pod_status(pod: Json, view: PodView, now: dt.datetime) -> Json:
    restart_policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    phase = pod_phase(restart_policy, view)
    status: Json = {
        "phase": phase,
        "conditions": pod_conditions(pod, view, phase, now),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "initContainerStatuses": [r.to_json() for r in view.init],
        "containerStatuses": [r.to_json() for r in view.containers],
    }
    if view.start_time is not None:
        status["startTime"] = rfc3339(view.start_time)
    if view.sandbox is not None and view.sandbox.pod_ip:
        status["podIP"] = view.sandbox.pod_ip
        status["podIPs"] = [{"ip": view.sandbox.pod_ip}]
    if view.extra_message:
        status["message"] = view.extra_message
    qos = (pod.get("status") or {}).get("qosClass")
    if qos:
        status["qosClass"] = qos
    return status
