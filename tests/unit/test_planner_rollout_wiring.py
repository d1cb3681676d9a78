"""The rollout wired into the loop, without a cluster: a second revision comes up at the first step's
share next to the stable one, is analysed when due (the controller runs what the planner asks), moves
step by step, is promoted or rolled back; replica ratio and HTTPRoute weights; manual commands; input drift
after promotion; the fault annotation. A tiny "cluster" applies each decision's Deployments and scales."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from optimodel_operator.analysis.assess import assess
from optimodel_operator.analysis.measurement import CheckKind, Measurement, MeasurementPhase, Threshold
from optimodel_operator.planner.loop import AnalysisRun, DeploymentObservation, Observed
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.rollout import command_annotations
from optimodel_operator.planner.view import ResourceView

from test_planner_loop import CONFIG, T0, all_done, spec_of  # noqa: I001 - the loop tests' fixtures

ROLLOUT = {"steps": [25, 50, 100], "interval": "10s", "failureLimit": 1, "slo": {"p99LatencyMs": 50},
           "drift": {"maxPSI": 0.2}}


def rollout_spec(**rollout: Any) -> dict[str, Any]:
    spec = spec_of(rollout={**ROLLOUT, **rollout})
    spec["nodePools"] = [{"name": "cpu", "variant": "int8", "replicas": 4}]
    return spec


@dataclass
class Cluster:
    """Deployments as the API server would hold them once every pod is available."""

    deployments: dict[str, DeploymentObservation] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    now: Any = T0

    def settle(self, decision: Decision) -> None:
        for d in decision.actions.apply:
            if d["kind"] != "Deployment":
                continue
            labels, meta = d["metadata"]["labels"], d["metadata"]
            ann = meta.get("annotations") or {}
            self.deployments[meta["name"]] = DeploymentObservation(
                meta["name"], labels["optimodel.io/revision"], labels["optimodel.io/pool"], d["spec"]["replicas"],
                d["spec"]["replicas"], True, labels["optimodel.io/variant"], ann.get("optimodel.io/variant-kind"),
                ann.get("optimodel.io/drift-profiled") == "true")
        for name, replicas in decision.actions.scale:
            old = self.deployments[name]
            self.deployments[name] = DeploymentObservation(old.name, old.revision, old.pool, replicas, replicas, True,
                                                           old.variant, old.variant_kind, old.drift_profiled)
        for kind, name in decision.actions.delete:
            if kind == "Deployment":
                self.deployments.pop(name, None)
        if decision.status_patch:
            self.status = merge(self.status, decision.status_patch)

    def reconcile(self, spec: dict[str, Any], analysis: Any = None, advance_s: float = 0) -> Decision:
        self.now = self.now + timedelta(seconds=advance_s)
        view = ResourceView(name="m", namespace="ns", generation=self.generation, spec=spec,
                            status=copy.deepcopy(self.status), uid="uid-1", annotations=dict(self.annotations))
        observed = Observed(runs=all_done(spec), deployments=dict(self.deployments),
                            services=frozenset({"m", "m-cpu"}))
        decision = reconcile(view, self.now, CONFIG, observed)
        if decision.analysis is not None and analysis is not None:
            run = AnalysisRun(self.now, decision.analysis.request, decision.analysis.window, analysis,
                              tuple(("cpu", m) for m in analysis.measurements))
            decision = reconcile(view, self.now, CONFIG, Observed(
                runs=all_done(spec), deployments=dict(self.deployments), services=frozenset({"m", "m-cpu"}),
                analysis=run))
        self.settle(decision)
        return decision

    def replicas(self) -> dict[str, int]:
        return {d.revision[:8]: d.replicas for d in self.deployments.values()}


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it to status."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def measurement(kind: CheckKind, name: str, value: float, phase: MeasurementPhase) -> Measurement:
    return Measurement(name, kind, "q", value, phase, Threshold(max=50), f"{name} {value}")


def passing() -> Any:
    return assess([measurement(CheckKind.REQUEST_COUNT, "request-count", 500, MeasurementPhase.SUCCESSFUL),
                   measurement(CheckKind.LATENCY, "p99-latency", 12.5, MeasurementPhase.SUCCESSFUL)])


def slow() -> Any:
    return assess([measurement(CheckKind.REQUEST_COUNT, "request-count", 500, MeasurementPhase.SUCCESSFUL),
                   measurement(CheckKind.LATENCY, "p99-latency", 180, MeasurementPhase.FAILED)])


def drifted() -> Any:
    return assess([measurement(CheckKind.REQUEST_COUNT, "request-count", 5000, MeasurementPhase.SUCCESSFUL),
                   measurement(CheckKind.INPUT_DRIFT, "input-drift", 1.3, MeasurementPhase.FAILED)])


def no_data() -> Any:
    return assess([measurement(CheckKind.REQUEST_COUNT, "request-count", 3, MeasurementPhase.INCONCLUSIVE)])


def promoted_first(spec: dict[str, Any]) -> Cluster:
    cluster = Cluster()
    cluster.reconcile(spec)  # Deployments of the first revision, every replica
    first = cluster.reconcile(spec, advance_s=5)
    assert first.status["rolloutPhase"] == "Promoted"
    assert first.status["phase"] == "Succeeded"
    return cluster


def second(spec: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    changed["evaluation"]["maxDrop"] = 0.02
    cluster.generation += 1
    return changed


def cond(decision: Decision, kind: str) -> dict[str, Any]:
    return next(c for c in decision.status["conditions"] if c["type"] == kind)


def test_a_good_revision_goes_through_every_step_then_the_old_one_is_kept_at_zero() -> None:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    stable = cluster.status["stableRevision"]
    changed = second(spec, cluster)
    prep = cluster.reconcile(changed)
    new = prep.status["currentRevision"]
    assert prep.status["phase"] == "Deploying"
    assert cluster.replicas() == {stable[:8]: 4, new[:8]: 1}, "the new revision comes up at 25% of 4 replicas"
    start = cluster.reconcile(changed, advance_s=3)
    assert start.status["rolloutPhase"] == "Canary" and start.status["canaryWeight"] == 25
    assert cluster.replicas() == {stable[:8]: 3, new[:8]: 1}
    assert any(e.reason == "CanaryStarted" for e in start.events)
    waiting = cluster.reconcile(changed, advance_s=5)
    assert waiting.analysis is None and waiting.requeue_after == timedelta(seconds=5)
    asked = cluster.reconcile(changed, advance_s=5)
    assert asked.analysis is not None, "due: the planner asks for an analysis"
    (plan,) = asked.analysis.plans
    assert plan.scope.revision == new and plan.scope.pool == "cpu" and asked.analysis.request.baseline == stable
    assert {c.name for c in plan.checks} == {"p99-latency"}, "no drift profile on these artifacts: no drift checks"
    step2 = cluster.reconcile(changed, passing())
    assert step2.status["canaryWeight"] == 50 and cluster.replicas() == {stable[:8]: 2, new[:8]: 2}
    assert step2.status["lastAnalysis"]["verdict"] == "Pass"
    assert step2.status["lastAnalysis"]["p99LatencyMs"] == 12.5 and step2.status["latencyP99Ms"] == 12.5
    assert step2.status["lastAnalysis"]["measurements"][1]["name"] == "p99-latency"
    cluster.reconcile(changed, passing(), advance_s=10)
    assert cluster.status["canaryWeight"] == 100 and cluster.replicas() == {stable[:8]: 0, new[:8]: 4}
    done = cluster.reconcile(changed, passing(), advance_s=10)
    assert done.status["rolloutPhase"] == "Promoted" and done.status["phase"] == "Succeeded"
    assert cond(done, "Ready")["status"] == "True"
    assert done.status["stableRevision"] == new and done.status["previousStableRevision"] == stable
    assert cluster.replicas() == {stable[:8]: 0, new[:8]: 4}, "the previous stable revision is kept at 0 for rollback"
    assert [r["phase"] for r in done.status["revisions"]] == ["Stable", "Superseded"]
    again = cluster.reconcile(changed, advance_s=1)
    assert again.status_patch is None and again.actions.scale == () and again.events == ()


def test_a_failing_canary_is_rolled_back_and_not_retried_until_the_spec_changes() -> None:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    stable = cluster.status["stableRevision"]
    changed = second(spec, cluster)
    cluster.reconcile(changed)
    new = cluster.reconcile(changed, advance_s=3).status["currentRevision"]
    back = cluster.reconcile(changed, slow(), advance_s=10)
    assert back.status["rolloutPhase"] == "RolledBack" and back.status["phase"] == "RolledBack"
    assert cluster.replicas() == {stable[:8]: 4, new[:8]: 0}
    assert cond(back, "Degraded")["status"] == "True" and cond(back, "Ready")["status"] == "False"
    assert "p99-latency 180" in back.status["rolloutMessage"]
    assert back.status["revisions"][0]["phase"] == "RolledBack"
    assert any(e.type == "Warning" and e.reason == "RolledBack" for e in back.events)
    later = cluster.reconcile(changed, advance_s=60)
    assert later.analysis is None and cluster.replicas() == {stable[:8]: 4, new[:8]: 0}
    # optimodel retry starts it again at the first step.
    cluster.annotations = command_annotations("retry", "1")
    retried = cluster.reconcile(changed, advance_s=1)
    assert retried.status["rolloutPhase"] == "Canary" and retried.status["canaryWeight"] == 25


def test_no_data_holds_the_step_and_never_promotes() -> None:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    changed = second(spec, cluster)
    cluster.reconcile(changed)
    cluster.reconcile(changed, advance_s=3)
    for _ in range(10):
        held = cluster.reconcile(changed, no_data(), advance_s=10)
        assert held.status["rolloutPhase"] == "Canary" and held.status["canaryWeight"] == 25
    assert cluster.status["rolloutReason"] == "AnalysisNoData"
    assert cluster.status["consecutiveNoData"] == 10


def test_manual_promote_and_abort() -> None:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    stable = cluster.status["stableRevision"]
    changed = second(spec, cluster)
    cluster.reconcile(changed)
    new = cluster.reconcile(changed, advance_s=3).status["currentRevision"]
    cluster.annotations = command_annotations("promote", "a")
    promoted = cluster.reconcile(changed, advance_s=1)
    assert promoted.status["rolloutReason"] == "ManuallyPromoted"
    assert cluster.replicas() == {stable[:8]: 0, new[:8]: 4}
    cluster.annotations = command_annotations("abort", "b")
    aborted = cluster.reconcile(changed, advance_s=1)
    assert aborted.status["rolloutPhase"] == "Aborted"
    assert cluster.replicas() == {stable[:8]: 4, new[:8]: 0}


def test_gateway_api_routing_writes_weights_and_keeps_every_replica() -> None:
    spec = rollout_spec(trafficRouting={"gatewayAPI": {"httpRoute": "m-route"}})
    cluster = promoted_first(spec)
    stable = cluster.status["stableRevision"]
    changed = second(spec, cluster)
    cluster.reconcile(changed)
    start = cluster.reconcile(changed, advance_s=3)
    new = start.status["currentRevision"]
    (route,) = start.actions.routes
    assert (route.route, route.stable_weight, route.canary_weight) == ("m-route", 75, 25)
    assert (route.stable_service, route.canary_service) == ("m-stable", "m-canary")
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in start.actions.apply if s["kind"] == "Service"}
    assert services["m-stable"]["optimodel.io/revision"] == stable and services["m-canary"]["optimodel.io/revision"] == new
    assert cluster.replicas() == {stable[:8]: 4, new[:8]: 4}
    nxt = cluster.reconcile(changed, passing(), advance_s=10)
    assert (nxt.actions.routes[0].stable_weight, nxt.actions.routes[0].canary_weight) == (50, 50)


def test_input_drift_after_promotion_falls_back_to_the_source_variant() -> None:
    spec = rollout_spec(failureLimit=2)
    cluster = promoted_first(spec)
    revision = cluster.status["stableRevision"]
    cluster.reconcile(spec, drifted(), advance_s=10)
    back = cluster.reconcile(spec, drifted(), advance_s=10)
    assert back.status["rolloutReason"] == "InputDrift"
    assert back.status["fallbackVariant"] == "source"
    (deployment,) = [d for d in back.actions.apply if d["kind"] == "Deployment"]
    assert deployment["metadata"]["labels"]["optimodel.io/variant"] == "source"
    assert deployment["spec"]["replicas"] == 4
    assert cond(back, "Degraded")["status"] == "True"
    assert "inputs drifted beyond the evaluated range" in back.status["rolloutMessage"]
    assert cluster.status["stableRevision"] == revision


def test_fault_annotation_reaches_the_current_revisions_servers_only() -> None:
    spec = rollout_spec()
    cluster = promoted_first(spec)
    changed = second(spec, cluster)
    cluster.annotations = {"optimodel.io/inject-faults": "latency-ms=150, bogus=1"}
    prep = cluster.reconcile(changed)
    (deployment,) = [d for d in prep.actions.apply if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--shutdown-delay-s") + 1] == "3", "drains before it goes"
    env = container["env"]
    assert env == [{"name": "OPTIMODEL_SERVER_FAULT_LATENCY_MS", "value": "150"}]
    assert len(prep.actions.apply) == 3, "the model's and the pool's Services, and the new revision's Deployment"


def test_an_unreadable_status_field_does_not_reset_the_rollout() -> None:
    from optimodel_operator.planner.status import read_status

    spec = rollout_spec()
    cluster = promoted_first(spec)
    stable = cluster.status["stableRevision"]
    cluster.status["lastAnalysis"] = {"verdict": "Maybe"}  # written by something else, unreadable
    assert read_status(cluster.status).stable_revision == stable
    changed = second(spec, cluster)
    cluster.reconcile(changed)
    start = cluster.reconcile(changed, advance_s=3)
    assert start.status["rolloutPhase"] == "Canary", "a canary next to the stable revision, not a blind promotion"
    assert stable[:8] in cluster.replicas()
