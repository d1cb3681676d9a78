"""One reconcile: everything the handler must do for an OptimizedModel, decided without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from optimodel_operator.planner.diff import EventSpec, events_between, merge_patch
from optimodel_operator.planner.loop import Actions, AnalysisAsk, Observed
from optimodel_operator.planner.status import desired_status, read_status
from optimodel_operator.planner.validation import judge_spec
from optimodel_operator.planner.view import PlannerConfig, ResourceView


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    """The complete desired status, in wire form."""
    status_patch: dict[str, Any] | None
    """Merge patch for the status subresource; None when the stored status is already right."""
    events: tuple[EventSpec, ...]
    """Events to emit, derived from the status diff (none when nothing changed)."""
    permanent_error: str | None
    """Set when the spec is invalid: the handler stops retrying until the spec changes."""
    actions: Actions = Actions()
    """Children to create, apply and delete."""
    analysis: AnalysisAsk | None = None
    """An analysis is due: run it, then reconcile again with its result before acting."""
    requeue_after: timedelta | None = None
    """Reconcile again after this long even if nothing changes (the rollout's next analysis)."""


def reconcile(
    view: ResourceView, now: datetime, config: PlannerConfig | None = None, observed: Observed | None = None
) -> Decision:
    config = config or PlannerConfig()
    previous = read_status(view.status)
    verdict = judge_spec(view.spec, config)
    new, actions, loop = desired_status(view, verdict, previous, observed or Observed(), now, config)
    new_wire = new.to_wire()
    # Compare against the stored status as the model reads it (1 and 1.0 alike), but also delete
    # keys the stored object has and the model does not know.
    baseline = {**{k: None for k in view.status}, **previous.to_wire()}
    patch = merge_patch({k: v for k, v in baseline.items() if k in view.status}, new_wire)
    return Decision(
        status=new_wire,
        status_patch=patch or None,
        events=_events(tuple(events_between(previous, new)) if patch else (), loop.events if loop else ()),
        permanent_error=None if verdict.valid else f"invalid spec: {verdict.summary()}",
        actions=actions,
        analysis=loop.analysis if loop else None,
        requeue_after=loop.requeue_after if loop else None,
    )


def _events(from_diff: tuple[EventSpec, ...], from_rollout: tuple[EventSpec, ...]) -> tuple[EventSpec, ...]:
    """The status diff's Events and the rollout's, once each: a rollout decision also moves the RolledOut
    condition, whose diff Event would repeat it."""
    said = {e.reason for e in from_rollout}
    return tuple(e for e in from_diff if e.reason not in said) + from_rollout
