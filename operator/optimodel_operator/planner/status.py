"""The whole desired status of one OptimizedModel, computed from scratch on every reconcile.

An invalid spec gets the conditions that say why; a valid one goes through the loop
(optimization → gate → deployment, planner.loop), which also says what to create, apply and delete.
The rollout's fields (phase, weight, step, analyses) come from the rollout's decision in the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optimodel_operator.api.conditions import STAGE_CONDITIONS, ConditionStatus, ConditionType, Reason
from optimodel_operator.api.status import OptimizedModelStatus, Phase
from optimodel_operator.planner.conditions import ConditionState, derive_ready, stamp
from optimodel_operator.planner.loop import Actions, LoopOutcome, Observed, plan_loop
from optimodel_operator.planner.validation import SpecVerdict
from optimodel_operator.planner.view import PlannerConfig, ResourceView

_UNKNOWN = ConditionStatus.UNKNOWN
_TRUE = ConditionStatus.TRUE
_FALSE = ConditionStatus.FALSE



def read_status(raw: Mapping[str, Any]) -> OptimizedModelStatus:
    """The stored status; a field that cannot be read is dropped (and rewritten), the others kept.

    Field by field, not all or nothing: the rollout resumes from status, and an empty one would take the
    spec's revision for the first (promoted without a canary, the serving revision's Deployments removed)."""
    try:
        return OptimizedModelStatus.model_validate(dict(raw))
    except ValidationError as error:
        unreadable = {str(e["loc"][0]) for e in error.errors() if e.get("loc")}
    try:
        return OptimizedModelStatus.model_validate({k: v for k, v in raw.items() if k not in unreadable})
    except ValidationError:
        return OptimizedModelStatus()


def _invalid_states(summary: str) -> dict[ConditionType, ConditionState]:
    states = {stage: ConditionState(_UNKNOWN, Reason.INVALID_SPEC, "not started: the spec is invalid") for stage in STAGE_CONDITIONS}
    states[ConditionType.ACCEPTED] = ConditionState(_FALSE, Reason.INVALID_SPEC, summary)
    states[ConditionType.PROGRESSING] = ConditionState(_FALSE, Reason.INVALID_SPEC, "waiting for a spec change")
    states[ConditionType.DEGRADED] = ConditionState(_TRUE, Reason.INVALID_SPEC, summary)
    states[ConditionType.STALLED] = ConditionState(_TRUE, Reason.INVALID_SPEC, summary)
    return states


def desired_status(
    view: ResourceView,
    verdict: SpecVerdict,
    previous: OptimizedModelStatus,
    observed: Observed,
    now: datetime,
    config: PlannerConfig,
) -> tuple[OptimizedModelStatus, Actions, LoopOutcome | None]:
    """The complete status for this generation and the actions that move towards it.

    Equal inputs give an equal status and equal actions (idempotent)."""
    now = now.replace(microsecond=0)
    if verdict.spec is None:
        summary = verdict.summary()
        states = _invalid_states(summary)
        states = {ConditionType.READY: derive_ready(states), **states}
        # Nothing is acted on for an invalid spec: what the earlier generation reached stays as it was.
        return previous.model_copy(update={
            "observed_generation": view.generation,
            "phase": Phase.FAILED,
            "message": f"invalid spec: {summary}",
            "conditions": stamp(states, previous.conditions, view.generation, now),
        }), Actions(), None
    loop = plan_loop(view, verdict.spec, previous, observed, now, config)
    states = {ConditionType.READY: derive_ready(loop.states), **loop.states}
    rollout_values = loop.rollout.status_values() if loop.rollout is not None else {}
    # The loop's stable revision is the rollout's; keep one source for it.
    rollout_values.pop("stable_revision", None)
    return OptimizedModelStatus(
        observed_generation=view.generation,
        phase=loop.phase,
        message=loop.message[:32768],
        conditions=stamp(states, previous.conditions, view.generation, now),
        variants=loop.variants,
        current_revision=loop.current_revision,
        stable_revision=loop.stable_revision,
        revisions=loop.revisions,
        pools=loop.pools,
        serving=loop.serving,
        latency_p99_ms=loop.latency_p99_ms,
        last_analysis=loop.last_analysis,
        optimization_retry=loop.retry,
        **rollout_values,
    ), loop.actions, loop
