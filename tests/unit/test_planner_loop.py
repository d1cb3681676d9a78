"""The loop's decisions, without a cluster: Jobs per provider, results from the store, the choice per
pool, the Deployments and Services, and the phases from Pending to Succeeded (or Failed, saying why)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optimodel_operator.api.spec import parse_spec
from optimodel_operator.planner.loop import DeploymentObservation, JobObservation, Observed
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.results import Measured, RunObservation
from optimodel_operator.planner.revision import effective_store, job_plans, revision_of
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = PlannerConfig(default_artifacts_uri="file:///var/lib/optimodel/store")
VARIANTS = ("int8", "fp16", "small", "small-int8")


def spec_of(**changes: Any) -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["source"]["uri"] = "file:///data/m/model.onnx"
    spec["evaluation"]["dataset"] = "file:///data/m/eval.npz"
    spec["artifacts"] = {"uri": "file:///var/lib/optimodel/store"}
    spec.update(changes)
    return spec


def view(spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1) -> ResourceView:
    return ResourceView(name="m", namespace="ns", generation=generation, spec=spec, status=status or {}, uid="uid-1")


def plans(spec: dict[str, Any]) -> list[Any]:
    parsed = parse_spec(spec)
    return job_plans(parsed, "m", effective_store(parsed, None))


def measured(provider: str, p50: dict[str, float], failing: tuple[str, ...] = (), source: bool = True) -> RunObservation:
    out = {}
    for name in VARIANTS:
        ok = name not in failing
        out[name] = Measured(
            variant=name, provider=provider, manifest_uri=f"file:///var/lib/optimodel/store/manifests/{name}/{'a' * 64}.json",
            sha256="b" * 64, size_bytes=1000, metric=0.9, source_metric=0.91, drop=0.01 if ok else 0.2,
            p50_ms=p50.get(name, 1.0), p99_ms=p50.get(name, 1.0) * 2, source_p50_ms=2.0, passed=ok, deployable=ok,
            reason="within 0.01 of the source" if ok else "accuracy dropped 0.2 > 0.01",
        )
    if source:
        out["source"] = Measured(variant="source", provider=provider, manifest_uri="file:///s/manifests/source/x.json",
                                 sha256="c" * 64, p50_ms=2.0, p99_ms=4.0, passed=True, deployable=True, reason="the source")
    return RunObservation(found=True, measured=out)


def all_done(spec: dict[str, Any], failing: tuple[str, ...] = (), p50: dict[str, float] | None = None) -> dict[str, RunObservation]:
    speeds = p50 or {"int8": 0.5, "fp16": 0.9, "small": 0.7, "small-int8": 0.6}
    return {p.job_name: measured(p.provider, speeds, failing) for p in plans(spec)}


def run(spec: dict[str, Any], observed: Observed, status: dict[str, Any] | None = None, now: datetime = T0) -> Decision:
    return reconcile(view(spec, status), now, CONFIG, observed)


def cond(decision: Decision, kind: str) -> dict[str, Any]:
    return next(c for c in decision.status["conditions"] if c["type"] == kind)


def by_kind(decision: Decision, kind: str) -> list[dict[str, Any]]:
    return [o for o in decision.actions.apply if o["kind"] == kind]


def test_one_job_per_provider_each_on_its_pools_nodes_one_after_the_other() -> None:
    spec = spec_of()
    cpu_plan, gpu_plan = plans(spec)
    decision = run(spec, Observed())
    (cpu,) = decision.actions.create
    assert decision.status["phase"] == "Pending"
    assert "after the Job before it" in cond(decision, "Optimized")["message"]
    # The cuda Job starts once the cpu Job's results are in the store (it reuses its builds, and the two
    # never time latency on shared CPUs); running it changes nothing meanwhile.
    running = run(spec, Observed(jobs={cpu_plan.job_name: JobObservation(cpu_plan.job_name, "Running")}))
    assert running.actions.create == ()
    cpu_done = {cpu_plan.job_name: measured("cpu", {})}
    (gpu,) = run(spec, Observed(runs=cpu_done)).actions.create
    jobs = (cpu, gpu)
    assert [j["metadata"]["name"] for j in jobs] == [cpu_plan.job_name, gpu_plan.job_name]
    for job in jobs:
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert job["metadata"]["ownerReferences"][0]["controller"] is True
        assert job["spec"]["activeDeadlineSeconds"] == CONFIG.job_deadline_seconds
        assert job["spec"]["backoffLimit"] == CONFIG.job_backoff_limit
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["resources"]["limits"]["cpu"] == CONFIG.job_cpu
        assert container["resources"]["limits"]["memory"] == CONFIG.job_memory
        config = json.loads(container["args"][1])
        assert config["store"] == "file:///var/lib/optimodel/store"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/var/lib/optimodel/store"]["readOnly"] is False, "the Job writes the store"
        assert mounts["/data/m"]["readOnly"] is True, "the Job reads the data it is given"
    assert cpu["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert "nvidia.com/gpu" not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpu_pod = gpu["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert [p["executionProvider"] for p in json.loads(gpu_pod["containers"][0]["args"][1])["pools"]] == ["cuda"]


def test_running_jobs_make_the_phase_optimizing_and_create_nothing_new() -> None:
    spec = spec_of()
    observed = Observed(jobs={p.job_name: JobObservation(p.job_name, "Running") for p in plans(spec)})
    decision = run(spec, observed)
    assert decision.status["phase"] == "Optimizing"
    assert decision.actions.create == () and decision.actions.apply == ()
    assert cond(decision, "Optimized")["reason"] == "OptimizationRunning"
    assert {v["phase"] for v in decision.status["variants"]} == {"Running"}


def test_a_job_waiting_for_a_node_says_why() -> None:
    spec = spec_of()
    cpu, cuda = plans(spec)
    observed = Observed(jobs={cpu.job_name: JobObservation(cpu.job_name, "Running"),
                              cuda.job_name: JobObservation(cuda.job_name, "Running", message="its pod is not scheduled: "
                                                            "0/3 nodes are available: 1 Insufficient nvidia.com/gpu")})
    decision = run(spec, observed)
    assert "Insufficient nvidia.com/gpu" in cond(decision, "Optimized")["message"]
    assert "Insufficient nvidia.com/gpu" in decision.status["message"]


def test_a_job_whose_pod_has_not_started_is_looked_at_again_and_a_started_one_is_not() -> None:
    # Why a pod waits (a missing Secret, no node) changes on the pod, which no watch of the operator sees.
    spec = spec_of()
    waiting = Observed(jobs={p.job_name: JobObservation(p.job_name, "Running", unstarted=True) for p in plans(spec)})
    assert run(spec, waiting).requeue_after == timedelta(seconds=10)
    started = Observed(jobs={p.job_name: JobObservation(p.job_name, "Running") for p in plans(spec)})
    assert run(spec, started).requeue_after is None


def test_results_already_in_the_store_need_no_job() -> None:
    """The same spec applied elsewhere (another namespace) finds its run records: no optimization work."""
    spec = spec_of()
    decision = run(spec, Observed(runs=all_done(spec)))
    assert decision.actions.create == ()
    assert decision.status["phase"] == "Deploying"
    assert cond(decision, "Gated")["status"] == "True"


def test_gated_revision_gets_a_deployment_per_pool_and_services() -> None:
    spec = spec_of()
    decision = run(spec, Observed(runs=all_done(spec)))
    deployments = {d["metadata"]["labels"]["optimodel.io/pool"]: d for d in by_kind(decision, "Deployment")}
    assert set(deployments) == {"cpu", "gpu"}
    cpu = deployments["cpu"]
    assert cpu["metadata"]["labels"]["optimodel.io/variant"] == "int8"
    assert deployments["gpu"]["metadata"]["labels"]["optimodel.io/variant"] == "fp16"
    assert cpu["spec"]["replicas"] == 2
    pod = cpu["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--manifest") + 1].endswith(".json")
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["optimodel.io/artifact-sha256"] == "b" * 64
    assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    gpu_pod = deployments["gpu"]["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["tolerations"][0]["operator"] == "Exists"
    services = {s["metadata"]["name"]: s for s in by_kind(decision, "Service")}
    assert set(services) == {"m", "m-cpu", "m-gpu"}
    assert "optimodel.io/pool" not in services["m"]["spec"]["selector"], "one Service across the pools"
    assert services["m-cpu"]["spec"]["selector"]["optimodel.io/pool"] == "cpu"
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for o in decision.actions.apply)


def ready_deployments(decision: Decision) -> dict[str, DeploymentObservation]:
    out = {}
    for d in by_kind(decision, "Deployment"):
        labels = d["metadata"]["labels"]
        out[d["metadata"]["name"]] = DeploymentObservation(
            d["metadata"]["name"], labels["optimodel.io/revision"], labels["optimodel.io/pool"],
            d["spec"]["replicas"], d["spec"]["replicas"], True)
    return out


def test_available_deployments_make_it_ready_and_reconciling_again_changes_nothing() -> None:
    spec = spec_of()
    runs = all_done(spec)
    deploying = run(spec, Observed(runs=runs))
    observed = Observed(runs=runs, deployments=ready_deployments(deploying), services=frozenset({"m", "m-cpu", "m-gpu"}))
    ready = run(spec, observed, deploying.status, T0 + timedelta(seconds=30))
    assert ready.status["phase"] == "Succeeded"
    assert cond(ready, "Ready")["status"] == "True"
    assert ready.status["serving"] == "cpu=int8, gpu=fp16"
    assert ready.status["stableRevision"] == ready.status["currentRevision"]
    assert ready.status["latencyP99Ms"] == 1.8  # fp16's p99 (0.9 ms * 2): the slower pool
    assert ready.status["revisions"][0]["phase"] == "Stable"
    assert ready.actions.delete == ()
    events = [(e.type, e.reason) for e in ready.events]
    assert {("Normal", "PhaseChanged"), ("Normal", "Deployed"), ("Normal", "Promoted")} <= set(events)
    again = run(spec, observed, ready.status, T0 + timedelta(minutes=5))
    assert again.status_patch is None and again.events == ()
    assert again.actions.create == ()
    assert [o["metadata"]["name"] for o in again.actions.apply] == [o["metadata"]["name"] for o in ready.actions.apply]


def test_explicit_variant_that_failed_the_gate_is_never_deployed() -> None:
    spec = spec_of()
    decision = run(spec, Observed(runs=all_done(spec, failing=("int8",))))
    assert decision.status["phase"] == "Failed"
    gated = cond(decision, "Gated")
    assert gated["status"] == "False" and gated["reason"] == "GateFailed"
    assert "int8 failed the gate" in gated["message"] and "accuracy dropped" in gated["message"]
    assert by_kind(decision, "Deployment") == []
    assert cond(decision, "Degraded")["status"] == "True"
    int8 = next(v for v in decision.status["variants"] if v["name"] == "int8")
    assert int8["gate"] == "Failed" and int8["phase"] == "Succeeded"
    events = [(e.type, e.reason, e.message) for e in decision.events]
    assert ("Warning", "VariantFailed") in [(t, r) for t, r, _ in events]
    assert any(r == "GateFailed" and "int8" in m for _, r, m in events), "one Event says why nothing is deployed"
    assert [(t, r) for t, r, _ in events].count(("Normal", "VariantPassed")) == 3


def test_auto_takes_the_fastest_variant_that_passed_on_the_pools_provider() -> None:
    spec = spec_of()
    for pool in spec["nodePools"]:
        pool["variant"] = "auto"
    decision = run(spec, Observed(runs=all_done(spec, failing=("int8",))))
    variants = {d["metadata"]["labels"]["optimodel.io/pool"]: d["metadata"]["labels"]["optimodel.io/variant"]
                for d in by_kind(decision, "Deployment")}
    assert variants == {"cpu": "small-int8", "gpu": "small-int8"}  # int8 (fastest) failed; small-int8 next
    cpu = next(p for p in decision.status["pools"] if p["name"] == "cpu")
    assert "auto" in cpu["message"] and "small-int8" in cpu["message"]


def test_auto_serves_the_source_when_nothing_passed_and_says_so() -> None:
    spec = spec_of()
    spec["nodePools"] = [spec["nodePools"][0] | {"variant": "auto"}]
    decision = run(spec, Observed(runs=all_done(spec, failing=VARIANTS)))
    (deployment,) = by_kind(decision, "Deployment")
    assert deployment["metadata"]["labels"]["optimodel.io/variant"] == "source"
    assert "no variant passed the gate" in decision.status["pools"][0]["message"]


def test_failed_job_reason_reaches_the_condition() -> None:
    spec = spec_of()
    first, second = plans(spec)
    observed = Observed(jobs={
        first.job_name: JobObservation(first.job_name, "Failed", "DatasetUnreadable", "cannot read file:///data/m/eval.npz"),
        second.job_name: JobObservation(second.job_name, "Running"),
    })
    decision = run(spec, observed)
    optimized = cond(decision, "Optimized")
    assert decision.status["phase"] == "Failed"
    assert optimized["status"] == "False" and optimized["reason"] == "DatasetUnreadable"
    assert "cannot read file:///data/m/eval.npz" in optimized["message"]
    assert decision.actions.apply == () and decision.actions.create == ()


def test_deadline_exceeded_is_its_own_reason() -> None:
    spec = spec_of()
    observed = Observed(jobs={p.job_name: JobObservation(p.job_name, "Failed", "DeadlineExceeded", "ran past its deadline")
                              for p in plans(spec)})
    assert cond(run(spec, observed), "Optimized")["reason"] == "DeadlineExceeded"


def test_completed_job_without_readable_results_says_so() -> None:
    spec = spec_of()
    observed = Observed(jobs={p.job_name: JobObservation(p.job_name, "Complete") for p in plans(spec)},
                        runs={p.job_name: RunObservation(found=False) for p in plans(spec)})
    optimized = cond(run(spec, observed), "Optimized")
    assert optimized["reason"] == "ResultsUnreadable" and "no run record" in optimized["message"]


@pytest.mark.parametrize("edit", [
    lambda s: s["nodePools"][0].update(replicas=7),
    lambda s: s["nodePools"][0].update(nodeSelector={"pool": "other"}),
    lambda s: s["nodePools"][0].update(variant="small"),
    lambda s: s["rollout"].update(steps=[50, 100]),
    lambda s: s.update(revisionHistoryLimit=9),
])
def test_serving_and_rollout_edits_make_no_new_revision_or_job(edit: Any) -> None:
    spec = spec_of()
    edited = copy.deepcopy(spec)
    edit(edited)
    assert revision_of(parse_spec(spec), "s") == revision_of(parse_spec(edited), "s")
    assert [p.job_name for p in plans(spec)] == [p.job_name for p in plans(edited)]


@pytest.mark.parametrize("edit", [
    lambda s: s["source"].update(uri="file:///data/m/model-v2.onnx"),
    lambda s: s["evaluation"].update(maxDrop=0.02),
    lambda s: s["optimizations"][0]["quantize"].update(mode="dynamic", calibration=None),
    lambda s: s["nodePools"][1].update(executionProvider="tensorrt"),
])
def test_artifact_edits_make_a_new_revision(edit: Any) -> None:
    spec = spec_of()
    edited = copy.deepcopy(spec)
    edit(edited)
    if edited["optimizations"][0]["quantize"].get("calibration", 0) is None:
        del edited["optimizations"][0]["quantize"]["calibration"]
    assert revision_of(parse_spec(spec), "s") != revision_of(parse_spec(edited), "s")


def test_replicas_only_edit_scales_the_same_deployment() -> None:
    spec = spec_of()
    runs = all_done(spec)
    before = run(spec, Observed(runs=runs))
    scaled = copy.deepcopy(spec)
    scaled["nodePools"][0]["replicas"] = 5
    after = run(scaled, Observed(runs=runs))
    name = lambda d: d["metadata"]["name"]  # noqa: E731
    assert [name(d) for d in by_kind(before, "Deployment")] == [name(d) for d in by_kind(after, "Deployment")]
    assert by_kind(after, "Deployment")[0]["spec"]["replicas"] == 5
    assert after.actions.create == ()


def test_long_names_are_shortened_deterministically() -> None:
    spec = spec_of()
    long_view = ResourceView(name="a" * 200, namespace="ns", generation=1, spec=spec, uid="u")
    decision = reconcile(long_view, T0, CONFIG, Observed(runs={
        p.job_name: measured(p.provider, {}) for p in job_plans(parse_spec(spec), "a" * 200, "file:///var/lib/optimodel/store")
    }))
    for obj in [*decision.actions.apply]:
        assert len(obj["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
    again = reconcile(long_view, T0, CONFIG, Observed())
    assert again.actions.create and all(len(j["metadata"]["name"]) <= 63 for j in again.actions.create)
