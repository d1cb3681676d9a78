"""The OptimizedModel status: what the operator observed and decided, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from optimodel_operator.api.common import DescribedEnum, LongName, Message, StatusModel, Uri
from optimodel_operator.api.conditions import ConditionStatus


class Phase(DescribedEnum):
    PENDING = "Pending", "Accepted, no work started; leaves when the optimization Jobs start."
    OPTIMIZING = "Optimizing", "Optimization Jobs run; leaves when all have finished (Gating) or one failed (Failed)."
    GATING = "Gating", "Variants are judged; leaves for Deploying when the variants to serve pass, else Failed."
    DEPLOYING = "Deploying", "The new revision's Deployments are created; leaves for RollingOut once available."
    ROLLING_OUT = "RollingOut", "The canary walks the steps; leaves for Succeeded on promotion or RolledBack."
    SUCCEEDED = "Succeeded", "The revision serves all traffic and stays guarded; a spec change starts over."
    ROLLED_BACK = "RolledBack", (
        "Analyses failed, or a person aborted (rolloutPhase says which); the stable revision serves all traffic; "
        "a spec change or optimodel retry starts over."
    )
    FAILED = "Failed", (
        "Cannot go on (invalid spec, failed Job or gate); a spec change starts over. A Job that failed for a transient "
        "reason (the store unreachable) is rerun by itself after a back-off (optimizationRetry; Stalled stays False "
        "meanwhile)."
    )


class Condition(StatusModel):
    """A condition in the Kubernetes shape."""

    type: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)]
    """Condition type (Ready, Accepted, Optimized, Gated, Deployed, RolledOut, Progressing, Degraded, Stalled)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)]
    """One CamelCase word saying why, from the catalog in optimodel_operator.api.conditions."""
    message: Message = ""
    """Human-readable details."""
    last_transition_time: datetime
    """When status last changed."""
    observed_generation: int = Field(ge=0)
    """metadata.generation the condition was computed for."""


class VariantPhase(DescribedEnum):
    PENDING = "Pending", "Its optimization Job has not started."
    RUNNING = "Running", "Its optimization Job runs."
    SUCCEEDED = "Succeeded", "The artifact is written and measured."
    FAILED = "Failed", "The optimization Job failed; see message."


class GateVerdict(DescribedEnum):
    PENDING = "Pending", "Not judged yet."
    PASSED = "Passed", "Within every gate threshold."
    FAILED = "Failed", "Over a gate threshold; see message."


class ProviderBenchmark(StatusModel):
    """Latency of a variant on one execution provider."""

    provider: Annotated[str, StringConstraints(max_length=32)]
    """Execution provider (cpu, cuda, tensorrt)."""
    latency_p50_ms: float | None = None
    """Median latency in milliseconds."""
    latency_p99_ms: float | None = None
    """99th percentile latency in milliseconds."""
    speedup: float | None = None
    """Source p50 divided by this variant's p50 on the same provider."""
    gate: GateVerdict | None = None
    """Gate verdict on this provider."""


class VariantStatus(StatusModel):
    """What became of one optimization."""

    name: LongName
    """optimizations[].name."""
    phase: VariantPhase = VariantPhase.PENDING
    """Progress of its optimization Job."""
    job: LongName | None = None
    """Name of its optimization Job."""
    metric: float | None = None
    """Score on the held-out evaluation rows."""
    source_metric: float | None = None
    """The source's score on the same rows."""
    drop: float | None = None
    """Loss against the source, in the unit of the gate's maxDropMode."""
    worst_slice: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """The gate's worst slice of the held-out rows (evaluation.slices), e.g. `class=3: -4.1 pts on 88 rows
    (budget 5)`; ends in `over budget` when that slice refused the variant. Unset when no slice was judged."""
    held_out_rows: int | None = Field(None, ge=0)
    """Held-out rows the metric and the gate's verdict were computed on."""
    tuning_rows: int | None = Field(None, ge=0)
    """Rows of the tuning split, the only evaluation rows a search or selection looked at."""
    size_bytes: int | None = Field(None, ge=0)
    """Artifact size."""
    benchmarks: Annotated[list[ProviderBenchmark], Field(max_length=8)] | None = None
    """Latency per execution provider."""
    gate: GateVerdict = GateVerdict.PENDING
    """Overall gate verdict."""
    artifact: Uri | None = None
    """Where the artifact is stored."""
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Content hash of the artifact."""
    message: Message | None = None
    """Why it failed, or what it is doing."""


class AnalysisVerdict(DescribedEnum):
    PASS = "Pass", "Every check within its threshold."
    FAIL = "Fail", "A check over its threshold; see message."
    NO_DATA = "NoData", "No samples, or fewer than rollout.minSamples requests; treated per rollout.noData."
    ERROR = "Error", "Prometheus could not be asked; holds, and counts towards the consecutive-error limit."


class MeasurementPhase(DescribedEnum):
    SUCCESSFUL = "Successful", "Measured, within its threshold."
    FAILED = "Failed", "Measured, beyond its threshold."
    INCONCLUSIVE = "Inconclusive", "No data: no series, NaN, or fewer than rollout.minSamples requests in the window."
    ERROR = "Error", "Prometheus could not answer (unreachable, too slow, or it refused the query)."


class MeasurementStatus(StatusModel):
    """One check of the last analysis on one pool: what was asked, what came back, how it was judged."""

    name: LongName
    """Check name: request-count, p99-latency, error-rate, input-drift, prediction-drift or a rollout.checks name."""
    pool: LongName
    """Node pool the query was scoped to."""
    phase: MeasurementPhase
    """Successful, Failed, Inconclusive or Error."""
    value: float | None = None
    """The measured value (absent when nothing came back)."""
    message: Message | None = None
    """The value against its threshold, or why there is none."""
    query: Annotated[str, StringConstraints(max_length=8192)] | None = None
    """The PromQL that was run (two lines for prediction drift: canary, then stable)."""


class AnalysisResult(StatusModel):
    """The latest analysis (of the canary, or of the promoted revision while guarded)."""

    time: datetime
    """When the analysis ran."""
    revision: LongName
    """Revision analysed."""
    baseline: LongName | None = None
    """Stable revision its predictions were compared with (canary only)."""
    step: int | None = Field(None, ge=0, le=20)
    """Index of the canary step in rollout.steps (absent after promotion)."""
    weight: int = Field(ge=0, le=100)
    """Traffic weight of the analysed revision during the window."""
    window: Annotated[str, StringConstraints(max_length=32)] | None = None
    """PromQL range the queries read, e.g. 30s."""
    verdict: AnalysisVerdict
    """Pass, Fail, NoData or Error."""
    p99_latency_ms: float | None = None
    """Observed 99th percentile latency in milliseconds (largest over the pools)."""
    error_rate: float | None = None
    """Observed share of failed requests (largest over the pools)."""
    psi: float | None = None
    """Observed largest population stability index of the inputs against the evaluated profile."""
    prediction_psi: float | None = Field(None, alias="predictionPSI")
    """PSI of the analysed revision's predictions against the stable revision's on the same traffic."""
    samples: int | None = Field(None, ge=0)
    """Requests in the window (summed over the pools)."""
    message: Message | None = None
    """Which check failed with what value, or why there was no data."""
    measurements: Annotated[list[MeasurementStatus], Field(max_length=64)] | None = None
    """Every check on every pool."""


class RolloutPhase(DescribedEnum):
    CANARY = "Canary", (
        "rolloutRevision takes canaryWeight percent next to stableRevision, analysed every rollout.interval; "
        "leaves for Promoted after the last step passes, RolledBack at the failure or error limit, Aborted."
    )
    PROMOTED = "Promoted", (
        "rolloutRevision serves all traffic and stays guarded: analyses go on and failures at the limit roll it "
        "back to previousStableRevision (RolledBack); a new revision starts a Canary."
    )
    ROLLED_BACK = "RolledBack", (
        "rolloutRevision failed its analyses and is off traffic; stableRevision serves. Left by a spec change "
        "or optimodel retry (Canary)."
    )
    ABORTED = "Aborted", (
        "A person took rolloutRevision off traffic (optimodel abort); stableRevision serves. Left by a spec "
        "change or optimodel retry (Canary)."
    )


class RevisionPhase(DescribedEnum):
    CANARY = "Canary", "Taking a share of traffic."
    STABLE = "Stable", "Serving all traffic."
    SUPERSEDED = "Superseded", "Replaced by a newer stable revision; kept for rollback."
    ROLLED_BACK = "RolledBack", (
        "Taken off traffic: failed its analyses (as a canary or under guard), or aborted by hand."
    )
    REFUSED = "Refused", "Never deployed: its optimization failed or a pool's variant failed the gate."


class PoolAssignment(StatusModel):
    """The variant a revision serves on one node pool."""

    pool: LongName
    """nodePools[].name."""
    variant: LongName
    """Variant served there (auto resolved to a name)."""
    artifact: Uri | None = None
    """Artifact served there."""


class VariantVerdict(StatusModel):
    """The gate's verdict on one variant of a revision."""

    name: LongName
    """optimizations[].name."""
    gate: GateVerdict
    """Passed or Failed (Pending when its Job did not finish)."""


class RevisionRecord(StatusModel):
    """One revision: the spec parts that make artifacts (hashed into its name), its variants' verdicts,
    and the verified artifact each node pool serves."""

    name: LongName
    """Revision name: a hash of the source, evaluation, optimizations, pool providers and store."""
    generation: int = Field(ge=0)
    """metadata.generation that produced it."""
    phase: RevisionPhase
    """Canary, Stable, Superseded, RolledBack or Refused."""
    created: datetime
    """When the revision was first recorded."""
    variants: Annotated[list[VariantVerdict], Field(max_length=16)] = Field(default_factory=list)
    """The gate's verdict on each variant."""
    pools: Annotated[list[PoolAssignment], Field(max_length=8)] = Field(default_factory=list)
    """Variant and artifact per node pool."""
    message: Message | None = None
    """Why it was refused or superseded."""


class PoolStatus(StatusModel):
    """What one node pool serves now, and why."""

    name: LongName
    """nodePools[].name."""
    provider: Annotated[str, StringConstraints(max_length=32)]
    """Execution provider of the pool."""
    variant: LongName | None = None
    """Variant chosen for the current revision (auto resolved to a name); unset when none can serve."""
    revision: LongName | None = None
    """Revision whose Deployment serves the pool."""
    artifact: Uri | None = None
    """Manifest of the artifact served."""
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Content hash of the artifact served."""
    deployment: LongName | None = None
    """Name of the serving Deployment."""
    replicas: int | None = Field(None, ge=0)
    """Replicas wanted."""
    available_replicas: int | None = Field(None, ge=0)
    """Replicas available (artifact verified and loaded)."""
    latency_p99_ms: float | None = None
    """p99 latency the gate measured for this variant on this pool's provider."""
    provider_fallback: Message | None = None
    """Why the measurement ran on another provider than asked (e.g. no GPU on the node)."""
    message: Message | None = None
    """Why this variant was chosen, or why nothing is deployed."""


class OptimizationRetry(StatusModel):
    """The reruns of an optimization Job that failed for a transient reason (its store or a host unreachable):
    once the back-off has passed the failed Job is deleted and created again under the same name. Kept in status
    so that an operator restarted meanwhile resumes the count and the wait."""

    job: LongName
    """Name of the Job rerun."""
    revision: LongName
    """Revision the Job belongs to; another revision counts afresh."""
    generation: int = Field(ge=0)
    """metadata.generation the count belongs to; a spec change counts afresh."""
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64)]
    """The transient reason of the Job's last failure (HostUnreachable, StoreWriteFailed)."""
    retries: int = Field(ge=0, le=100)
    """Reruns made so far (Jobs deleted to be created again)."""
    next_retry_time: datetime | None = None
    """When the failed Job is deleted to be created again; unset while a rerun runs and once no rerun is left."""


class OptimizedModelStatus(StatusModel):
    """Observed state of the OptimizedModel, written only by the operator."""

    observed_generation: int | None = Field(None, ge=0)
    """metadata.generation the operator last acted on."""
    phase: Phase | None = None
    """Where the resource is in its lifecycle."""
    message: Message | None = None
    """One-line summary of the state."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list)
    """Conditions in the Kubernetes shape, one per type (keyed by type)."""
    variants: Annotated[list[VariantStatus], Field(max_length=16)] | None = None
    """Result per optimization variant (keyed by name)."""
    current_revision: LongName | None = None
    """Revision being rolled out (or serving, once promoted)."""
    stable_revision: LongName | None = None
    """Last revision promoted to all traffic: the one serving."""
    canary_weight: int | None = Field(None, ge=0, le=100)
    """Share of traffic, in percent, on the current revision while it is a canary."""
    canary_step: int | None = Field(None, ge=0, le=20)
    """Index of the current step in rollout.steps."""
    failed_analyses: int | None = Field(None, ge=0)
    """Failed analyses of the rollout revision so far: over all steps of its canary; after promotion, in a
    row (a passing analysis resets it)."""
    rollout_phase: RolloutPhase | None = None
    """Canary, Promoted (guarded), RolledBack or Aborted; unset before the first revision serves."""
    rollout_revision: LongName | None = None
    """The revision the rollout phase is about: the canary, the promoted one under guard, or the one rolled
    back or aborted."""
    rollout_generation: int | None = Field(None, ge=0)
    """metadata.generation last seen with rolloutRevision; a rolled-back revision is retried only under a
    later generation (or optimodel retry)."""
    previous_stable_revision: LongName | None = None
    """The revision a promoted one is rolled back to when its guard fails."""
    fallback_variant: LongName | None = None
    """Variant served on stableRevision instead of its own choice after inputs drifted beyond the evaluated
    range (the pool's float variant); unset when the revision's own choice serves."""
    consecutive_errors: int | None = Field(None, ge=0)
    """Analyses in a row that could not ask Prometheus."""
    consecutive_no_data: int | None = Field(None, ge=0)
    """Analyses in a row without enough data (held under noData: hold)."""
    step_start_time: datetime | None = None
    """When the current canary step (or, after promotion, the guard) began."""
    last_analysis_time: datetime | None = None
    """Time of the last analysis the rollout acted on; the next is due one rollout.interval later."""
    rollout_reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64)] | None = None
    """The last rollout decision's reason, from the condition catalog (e.g. AnalysisNoData)."""
    rollout_message: Message | None = None
    """The last rollout decision in a sentence (e.g. why the canary holds)."""
    last_command: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Id of the last manual command handled (annotation optimodel.io/command-id, or the command itself),
    so each command acts once."""
    last_analysis: AnalysisResult | None = None
    """The latest canary analysis."""
    optimization_retry: OptimizationRetry | None = None
    """Reruns of the current revision's optimization Job after a transient failure (unset when none)."""
    revisions: Annotated[list[RevisionRecord], Field(max_length=64)] | None = None
    """Revision history, newest first, at most spec.revisionHistoryLimit old ones."""
    pools: Annotated[list[PoolStatus], Field(max_length=8)] | None = None
    """What each node pool serves (keyed by name)."""
    serving: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """One line for kubectl: pool=variant for each pool that serves."""
    latency_p99_ms: float | None = None
    """Largest p99 latency over the served pools: the last analysis's live figure, the gate's measurement before any."""
