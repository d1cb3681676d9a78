"""From the old and the new status: the merge patch to send (or none) and the Events to emit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimodel_operator.api.conditions import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.status import GateVerdict, OptimizedModelStatus, Phase
from optimodel_operator.planner.conditions import find
from optimodel_operator.planner.results import OVER_BUDGET

_WARNING_PHASES = (Phase.FAILED, Phase.ROLLED_BACK)


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning `old` into `new`; empty when they are equal."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    for key in old.keys() - new.keys():
        patch[key] = None
    return patch


def events_between(old: OptimizedModelStatus, new: OptimizedModelStatus) -> list[EventSpec]:
    """Events for what changed: acceptance (or refusal) of a generation, and phase moves."""
    events: list[EventSpec] = []
    before = find(old.conditions, ConditionType.ACCEPTED)
    after = find(new.conditions, ConditionType.ACCEPTED)
    if after is not None and (
        before is None
        or (before.status, before.message, before.observed_generation)
        != (after.status, after.message, after.observed_generation)
    ):
        if after.status == ConditionStatus.TRUE:
            events.append(
                EventSpec("Normal", Reason.SPEC_ACCEPTED.value, f"generation {after.observed_generation}: {after.message}")
            )
        else:
            events.append(
                EventSpec("Warning", Reason.INVALID_SPEC.value, f"generation {after.observed_generation}: {after.message}")
            )
    # One Event per stage decision: a stage condition that moved (status or reason).
    for stage in (ConditionType.OPTIMIZED, ConditionType.GATED, ConditionType.DEPLOYED, ConditionType.ROLLED_OUT):
        was, now = find(old.conditions, stage), find(new.conditions, stage)
        if now is None or now.status == ConditionStatus.UNKNOWN:
            continue
        if was is not None and (was.status, was.reason) == (now.status, now.reason):
            continue
        kind = "Normal" if now.status == ConditionStatus.TRUE else "Warning"
        events.append(EventSpec(kind, now.reason, f"{stage.value}: {now.message}"[:1024]))
    # The gate's verdict on each variant, once.
    before_variants = {v.name: v for v in old.variants or []}
    for variant in new.variants or []:
        earlier = before_variants.get(variant.name)
        if variant.gate == GateVerdict.PENDING or (earlier is not None and earlier.gate == variant.gate):
            continue
        kind = "Normal" if variant.gate == GateVerdict.PASSED else "Warning"
        events.append(EventSpec(kind, f"Variant{variant.gate.value}", f"{variant.name}: {variant.message or ''}"[:1024]))
        # Overall accuracy can pass while one class or segment collapses: name the slice that refused it.
        if variant.gate == GateVerdict.FAILED and (variant.worst_slice or "").endswith(OVER_BUDGET):
            events.append(EventSpec("Warning", "SliceOverBudget",
                                    f"{variant.name} refused on a slice of the held-out data: {variant.worst_slice}"[:1024]))
    if old.phase is not None and new.phase is not None and old.phase != new.phase:
        kind = "Warning" if new.phase in _WARNING_PHASES else "Normal"
        events.append(EventSpec(kind, "PhaseChanged", f"{old.phase.value} → {new.phase.value}: {new.message or ''}".rstrip(": ")))
    return events
