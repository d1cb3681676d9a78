"""The rollout's decisions, without a cluster: tables of (spec, state, assessment, now, command) → decision,
and the replica / route splits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimodel_operator.api.conditions import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.rollout import Rollout
from optimodel_operator.api.status import OptimizedModelStatus, Phase, RolloutPhase
from optimodel_operator.controller.manual import command_patch, new_command_id
from optimodel_operator.planner.rollout import (
    COMMAND_ANNOTATION,
    COMMAND_ID_ANNOTATION,
    Action,
    AnalysisOutcome,
    CommandKind,
    ManualCommand,
    RolloutState,
    SaferTarget,
    Verdict,
    Wanted,
    command_from_annotations,
    consecutive_error_limit,
    replica_split,
    route_weights,
    step,
)

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SPEC = Rollout(steps=[10, 25, 50, 100], interval="10s", failureLimit=2)
TICK = timedelta(seconds=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def canary(step_index: int = 0, **changes: Any) -> RolloutState:
    base = RolloutState(
        phase=RolloutPhase.CANARY, revision="r2", generation=2, stable_revision="r1", previous_stable_revision="r0",
        step_index=step_index, weight=SPEC.steps[step_index], step_started_at=T0,
        reason=Reason.CANARY_PROGRESSING.value, message="",
    )
    return replace(base, **changes)


def promoted(**changes: Any) -> RolloutState:
    base = RolloutState(
        phase=RolloutPhase.PROMOTED, revision="r2", generation=2, stable_revision="r2", previous_stable_revision="r1",
        step_started_at=T0, reason=Reason.PROMOTED.value, message="",
    )
    return replace(base, **changes)


def outcome(verdict: Verdict, seconds: float = 10, checks: tuple[str, ...] = (), reason: str = "") -> AnalysisOutcome:
    return AnalysisOutcome(verdict=verdict, time=at(seconds), failed_checks=checks, reason=reason)


PASS = outcome(Verdict.PASS)
FAIL = outcome(Verdict.FAIL, checks=("p99-latency",), reason="p99 latency 80 ms > 40 ms")
NO_DATA = outcome(Verdict.NO_DATA, reason="12 requests < minSamples 100")
ERROR = outcome(Verdict.ERROR, reason="Prometheus unreachable")
DRIFT = outcome(Verdict.FAIL, checks=("input-drift",), reason="PSI 0.4 > 0.2")
FLOAT = SaferTarget("r1")


# --- the table ---------------------------------------------------------------------------------------

CASES = [
    # id, spec, state, assessment, now, kwargs → action, phase, weight, failed, reason, event type
    ("interval not elapsed: nothing", SPEC, canary(), PASS, at(9), {}, Action.WAIT, RolloutPhase.CANARY, 10, 0,
     Reason.CANARY_PROGRESSING, None),
    ("due, no assessment: analyse", SPEC, canary(), None, at(10), {}, Action.ANALYSE, RolloutPhase.CANARY, 10, 0,
     Reason.CANARY_PROGRESSING, None),
    ("due, stale assessment: analyse", SPEC, canary(), outcome(Verdict.PASS, 5), at(10), {}, Action.ANALYSE,
     RolloutPhase.CANARY, 10, 0, Reason.CANARY_PROGRESSING, None),
    ("pass: next step", SPEC, canary(), PASS, at(10), {}, Action.ADVANCE, RolloutPhase.CANARY, 25, 0,
     Reason.CANARY_PROGRESSING, "Normal"),
    ("pass at the last step: promote", SPEC, canary(3), PASS, at(10), {}, Action.PROMOTE, RolloutPhase.PROMOTED,
     None, 0, Reason.PROMOTED, "Normal"),
    ("steps not ending at 100: promote after the last", Rollout(steps=[20, 50], interval="10s"), canary(1, weight=50),
     PASS, at(10), {}, Action.PROMOTE, RolloutPhase.PROMOTED, None, 0, Reason.PROMOTED, "Normal"),
    ("fail below the limit: hold, count", SPEC, canary(1), FAIL, at(10), {}, Action.HOLD, RolloutPhase.CANARY, 25, 1,
     Reason.ANALYSIS_FAILED, "Warning"),
    ("fail exactly at the limit: roll back", SPEC, canary(1, failed_analyses=1), FAIL, at(10), {}, Action.ROLLBACK,
     RolloutPhase.ROLLED_BACK, None, 2, Reason.ROLLED_BACK, "Warning"),
    ("failureLimit 3, second failure: hold", Rollout(interval="10s", failureLimit=3), canary(failed_analyses=1), FAIL,
     at(10), {}, Action.HOLD, RolloutPhase.CANARY, 10, 2, Reason.ANALYSIS_FAILED, "Warning"),
    ("no data, hold: hold and say so", SPEC, canary(2), NO_DATA, at(10), {}, Action.HOLD, RolloutPhase.CANARY, 50, 0,
     Reason.ANALYSIS_NO_DATA, "Warning"),
    ("no data, hold, already holding: no new event", SPEC, canary(2, consecutive_no_data=5), NO_DATA, at(10), {},
     Action.HOLD, RolloutPhase.CANARY, 50, 0, Reason.ANALYSIS_NO_DATA, None),
    ("no data, fail: counted", Rollout(interval="10s", noData="fail"), canary(), NO_DATA, at(10), {}, Action.HOLD,
     RolloutPhase.CANARY, 10, 1, Reason.ANALYSIS_FAILED, "Warning"),
    ("no data, fail, at the limit: roll back", Rollout(interval="10s", noData="fail"), canary(failed_analyses=1),
     NO_DATA, at(10), {}, Action.ROLLBACK, RolloutPhase.ROLLED_BACK, None, 2, Reason.ROLLED_BACK, "Warning"),
    ("error: hold, count", SPEC, canary(), ERROR, at(10), {}, Action.HOLD, RolloutPhase.CANARY, 10, 0,
     Reason.ANALYSIS_ERROR, "Warning"),
    ("error one below the limit: hold", Rollout(interval="2m"), canary(consecutive_errors=2), outcome(Verdict.ERROR, 120),
     at(120), {}, Action.HOLD, RolloutPhase.CANARY, 10, 0, Reason.ANALYSIS_ERROR, None),
    ("error at the limit: roll back", Rollout(interval="2m"), canary(consecutive_errors=3), outcome(Verdict.ERROR, 120),
     at(120), {}, Action.ROLLBACK, RolloutPhase.ROLLED_BACK, None, 0, Reason.ROLLED_BACK, "Warning"),
    ("input drift, safer target: counted towards it", SPEC, canary(), DRIFT, at(10), {"safer": FLOAT}, Action.HOLD,
     RolloutPhase.CANARY, 10, 1, Reason.ANALYSIS_FAILED, "Warning"),
    ("input drift at the limit, safer target: roll back to it", SPEC, canary(failed_analyses=1), DRIFT, at(10),
     {"safer": SaferTarget("r0")}, Action.ROLLBACK, RolloutPhase.ROLLED_BACK, None, 2, Reason.INPUT_DRIFT, "Warning"),
    ("input drift, nothing safer: Degraded, hold, keep serving", SPEC, canary(failed_analyses=1), DRIFT, at(10), {},
     Action.HOLD, RolloutPhase.CANARY, 10, 1, Reason.INPUT_DRIFT, "Warning"),
    ("input drift and latency: an ordinary failure", SPEC, canary(),
     outcome(Verdict.FAIL, checks=("input-drift", "p99-latency")), at(10), {}, Action.HOLD, RolloutPhase.CANARY, 10, 1,
     Reason.ANALYSIS_FAILED, "Warning"),
    ("guard: pass keeps serving, quietly", SPEC, promoted(), PASS, at(10), {}, Action.HOLD, RolloutPhase.PROMOTED, None,
     0, Reason.PROMOTED, None),
    ("guard: fail below the limit", SPEC, promoted(), FAIL, at(10), {}, Action.HOLD, RolloutPhase.PROMOTED, None, 1,
     Reason.ANALYSIS_FAILED, "Warning"),
    ("guard: pass ends a run of failures", SPEC, promoted(failed_analyses=1, reason="AnalysisFailed"), PASS, at(10), {},
     Action.HOLD, RolloutPhase.PROMOTED, None, 0, Reason.PROMOTED, "Normal"),
    ("guard: fail at the limit rolls back to the previous stable", SPEC, promoted(failed_analyses=1), FAIL, at(10), {},
     Action.ROLLBACK, RolloutPhase.ROLLED_BACK, None, 2, Reason.ROLLED_BACK, "Warning"),
    ("guard: fail at the limit, nothing earlier: Degraded", SPEC,
     promoted(failed_analyses=1, previous_stable_revision=None), FAIL, at(10), {}, Action.HOLD, RolloutPhase.PROMOTED,
     None, 2, Reason.NO_ROLLBACK_TARGET, "Warning"),
    ("guard: no data never rolls back (even noData: fail)", Rollout(interval="10s", noData="fail"), promoted(), NO_DATA,
     at(10), {}, Action.HOLD, RolloutPhase.PROMOTED, None, 0, Reason.ANALYSIS_NO_DATA, "Warning"),
    ("guard: errors never roll back", SPEC, promoted(consecutive_errors=99), ERROR, at(10), {}, Action.HOLD,
     RolloutPhase.PROMOTED, None, 0, Reason.ANALYSIS_ERROR, None),
    ("guard: input drift, float target: roll back to it", SPEC, promoted(failed_analyses=1), DRIFT, at(10),
     {"safer": SaferTarget("r2", "fp32")}, Action.ROLLBACK, RolloutPhase.ROLLED_BACK, None, 2, Reason.INPUT_DRIFT,
     "Warning"),
    ("guard: input drift, nothing safer: Degraded, keep serving", SPEC, promoted(), DRIFT, at(10), {}, Action.HOLD,
     RolloutPhase.PROMOTED, None, 0, Reason.INPUT_DRIFT, "Warning"),
    ("rolled back: nothing happens under the same generation", SPEC,
     canary(phase=RolloutPhase.ROLLED_BACK, weight=None, reason="RolledBack"), PASS, at(100),
     {"wanted": Wanted("r2", 2)}, Action.WAIT, RolloutPhase.ROLLED_BACK, None, 0, Reason.ROLLED_BACK, None),
    ("rolled back: a spec change rolls it out again", SPEC,
     canary(phase=RolloutPhase.ROLLED_BACK, weight=None, reason="RolledBack"), None, at(100),
     {"wanted": Wanted("r2", 3)}, Action.START, RolloutPhase.CANARY, 10, 0, Reason.CANARY_STARTED, "Normal"),
    ("first revision: straight to all traffic, guarded", SPEC, RolloutState(), None, at(0), {"wanted": Wanted("r1", 1)},
     Action.PROMOTE, RolloutPhase.PROMOTED, None, 0, Reason.PROMOTED, "Normal"),
    ("a status from before the rollout: a new revision is a canary", SPEC, RolloutState(stable_revision="r1"), None,
     at(0), {"wanted": Wanted("r2", 2)}, Action.START, RolloutPhase.CANARY, 10, 0, Reason.CANARY_STARTED, "Normal"),
    ("promoted, new revision: canary", SPEC, promoted(), None, at(3), {"wanted": Wanted("r3", 3)}, Action.START,
     RolloutPhase.CANARY, 10, 0, Reason.CANARY_STARTED, "Normal"),
    ("canary, newer revision: replaces it", SPEC, canary(2), None, at(3), {"wanted": Wanted("r3", 3)}, Action.START,
     RolloutPhase.CANARY, 10, 0, Reason.CANARY_STARTED, "Normal"),
    ("canary, spec back to the stable: canary dropped", SPEC, canary(2), None, at(3), {"wanted": Wanted("r1", 3)},
     Action.DROP_CANARY, RolloutPhase.PROMOTED, None, 0, Reason.CANARY_SUPERSEDED, "Normal"),
    ("canary, same revision under a new generation: goes on", SPEC, canary(), PASS, at(10), {"wanted": Wanted("r2", 5)},
     Action.ADVANCE, RolloutPhase.CANARY, 25, 0, Reason.CANARY_PROGRESSING, "Normal"),
]


@pytest.mark.parametrize(
    ("spec", "state", "assessment", "now", "kwargs", "action", "phase", "weight", "failed", "reason", "event"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decision_table(spec: Rollout, state: RolloutState, assessment: AnalysisOutcome | None, now: datetime,
                        kwargs: dict[str, Any], action: Action, phase: RolloutPhase, weight: int | None, failed: int,
                        reason: Reason, event: str | None) -> None:
    decision = step(spec, state, assessment, now, None, **kwargs)
    got = (decision.action, decision.state.phase, decision.status_fields()["canaryWeight"],
           decision.state.failed_analyses, decision.reason, decision.event.type if decision.event else None)
    assert got == (action, phase, weight, failed, reason.value, event), decision.message
    # Idempotence: the same inputs give the same decision; the decision's state with the same inputs acts no more.
    assert step(spec, state, assessment, now, None, **kwargs) == decision
    again = step(spec, decision.state, assessment, now, None, **kwargs)
    assert again.action in (Action.WAIT, Action.ANALYSE) and again.event is None, again
    assert again.state == decision.state
    if decision.event is not None:
        assert decision.event.reason == decision.reason and decision.event.message == decision.message


def test_rollback_targets_and_history() -> None:
    back = step(SPEC, canary(1, failed_analyses=1), FAIL, at(10))
    assert back.rollback_to == SaferTarget("r1") and back.state.traffic() == {"r1": 100}
    assert back.state.revision == "r2" and back.phase == Phase.ROLLED_BACK
    assert "not retried" in back.message and "p99 latency 80 ms > 40 ms" in back.message

    guard = step(SPEC, promoted(failed_analyses=1), FAIL, at(10))
    assert guard.rollback_to == SaferTarget("r1")
    assert (guard.state.stable_revision, guard.state.previous_stable_revision) == ("r1", None)

    drift = step(SPEC, promoted(failed_analyses=1), DRIFT, at(10), safer=SaferTarget("r2", "fp32"))
    assert drift.rollback_to == SaferTarget("r2", "fp32") and drift.state.fallback_variant == "fp32"
    assert "inputs drifted beyond the evaluated range" in drift.message and "variant fp32 of revision r2" in drift.message
    assert drift.conditions()[ConditionType.DEGRADED].status == ConditionStatus.TRUE


def test_input_drift_messages() -> None:
    with_safer = step(SPEC, canary(), DRIFT, at(10), safer=FLOAT)
    assert "inputs drifted beyond the evaluated range" in with_safer.message and "safer: revision r1" in with_safer.message
    nothing = step(SPEC, canary(), DRIFT, at(10))
    assert "inputs drifted beyond the evaluated range" in nothing.message and "keeps serving" in nothing.message
    conditions = nothing.conditions()
    assert conditions[ConditionType.DEGRADED].status == ConditionStatus.TRUE
    assert conditions[ConditionType.DEGRADED].reason == Reason.INPUT_DRIFT.value
    # The analysis module's spelling and the brief's both count.
    underscored = step(SPEC, canary(), replace(DRIFT, failed_checks=("input_drift",)), at(10))
    assert underscored.reason == Reason.INPUT_DRIFT.value
    # Drift ends: the next pass goes on.
    after = step(SPEC, nothing.state, outcome(Verdict.PASS, 20), at(20))
    assert after.action == Action.ADVANCE and after.conditions()[ConditionType.DEGRADED].status == ConditionStatus.FALSE


def test_hold_without_data_for_many_intervals_then_resume() -> None:
    spec = Rollout(steps=[10, 50, 100], interval="10s", failureLimit=1)
    state = canary(1, weight=50)
    events = []
    for k in range(1, 31):  # five minutes of no data at 10 s
        decision = step(spec, state, outcome(Verdict.NO_DATA, 10 * k), at(10 * k))
        assert decision.action == Action.HOLD and decision.state.weight == 50
        assert decision.state.phase == RolloutPhase.CANARY and decision.state.failed_analyses == 0
        assert "never promoted without data" in decision.message
        events.append(decision.event)
        state = decision.state
    assert state.consecutive_no_data == 30 and events[0] is not None and events[1:] == [None] * 29
    assert step(spec, state, None, at(305)).action == Action.WAIT  # no promotion between analyses either
    resumed = step(spec, state, outcome(Verdict.PASS, 310), at(310))
    assert resumed.action == Action.ADVANCE and resumed.state.weight == 100
    assert resumed.state.consecutive_no_data == 0 and "data back after 30" in resumed.message


def test_prometheus_outage_shorter_than_the_limit_holds_then_resumes() -> None:
    spec = Rollout(interval="2s")
    assert consecutive_error_limit(spec) == 150  # five minutes of 2 s analyses
    assert consecutive_error_limit(Rollout(interval="1m")) == 5
    assert consecutive_error_limit(Rollout(interval="10m")) == 4
    state = canary(step_started_at=T0)
    for k in range(1, 150):
        decision = step(spec, state, outcome(Verdict.ERROR, 2 * k), at(2 * k))
        assert decision.action == Action.HOLD, decision.message
        state = decision.state
    assert step(spec, state, outcome(Verdict.PASS, 300), at(300)).action == Action.ADVANCE
    assert step(spec, state, outcome(Verdict.ERROR, 300), at(300)).action == Action.ROLLBACK


def test_a_good_revision_walks_every_step_then_stays_guarded() -> None:
    state, now = RolloutState(), T0
    decision = step(SPEC, state, None, now, wanted=Wanted("r1", 1))
    decision = step(SPEC, decision.state, None, now, wanted=Wanted("r2", 2))
    weights = [decision.state.weight]
    for _ in range(len(SPEC.steps)):
        now += TICK
        asked = step(SPEC, decision.state, None, now, wanted=Wanted("r2", 2))
        assert asked.action == Action.ANALYSE and asked.analyse is not None
        # Predictions are compared with the stable revision's while it takes traffic; at 100% it takes none.
        baseline = "r1" if (decision.state.weight or 0) < 100 else None
        assert (asked.analyse.revision, asked.analyse.baseline) == ("r2", baseline)
        decision = step(SPEC, decision.state, AnalysisOutcome(Verdict.PASS, now), now, wanted=Wanted("r2", 2))
        weights.append(decision.state.weight)
    assert weights == [10, 25, 50, 100, None]
    assert decision.action == Action.PROMOTE and decision.state.traffic() == {"r2": 100}
    assert (decision.state.stable_revision, decision.state.previous_stable_revision) == ("r2", "r1")
    assert decision.conditions()[ConditionType.ROLLED_OUT].status == ConditionStatus.TRUE
    # Guarded: analyses go on; the previous stable is the target.
    now += TICK
    asked = step(SPEC, decision.state, None, now, wanted=Wanted("r2", 2))
    assert asked.action == Action.ANALYSE and asked.analyse == replace(asked.analyse, revision="r2", baseline=None)


def test_requeue_after_says_when_the_next_analysis_is_due() -> None:
    assert step(SPEC, canary(), None, at(4)).requeue_after == timedelta(seconds=6)
    advanced = step(SPEC, canary(), PASS, at(10))
    assert advanced.requeue_after == TICK and step(SPEC, advanced.state, None, at(15)).action == Action.WAIT


# --- manual commands ---------------------------------------------------------------------------------


def command(kind: CommandKind | None, cid: str = "c1") -> ManualCommand:
    return ManualCommand(kind=kind, word=kind.value if kind else "promot", id=cid)


COMMANDS = [
    ("promote a canary", canary(1), command(CommandKind.PROMOTE), Action.PROMOTE, RolloutPhase.PROMOTED,
     Reason.MANUALLY_PROMOTED),
    ("abort a canary", canary(1), command(CommandKind.ABORT), Action.ROLLBACK, RolloutPhase.ABORTED, Reason.ABORTED),
    ("abort a promoted revision", promoted(), command(CommandKind.ABORT), Action.ROLLBACK, RolloutPhase.ABORTED,
     Reason.ABORTED),
    ("abort with nothing earlier", promoted(previous_stable_revision=None), command(CommandKind.ABORT), Action.IGNORE,
     RolloutPhase.PROMOTED, Reason.COMMAND_IGNORED),
    ("retry a rolled-back revision", canary(phase=RolloutPhase.ROLLED_BACK, failed_analyses=2, weight=None),
     command(CommandKind.RETRY), Action.START, RolloutPhase.CANARY, Reason.RETRY_REQUESTED),
    ("retry an aborted revision", canary(phase=RolloutPhase.ABORTED, weight=None), command(CommandKind.RETRY),
     Action.START, RolloutPhase.CANARY, Reason.RETRY_REQUESTED),
    ("retry a canary: ignored", canary(), command(CommandKind.RETRY), Action.IGNORE, RolloutPhase.CANARY,
     Reason.COMMAND_IGNORED),
    ("promote when rolled back: ignored", canary(phase=RolloutPhase.ROLLED_BACK), command(CommandKind.PROMOTE),
     Action.IGNORE, RolloutPhase.ROLLED_BACK, Reason.COMMAND_IGNORED),
    ("unknown word: ignored", canary(), command(None), Action.IGNORE, RolloutPhase.CANARY, Reason.COMMAND_IGNORED),
]


@pytest.mark.parametrize(("state", "cmd", "action", "phase", "reason"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_manual_commands(state: RolloutState, cmd: ManualCommand, action: Action, phase: RolloutPhase,
                         reason: Reason) -> None:
    decision = step(SPEC, state, PASS, at(3), cmd, wanted=Wanted("r2", 2))
    assert (decision.action, decision.state.phase) == (action, phase), decision.message
    assert decision.event is not None and decision.event.reason == reason.value
    assert decision.state.last_command == "c1"
    # Acted on once: the same command again does nothing more.
    again = step(SPEC, decision.state, None, at(3), cmd, wanted=Wanted("r2", 2))
    assert again.action in (Action.WAIT, Action.ANALYSE) and again.state == decision.state


def test_aborted_canary_is_not_retried_until_the_spec_changes_or_retry() -> None:
    aborted = step(SPEC, canary(2), None, at(3), command(CommandKind.ABORT)).state
    assert aborted.traffic() == {"r1": 100}
    for k in range(1, 5):
        assert step(SPEC, aborted, outcome(Verdict.PASS, 10 * k), at(10 * k), wanted=Wanted("r2", 2)).action == Action.WAIT
    assert step(SPEC, aborted, None, at(50), wanted=Wanted("r2", 3)).action == Action.START
    retried = step(SPEC, aborted, None, at(50), command(CommandKind.RETRY, "c2"), wanted=Wanted("r2", 2))
    assert retried.action == Action.START and retried.state.weight == 10 and retried.state.traffic() == {"r1": 90, "r2": 10}


@pytest.mark.parametrize(
    ("annotations", "last", "expected"),
    [
        (None, None, None),
        ({}, None, None),
        ({"other": "x"}, None, None),
        ({COMMAND_ANNOTATION: "promote"}, None, ManualCommand(CommandKind.PROMOTE, "promote", "promote")),
        ({COMMAND_ANNOTATION: "promote"}, "promote", None),
        ({COMMAND_ANNOTATION: " Abort ", COMMAND_ID_ANNOTATION: "7"}, "abort", ManualCommand(CommandKind.ABORT, "Abort", "Abort:7")),
        ({COMMAND_ANNOTATION: "retry", COMMAND_ID_ANNOTATION: "x"}, "retry:x", None),
        ({COMMAND_ANNOTATION: "retry", COMMAND_ID_ANNOTATION: "y"}, "retry:x", ManualCommand(CommandKind.RETRY, "retry", "retry:y")),
        ({COMMAND_ANNOTATION: "promot", COMMAND_ID_ANNOTATION: "1"}, None, ManualCommand(None, "promot", "promot:1")),
        ({COMMAND_ANNOTATION: ""}, None, None),
    ],
)
def test_command_from_annotations(annotations: dict[str, str] | None, last: str | None,
                                  expected: ManualCommand | None) -> None:
    assert command_from_annotations(annotations, last) == expected


def test_cli_patch_body_round_trips_through_the_parser() -> None:
    cid = new_command_id(datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), "1a2b3c")
    assert cid == "20260501T120000.123456Z-1a2b3c"
    body = command_patch(CommandKind.ABORT, cid)
    assert body == {"metadata": {"annotations": {"optimodel.io/command": "abort", "optimodel.io/command-id": cid}}}
    parsed = command_from_annotations(body["metadata"]["annotations"], None)
    assert parsed is not None and parsed.kind == CommandKind.ABORT
    assert command_from_annotations(body["metadata"]["annotations"], parsed.id) is None
    # The same command given twice (a new id) acts twice.
    second = command_patch(CommandKind.ABORT, new_command_id(datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC), "ffffff"))
    assert command_from_annotations(second["metadata"]["annotations"], parsed.id) is not None


# --- status round trip -------------------------------------------------------------------------------


def test_state_round_trips_through_status() -> None:
    for state in (canary(2, failed_analyses=1, consecutive_errors=2, last_analysis_at=at(20), last_command="c"),
                  promoted(fallback_variant="fp32", consecutive_no_data=3),
                  canary(phase=RolloutPhase.ROLLED_BACK, weight=None)):
        fields = state.status_fields()
        status = OptimizedModelStatus.model_validate({k: v for k, v in fields.items() if v is not None})
        assert RolloutState.from_status(status) == replace(
            state, **({} if state.phase == RolloutPhase.CANARY else {"weight": None, "step_index": None})
        )
    fields = canary(1).status_fields()
    assert fields["canaryWeight"] == 25 and fields["canaryStep"] == 1 and fields["stepStartTime"] == "2026-05-01T12:00:00Z"
    assert promoted().status_fields()["canaryWeight"] is None  # the WEIGHT column is empty once promoted


# --- traffic splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [(10, 10, (1, 9)), (10, 25, (3, 7)), (4, 10, (1, 3)), (4, 50, (2, 2)), (4, 90, (3, 1)), (3, 50, (2, 1)),
     (2, 99, (1, 1)), (1, 10, (1, 1)), (1, 100, (1, 0)), (5, 0, (0, 5)), (0, 50, (0, 0)), (100, 1, (1, 99))],
)
def test_replica_split_table(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert replica_split(total, weight) == expected


@given(st.integers(0, 500), st.integers(0, 100))
def test_replica_split_properties(total: int, weight: int) -> None:
    canary_replicas, stable = replica_split(total, weight)
    if total == 1 and 0 < weight < 100:
        assert (canary_replicas, stable) == (1, 1)  # the documented surge of one pod
    else:
        assert canary_replicas + stable == total
    if total and 0 < weight < 100:
        assert canary_replicas >= 1 and stable >= 1
    if weight == 100:
        assert stable == 0
    if weight == 0:
        assert canary_replicas == 0
    if total >= 2 and 0 < weight < 100:
        assert abs(canary_replicas - total * weight / 100) <= max(0.5, 1)
    if weight < 100:  # more weight never means fewer canary replicas
        assert replica_split(total, weight + 1)[0] >= canary_replicas


@given(st.integers(0, 100))
def test_route_weights(weight: int) -> None:
    canary_weight, stable = route_weights(weight)
    assert canary_weight == weight and canary_weight + stable == 100


@pytest.mark.parametrize("args", [(-1, 10), (3, 101), (3, -1)])
def test_replica_split_refuses_nonsense(args: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        replica_split(*args)


def test_outcome_from_the_analysis_assessment() -> None:
    from optimodel_operator.analysis.assess import Assessment, Verdict as AnalysisVerdict
    from optimodel_operator.analysis.measurement import CheckKind

    drifted = Assessment(verdict=AnalysisVerdict.FAIL, reason="input-drift: PSI 0.4 > 0.2", failed=("input-drift",),
                         failed_kinds=frozenset({CheckKind.INPUT_DRIFT}), errors=(), inconclusive=(), measurements=())
    got = AnalysisOutcome.of(drifted, at(10))
    assert got == AnalysisOutcome(Verdict.FAIL, at(10), ("input-drift",), "input-drift: PSI 0.4 > 0.2")
    assert step(SPEC, canary(), got, at(10)).reason == Reason.INPUT_DRIFT.value
