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
    ANALYSIS_NO_DATA = "AnalysisNoData", "The analysis had no data (Prometheus unreachable or too few samples); holding."
    PROMOTED = "Promoted", "The revision serves all traffic."
    ROLLED_BACK = "RolledBack", "Failed analyses reached the limit; traffic went back to the stable revision."
    ALL_STAGES_READY = "AllStagesReady", "Every stage condition is True."
    AS_EXPECTED = "AsExpected", "Nothing is wrong."
