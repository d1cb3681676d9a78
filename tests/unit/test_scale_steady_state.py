"""A steady state writes nothing (issue 14, item 4): the guard's routine records of a promoted revision are held
in memory, children are not re-applied when nothing changed, and one analysis is one reconcile.

The planner's real decisions drive these tests (the rollout wiring's tiny cluster); what is checked is the
controller's handling of them: controller/quiet.py, controller/kube.py's apply, controller/analysis.py's clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException

from optimodel_operator.controller import analysis, kube
from optimodel_operator.controller.quiet import HeldStatus, apply_patch, compose, routine
from optimodel_operator.planner.loop import Actions, AnalysisRun, Observed
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.view import ResourceView

from test_planner_loop import CONFIG, all_done  # noqa: I001 - the loop tests' fixtures
from test_planner_rollout_wiring import Cluster, no_data, passing, promoted_first, rollout_spec, slow

KEY = ("ns", "m")


@dataclass
class Handler:
    """What controller/handlers.reconcile_model does with the planner's decisions, without the API server: the
    stored status, the held records, the status writes it would send."""

    cluster: Cluster
    held: HeldStatus = field(default_factory=HeldStatus)
    writes: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1

    def reconcile(self, spec: dict[str, Any], assessment: Any, advance_s: float) -> Decision:
        c = self.cluster
        c.now = c.now + timedelta(seconds=advance_s)
        body = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": str(self.version)},
                "status": copy.deepcopy(c.status)}
        current = self.held.view(KEY, body)
        view = ResourceView(name="m", namespace="ns", generation=c.generation, spec=spec,
                            status=current["status"], uid="uid-1", annotations={})
        observed = Observed(runs=all_done(spec), deployments=dict(c.deployments), services=frozenset({"m", "m-cpu"}))
        decision = reconcile(view, c.now, CONFIG, observed)
        analysed = decision.analysis is not None
        if decision.analysis is not None:
            run = AnalysisRun(c.now, decision.analysis.request, decision.analysis.window, assessment,
                              tuple(("cpu", m) for m in assessment.measurements))
            decision = reconcile(view, c.now, CONFIG, Observed(runs=all_done(spec), deployments=dict(c.deployments),
                                                                services=frozenset({"m", "m-cpu"}), analysis=run))
        if routine(current["status"], decision.status_patch, analysed, decision.events, ()):
            assert decision.status_patch is not None
            self.held.hold(KEY, str(self.version), decision.status_patch)
        elif decision.status_patch:
            patch = self.held.with_held(KEY, decision.status_patch)
            self.writes.append(patch)
            c.status = apply_patch(c.status, patch)
            self.version += 1
        return decision


def promoted_and_guarded() -> tuple[dict[str, Any], Handler]:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    handler = Handler(cluster)
    assert cluster.status["rolloutPhase"] == "Promoted"
    return spec, handler


def test_routine_passes_of_a_promoted_revision_are_held_not_written_and_the_guard_keeps_its_clock() -> None:
    spec, handler = promoted_and_guarded()
    stored = copy.deepcopy(handler.cluster.status)
    times = []
    for _ in range(6):
        decision = handler.reconcile(spec, passing(), advance_s=11)
        times.append(decision.status["lastAnalysisTime"])
    assert handler.writes == [], "six passing analyses of a promoted revision: nothing written"
    assert handler.cluster.status == stored
    # The planner planned from the held record: 11 s apart with a 10 s interval, each reconcile analysed again.
    assert len(set(times)) == 6 and times == sorted(times)
    held = handler.held.held(KEY)
    assert held is not None and held["lastAnalysisTime"] == times[-1] and held["lastAnalysis"]["verdict"] == "Pass"


def test_the_first_analysis_without_data_is_written_then_more_of_the_same_are_held() -> None:
    spec, handler = promoted_and_guarded()
    before = len(handler.writes)
    first = handler.reconcile(spec, no_data(), advance_s=11)
    assert [e.reason for e in first.events] == ["AnalysisNoData"]
    assert len(handler.writes) == before + 1
    assert handler.cluster.status["rolloutReason"] == "AnalysisNoData"
    for _ in range(3):
        handler.reconcile(spec, no_data(), advance_s=11)
    assert len(handler.writes) == before + 1
    held = handler.held.held(KEY)
    assert held is not None and held["consecutiveNoData"] == 4


def test_a_failed_analysis_is_written_with_what_was_held_before_it() -> None:
    spec, handler = promoted_and_guarded()
    for _ in range(2):
        handler.reconcile(spec, passing(), advance_s=11)
    held_time = (handler.held.held(KEY) or {}).get("lastAnalysisTime")
    assert held_time is not None
    before = len(handler.writes)
    failed = handler.reconcile(spec, slow(), advance_s=11)
    assert [e.reason for e in failed.events], "a failure is told"
    assert len(handler.writes) == before + 1
    assert handler.held.held(KEY) is None
    # The write carries the latest analysis; nothing of the held record is left behind.
    assert handler.cluster.status["lastAnalysisTime"] > held_time
    assert handler.cluster.status["lastAnalysis"]["verdict"] == "Fail"


def test_a_canary_records_every_analysis() -> None:
    before = {"rolloutPhase": "Canary", "lastAnalysisTime": "2026-05-01T12:00:00Z"}
    assert not routine(before, {"lastAnalysisTime": "2026-05-01T12:00:10Z"}, True, (), ())


def test_routine_refuses_anything_more_than_a_record() -> None:
    before = {"rolloutPhase": "Promoted", "phase": "Succeeded", "pools": [{"name": "cpu", "availableReplicas": 2,
                                                                          "latencyP99Ms": 3.0}],
              "conditions": [{"type": "RolledOut", "status": "True", "reason": "Promoted", "message": "a",
                              "lastTransitionTime": "t0"}]}
    record = {"lastAnalysisTime": "t1"}
    assert routine(before, record, True, (), ())
    assert not routine(before, record, False, (), ()), "no analysis ran: not the guard's record"
    assert not routine(before, record, True, ("an Event",), ())
    assert not routine(before, record, True, (), (("Updated", "Deployment", "m-cpu"),))
    assert not routine(before, {**record, "phase": "Failed"}, True, (), ())
    assert routine(before, {**record, "pools": [{"name": "cpu", "availableReplicas": 2, "latencyP99Ms": 4.0}]},
                   True, (), ())
    assert not routine(before, {**record, "pools": [{"name": "cpu", "availableReplicas": 1, "latencyP99Ms": 3.0}]},
                       True, (), ())
    moved = {"type": "RolledOut", "status": "False", "reason": "AnalysisFailed", "message": "b",
             "lastTransitionTime": "t1"}
    assert not routine(before, {**record, "conditions": [moved]}, True, (), ())
    reworded = {**before["conditions"][0], "message": "b"}
    assert routine(before, {**record, "conditions": [reworded]}, True, (), ())
    deployed = {"type": "Deployed", "status": "True", "reason": "Deployed", "message": "serving cpu=int8",
                "lastTransitionTime": "t0"}
    with_deployed = {**before, "conditions": [*before["conditions"], deployed]}
    elsewhere = [before["conditions"][0], {**deployed, "message": "serving cpu=int8; 1 pod not ready"}]
    assert not routine(with_deployed, {**record, "conditions": elsewhere}, True, (), ()), \
        "another condition reworded is news, not the guard's record"


def test_held_records_are_dropped_when_the_model_changed_since() -> None:
    held = HeldStatus()
    body = {"metadata": {"resourceVersion": "7"}, "status": {"lastAnalysisTime": "t0", "phase": "Succeeded"}}
    held.hold(KEY, "7", {"lastAnalysisTime": "t1"})
    held.hold(KEY, "7", {"lastAnalysisTime": "t2", "consecutiveNoData": 2})
    assert held.view(KEY, body)["status"] == {"lastAnalysisTime": "t2", "phase": "Succeeded", "consecutiveNoData": 2}
    assert body["status"]["lastAnalysisTime"] == "t0", "the body read is not changed"
    edited = {**body, "metadata": {"resourceVersion": "8"}}
    assert held.view(KEY, edited)["status"]["lastAnalysisTime"] == "t0"
    assert held.held(KEY) is None


def test_compose_is_one_patch_then_the_other() -> None:
    first = {"a": {"x": 1, "y": 2}, "b": 1}
    second = {"a": {"y": None, "z": 3}, "c": [1]}
    target = {"a": {"y": 0, "w": 0}, "b": 0, "d": 4}
    assert apply_patch(target, compose(first, second)) == apply_patch(apply_patch(target, first), second)


class FakeResource:
    """A dynamic-client resource of one object: resourceVersion moves on each real change, as the API server's."""

    def __init__(self) -> None:
        self.object: dict[str, Any] | None = None
        self.version = 0
        self.applies = 0

    def get(self, name: str, namespace: str) -> Any:
        if self.object is None:
            raise ApiException(status=404)
        return SimpleNamespace(metadata=SimpleNamespace(resourceVersion=str(self.version)))

    def server_side_apply(self, body: dict[str, Any], **_: Any) -> Any:
        self.applies += 1
        if body != self.object:
            self.object = copy.deepcopy(body)
            self.version += 1
        return SimpleNamespace(metadata=SimpleNamespace(resourceVersion=str(self.version)))

    def status_changed(self) -> None:  # the Deployment controller writing status: a new resourceVersion
        self.version += 1


def test_a_child_is_applied_again_only_when_its_body_or_its_version_changed(monkeypatch: Any) -> None:
    resource = FakeResource()
    monkeypatch.setattr(kube, "_resource", lambda clients, obj: resource)
    monkeypatch.setattr(kube, "_applied", {})
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m-cpu"}, "spec": {"replicas": 2}}
    actions = Actions(apply=(deployment,))
    assert kube.apply_actions(None, "ns", actions) == [("Created", "Deployment", "m-cpu")]  # type: ignore[arg-type]
    for _ in range(3):
        assert kube.apply_actions(None, "ns", actions) == []  # type: ignore[arg-type]
    assert resource.applies == 1, "the same body onto the same version is not sent"
    resource.status_changed()
    assert kube.apply_actions(None, "ns", actions) == []  # type: ignore[arg-type]
    assert resource.applies == 2, "changed by someone since: applied once more (a no-op here)"
    assert kube.apply_actions(None, "ns", actions) == []  # type: ignore[arg-type]
    assert resource.applies == 2
    scaled = {**deployment, "spec": {"replicas": 3}}
    assert kube.apply_actions(None, "ns", Actions(apply=(scaled,))) == [("Updated", "Deployment", "m-cpu")]  # type: ignore[arg-type]
    assert resource.applies == 3


def test_an_analysis_time_is_whole_seconds_so_the_next_is_due_on_a_whole_second() -> None:
    ask = SimpleNamespace(plans=(), request=SimpleNamespace(revision="r"), window="10s")
    result = analysis.run(ask, None, 1.0)  # type: ignore[arg-type]
    assert result.time.microsecond == 0 and result.time.tzinfo == UTC
    # The planner counts whole seconds: with the last analysis at a fraction of a second, a reconcile 0.3 s
    # after it was due still waits (the wake-ups that were wasted); at a whole second it analyses at once.
    spec, handler = promoted_and_guarded()
    last = handler.cluster.now

    def analyses_at(last_time: str) -> bool:
        status = {**copy.deepcopy(handler.cluster.status), "lastAnalysisTime": last_time}
        view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, status=status, uid="uid-1",
                            annotations={})
        now = last + timedelta(seconds=10.3)
        return reconcile(view, now, CONFIG, Observed(runs=all_done(spec), deployments=dict(handler.cluster.deployments),
                                                     services=frozenset({"m", "m-cpu"}))).analysis is not None

    handler.reconcile(spec, passing(), advance_s=11)
    last = handler.cluster.now
    assert analyses_at(last.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert not analyses_at(last.strftime("%Y-%m-%dT%H:%M:%S.270000Z"))


def test_a_childs_event_while_a_reconcile_of_its_model_is_queued_adds_none(monkeypatch: Any) -> None:
    import threading

    from optimodel_operator.controller import handlers

    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def fake_reconcile(model: dict[str, Any], logger: Any) -> None:
        calls.append(model["metadata"]["name"])
        started.set()
        release.wait(5)  # waiting for the model's lock: nothing read yet
        handlers._queued_done(("ns", "m"))  # what reconcile_model does once it holds the lock

    monkeypatch.setattr(handlers.kube, "read_model", lambda api, ns, name: {"metadata": {"name": name, "namespace": ns}})
    monkeypatch.setattr(handlers, "clients", lambda: None)
    monkeypatch.setattr(handlers, "reconcile_model", fake_reconcile)
    monkeypatch.setattr(handlers, "_queued", set())
    child = {"kind": "Deployment", "metadata": {"namespace": "ns", "ownerReferences": [
        {"kind": "OptimizedModel", "apiVersion": "optimodel.io/v1alpha1", "name": "m"}]}}
    first = handlers._on_child(child, None)  # type: ignore[arg-type]
    assert first is not None
    assert started.wait(5)
    for _ in range(4):  # the Deployment's status moving while the first reconcile waits
        assert handlers._on_child(child, None) is None  # type: ignore[arg-type]
    assert calls == ["m"]
    release.set()
    first.result(5)
    again = handlers._on_child(child, None)  # type: ignore[arg-type]  # after it read: counts again
    assert again is not None
    again.result(5)
    assert calls == ["m", "m"]
