"""The catalog of condition types and reasons: every condition the operator writes comes from here.

Conditions follow the Kubernetes shape (type, status, reason, message, lastTransitionTime,
observedGeneration), so kubectl wait, Argo CD and Flux kstatus read them without knowing optimodel.
"""

from __future__ import annotations

from optimodel_operator.api.common import DescribedEnum


class ConditionStatus(DescribedEnum):
    TRUE = "True", "The condition holds."
    FALSE = "False", "The condition does not hold."
    UNKNOWN = "Unknown", "Not known yet (the stage has not been reached)."


class ConditionType(DescribedEnum):
    READY = "Ready", "True when every stage condition below is True: the wanted revision serves all traffic."
    ACCEPTED = "Accepted", "The spec passed the checks the CRD schema cannot express (e.g. no cycle in `from`)."
    OPTIMIZED = "Optimized", "Every variant's optimization Job has finished."
    GATED = "Gated", "Every variant was judged by the gate and the variants to serve passed it."
    DEPLOYED = "Deployed", "The serving Deployments of the current revision exist and are available."
    ROLLED_OUT = "RolledOut", "The current revision was promoted to all traffic."
    PROGRESSING = "Progressing", "The operator is working towards the spec (kstatus: in progress)."
    DEGRADED = "Degraded", "Something is wrong that the operator cannot fix alone (bad spec, failed gate, rollback)."
    STALLED = "Stalled", "No progress is possible without a change to the spec (kstatus: failed)."


# The stages, in order; Ready is derived from them.
STAGE_CONDITIONS: tuple[ConditionType, ...] = (
    ConditionType.ACCEPTED,
    ConditionType.OPTIMIZED,
    ConditionType.GATED,
    ConditionType.DEPLOYED,
    ConditionType.ROLLED_OUT,
)
# Order in which conditions appear in status.
CONDITION_ORDER: tuple[ConditionType, ...] = (
    ConditionType.READY,
    *STAGE_CONDITIONS,
    ConditionType.PROGRESSING,
    ConditionType.DEGRADED,
    ConditionType.STALLED,
)


class Reason(DescribedEnum):
    SPEC_ACCEPTED = "SpecAccepted", "The spec is valid and the operator works on it."
    INVALID_SPEC = "InvalidSpec", "The spec breaks a rule the CRD schema cannot express; the message says which."
    PENDING = "Pending", "The stage has not started: it waits for the stage before it."
    AWAITING_OPTIMIZATION = "AwaitingOptimization", "Accepted; the optimization Jobs have not started."
    OPTIMIZATION_RUNNING = "OptimizationRunning", "Optimization Jobs are running."
    OPTIMIZATION_SUCCEEDED = "OptimizationSucceeded", "Every optimization Job finished."
    OPTIMIZATION_FAILED = "OptimizationFailed", "An optimization Job failed; the message names it."
    JOB_DEADLINE_EXCEEDED = "DeadlineExceeded", "An optimization Job ran past its activeDeadlineSeconds."
    JOB_OUT_OF_MEMORY = "OutOfMemory", "An optimization Job's container was killed for exceeding its memory limit."
    RESULTS_UNREADABLE = "ResultsUnreadable", "A Job finished but its run record or a manifest in the store cannot be read."
    GATE_PASSED = "GatePassed", "The variants to serve passed the gate."
    GATE_FAILED = "GateFailed", "A variant to serve failed the gate; nothing is deployed for it."
    DEPLOYING = "Deploying", "Serving Deployments are being created or are not yet available."
    DEPLOYED = "Deployed", "Serving Deployments are available."
    NOTHING_TO_SERVE = "NothingToServe", "A pool has no variant it may serve (its variant failed the gate)."
    CANARY_PROGRESSING = "CanaryProgressing", "The canary is at an intermediate step."
    ANALYSIS_NO_DATA = "AnalysisNoData", (
        "The analysis had too little data (no series, or fewer requests or rows than it needs); holding under "
        "rollout.noData: hold."
    )
    ANALYSIS_ERROR = "AnalysisError", (
        "Prometheus could not be asked (unreachable, timeout, bad answer); holding, counting consecutive errors."
    )
    ANALYSIS_FAILED = "AnalysisFailed", "An analysis failed a check; counted towards rollout.failureLimit."
    INPUT_DRIFT = "InputDrift", (
        "Live inputs drifted beyond the range the gate evaluated; rolled back to a safer (float) revision or "
        "variant, or Degraded and still serving when none exists."
    )
    CANARY_STARTED = "CanaryStarted", "A new revision takes the first canary step next to the stable revision."
    CANARY_SUPERSEDED = "CanarySuperseded", "The spec moved on before the canary finished; the canary is dropped."
    PROMOTED = "Promoted", "The revision serves all traffic."
    MANUALLY_PROMOTED = "ManuallyPromoted", "A person promoted the canary to all traffic (optimodel promote)."
    ROLLED_BACK = "RolledBack", (
        "Failed analyses (or consecutive analysis errors) reached the limit; traffic went back to the stable "
        "(after a promotion: the previous stable) revision; the failed one is not retried until the spec changes "
        "or optimodel retry."
    )
    ABORTED = "Aborted", "A person took the revision off traffic (optimodel abort); not retried until retry or a spec change."
    NO_ROLLBACK_TARGET = "NoRollbackTarget", (
        "The promoted revision failed its guard at the limit but no earlier revision is kept; it keeps serving."
    )
    RETRY_REQUESTED = "RetryRequested", "A person asked to roll a rolled-back revision out again (optimodel retry)."
    COMMAND_IGNORED = "CommandIgnored", "A manual command that does not apply in the current rollout phase, or unknown."
    ALL_STAGES_READY = "AllStagesReady", "Every stage condition is True."
    AS_EXPECTED = "AsExpected", "Nothing is wrong."
