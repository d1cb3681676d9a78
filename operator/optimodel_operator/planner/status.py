"""The whole desired status of one OptimizedModel, computed from scratch on every reconcile.

This is the skeleton's planner: it judges the spec and sets the stage conditions for "accepted,
nothing run yet". The optimization, gate, deployment and rollout stages add their observations
here as they are built; fields those stages own are carried over untouched until then.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optimodel_operator.api.conditions import STAGE_CONDITIONS, ConditionStatus, ConditionType, Reason
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.api.status import OptimizedModelStatus, Phase, VariantStatus
from optimodel_operator.planner.conditions import ConditionState, derive_ready, stamp
from optimodel_operator.planner.validation import SpecVerdict

_UNKNOWN = ConditionStatus.UNKNOWN
_TRUE = ConditionStatus.TRUE
_FALSE = ConditionStatus.FALSE

# Fields owned by stages that are not computed here yet; carried over as they are.
_CARRIED_OVER = (
    "current_revision",
    "stable_revision",
    "canary_weight",
    "canary_step",
    "failed_analyses",
    "last_analysis",
    "revisions",
)


def read_status(raw: Mapping[str, Any]) -> OptimizedModelStatus:
    """The stored status, or an empty one when it cannot be read (it is then rewritten whole)."""
    try:
        return OptimizedModelStatus.model_validate(dict(raw))
    except ValidationError:
        return OptimizedModelStatus()


def _describe_accepted(spec: OptimizedModelSpec) -> str:
    variants = ", ".join(spec.variant_names())
    pools = ", ".join(f"{p.name}={p.variant}" for p in spec.node_pools)
    return f"{len(spec.optimizations)} variant(s) ({variants}); node pool(s) {pools}"


def _accepted_states(spec: OptimizedModelSpec) -> dict[ConditionType, ConditionState]:
    waiting = "waits for the stage before it"
    return {
        ConditionType.ACCEPTED: ConditionState(_TRUE, Reason.SPEC_ACCEPTED, _describe_accepted(spec)),
        ConditionType.OPTIMIZED: ConditionState(
            _UNKNOWN, Reason.AWAITING_OPTIMIZATION, f"optimization of {len(spec.optimizations)} variant(s) has not started"
        ),
        ConditionType.GATED: ConditionState(_UNKNOWN, Reason.PENDING, waiting),
        ConditionType.DEPLOYED: ConditionState(_UNKNOWN, Reason.PENDING, waiting),
        ConditionType.ROLLED_OUT: ConditionState(_UNKNOWN, Reason.PENDING, waiting),
        ConditionType.PROGRESSING: ConditionState(_TRUE, Reason.AWAITING_OPTIMIZATION, "accepted; optimization is next"),
        ConditionType.DEGRADED: ConditionState(_FALSE, Reason.AS_EXPECTED),
        ConditionType.STALLED: ConditionState(_FALSE, Reason.AS_EXPECTED),
    }


def _invalid_states(summary: str) -> dict[ConditionType, ConditionState]:
    states = {stage: ConditionState(_UNKNOWN, Reason.INVALID_SPEC, "not started: the spec is invalid") for stage in STAGE_CONDITIONS}
    states[ConditionType.ACCEPTED] = ConditionState(_FALSE, Reason.INVALID_SPEC, summary)
    states[ConditionType.PROGRESSING] = ConditionState(_FALSE, Reason.INVALID_SPEC, "waiting for a spec change")
    states[ConditionType.DEGRADED] = ConditionState(_TRUE, Reason.INVALID_SPEC, summary)
    states[ConditionType.STALLED] = ConditionState(_TRUE, Reason.INVALID_SPEC, summary)
    return states


def _variants(spec: OptimizedModelSpec, previous: OptimizedModelStatus) -> list[VariantStatus]:
    # One entry per declared variant; results already recorded for a variant of that name are kept.
    known = {v.name: v for v in previous.variants or []}
    return [known.get(o.name) or VariantStatus(name=o.name) for o in spec.optimizations]


def desired_status(
    generation: int,
    verdict: SpecVerdict,
    previous: OptimizedModelStatus,
    now: datetime,
) -> OptimizedModelStatus:
    """The complete status for this generation; equal inputs give an equal status (idempotent)."""
    now = now.replace(microsecond=0)
    if verdict.spec is not None:
        states = _accepted_states(verdict.spec)
        phase, message = Phase.PENDING, "accepted; waiting for the optimization stage"
        variants: list[VariantStatus] | None = _variants(verdict.spec, previous)
    else:
        summary = verdict.summary()
        states = _invalid_states(summary)
        phase, message = Phase.FAILED, f"invalid spec: {summary}"
        variants = previous.variants
    states = {ConditionType.READY: derive_ready(states), **states}
    carried = {name: getattr(previous, name) for name in _CARRIED_OVER}
    return OptimizedModelStatus(
        observed_generation=generation,
        phase=phase,
        message=message,
        conditions=stamp(states, previous.conditions, generation, now),
        variants=variants,
        **carried,
    )
