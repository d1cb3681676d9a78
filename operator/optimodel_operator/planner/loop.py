"""The loop for one valid spec: optimization Jobs → results → gate → a Deployment per pool → Ready.

Given the spec, what the API server holds (Jobs, Deployments, Services) and what the store holds
(run records and manifests), decide the stage conditions, the status fields those stages own, and the
objects to create, apply or delete. Pure: the controller reads the observations and applies the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from optimodel_operator.analysis.assess import Assessment
from optimodel_operator.analysis.measurement import AnalysisPlan, CheckKind, Measurement
from optimodel_operator.api.conditions import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.source import Evaluation, Slices
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.api.status import (
    AnalysisResult,
    AnalysisVerdict,
    GateVerdict,
    MeasurementStatus,
    OptimizationRetry,
    OptimizedModelStatus,
    Phase,
    PoolAssignment,
    PoolStatus,
    ProviderBenchmark,
    RevisionPhase,
    RevisionRecord,
    RolloutPhase,
    VariantPhase,
    VariantStatus,
    VariantVerdict,
)
from optimodel_operator.builders.job import build_job
from optimodel_operator.builders.server import (
    build_model_service,
    build_pool_service,
    build_revision_service,
    build_server_deployment,
    deployment_name,
    model_service_name,
)
from optimodel_operator.planner.choice import PoolChoice, choose
from optimodel_operator.planner.conditions import ConditionState
from optimodel_operator.planner.diff import EventSpec
from optimodel_operator.planner.naming import ANNOTATION_INJECT_FAULTS
from optimodel_operator.planner.rollout import (
    Action,
    AnalysisOutcome,
    AnalysisRequest,
    RolloutDecision,
    RolloutState,
    Wanted,
    command_from_annotations,
    route_weights,
    step,
)
from optimodel_operator.planner.serving import (
    Served,
    ServerBuild,
    analysis_plans,
    analysis_window,
    first_step_replicas,
    replicas_for,
    route_services,
    safer_target,
)
from optimodel_operator.planner.results import SOURCE, Measured, RunObservation, describe_slice
from optimodel_operator.planner.retry import FailedJob, decide_retry
from optimodel_operator.planner.revision import JobPlan, effective_store, job_plans, revision_of
from optimodel_operator.planner.view import PlannerConfig, ResourceView

_TRUE, _FALSE, _UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
UNREADY_RECHECK = timedelta(seconds=10)
Manifest = dict[str, Any]


@dataclass(frozen=True)
class JobObservation:
    """An optimization Job as the API server reports it (and, when failed, its pod's last words)."""

    name: str
    state: Literal["Running", "Complete", "Failed"]
    reason: str | None = None
    """For a failed Job: the entrypoint's reason (termination message), OOMKilled, DeadlineExceeded, ..."""
    message: str | None = None
    unstarted: bool = False
    """A running Job none of whose pods is ready yet: why it waits (a missing Secret, no node) shows only on its
    pods, whose changes no watch of the operator sees, so the planner looks again."""


@dataclass(frozen=True)
class DeploymentObservation:
    name: str
    revision: str
    pool: str
    replicas: int
    available: int
    current: bool
    """The controller has seen the latest spec and every replica runs it."""
    variant: str = ""
    variant_kind: str | None = None
    """source, quantize, convert, prune or distill (annotation optimodel.io/variant-kind)."""
    drift_profiled: bool = False
    """Its artifact carries a drift reference (annotation optimodel.io/drift-profiled)."""
    unready_reason: str | None = None
    """Why its pods are not ready, as they say it (a server that refused its artifact, a container that
    keeps crashing); None when nothing is known beyond the counts."""

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
    analysis: AnalysisRun | None = None
    """The analysis the previous pass of this reconcile asked for, run by the controller."""


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis run's results: the assessment of every pool's measurements together."""

    time: datetime
    """When it ended: the decisions act on it if it is at or after the analysis's due time."""
    request: AnalysisRequest
    window: str
    assessment: Assessment
    measurements: tuple[tuple[str, Measurement], ...]
    """(pool, measurement) for every check on every pool."""


@dataclass(frozen=True)
class AnalysisAsk:
    """What the controller must run before deciding again: one plan per pool, asked at `time`."""

    request: AnalysisRequest
    window: str
    plans: tuple[AnalysisPlan, ...]


@dataclass(frozen=True)
class RouteWeights:
    """The backend weights to write into every rule of a user's HTTPRoute."""

    route: str
    stable_service: str
    stable_weight: int
    canary_service: str
    canary_weight: int


@dataclass(frozen=True)
class Actions:
    create: tuple[Manifest, ...] = ()
    """Objects to create when absent (Jobs: never updated, their template is immutable)."""
    apply: tuple[Manifest, ...] = ()
    """Objects to server-side apply (Deployments, Services)."""
    delete: tuple[tuple[str, str], ...] = ()
    """(kind, name) of owned objects no longer wanted."""
    scale: tuple[tuple[str, int], ...] = ()
    """(Deployment, replicas) of earlier revisions: their template stays as it was built, only the scale moves."""
    routes: tuple[RouteWeights, ...] = ()
    """HTTPRoutes whose backend weights carry the canary split."""


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
    rollout: RolloutState | None = None
    """The rollout's state to write into status (None: the stored one stays)."""
    last_analysis: AnalysisResult | None = None
    analysis: AnalysisAsk | None = None
    """An analysis is due: run it and decide again with its result (Observed.analysis)."""
    events: tuple[EventSpec, ...] = ()
    """The rollout's decisions worth an Event."""
    requeue_after: timedelta | None = None
    """Decide again after this long even if nothing changes (the next analysis is due)."""
    retry: OptimizationRetry | None = None
    """The reruns of the revision's Job after a transient failure, to store in status (planner.retry)."""


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


def _worst_slice(measured: list[Measured], metric: str, mode: str) -> str | None:
    # The slice that refused the variant on some provider, else the first provider's worst one.
    slices = [m.worst_slice for m in measured if m.worst_slice is not None]
    if not slices:
        return None
    worst = next((s for s in slices if not s.passed), slices[0])
    return describe_slice(worst, metric, mode)[:1024]


def _variant_status(name: str, states: list[_PlanState], evaluation: Evaluation) -> VariantStatus:
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
    slice_mode = (evaluation.slices or Slices()).max_drop_mode.value
    return VariantStatus(
        name=name, phase=VariantPhase.SUCCEEDED, job=job, metric=first.metric, source_metric=first.source_metric,
        drop=first.drop, worst_slice=_worst_slice(measured, evaluation.metric.value, slice_mode),
        held_out_rows=first.held_out_rows, tuning_rows=first.tuning_rows, size_bytes=first.size_bytes,
        benchmarks=[_benchmark(m) for m in measured], gate=gate,
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


def parse_faults(text: str | None) -> dict[str, str]:
    """`latency-ms=150,error-ratio=0.1` (annotation optimodel.io/inject-faults) as server fault flags."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        key, _, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key in FAULT_KEYS and value:
            out[key] = value
    return out


# `control=true` lets a benchmark change the faults of running servers (PUT /v2/faults) at a known instant.
FAULT_KEYS = ("latency-ms", "error-ratio", "input-shift", "output-bias", "seed", "control")


def _served(observed: Observed) -> list[Served]:
    return [Served(d.name, d.revision, d.pool, d.replicas, d.variant_kind, d.drift_profiled)
            for d in observed.deployments.values()]


def _last_analysis(run: AnalysisRun, before: RolloutState) -> AnalysisResult:
    def values(kind: CheckKind) -> list[float]:
        return [m.value for _, m in run.measurements if m.kind is kind and m.value is not None]

    def worst(kind: CheckKind) -> float | None:
        found = values(kind)
        return round(max(found), 6) if found else None

    samples = values(CheckKind.REQUEST_COUNT)
    canary = before.phase == RolloutPhase.CANARY
    return AnalysisResult(
        time=run.time.replace(microsecond=0), revision=run.request.revision, baseline=run.request.baseline,
        step=before.step_index if canary else None, weight=(before.weight or 0) if canary else 100,
        window=run.window, verdict=AnalysisVerdict(run.assessment.verdict.value),
        p99_latency_ms=worst(CheckKind.LATENCY), error_rate=worst(CheckKind.ERROR_RATE),
        psi=worst(CheckKind.INPUT_DRIFT), prediction_psi=worst(CheckKind.PREDICTION_DRIFT),
        samples=int(sum(samples)) if samples else None, message=run.assessment.reason[:32768] or None,
        measurements=[MeasurementStatus(name=m.name, pool=pool, phase=m.phase.value, value=m.value,
                                        message=m.message[:32768], query=m.query[:8192])
                      for pool, m in run.measurements][:64],
    )


@dataclass(frozen=True)
class _RolloutPart:
    decision: RolloutDecision
    before: RolloutState
    wanted_replicas: dict[str, int] | None
    """Replicas of the wanted revision per pool (None while it is not gated)."""
    wanted_ready: bool
    """The wanted revision's Deployments are available at those replicas."""
    in_rollout: bool
    """The rollout has taken the wanted revision on (canary, promoted, rolled back, or serving as stable)."""
    apply: list[Manifest]
    scale: list[tuple[str, int]]
    delete: list[tuple[str, str]]
    routes: list[RouteWeights]
    ask: AnalysisAsk | None
    last_analysis: AnalysisResult | None


def _plan_rollout(view: ResourceView, spec: OptimizedModelSpec, previous: OptimizedModelStatus, observed: Observed,
                  now: datetime, config: PlannerConfig, revision: str,
                  builds: dict[str, ServerBuild] | None, sources: dict[str, ServerBuild]) -> _RolloutPart:
    rollout = spec.rollout
    gateway = rollout.traffic_routing is not None and rollout.traffic_routing.gateway_api is not None
    served = _served(observed)
    existing = {s.revision for s in served}
    state = RolloutState.from_status(previous)
    if state.stable_revision and state.stable_revision not in existing:
        # Its Deployments are gone (deleted by hand, or a status from elsewhere): nothing serves to compare with.
        state = RolloutState(last_command=state.last_command)
    command = command_from_annotations(view.annotations, state.last_command)

    # Is the wanted revision one the rollout already knows, or must its Deployments come up first?
    known = (state.revision == revision and state.phase in (RolloutPhase.CANARY, RolloutPhase.PROMOTED)) or (
        state.stable_revision == revision) or (
        state.revision == revision and (state.generation or 0) >= view.generation)
    has_stable = state.stable_revision is not None and state.stable_revision != revision
    prep = first_step_replicas(rollout, spec.node_pools, has_stable, gateway) \
        if builds is not None and not known else None

    def ready_at(replicas: Mapping[str, int]) -> bool:
        for pool in spec.node_pools:
            seen = observed.deployments.get(deployment_name(view, pool.name, revision))
            if seen is None or not seen.ready or seen.replicas != replicas.get(pool.name, 0):
                return False
        return True

    wanted = None
    if builds is not None and (known or (prep is not None and ready_at(prep))):
        wanted = Wanted(revision, view.generation)
    safer = safer_target(state, revision, builds, served)
    assessment = None
    if observed.analysis is not None:
        assessment = AnalysisOutcome.of(observed.analysis.assessment, observed.analysis.time)
    decision = step(rollout, state, assessment, now, command, wanted=wanted, safer=safer)
    ask = None
    if decision.action == Action.ANALYSE and decision.analyse is not None:
        if observed.analysis is None:
            request = decision.analyse
            window = analysis_window(request, now, config.analysis_min_window_seconds)
            on = sorted({s.pool for s in served if s.revision == request.revision and s.replicas > 0})
            profiled = {s.pool: s.drift_profiled for s in served if s.revision == request.revision}
            ask = AnalysisAsk(request, window, analysis_plans(rollout, request, view.namespace, view.name, on,
                                                              profiled, window))
        else:  # an analysis from before its due time: wait a moment rather than ask again in this pass
            decision = RolloutDecision(Action.WAIT, decision.state, requeue_after=timedelta(seconds=1))
    last = previous.last_analysis
    if observed.analysis is not None and decision.action != Action.WAIT:
        last = _last_analysis(observed.analysis, state)

    new = decision.state
    replicas = replicas_for(new, spec.node_pools, gateway)
    in_rollout = wanted is not None and revision in replicas
    wanted_replicas: dict[str, int] | None = None
    if builds is not None:
        wanted_replicas = replicas.get(revision) if in_rollout else prep
        wanted_replicas = dict(wanted_replicas or {p.name: 0 for p in spec.node_pools})
    apply: list[Manifest] = []
    faults = parse_faults(view.annotations.get(ANNOTATION_INJECT_FAULTS))
    if builds is not None and wanted_replicas is not None:
        fallback = new.fallback_variant if new.stable_revision == revision else None
        for pool in spec.node_pools:
            build = builds[pool.name]
            if fallback and build.at_risk and pool.name in sources:
                build = sources[pool.name]
            apply.append(build_server_deployment(
                view, pool, revision, build.variant, build.manifest_uri, build.sha256, config,
                replicas=wanted_replicas.get(pool.name, 0), variant_kind=build.kind, faults=faults,
                drift_profiled=build.drift_profiled, artifacts=spec.artifacts))
    keep = set(replicas) | ({revision} if builds is not None else set())
    scale: list[tuple[str, int]] = []
    delete: list[tuple[str, str]] = []
    for s in sorted(served, key=lambda x: x.name):
        if s.revision == revision and builds is not None:
            if s.name not in {m["metadata"]["name"] for m in apply}:
                delete.append(("Deployment", s.name))  # a pool no longer in the spec
            continue
        if s.revision not in keep:
            delete.append(("Deployment", s.name))
            continue
        want = replicas.get(s.revision, {}).get(s.pool, 0)
        if s.replicas != want:
            scale.append((s.name, want))
    routes: list[RouteWeights] = []
    if gateway and rollout.traffic_routing and rollout.traffic_routing.gateway_api:
        model_service = model_service_name(view)
        stable_service, canary_service = route_services(model_service)
        traffic = new.traffic()
        stable_rev = new.stable_revision or revision
        canary_rev = new.revision if new.phase == RolloutPhase.CANARY and new.revision else stable_rev
        apply.append(build_revision_service(view, stable_service, stable_rev, config))
        apply.append(build_revision_service(view, canary_service, canary_rev, config))
        canary_weight, stable_weight = route_weights(traffic.get(canary_rev, 0) if canary_rev != stable_rev else 0)
        routes.append(RouteWeights(rollout.traffic_routing.gateway_api.http_route, stable_service,
                                   stable_weight, canary_service, canary_weight))
    return _RolloutPart(decision, state, wanted_replicas,
                        builds is not None and wanted_replicas is not None and ready_at(wanted_replicas),
                        in_rollout, apply, scale, delete, routes, ask, last)


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
    # A Job that failed for a transient reason is rerun after a back-off: deleted now, created again next time.
    first_failed = next((s for s in states if s.state == "Failed"), None)
    retry = decide_retry(
        FailedJob(first_failed.plan.job_name, first_failed.reason or "", first_failed.message or "")
        if first_failed is not None else None,
        previous.optimization_retry, revision, view.generation, now, config)
    if retry.rerun is not None:
        states = [_PlanState(s.plan, "Starting", message=retry.note) if s.plan.job_name == retry.rerun else s
                  for s in states]
    rerunning = retry.record if retry.record is not None and retry.record.retries and retry.rerun is None else None
    accepted = ConditionState(_TRUE, Reason.SPEC_ACCEPTED,
                              f"revision {revision}: {len(spec.optimizations)} variant(s) on "
                              f"{', '.join(p.provider for p in plans)}")
    variants = [_variant_status(o.name, states, spec.evaluation) for o in spec.optimizations]
    # One provider's Job at a time: the next one starts once the earlier ones are done, so it reuses their
    # builds by content (it only measures) and two Jobs never share the CPUs they time latency on.
    create: tuple[Manifest, ...] = ()
    for index, state in enumerate(states):
        if state.state == "Starting" and all(earlier.state == "Done" for earlier in states[:index]):
            if state.plan.job_name != retry.rerun:  # the failed Job still exists: created again once it is gone
                create = (build_job(view, spec, state.plan, revision, store, config),)
            break
    base_pools = [PoolStatus(name=p.name, provider=p.execution_provider.value) for p in spec.node_pools]
    pending = lambda why: ConditionState(_UNKNOWN, Reason.PENDING, why)  # noqa: E731
    kinds = {o.name: o.kind for o in spec.optimizations}

    # --- the wanted revision's stages: optimization, gate ---------------------------------------------
    conditions: dict[ConditionType, ConditionState] = {}
    phase, message = Phase.PENDING, ""
    pools: list[PoolStatus] = base_pools
    refused: str | None = None
    builds: dict[str, ServerBuild] | None = None
    sources: dict[str, ServerBuild] = {}
    choices: list[tuple[Any, PoolChoice]] = []
    failed = [s for s in states if s.state == "Failed"]
    optimized = ConditionState(_TRUE, Reason.OPTIMIZATION_SUCCEEDED,
                               f"{len(plans)} Job(s) finished: " + ", ".join(s.plan.job_name for s in states))
    if failed:
        first = failed[0]
        reason = Reason.JOB_DEADLINE_EXCEEDED.value if first.reason == "DeadlineExceeded" else first.reason
        refused = "; ".join(s.message or "" for s in failed) + (f"; {retry.note}" if retry.note else "")
        why = reason or Reason.OPTIMIZATION_FAILED
        # While a rerun is due the revision is not stalled: the operator goes on by itself at that time.
        waiting = retry.waiting_until is not None
        conditions = {
            ConditionType.OPTIMIZED: ConditionState(_FALSE, why, refused),
            ConditionType.GATED: pending("waits for the optimization"),
            ConditionType.DEPLOYED: pending("waits for the gate"),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_TRUE, why, retry.note) if waiting
            else ConditionState(_FALSE, why, "stopped; a spec change starts over"),
            ConditionType.DEGRADED: ConditionState(_TRUE, why, refused),
            ConditionType.STALLED: ConditionState(_FALSE, why, retry.note) if waiting
            else ConditionState(_TRUE, why, refused),
        }
        phase, message = Phase.FAILED, f"optimization failed: {refused}"
    elif any(s.state != "Done" for s in states):
        started = any(s.state == "Running" for s in states)
        created = {job["metadata"]["name"] for job in create}
        waiting = [s.plan.job_name + (f" ({s.message})" if s.message else "")
                   + ("" if s.state == "Running" or s.plan.job_name in created or s.plan.job_name == retry.rerun
                      else " (after the Job before it)")
                   + (f" (retry {rerunning.retries} of {config.job_retry_limit} after {rerunning.reason})"
                      if rerunning is not None and rerunning.job == s.plan.job_name else "")
                   for s in states if s.state in ("Running", "Starting")]
        message = (f"optimization Job(s) running: {', '.join(waiting)}" if started
                   else f"creating optimization Job(s): {', '.join(waiting)}")
        reason = Reason.OPTIMIZATION_RUNNING if started else Reason.AWAITING_OPTIMIZATION
        conditions = {
            ConditionType.OPTIMIZED: ConditionState(_UNKNOWN, reason, message),
            ConditionType.GATED: pending("waits for the optimization"),
            ConditionType.DEPLOYED: pending("waits for the gate"),
            ConditionType.ROLLED_OUT: pending("waits for the deployment"),
            ConditionType.PROGRESSING: ConditionState(_TRUE, reason, message),
            ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
            ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
        }
        phase = Phase.OPTIMIZING if started else Phase.PENDING
    else:
        by_provider = {s.plan.provider: s.run.measured for s in states if s.run is not None}
        choices = [(pool, choose(pool, by_provider.get(pool.execution_provider.value, {})))
                   for pool in spec.node_pools]
        blocked = [c for _, c in choices if c.blocked]
        if blocked:
            refused = "; ".join(f"pool {c.pool}: {c.reason}" for c in blocked)
            pools = [PoolStatus(name=p.name, provider=p.execution_provider.value, variant=c.variant,
                                message=c.reason) for p, c in choices]
            conditions = {
                ConditionType.OPTIMIZED: optimized,
                ConditionType.GATED: ConditionState(_FALSE, Reason.GATE_FAILED, refused),
                ConditionType.DEPLOYED: ConditionState(_FALSE, Reason.NOTHING_TO_SERVE, "nothing of this revision is deployed"),
                ConditionType.ROLLED_OUT: pending("waits for the deployment"),
                ConditionType.PROGRESSING: ConditionState(_FALSE, Reason.GATE_FAILED, "stopped; a spec change starts over"),
                ConditionType.DEGRADED: ConditionState(_TRUE, Reason.GATE_FAILED, refused),
                ConditionType.STALLED: ConditionState(_TRUE, Reason.GATE_FAILED, refused),
            }
            phase, message = Phase.FAILED, f"gate: {refused}"
        else:
            builds = {}
            for pool, choice in choices:
                m = choice.measured
                assert m is not None and m.manifest_uri is not None and choice.variant is not None
                kind = SOURCE if choice.variant == SOURCE else kinds.get(choice.variant, "")
                builds[pool.name] = ServerBuild(pool, choice.variant, kind, m.manifest_uri, m.sha256 or "",
                                                m.drift_profiled)
                source = by_provider.get(pool.execution_provider.value, {}).get(SOURCE)
                if source is not None and source.manifest_uri and source.deployable is not None:
                    sources[pool.name] = ServerBuild(pool, SOURCE, SOURCE, source.manifest_uri, source.sha256 or "",
                                                     source.drift_profiled)

    # --- the rollout: who serves what, analyses, promotion, rollback ----------------------------------
    part = _plan_rollout(view, spec, previous, observed, now, config, revision, builds, sources)
    new = part.decision.state
    stable = new.stable_revision
    keeps = f"; revision {stable} keeps serving" if stable and stable != revision else ""
    record: RevisionRecord | None = None
    if refused is not None:
        conditions[ConditionType.DEGRADED] = ConditionState(
            conditions[ConditionType.DEGRADED].status, conditions[ConditionType.DEGRADED].reason,
            conditions[ConditionType.DEGRADED].message + keeps)
        message += keeps
        if retry.waiting_until is None:  # refused for good; a revision whose Job is rerun is not refused yet
            record = _record(previous, revision, view.generation, now, RevisionPhase.REFUSED, variants, [], refused)
    elif builds is not None:
        gated = ConditionState(_TRUE, Reason.GATE_PASSED, "; ".join(f"{c.pool}: {c.reason}" for _, c in choices))
        wanted_replicas = part.wanted_replicas or {}
        pools = []
        for pool, choice in choices:
            m = choice.measured
            assert m is not None
            name = deployment_name(view, pool.name, revision)
            seen = observed.deployments.get(name)
            pools.append(PoolStatus(
                name=pool.name, provider=pool.execution_provider.value, variant=choice.variant, revision=revision,
                artifact=m.manifest_uri, sha256=m.sha256, deployment=name, replicas=wanted_replicas.get(pool.name, 0),
                available_replicas=seen.available if seen else 0, latency_p99_ms=m.p99_ms,
                provider_fallback=m.provider_fallback, message=choice.reason,
            ))
        def available(p: PoolStatus) -> str:
            seen = observed.deployments.get(p.deployment or "")
            why = f": {seen.unready_reason}" if seen is not None and seen.unready_reason else ""
            return f"{p.deployment} ({p.available_replicas or 0}/{p.replicas} available{why})"

        if not part.in_rollout:
            message = "waiting for " + ", ".join(available(p) for p in pools)
            if stable and stable != revision:
                message += f" before its canary begins; revision {stable} serves meanwhile"
            conditions = {
                ConditionType.OPTIMIZED: optimized,
                ConditionType.GATED: gated,
                ConditionType.DEPLOYED: ConditionState(_FALSE, Reason.DEPLOYING, message),
                ConditionType.ROLLED_OUT: pending("waits for the deployment"),
                ConditionType.PROGRESSING: ConditionState(_TRUE, Reason.DEPLOYING, message),
                ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
                ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
            }
            phase = Phase.DEPLOYING
        else:
            serving = ", ".join(f"{p.name}={p.variant}" for p in pools)
            deployed = (ConditionState(_TRUE, Reason.DEPLOYED, f"serving {serving}") if part.wanted_ready else
                        ConditionState(_FALSE, Reason.DEPLOYING, "scaling " + ", ".join(
                            available(p) for p in pools)))
            conditions = {ConditionType.OPTIMIZED: optimized, ConditionType.GATED: gated,
                          ConditionType.DEPLOYED: deployed, **part.decision.conditions()}
            phase = part.decision.phase or Phase.SUCCEEDED
            message = new.message or f"revision {revision} serves {serving}"
            if new.revision == revision and new.phase == RolloutPhase.CANARY:
                record_phase, why = RevisionPhase.CANARY, new.message
            elif new.revision == revision and new.phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED) \
                    and stable != revision:
                record_phase, why = RevisionPhase.ROLLED_BACK, new.message
            elif stable == revision:
                record_phase, why = RevisionPhase.STABLE, (new.message if new.fallback_variant else None)
            else:
                record_phase, why = RevisionPhase.CANARY, new.message
            record = _record(previous, revision, view.generation, now, record_phase, variants, pools, why)

    # Services: the model's and each pool's; stale ones go once the wanted revision is gated.
    apply: list[Manifest] = []
    delete = list(part.delete)
    if builds is not None or observed.deployments:
        apply.append(build_model_service(view, config))
        apply += [build_pool_service(view, p.name, config) for p in spec.node_pools]
    apply += part.apply
    if builds is not None:
        wanted_services = {m["metadata"]["name"] for m in apply if m["kind"] == "Service"}
        delete += [("Service", name) for name in sorted(observed.services) if name not in wanted_services]
    served = [p for p in pools if p.variant and p.available_replicas]
    p99s = [p.latency_p99_ms for p in served if p.latency_p99_ms is not None]
    live = part.last_analysis.p99_latency_ms if part.last_analysis is not None else None
    return LoopOutcome(
        states={ConditionType.ACCEPTED: accepted, **conditions}, phase=phase, message=message or phase.value,
        variants=variants, pools=pools, current_revision=revision, stable_revision=stable,
        revisions=_history(previous, record, spec.revision_history_limit),
        serving=", ".join(f"{p.name}={p.variant}" for p in served) or None,
        latency_p99_ms=live if live is not None else (max(p99s) if p99s else None),
        actions=Actions(create=create, apply=tuple(apply),
                        delete=tuple(delete) + ((("Job", retry.rerun),) if retry.rerun is not None else ()),
                        scale=tuple(part.scale), routes=tuple(part.routes)),
        rollout=new, last_analysis=part.last_analysis, analysis=part.ask,
        events=tuple(e for e in (part.decision.event, retry.event) if e is not None),
        requeue_after=_sooner(
            # While a revision is rolled out or guarded, the next analysis is never further than one interval away.
            part.decision.requeue_after or (
                spec.rollout.interval_timedelta if new.phase in (RolloutPhase.CANARY, RolloutPhase.PROMOTED) else None)
            # Pods that stay unready change nothing the watches see: look again, so the reason stays current.
            or (UNREADY_RECHECK if builds is not None and not part.wanted_ready else None)
            # Likewise a Job whose pod does not start: its waiting reason moves on its pod, not on the Job.
            or (UNREADY_RECHECK if any(j.state == "Running" and j.unstarted for j in observed.jobs.values()) else None),
            # A failed Job's rerun is due.
            retry.requeue_after),
        retry=retry.record,
    )


def _sooner(*delays: timedelta | None) -> timedelta | None:
    return min((d for d in delays if d is not None), default=None)
