"""The rollout's decisions: canary steps, analyses, promotion, rollback, the guard kept after promotion,
and manual commands. Pure: no kopf, no Kubernetes client, no I/O; the clock is an argument.

The shape is Flagger's `nextStepWeight` and Argo Rollouts' reconcile: the state lives in the resource's
status (`RolloutState.from_status` / `status_fields`), and `step(spec, state, assessment, now, command)`
returns the next state with what to do, why, and the Event to emit. Calling it again with the decision's
state and the same inputs changes nothing: an assessment is acted on once (its time must be at or after the
next due time), a command once (its id is remembered).

What the analysis says and what it leads to:

| verdict | canary | promoted (guarded) |
|---|---|---|
| Pass | next step; after the last, promote | keep serving; a run of failures ends |
| Fail | failedAnalyses+1; at rollout.failureLimit roll back to the stable revision | failures in a row; at the limit roll back to the previous stable revision |
| Fail, only input drift | as Fail, towards the safer (float) target the caller names; none: Degraded, hold, keep serving | as Fail towards the safer target; none: Degraded, keep serving |
| NoData | `hold`: hold the step, say so, never promote or roll back for it; `fail`: as Fail | hold (never rolls a promoted revision back for lack of data) |
| Error | hold; at the consecutive-error limit roll back | hold, say the guard is blind; never roll back for it |

The consecutive-error limit is `consecutive_error_limit(rollout)`: max(4, the analyses in 5 minutes), so a
Prometheus restart at a 2 s interval does not roll a canary back, and at a 1 m interval it takes 5 errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from optimodel_operator.api.conditions import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.rollout import NoDataPolicy, Rollout
from optimodel_operator.api.status import OptimizedModelStatus, Phase, RolloutPhase
from optimodel_operator.planner.conditions import ConditionState
from optimodel_operator.planner.diff import EventSpec

# Manual commands, written by `optimodel promote|abort|retry` or by hand / in git.
COMMAND_ANNOTATION = "optimodel.io/command"
COMMAND_ID_ANNOTATION = "optimodel.io/command-id"

# The consecutive-error limit: at least this many analyses in a row that could not ask Prometheus...
MIN_CONSECUTIVE_ERRORS = 4
# ...and at least this long an outage, counted in intervals, before a canary is rolled back for it.
ERROR_OUTAGE = timedelta(minutes=5)

# The analysis's name for the input-drift check (the brief's spelling and the analysis module's).
INPUT_DRIFT_CHECKS = frozenset({"input-drift", "input_drift"})

# Reasons that make the resource Degraded while they are the rollout's reason.
_DEGRADING = frozenset({Reason.ROLLED_BACK, Reason.ABORTED, Reason.INPUT_DRIFT, Reason.NO_ROLLBACK_TARGET})


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    NO_DATA = "NoData"
    ERROR = "Error"


class Assessment(Protocol):
    """What the decisions need of one analysis run (optimodel_operator.analysis produces it)."""

    @property
    def verdict(self) -> Any: ...  # Verdict, or any enum / string whose value is Pass | Fail | NoData | Error

    @property
    def failed_checks(self) -> Sequence[str]: ...  # names of the failing checks, e.g. p99-latency, input-drift

    @property
    def reason(self) -> str: ...  # one sentence: which check failed with what value, or why no data

    @property
    def time(self) -> datetime: ...  # when the analysis ran (end of its window)


@dataclass(frozen=True)
class AnalysisOutcome:
    """A plain Assessment (tests, adapters)."""

    verdict: Verdict
    time: datetime
    failed_checks: tuple[str, ...] = ()
    reason: str = ""

    @classmethod
    def of(cls, assessment: Any, time: datetime) -> AnalysisOutcome:
        """From optimodel_operator.analysis.assess.Assessment (verdict, reason, failed: check names), which
        carries no time: the caller passes when the run ended."""
        verdict = Verdict(str(getattr(assessment.verdict, "value", assessment.verdict)))
        failed = getattr(assessment, "failed_checks", None) or getattr(assessment, "failed", ())
        return cls(verdict=verdict, time=time, failed_checks=tuple(failed), reason=assessment.reason)


class CommandKind(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class ManualCommand:
    kind: CommandKind | None
    """None: a word the operator does not know (answered with a Warning event)."""
    word: str
    id: str
    """What status.lastCommand remembers so the command acts once."""


@dataclass(frozen=True)
class Wanted:
    """The revision the spec asks for, once gated and its Deployments available (None before)."""

    revision: str
    generation: int


@dataclass(frozen=True)
class SaferTarget:
    """Where to go when inputs drift beyond the evaluated range: a revision that is not quantized or pruned,
    or a float variant of a pool (variant set). The caller knows the variants; the decision only names it."""

    revision: str
    variant: str | None = None

    def describe(self) -> str:
        return f"variant {self.variant} of revision {self.revision}" if self.variant else f"revision {self.revision}"


class Action(StrEnum):
    WAIT = "Wait"  # nothing to do before requeue_after
    ANALYSE = "Analyse"  # an analysis is due: run decision.analyse, call again with its assessment
    START = "Start"  # a canary begins (or begins again) at the first step
    ADVANCE = "Advance"  # next step's weight
    HOLD = "Hold"  # same weight; why in the message
    PROMOTE = "Promote"  # the revision takes all traffic (first revision, last step passed, or by hand)
    ROLLBACK = "Rollback"  # all traffic to decision.rollback_to
    DROP_CANARY = "DropCanary"  # the spec went back to the stable revision; the canary goes away
    IGNORE = "Ignore"  # a manual command that does not apply


@dataclass(frozen=True)
class AnalysisRequest:
    revision: str
    """The revision to analyse (label revision=...)."""
    baseline: str | None
    """The stable revision to compare predictions with while a canary; None after promotion."""
    window_start: datetime
    """Start of the window: the step's start or the last analysis."""


@dataclass(frozen=True)
class RolloutState:
    """The rollout's part of status, as the decisions read and write it."""

    phase: RolloutPhase | None = None
    revision: str | None = None
    generation: int | None = None
    stable_revision: str | None = None
    previous_stable_revision: str | None = None
    fallback_variant: str | None = None
    step_index: int | None = None
    weight: int | None = None
    """The canary's weight (only while Canary)."""
    failed_analyses: int = 0
    consecutive_errors: int = 0
    consecutive_no_data: int = 0
    step_started_at: datetime | None = None
    last_analysis_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    last_command: str | None = None

    @classmethod
    def from_status(cls, status: OptimizedModelStatus) -> RolloutState:
        return cls(
            phase=status.rollout_phase,
            revision=status.rollout_revision,
            generation=status.rollout_generation,
            stable_revision=status.stable_revision,
            previous_stable_revision=status.previous_stable_revision,
            fallback_variant=status.fallback_variant,
            step_index=status.canary_step,
            weight=status.canary_weight,
            failed_analyses=status.failed_analyses or 0,
            consecutive_errors=status.consecutive_errors or 0,
            consecutive_no_data=status.consecutive_no_data or 0,
            step_started_at=status.step_start_time,
            last_analysis_at=status.last_analysis_time,
            reason=status.rollout_reason,
            message=status.rollout_message,
            last_command=status.last_command,
        )

    def status_fields(self) -> dict[str, Any]:
        """The status fields this state owns, camelCase, None where unset (a merge patch removes those)."""
        values = self.status_values()
        model = OptimizedModelStatus(**values)
        return model.model_dump(by_alias=True, mode="json", include=set(values))

    def status_values(self) -> dict[str, Any]:
        """The status fields this state owns, by OptimizedModelStatus attribute name."""
        canary = self.phase == RolloutPhase.CANARY
        return {
            "rollout_phase": self.phase,
            "rollout_revision": self.revision,
            "rollout_generation": self.generation,
            "stable_revision": self.stable_revision,
            "previous_stable_revision": self.previous_stable_revision,
            "fallback_variant": self.fallback_variant,
            "canary_step": self.step_index if canary else None,
            "canary_weight": self.weight if canary else None,
            "failed_analyses": self.failed_analyses if self.phase is not None else None,
            "consecutive_errors": self.consecutive_errors or None,
            "consecutive_no_data": self.consecutive_no_data or None,
            "step_start_time": self.step_started_at,
            "last_analysis_time": self.last_analysis_at,
            "rollout_reason": self.reason,
            "rollout_message": self.message,
            "last_command": self.last_command,
        }

    def traffic(self) -> dict[str, int]:
        """Percent of traffic per revision this state means."""
        if self.phase == RolloutPhase.CANARY and self.revision and self.stable_revision:
            weight = self.weight or 0
            return {self.stable_revision: 100 - weight, self.revision: weight} if weight < 100 else {self.revision: 100}
        if self.phase == RolloutPhase.PROMOTED and self.revision:
            return {self.revision: 100}
        if self.stable_revision:
            return {self.stable_revision: 100}
        return {}


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    state: RolloutState
    """The state to write (status_fields)."""
    event: EventSpec | None = None
    """The Event to emit; None when nothing changed worth one (waits, repeated holds, passing guards)."""
    rollback_to: SaferTarget | None = None
    """With Rollback: the revision (and, after input drift, the float variant) that takes all traffic."""
    analyse: AnalysisRequest | None = None
    """With Analyse: what to analyse."""
    requeue_after: timedelta | None = None
    """When to call again at the latest (the next analysis is due then)."""

    @property
    def reason(self) -> str:
        return self.state.reason or ""

    @property
    def message(self) -> str:
        return self.state.message or ""

    @property
    def phase(self) -> Phase | None:
        return {
            RolloutPhase.CANARY: Phase.ROLLING_OUT,
            RolloutPhase.PROMOTED: Phase.SUCCEEDED,
            RolloutPhase.ROLLED_BACK: Phase.ROLLED_BACK,
            RolloutPhase.ABORTED: Phase.ROLLED_BACK,
        }.get(self.state.phase) if self.state.phase else None

    def status_fields(self) -> dict[str, Any]:
        return self.state.status_fields()

    def conditions(self) -> dict[ConditionType, ConditionState]:
        return rollout_conditions(self.state)


def rollout_conditions(state: RolloutState) -> dict[ConditionType, ConditionState]:
    """RolledOut, Progressing, Degraded and Stalled as the rollout alone sees them."""
    reason = state.reason or Reason.PENDING.value
    message = state.message or ""
    ok = ConditionState(ConditionStatus.FALSE, Reason.AS_EXPECTED, "")
    degraded = ConditionState(ConditionStatus.TRUE, reason, message) if reason in _DEGRADING else ok
    if state.phase == RolloutPhase.CANARY:
        return {
            ConditionType.ROLLED_OUT: ConditionState(ConditionStatus.FALSE, reason, message),
            ConditionType.PROGRESSING: ConditionState(ConditionStatus.TRUE, reason, message),
            ConditionType.DEGRADED: degraded,
            ConditionType.STALLED: ok,
        }
    if state.phase == RolloutPhase.PROMOTED:
        return {
            ConditionType.ROLLED_OUT: ConditionState(ConditionStatus.TRUE, reason, message),
            ConditionType.PROGRESSING: ConditionState(ConditionStatus.FALSE, Reason.AS_EXPECTED, ""),
            ConditionType.DEGRADED: degraded,
            ConditionType.STALLED: ok,
        }
    if state.phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED):
        stuck = ConditionState(ConditionStatus.TRUE, reason, message)
        return {
            ConditionType.ROLLED_OUT: ConditionState(ConditionStatus.FALSE, reason, message),
            ConditionType.PROGRESSING: ConditionState(ConditionStatus.FALSE, reason, message),
            ConditionType.DEGRADED: stuck,
            ConditionType.STALLED: stuck,
        }
    return {ConditionType.ROLLED_OUT: ConditionState(ConditionStatus.UNKNOWN, Reason.PENDING, "no revision serves yet")}


def consecutive_error_limit(rollout: Rollout) -> int:
    """Analyses in a row that could not ask Prometheus before a canary is rolled back:
    max(MIN_CONSECUTIVE_ERRORS, ceil(ERROR_OUTAGE / interval))."""
    interval = rollout.interval_timedelta.total_seconds()
    return max(MIN_CONSECUTIVE_ERRORS, math.ceil(ERROR_OUTAGE.total_seconds() / interval))


# --- manual commands ---------------------------------------------------------------------------------


def command_annotations(kind: CommandKind | str, command_id: str) -> dict[str, str]:
    """The annotations that give a command (what the CLI writes; the same can be written in git)."""
    return {COMMAND_ANNOTATION: str(kind), COMMAND_ID_ANNOTATION: command_id}


def command_from_annotations(annotations: Mapping[str, str] | None, last_handled: str | None) -> ManualCommand | None:
    """The command in the annotations, unless it is the one last handled.

    `optimodel.io/command: promote|abort|retry` gives the command; `optimodel.io/command-id` (any text: the CLI
    writes a timestamp and a random suffix) makes it a new one, so the same command can be given twice. Without
    an id the command word is its own id: written once in git, it acts once.
    """
    word = (annotations or {}).get(COMMAND_ANNOTATION, "").strip()
    if not word:
        return None
    given_id = (annotations or {}).get(COMMAND_ID_ANNOTATION, "").strip()
    command_id = (f"{word}:{given_id}" if given_id else word)[:253]
    if command_id == last_handled:
        return None
    try:
        kind: CommandKind | None = CommandKind(word.lower())
    except ValueError:
        kind = None
    return ManualCommand(kind=kind, word=word, id=command_id)


# --- traffic -----------------------------------------------------------------------------------------


def replica_split(total_replicas: int, weight: int) -> tuple[int, int]:
    """(canary, stable) replicas of a pool for a canary weight in percent, for the replica-ratio split.

    canary = round(total * weight / 100), halves rounded up, then kept in [1, total - 1] while
    0 < weight < 100, so both revisions serve; weight 0 is all stable, 100 all canary. canary + stable ==
    total, except for a pool of one replica at 0 < weight < 100: it surges to (1, 1), since one pod cannot
    be split (the Service then sends the canary about half of the traffic, which status's weight does not
    claim to be exact about).
    """
    if total_replicas < 0 or not 0 <= weight <= 100:
        raise ValueError(f"replica_split needs total >= 0 and 0 <= weight <= 100, got {total_replicas}, {weight}")
    if total_replicas == 0:
        return 0, 0
    if weight == 0:
        return 0, total_replicas
    if weight == 100:
        return total_replicas, 0
    if total_replicas == 1:
        return 1, 1
    canary = min(max((total_replicas * weight + 50) // 100, 1), total_replicas - 1)
    return canary, total_replicas - canary


def route_weights(weight: int) -> tuple[int, int]:
    """(canary, stable) backendRefs weights of the HTTPRoute for a canary weight in percent."""
    if not 0 <= weight <= 100:
        raise ValueError(f"a weight is a percentage, got {weight}")
    return weight, 100 - weight


# --- the decisions -----------------------------------------------------------------------------------


def step(
    rollout: Rollout,
    state: RolloutState,
    assessment: Assessment | None,
    now: datetime,
    command: ManualCommand | None = None,
    *,
    wanted: Wanted | None = None,
    safer: SaferTarget | None = None,
) -> RolloutDecision:
    """The next rollout decision.

    `wanted`: the revision the spec asks for once it is gated and its Deployments are available (None while
    it is not: the current rollout goes on). `safer`: where to go if inputs drift beyond the evaluated range
    for the revision under analysis (None: nothing safer exists). One decision per call, in this order: a
    new manual command; a change of wanted revision; the analysis of the canary or of the promoted revision.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if command is not None and command.id != state.last_command:
        return _command(rollout, replace(state, last_command=command.id), command, now)
    if wanted is not None:
        followed = _follow_spec(rollout, state, wanted, now)
        if isinstance(followed, RolloutDecision):
            return followed
        state = followed
    if state.phase in (RolloutPhase.CANARY, RolloutPhase.PROMOTED):
        return _analyse(rollout, state, assessment, now, safer)
    return RolloutDecision(Action.WAIT, state)


def _steps_text(rollout: Rollout, index: int) -> str:
    return f"step {index + 1}/{len(rollout.steps)}"


def _start(rollout: Rollout, state: RolloutState, revision: str, generation: int | None, now: datetime,
           reason: Reason, message: str) -> RolloutDecision:
    new = replace(
        state,
        phase=RolloutPhase.CANARY, revision=revision, generation=generation, step_index=0,
        weight=rollout.steps[0], failed_analyses=0, consecutive_errors=0, consecutive_no_data=0,
        step_started_at=now, last_analysis_at=None, reason=reason.value, message=message,
    )
    return RolloutDecision(Action.START, new, EventSpec("Normal", reason.value, message),
                           requeue_after=rollout.interval_timedelta)


def _promote_first(rollout: Rollout, state: RolloutState, wanted: Wanted, now: datetime) -> RolloutDecision:
    message = f"revision {wanted.revision} serves all traffic: no earlier revision to compare it with; guarded"
    new = replace(
        state,
        phase=RolloutPhase.PROMOTED, revision=wanted.revision, generation=wanted.generation,
        stable_revision=wanted.revision, previous_stable_revision=None, fallback_variant=None, step_index=None,
        weight=None, failed_analyses=0, consecutive_errors=0, consecutive_no_data=0, step_started_at=now,
        last_analysis_at=None, reason=Reason.PROMOTED.value, message=message,
    )
    return RolloutDecision(Action.PROMOTE, new, EventSpec("Normal", Reason.PROMOTED.value, message),
                           requeue_after=rollout.interval_timedelta)


def _follow_spec(rollout: Rollout, state: RolloutState, wanted: Wanted, now: datetime) -> RolloutDecision | RolloutState:
    if state.phase is None and state.stable_revision and wanted.revision != state.stable_revision:
        # A status from before the rollout existed: its stable revision serves; the new one is a canary.
        return _start(rollout, state, wanted.revision, wanted.generation, now, Reason.CANARY_STARTED,
                      f"revision {wanted.revision} takes {rollout.steps[0]}% next to stable {state.stable_revision} "
                      f"({_steps_text(rollout, 0)})")
    if state.phase is None or state.stable_revision is None:
        return _promote_first(rollout, state, wanted, now)
    if wanted.revision == state.revision:
        if state.phase in (RolloutPhase.CANARY, RolloutPhase.PROMOTED):
            return replace(state, generation=wanted.generation) if wanted.generation != state.generation else state
        if wanted.generation > (state.generation or 0):
            ended = "rolled back" if state.phase == RolloutPhase.ROLLED_BACK else "aborted"
            if state.revision == state.stable_revision:  # the fallback was a variant of this same revision
                return _back_to_own_choice(rollout, state, now, Reason.CANARY_STARTED,
                                           f"spec changed (generation {wanted.generation}): revision "
                                           f"{state.revision} serves its own variants again, guarded",
                                           generation=wanted.generation)
            return _start(rollout, state, wanted.revision, wanted.generation, now, Reason.CANARY_STARTED,
                          f"spec changed (generation {wanted.generation}): revision {wanted.revision}, {ended} "
                          f"before, takes {rollout.steps[0]}% again next to {state.stable_revision} "
                          f"({_steps_text(rollout, 0)})")
        return state  # not retried until the spec changes or optimodel retry
    if wanted.revision == state.stable_revision:
        message = f"the spec asks for the stable revision {state.stable_revision} again; guarding it"
        action = Action.DROP_CANARY if state.phase == RolloutPhase.CANARY else Action.HOLD
        reason = Reason.CANARY_SUPERSEDED if state.phase == RolloutPhase.CANARY else Reason.PROMOTED
        if state.phase == RolloutPhase.CANARY:
            message = f"canary {state.revision} dropped: " + message
        new = replace(
            state,
            phase=RolloutPhase.PROMOTED, revision=state.stable_revision, generation=wanted.generation,
            step_index=None, weight=None, failed_analyses=0, consecutive_errors=0, consecutive_no_data=0,
            step_started_at=now, last_analysis_at=None, reason=reason.value, message=message,
        )
        return RolloutDecision(action, new, EventSpec("Normal", reason.value, message),
                               requeue_after=rollout.interval_timedelta)
    replaces = f"; replaces canary {state.revision}" if state.phase == RolloutPhase.CANARY else ""
    stable = state.stable_revision
    return _start(rollout, state, wanted.revision, wanted.generation, now, Reason.CANARY_STARTED,
                  f"revision {wanted.revision} takes {rollout.steps[0]}% next to stable {stable} "
                  f"({_steps_text(rollout, 0)}){replaces}")


def _back_to_own_choice(rollout: Rollout, state: RolloutState, now: datetime, reason: Reason, message: str,
                        generation: int | None) -> RolloutDecision:
    new = replace(
        state, phase=RolloutPhase.PROMOTED, generation=generation, fallback_variant=None, step_index=None,
        weight=None, failed_analyses=0, consecutive_errors=0, consecutive_no_data=0, step_started_at=now,
        last_analysis_at=None, reason=reason.value, message=message,
    )
    return RolloutDecision(Action.PROMOTE, new, EventSpec("Normal", reason.value, message),
                           requeue_after=rollout.interval_timedelta)


def _promote(rollout: Rollout, state: RolloutState, now: datetime, reason: Reason, message: str) -> RolloutDecision:
    new = replace(
        state,
        phase=RolloutPhase.PROMOTED, stable_revision=state.revision,
        previous_stable_revision=state.stable_revision, fallback_variant=None, step_index=None, weight=None,
        failed_analyses=0, consecutive_errors=0, consecutive_no_data=0, step_started_at=now,
        reason=reason.value, message=message,
    )
    return RolloutDecision(Action.PROMOTE, new, EventSpec("Normal", reason.value, message),
                           requeue_after=rollout.interval_timedelta)


def _rollback(state: RolloutState, target: SaferTarget, phase: RolloutPhase, reason: Reason, message: str,
              **changes: Any) -> RolloutDecision:
    promoted = state.phase == RolloutPhase.PROMOTED
    new = replace(
        state,
        phase=phase, stable_revision=target.revision,
        previous_stable_revision=None if promoted else state.previous_stable_revision,
        fallback_variant=target.variant, step_index=None, weight=None, consecutive_errors=0,
        consecutive_no_data=0, reason=reason.value, message=message, **changes,
    )
    kind = "Normal" if reason == Reason.ABORTED else "Warning"
    return RolloutDecision(Action.ROLLBACK, new, EventSpec(kind, reason.value, message), rollback_to=target)


def _ignore(state: RolloutState, command: ManualCommand, why: str) -> RolloutDecision:
    message = f"command {command.word!r} ignored: {why}"
    return RolloutDecision(Action.IGNORE, state, EventSpec("Warning", Reason.COMMAND_IGNORED.value, message))


def _command(rollout: Rollout, state: RolloutState, command: ManualCommand, now: datetime) -> RolloutDecision:
    phase = state.phase.value if state.phase else "no rollout yet"
    if command.kind is None:
        return _ignore(state, command, "unknown (promote, abort or retry)")
    if command.kind == CommandKind.PROMOTE:
        if state.phase != RolloutPhase.CANARY:
            hint = "; optimodel retry rolls it out again" if state.phase in (RolloutPhase.ROLLED_BACK,
                                                                            RolloutPhase.ABORTED) else ""
            return _ignore(state, command, f"no canary to promote ({phase}){hint}")
        return _promote(rollout, state, now, Reason.MANUALLY_PROMOTED,
                        f"revision {state.revision} promoted by hand at {state.weight}%: serves all traffic, "
                        f"guarded; {state.stable_revision} kept for rollback")
    if command.kind == CommandKind.ABORT:
        if state.phase == RolloutPhase.CANARY and state.stable_revision:
            return _rollback(state, SaferTarget(state.stable_revision, state.fallback_variant), RolloutPhase.ABORTED,
                             Reason.ABORTED, f"canary {state.revision} aborted by hand at {state.weight}%: "
                             f"{state.stable_revision} serves all traffic")
        if state.phase == RolloutPhase.PROMOTED and state.previous_stable_revision:
            return _rollback(state, SaferTarget(state.previous_stable_revision), RolloutPhase.ABORTED,
                             Reason.ABORTED, f"promoted revision {state.revision} aborted by hand: "
                             f"{state.previous_stable_revision} serves all traffic again")
        if state.phase == RolloutPhase.PROMOTED:
            return _ignore(state, command, f"revision {state.revision} serves and no earlier revision is kept")
        return _ignore(state, command, f"nothing to abort ({phase})")
    # retry
    if state.phase not in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED) or not state.revision:
        return _ignore(state, command, f"nothing rolled back to retry ({phase})")
    if state.revision == state.stable_revision:
        return _back_to_own_choice(rollout, state, now, Reason.RETRY_REQUESTED,
                                   f"retry: revision {state.revision} serves its own variants again, guarded",
                                   generation=state.generation)
    return _start(rollout, state, state.revision, state.generation, now, Reason.RETRY_REQUESTED,
                  f"retry: revision {state.revision} takes {rollout.steps[0]}% again next to "
                  f"{state.stable_revision} ({_steps_text(rollout, 0)})")


def _verdict(assessment: Assessment) -> Verdict:
    value = getattr(assessment.verdict, "value", assessment.verdict)
    return Verdict(str(value))


def _analyse(rollout: Rollout, state: RolloutState, assessment: Assessment | None, now: datetime,
             safer: SaferTarget | None) -> RolloutDecision:
    assert state.revision is not None
    interval = rollout.interval_timedelta
    marks = [t for t in (state.last_analysis_at, state.step_started_at) if t is not None]
    if not marks:  # a state read from an older status: the step starts now
        return RolloutDecision(Action.WAIT, replace(state, step_started_at=now), requeue_after=interval)
    since = max(marks)
    due = since + interval
    if now < due:
        return RolloutDecision(Action.WAIT, state, requeue_after=due - now)
    if assessment is None or assessment.time < due:
        # Predictions are compared with the stable revision's while it still takes traffic (not at 100%).
        compare = state.phase == RolloutPhase.CANARY and (state.weight or 0) < 100
        request = AnalysisRequest(state.revision, state.stable_revision if compare else None, since)
        return RolloutDecision(Action.ANALYSE, state, analyse=request)
    verdict = _verdict(assessment)
    state = replace(state, last_analysis_at=assessment.time)
    canary = state.phase == RolloutPhase.CANARY
    where = f"{_steps_text(rollout, state.step_index or 0)} at {state.weight}%" if canary else "after promotion"
    detail = assessment.reason or ", ".join(assessment.failed_checks) or verdict.value

    if verdict == Verdict.PASS:
        resumed = ""
        if state.consecutive_no_data or state.consecutive_errors:
            resumed = f" (data back after {state.consecutive_no_data + state.consecutive_errors} analyses without)"
        state = replace(state, consecutive_errors=0, consecutive_no_data=0)
        if canary:
            index = (state.step_index or 0) + 1
            if index < len(rollout.steps):
                message = (f"analysis passed at {state.weight}%{resumed}: {_steps_text(rollout, index)}, "
                           f"{rollout.steps[index]}%")
                new = replace(state, step_index=index, weight=rollout.steps[index], step_started_at=now,
                              reason=Reason.CANARY_PROGRESSING.value, message=message)
                return RolloutDecision(Action.ADVANCE, new, EventSpec("Normal", Reason.CANARY_PROGRESSING.value, message),
                                       requeue_after=interval)
            return _promote(rollout, state, now, Reason.PROMOTED,
                            f"revision {state.revision} passed every step{resumed}: serves all traffic, guarded; "
                            f"{state.stable_revision} kept for rollback")
        recovered = state.reason != Reason.PROMOTED.value
        message = f"revision {state.revision} serves all traffic, guarded: the last analysis passed{resumed}"
        new = replace(state, failed_analyses=0, reason=Reason.PROMOTED.value, message=message)
        event = EventSpec("Normal", Reason.PROMOTED.value, message) if recovered else None
        return RolloutDecision(Action.HOLD, new, event, requeue_after=interval)

    if verdict == Verdict.ERROR:
        errors = state.consecutive_errors + 1
        limit = consecutive_error_limit(rollout)
        state = replace(state, consecutive_errors=errors)
        if canary and errors >= limit:
            return _rollback(state, SaferTarget(state.stable_revision or "", state.fallback_variant),
                             RolloutPhase.ROLLED_BACK, Reason.ROLLED_BACK,
                             f"Prometheus could not be asked for {errors} analyses in a row (limit {limit}): "
                             f"canary {state.revision} rolled back at {state.weight}%, {state.stable_revision} "
                             f"serves all traffic ({detail})")
        if canary:
            message = (f"holding {where}: Prometheus could not be asked ({detail}); {errors} in a row, "
                       f"rollback at {limit}")
        else:
            message = (f"guard blind: Prometheus could not be asked ({detail}) for {errors} analyses in a row; "
                       f"{state.revision} keeps serving")
        new = replace(state, reason=Reason.ANALYSIS_ERROR.value, message=message)
        event = EventSpec("Warning", Reason.ANALYSIS_ERROR.value, message) if errors == 1 else None
        return RolloutDecision(Action.HOLD, new, event, requeue_after=interval)

    state = replace(state, consecutive_errors=0)
    if verdict == Verdict.NO_DATA and (not canary or rollout.no_data == NoDataPolicy.HOLD):
        count = state.consecutive_no_data + 1
        if canary:
            message = (f"holding {where}: no data ({detail}) for {count} analyses; never promoted without data, "
                       "never rolled back for lack of it")
        else:
            message = f"guard has no data ({detail}) for {count} analyses; {state.revision} keeps serving"
        new = replace(state, consecutive_no_data=count, reason=Reason.ANALYSIS_NO_DATA.value, message=message)
        event = EventSpec("Warning", Reason.ANALYSIS_NO_DATA.value, message) if count == 1 else None
        return RolloutDecision(Action.HOLD, new, event, requeue_after=interval)
    state = replace(state, consecutive_no_data=0)

    # A failed analysis (or no data under noData: fail).
    checks = tuple(assessment.failed_checks)
    drift_only = verdict == Verdict.FAIL and bool(checks) and all(c in INPUT_DRIFT_CHECKS for c in checks)
    drifted = "inputs drifted beyond the evaluated range"
    if drift_only and safer is None:
        message = (f"{drifted} ({detail}) {where}; nothing safer (float) to serve: {state.revision} keeps serving"
                   + ("; not promoted while it lasts" if canary else ""))
        first = state.reason != Reason.INPUT_DRIFT.value
        new = replace(state, reason=Reason.INPUT_DRIFT.value, message=message)
        return RolloutDecision(Action.HOLD, new, EventSpec("Warning", Reason.INPUT_DRIFT.value, message) if first else None,
                               requeue_after=interval)
    failed = state.failed_analyses + 1
    state = replace(state, failed_analyses=failed)
    what = "no data, counted as failed (rollout.noData: fail)" if verdict == Verdict.NO_DATA else detail
    if drift_only:
        what = f"{drifted} ({detail})"
    count = f"{failed}/{rollout.failure_limit}" + ("" if canary else " in a row")
    if failed < rollout.failure_limit:
        message = f"analysis failed {where}: {what}; {count}"
        if drift_only and safer is not None:
            message += f"; safer: {safer.describe()}"
        new = replace(state, reason=Reason.ANALYSIS_FAILED.value, message=message)
        return RolloutDecision(Action.HOLD, new, EventSpec("Warning", Reason.ANALYSIS_FAILED.value, message),
                               requeue_after=interval)
    if drift_only and safer is not None:
        target = safer
        reason = Reason.INPUT_DRIFT
    elif canary:
        target = SaferTarget(state.stable_revision or "", state.fallback_variant)
        reason = Reason.ROLLED_BACK
    elif state.previous_stable_revision:
        target = SaferTarget(state.previous_stable_revision)
        reason = Reason.ROLLED_BACK
    else:
        message = (f"analysis failed {where}: {what}; {count}: no earlier revision to roll back to, "
                   f"{state.revision} keeps serving")
        first = state.reason != Reason.NO_ROLLBACK_TARGET.value
        new = replace(state, reason=Reason.NO_ROLLBACK_TARGET.value, message=message)
        return RolloutDecision(Action.HOLD, new,
                               EventSpec("Warning", Reason.NO_ROLLBACK_TARGET.value, message) if first else None,
                               requeue_after=interval)
    message = (f"{'canary' if canary else 'promoted revision'} {state.revision} rolled back {where}: {what}; "
               f"{count}; {target.describe()} serves all traffic; not retried until the spec changes or "
               "optimodel retry")
    return _rollback(state, target, RolloutPhase.ROLLED_BACK, reason, message)


__all__ = [
    "COMMAND_ANNOTATION",
    "COMMAND_ID_ANNOTATION",
    "ERROR_OUTAGE",
    "INPUT_DRIFT_CHECKS",
    "MIN_CONSECUTIVE_ERRORS",
    "Action",
    "AnalysisOutcome",
    "AnalysisRequest",
    "Assessment",
    "CommandKind",
    "ManualCommand",
    "RolloutDecision",
    "RolloutState",
    "SaferTarget",
    "Verdict",
    "Wanted",
    "command_annotations",
    "command_from_annotations",
    "consecutive_error_limit",
    "replica_split",
    "route_weights",
    "rollout_conditions",
    "step",
]
