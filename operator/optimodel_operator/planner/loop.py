"""The loop for one valid spec: optimization Jobs → results → gate → a Deployment per pool → Ready.

Given the spec, what the API server holds (Jobs, Deployments, Services) and what the store holds
(run records and manifests), decide the stage conditions, the status fields those stages own, and the
objects to create, apply or delete. Pure: the controller reads the observations and applies the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from optimodel_operator.api.conditions import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.api.status import (
    GateVerdict,
    OptimizedModelStatus,
    Phase,
    PoolAssignment,
    PoolStatus,
    ProviderBenchmark,
    RevisionPhase,
    RevisionRecord,
    VariantPhase,
    VariantStatus,
    VariantVerdict,
)
from optimodel_operator.builders.job import build_job
from optimodel_operator.builders.server import (
    build_model_service,
    build_pool_service,
    build_server_deployment,
    deployment_name,
    pool_service_name,
)
from optimodel_operator.planner.choice import PoolChoice, choose
from optimodel_operator.planner.conditions import ConditionState
from optimodel_operator.planner.results import Measured, RunObservation
from optimodel_operator.planner.revision import JobPlan, effective_store, job_plans, revision_of
from optimodel_operator.planner.view import PlannerConfig, ResourceView

_TRUE, _FALSE, _UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
Manifest = dict[str, Any]


@dataclass(frozen=True)
class JobObservation:
    """An optimization Job as the API server reports it (and, when failed, its pod's last words)."""

    name: str
    state: Literal["Running", "Complete", "Failed"]
    reason: str | None = None
    """For a failed Job: the entrypoint's reason (termination message), OOMKilled, DeadlineExceeded, ..."""
    message: str | None = None


@dataclass(frozen=True)
class DeploymentObservation:
    name: str
    revision: str
    pool: str
    replicas: int
    available: int
    current: bool
    """The controller has seen the latest spec and every replica runs it."""

    @property
    def ready(self) -> bool:
        return self.current and self.available >= self.replicas


@dataclass(frozen=True)
class Observed:
    """Everything the controller read for one OptimizedModel."""

    jobs: Mapping[str, JobObservation] = field(default_factory=dict)
    """Owned Jobs by name."""
    runs: Mapping[str, RunObservation] = field(default_factory=dict)
    """Run records in the store, by Job name (the plan they belong to)."""
    deployments: Mapping[str, DeploymentObservation] = field(default_factory=dict)
    services: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Actions:
    create: tuple[Manifest, ...] = ()
    """Objects to create when absent (Jobs: never updated, their template is immutable)."""
    apply: tuple[Manifest, ...] = ()
    """Objects to server-side apply (Deployments, Services)."""
    delete: tuple[tuple[str, str], ...] = ()
    """(kind, name) of owned objects no longer wanted."""


@dataclass(frozen=True)
class LoopOutcome:
    states: dict[ConditionType, ConditionState]
    phase: Phase
    message: str
    variants: list[VariantStatus]
    pools: list[PoolStatus]
    current_revision: str
    stable_revision: str | None
    revisions: list[RevisionRecord] | None
    serving: str | None
    latency_p99_ms: float | None
    actions: Actions


@dataclass(frozen=True)
class _PlanState:
    plan: JobPlan
    state: Literal["Starting", "Running", "Done", "Failed"]
    run: RunObservation | None = None
    reason: str | None = None
    message: str | None = None


def _plan_state(plan: JobPlan, observed: Observed) -> _PlanState:
    run = observed.runs.get(plan.job_name)
    job = observed.jobs.get(plan.job_name)
    if run is not None and run.found and run.error is None:
        return _PlanState(plan, "Done", run)  # done here or by the same spec elsewhere: no Job needed
    if job is None:
        return _PlanState(plan, "Starting")
    if job.state == "Running":
        return _PlanState(plan, "Running", message=job.message)
    if job.state == "Failed":
        return _PlanState(plan, "Failed", reason=job.reason or Reason.OPTIMIZATION_FAILED.value,
                          message=f"Job {plan.job_name} failed: {job.message or job.reason or 'no reason given'}")
    why = run.error if run is not None and run.error else f"no run record at {plan.run_record_uri}"
    return _PlanState(plan, "Failed", reason=Reason.RESULTS_UNREADABLE.value,
                      message=f"Job {plan.job_name} completed but its results cannot be read: {why}")


def _benchmark(m: Measured) -> ProviderBenchmark:
    gate = None if m.passed is None else (GateVerdict.PASSED if m.passed else GateVerdict.FAILED)
    return ProviderBenchmark(provider=m.provider, latency_p50_ms=m.p50_ms, latency_p99_ms=m.p99_ms,
                             speedup=None if m.speedup is None else round(m.speedup, 3), gate=gate)


def _variant_status(name: str, states: list[_PlanState]) -> VariantStatus:
    job = states[0].plan.job_name if states else None
    failed = [s for s in states if s.state == "Failed"]
    if failed:
        return VariantStatus(name=name, phase=VariantPhase.FAILED, job=failed[0].plan.job_name,
                             message=failed[0].message, gate=GateVerdict.PENDING)
    if any(s.state in ("Starting", "Running") for s in states):
        running = any(s.state == "Running" for s in states)
        return VariantStatus(name=name, phase=VariantPhase.RUNNING if running else VariantPhase.PENDING, job=job,
                             message="optimizing" if running else "its Job is being created")
    measured = [s.run.measured[name] for s in states if s.run is not None and name in s.run.measured]
    if not measured:
        return VariantStatus(name=name, phase=VariantPhase.FAILED, job=job, gate=GateVerdict.FAILED,
                             message="the Job's run record does not list this variant")
    first = measured[0]
    errors = [m for m in measured if m.error_reason]
    if errors:
        return VariantStatus(name=name, phase=VariantPhase.FAILED, job=job, gate=GateVerdict.FAILED,
                             message=errors[0].reason)
    failed_gate = [m for m in measured if not m.deployable]
    gate = GateVerdict.FAILED if failed_gate else GateVerdict.PASSED
    message = (f"{failed_gate[0].provider}: {failed_gate[0].reason}" if failed_gate
               else "; ".join(f"{m.provider}: {m.reason}" for m in measured))
    return VariantStatus(
        name=name, phase=VariantPhase.SUCCEEDED, job=job, metric=first.metric, source_metric=first.source_metric,
        drop=first.drop, size_bytes=first.size_bytes, benchmarks=[_benchmark(m) for m in measured], gate=gate,
        artifact=first.manifest_uri, sha256=first.sha256, message=message[:32768],
    )


def _history(previous: OptimizedModelStatus, current: RevisionRecord | None, limit: int) -> list[RevisionRecord] | None:
    records = list(previous.revisions or [])
    if current is None:
        return records or None
    out = [current]
    for record in records:
        if record.name == current.name:
            continue
        if current.phase == RevisionPhase.STABLE and record.phase == RevisionPhase.STABLE:
            record = record.model_copy(update={"phase": RevisionPhase.SUPERSEDED,
                                               "message": f"replaced by revision {current.name}"})
        out.append(record)
    return out[: limit + 1]


def _record(previous: OptimizedModelStatus, revision: str, generation: int, now: datetime, phase: RevisionPhase,
            variants: list[VariantStatus], pools: list[PoolStatus], message: str | None = None) -> RevisionRecord:
    earlier = next((r for r in previous.revisions or [] if r.name == revision), None)
    return RevisionRecord(
        name=revision, generation=earlier.generation if earlier else generation, phase=phase,
        created=earlier.created if earlier else now.replace(microsecond=0),
        variants=[VariantVerdict(name=v.name, gate=v.gate) for v in variants],
        pools=[PoolAssignment(pool=p.name, variant=p.variant or "", artifact=p.artifact) for p in pools if p.variant],
        message=message[:32768] if message else None,
    )


def plan_loop(
    view: ResourceView,
    spec: OptimizedModelSpec,
    previous: OptimizedModelStatus,
    observed: Observed,
    now: datetime,
    config: PlannerConfig,
) -> LoopOutcome:
    store = effective_store(spec, config.default_artifacts_uri)
    revision = revision_of(spec, store)
    plans = job_plans(spec, view.name, store)
    states = [_plan_state(p, observed) for p in plans]
    accepted = ConditionState(_TRUE, Reason.SPEC_ACCEPTED,
                              f"revision {revision}: {len(spec.optimizations)} variant(s) on "
                              f"{', '.join(p.provider for p in plans)}")
    variants = [_variant_status(o.name, states) for o in spec.optimizations]
    # One provider's Job at a time: the next one starts once the earlier ones are done, so it reuses their
    # builds by content (it only measures) and two Jobs never share the CPUs they time latency on.
    create: tuple[Manifest, ...] = ()
    for index, state in enumerate(states):
        if state.state == "Starting" and all(earlier.state == "Done" for earlier in states[:index]):
            create = (build_job(view, spec, state.plan, revision, store, config),)
            break
    # The stable revision is the one whose Deployments exist: read back, never taken on trust from status.
    serving_revisions = {d.revision for d in observed.deployments.values()}
    stable = previous.stable_revision if previous.stable_revision in serving_revisions else None
    base_pools = [PoolStatus(name=p.name, provider=p.execution_provider.value) for p in spec.node_pools]

    def outcome(conditions: dict[ConditionType, ConditionState], phase: Phase, message: str,
                pools: list[PoolStatus] | None = None, actions: Actions | None = None,
                stable_revision: str | None = stable, record: RevisionRecord | None = None) -> LoopOutcome:
        served = [p for p in (pools or []) if p.variant and p.available_replicas]
        p99s = [p.latency_p99_ms for p in served if p.latency_p99_ms is not None]
        return LoopOutcome(
            states={ConditionType.ACCEPTED: accepted, **conditions}, phase=phase, message=message,
            variants=variants, pools=pools or base_pools, current_revision=revision,
            stable_revision=stable_revision, revisions=_history(previous, record, spec.revision_history_limit),
            serving=", ".join(f"{p.name}={p.variant}" for p in served) or None,
            latency_p99_ms=max(p99s) if p99s else None,
            actions=actions or Actions(create=create),
        )

    pending = lambda why: ConditionState(_UNKNOWN, Reason.PENDING, why)  # noqa: E731
    failed = [s for s in states if s.state == "Failed"]
    if failed:
        first = failed[0]
        reason = Reason.JOB_DEADLINE_EXCEEDED.value if first.reason == "DeadlineExceeded" else first.reason
        message = "; ".join(s.message or "" for s in failed)
        keeps = f"; revision {stable} keeps serving" if stable and stable != revision else ""
        return outcome({
            ConditionType.OPTIMIZED: ConditionState(_FALSE, reason or Reason.OPTIMIZATION_FAILED, message),
            ConditionType.GATED: pending("waits for the optimization"),
            ConditionType.DEPLOYED: pending("waits for the gate"),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_FALSE, reason or Reason.OPTIMIZATION_FAILED, "stopped; a spec change starts over"),
            ConditionType.DEGRADED: ConditionState(_TRUE, reason or Reason.OPTIMIZATION_FAILED, message + keeps),
            ConditionType.STALLED: ConditionState(_TRUE, reason or Reason.OPTIMIZATION_FAILED, message),
        }, Phase.FAILED, f"optimization failed: {message}{keeps}",
            record=_record(previous, revision, view.generation, now, RevisionPhase.REFUSED, variants, [], message))

    if any(s.state != "Done" for s in states):
        started = any(s.state == "Running" for s in states)
        created = {job["metadata"]["name"] for job in create}
        waiting = [s.plan.job_name + (f" ({s.message})" if s.message else "")
                   + ("" if s.state == "Running" or s.plan.job_name in created else " (after the Job before it)")
                   for s in states if s.state in ("Running", "Starting")]
        message = (f"optimization Job(s) running: {', '.join(waiting)}" if started
                   else f"creating optimization Job(s): {', '.join(waiting)}")
        reason = Reason.OPTIMIZATION_RUNNING if started else Reason.AWAITING_OPTIMIZATION
        return outcome({
            ConditionType.OPTIMIZED: ConditionState(_UNKNOWN, reason, message),
            ConditionType.GATED: pending("waits for the optimization"),
            ConditionType.DEPLOYED: pending("waits for the gate"),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_TRUE, reason, message),
            ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
            ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
        }, Phase.OPTIMIZING if started else Phase.PENDING, message)

    optimized = ConditionState(_TRUE, Reason.OPTIMIZATION_SUCCEEDED,
                               f"{len(plans)} Job(s) finished: " + ", ".join(s.plan.job_name for s in states))
    by_provider = {s.plan.provider: s.run.measured for s in states if s.run is not None}
    choices: list[tuple[Any, PoolChoice]] = [
        (pool, choose(pool, by_provider.get(pool.execution_provider.value, {}))) for pool in spec.node_pools
    ]
    blocked = [c for _, c in choices if c.blocked]
    if blocked:
        message = "; ".join(f"pool {c.pool}: {c.reason}" for c in blocked)
        keeps = f"; revision {stable} keeps serving" if stable and stable != revision else ""
        pools = [PoolStatus(name=p.name, provider=p.execution_provider.value, variant=c.variant,
                            message=c.reason) for p, c in choices]
        return outcome({
            ConditionType.OPTIMIZED: optimized,
            ConditionType.GATED: ConditionState(_FALSE, Reason.GATE_FAILED, message),
            ConditionType.DEPLOYED: ConditionState(_FALSE, Reason.NOTHING_TO_SERVE, "nothing of this revision is deployed"),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_FALSE, Reason.GATE_FAILED, "stopped; a spec change starts over"),
            ConditionType.DEGRADED: ConditionState(_TRUE, Reason.GATE_FAILED, message + keeps),
            ConditionType.STALLED: ConditionState(_TRUE, Reason.GATE_FAILED, message),
        }, Phase.FAILED, f"gate: {message}{keeps}", pools=pools,
            record=_record(previous, revision, view.generation, now, RevisionPhase.REFUSED, variants, [], message))

    gated = ConditionState(_TRUE, Reason.GATE_PASSED, "; ".join(f"{c.pool}: {c.reason}" for _, c in choices))
    apply: list[Manifest] = [build_model_service(view, config)]
    pools: list[PoolStatus] = []
    wanted_deployments: set[str] = set()
    wanted_services = {pool_service_name(view, p.name) for p in spec.node_pools} | {apply[0]["metadata"]["name"]}
    for pool, choice in choices:
        m = choice.measured
        assert m is not None and m.manifest_uri is not None and choice.variant is not None
        name = deployment_name(view, pool.name, revision)
        wanted_deployments.add(name)
        apply.append(build_server_deployment(view, pool, revision, choice.variant, m.manifest_uri, m.sha256 or "", config))
        apply.append(build_pool_service(view, pool.name, config))
        seen = observed.deployments.get(name)
        pools.append(PoolStatus(
            name=pool.name, provider=pool.execution_provider.value, variant=choice.variant, revision=revision,
            artifact=m.manifest_uri, sha256=m.sha256, deployment=name, replicas=pool.replicas,
            available_replicas=seen.available if seen else 0, latency_p99_ms=m.p99_ms,
            provider_fallback=m.provider_fallback, message=choice.reason,
        ))
    not_ready = [p for p in pools if not (observed.deployments.get(p.deployment or "") and
                                         observed.deployments[p.deployment or ""].ready
                                         and observed.deployments[p.deployment or ""].replicas == p.replicas)]
    if not_ready:
        message = "waiting for " + ", ".join(
            f"{p.deployment} ({p.available_replicas or 0}/{p.replicas} available)" for p in not_ready)
        keeps = f"; revision {stable} serves meanwhile" if stable and stable != revision else ""
        return outcome({
            ConditionType.OPTIMIZED: optimized,
            ConditionType.GATED: gated,
            ConditionType.DEPLOYED: ConditionState(_FALSE, Reason.DEPLOYING, message),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_TRUE, Reason.DEPLOYING, message + keeps),
            ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
            ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
        }, Phase.DEPLOYING, message + keeps, pools=pools, actions=Actions(create=create, apply=tuple(apply)))

    # Every pool of this revision is available: it serves all traffic (canaries come with the rollout).
    stale = tuple(("Deployment", name) for name in sorted(observed.deployments) if name not in wanted_deployments)
    stale += tuple(("Service", name) for name in sorted(observed.services) if name not in wanted_services)
    serving = ", ".join(f"{p.name}={p.variant}" for p in pools)
    record = _record(previous, revision, view.generation, now, RevisionPhase.STABLE, variants, pools)
    deployed = ConditionState(_TRUE, Reason.DEPLOYED, f"serving {serving}")
    return outcome({
        ConditionType.OPTIMIZED: optimized,
        ConditionType.GATED: gated,
        ConditionType.DEPLOYED: deployed,
        ConditionType.ROLLED_OUT: ConditionState(_TRUE, Reason.PROMOTED, f"revision {revision} serves all traffic"),
        ConditionType.PROGRESSING: ConditionState(_FALSE, Reason.PROMOTED, f"revision {revision} serves all traffic"),
        ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
        ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
    }, Phase.SUCCEEDED, f"revision {revision} serves {serving}", pools=pools,
        actions=Actions(create=create, apply=tuple(apply), delete=stale), stable_revision=revision, record=record)
