"""Pod phase, conditions and container statuses computed from runtime records (the kubelet's rules)."""

from __future__ import annotations

import datetime as dt

import pytest

from optimodel_localcluster.node_agent.status import (
    ContainerRecord,
    PodView,
    Sandbox,
    Terminated,
    pod_phase,
    pod_status,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
T1 = T0 + dt.timedelta(seconds=30)


def running(name: str = "main", ready: bool = True) -> ContainerRecord:
    return ContainerRecord(name=name, image="img", state="running", reason=None, started_at=T0, pid=42,
                           ready=ready, started=True)


def exited(code: int, name: str = "main") -> ContainerRecord:
    return ContainerRecord(name=name, image="img", state="terminated", reason=None,
                           terminated=Terminated(code, "Completed" if code == 0 else "Error", T0, T1))


def backing_off(name: str = "main") -> ContainerRecord:
    return ContainerRecord(name=name, image="img", state="waiting", reason="CrashLoopBackOff",
                           last_terminated=Terminated(1, "Error", T0, T1), restart_count=2)


def waiting(name: str = "main") -> ContainerRecord:
    return ContainerRecord(name=name, image="img")


def view(containers: list[ContainerRecord], init: list[ContainerRecord] | None = None, **extra: object) -> PodView:
    return PodView(init=init or [], containers=containers, sandbox=Sandbox("10.244.1.2", True), host_ip="127.0.0.1",
                   start_time=T0, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "containers", "init", "phase"),
    [
        ("Always", [waiting()], [], "Pending"),
        ("Always", [running()], [], "Running"),
        ("Always", [running(), waiting("b")], [], "Pending"),
        ("Always", [exited(0)], [], "Running"),  # will be restarted
        ("Always", [backing_off()], [], "Running"),
        ("OnFailure", [exited(0)], [], "Succeeded"),
        ("OnFailure", [exited(1)], [], "Running"),
        ("OnFailure", [backing_off()], [], "Running"),
        ("Never", [exited(0)], [], "Succeeded"),
        ("Never", [exited(2)], [], "Failed"),
        ("Never", [exited(0), exited(1, "b")], [], "Failed"),
        ("Never", [exited(0), running("b")], [], "Running"),
        ("Never", [waiting()], [running("init")], "Pending"),
        ("Never", [waiting()], [exited(1, "init")], "Failed"),
        ("OnFailure", [waiting()], [backing_off("init")], "Pending"),
        ("Always", [running()], [exited(0, "init")], "Running"),
    ],
)
def test_phase_table(policy: str, containers: list[ContainerRecord], init: list[ContainerRecord], phase: str) -> None:
    assert pod_phase(policy, view(containers, init)) == phase


def test_deleted_pod_ends_failed_unless_everything_succeeded() -> None:
    assert pod_phase("Always", view([exited(143)], terminal_after_deletion=True)) == "Failed"
    assert pod_phase("Always", view([exited(0)], terminal_after_deletion=True)) == "Succeeded"


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_ready_pod_status() -> None:
    pod = {"spec": {"restartPolicy": "Always"},
           "status": {"qosClass": "BestEffort",
                      "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "x"}]}}
    status = pod_status(pod, view([running()]), T1)
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.244.1.2" and status["podIPs"] == [{"ip": "10.244.1.2"}]
    assert status["qosClass"] == "BestEffort"
    found = conditions(status)
    assert found["PodScheduled"]["lastTransitionTime"] == "x"  # the scheduler's condition is kept
    assert {k: v["status"] for k, v in found.items()} == {
        "PodScheduled": "True", "PodReadyToStartContainers": "True", "Initialized": "True",
        "ContainersReady": "True", "Ready": "True"}
    (container,) = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": "2026-01-01T12:00:00Z"}}
    assert container["ready"] is True and container["started"] is True
    assert container["containerID"] == "optimodel://42"


def test_unready_container_names_itself_and_transition_time_is_kept() -> None:
    pod = {"spec": {}, "status": {}}
    first = pod_status(pod, view([running(ready=False)]), T0)
    ready = conditions(first)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [main]"
    again = pod_status({"spec": {}, "status": first}, view([running(ready=False)]), T1)
    assert conditions(again)["Ready"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    flipped = pod_status({"spec": {}, "status": first}, view([running()]), T1)
    assert conditions(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T12:00:30Z"


def test_init_progress_and_completed_pod() -> None:
    pod = {"spec": {"restartPolicy": "Never"}, "status": {}}
    pending = pod_status(pod, view([waiting()], [running("init")]), T0)
    initialized = conditions(pending)["Initialized"]
    assert initialized["status"] == "False" and initialized["message"] == "containers with incomplete status: [init]"
    done = pod_status(pod, view([exited(0)], [exited(0, "init")]), T1)
    assert done["phase"] == "Succeeded"
    assert conditions(done)["Ready"]["reason"] == "PodCompleted"
    terminated = done["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["finishedAt"] == "2026-01-01T12:00:30Z"


def test_crash_loop_shows_last_state_and_restart_count() -> None:
    status = pod_status({"spec": {}, "status": {}}, view([backing_off()]), T1)
    (container,) = status["containerStatuses"]
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["restartCount"] == 2


def test_sidecar_counts_for_readiness_and_initialization() -> None:
    sidecar = running("proxy", ready=False)
    sidecar.sidecar = True
    status = pod_status({"spec": {}, "status": {}}, view([running()], [sidecar]), T0)
    assert conditions(status)["Initialized"]["status"] == "True"
    assert conditions(status)["ContainersReady"]["message"] == "containers with unready status: [proxy]"


def test_readiness_gate_holds_ready() -> None:
    status = pod_status({"spec": {}, "status": {}}, view([running()], readiness_gates_ok=False), T0)
    assert conditions(status)["ContainersReady"]["status"] == "True"
    assert conditions(status)["Ready"]["status"] == "False"
