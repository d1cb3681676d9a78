"""Building conditions the Kubernetes way: lastTransitionTime moves only when status changes,
and Ready is derived from the stage conditions, never set on its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from optimodel_operator.api.conditions import (
    CONDITION_ORDER,
    STAGE_CONDITIONS,
    ConditionStatus,
    ConditionType,
    Reason,
)
from optimodel_operator.api.status import Condition


@dataclass(frozen=True)
class ConditionState:
    """A condition's content before it is stamped with times and generation."""

    status: ConditionStatus
    reason: Reason | str
    """From the catalog, or a CamelCase reason passed through (the optimization Job's own)."""
    message: str = ""

    @property
    def reason_text(self) -> str:
        return self.reason.value if isinstance(self.reason, Reason) else self.reason


def derive_ready(states: Mapping[ConditionType, ConditionState]) -> ConditionState:
    """Ready is True when every stage is True; otherwise it carries the first stage that is not."""
    for stage in STAGE_CONDITIONS:
        state = states[stage]
        if state.status != ConditionStatus.TRUE:
            return ConditionState(ConditionStatus.FALSE, state.reason, f"{stage.value}: {state.message}".rstrip(": "))
    return ConditionState(ConditionStatus.TRUE, Reason.ALL_STAGES_READY, "every stage is done")


def stamp(
    states: Mapping[ConditionType, ConditionState],
    previous: Iterable[Condition],
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Conditions in catalog order; a condition whose status did not change keeps its transition time."""
    before = {c.type: c for c in previous}
    out = []
    for kind in CONDITION_ORDER:
        if kind not in states:
            continue
        state = states[kind]
        old = before.get(kind.value)
        moved = old is None or old.status != state.status
        out.append(
            Condition(
                type=kind.value,
                status=state.status,
                reason=state.reason_text,
                message=state.message,
                last_transition_time=now if moved else old.last_transition_time,  # type: ignore[union-attr]
                observed_generation=generation,
            )
        )
    return out


def find(conditions: Iterable[Condition], kind: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == kind.value), None)
