"""An optimization Job that failed for a transient reason is rerun by the planner after a back-off (planner.retry):
shown with the time of the next try, deleted once it is due (the next reconcile creates it again under the same
name), at most `job_retry_limit` times; a reason that a rerun would repeat is never rerun. Everything the count
needs is in status, so these tests pass only the stored status from one reconcile to the next, as an operator
restarted in between would."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from optimodel_operator.api.spec import parse_spec
from optimodel_operator.planner.loop import JobObservation, Observed
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.retry import TRANSIENT_REASONS
from optimodel_operator.planner.revision import effective_store, job_plans
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = PlannerConfig(default_artifacts_uri="file:///var/lib/optimodel/store")
UNREACHABLE = "store s3://bucket/store: cannot reach the host (ConnectionRefusedError: Connect call failed)"


def spec_of() -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["source"]["uri"] = "file:///data/m/model.onnx"
    spec["evaluation"]["dataset"] = "file:///data/m/eval.npz"
    spec["artifacts"] = {"uri": "file:///var/lib/optimodel/store"}
    return spec


SPEC = spec_of()
_parsed = parse_spec(SPEC)
JOB = job_plans(_parsed, "m", effective_store(_parsed, None))[0].job_name  # the first Job: it runs first


def failed(reason: str = "HostUnreachable", message: str = UNREACHABLE) -> Observed:
    return Observed(jobs={JOB: JobObservation(JOB, "Failed", reason, message)})


def decide(observed: Observed, status: dict[str, Any] | None = None, now: datetime = T0, generation: int = 1,
           config: PlannerConfig = CONFIG) -> Decision:
    # The status goes through JSON as the API server stores it: nothing but what is written carries over.
    stored = json.loads(json.dumps(status or {}))
    view = ResourceView(name="m", namespace="ns", generation=generation, spec=SPEC, status=stored, uid="uid-1")
    return reconcile(view, now, config, observed)


def cond(decision: Decision, kind: str) -> dict[str, Any]:
    return next(c for c in decision.status["conditions"] if c["type"] == kind)


def deleted(decision: Decision) -> list[tuple[str, str]]:
    return list(decision.actions.delete)


def test_the_transient_reasons_are_from_the_jobs_catalog_and_exclude_what_a_rerun_repeats() -> None:
    assert TRANSIENT_REASONS == {"HostUnreachable", "StoreWriteFailed"}
    assert not TRANSIENT_REASONS & {"OutOfMemory", "DeadlineExceeded", "DatasetUnreadable", "CredentialsInvalid",
                                    "PermissionDenied", "StoreNotFound", "VariantFailed", "ResultsUnreadable"}


def test_a_transient_failure_is_rerun_after_its_back_off_and_not_before() -> None:
    first = decide(failed())
    due = T0 + timedelta(seconds=30)
    optimized = cond(first, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "HostUnreachable")
    assert UNREACHABLE in optimized["message"] and optimized["message"].endswith("retry 1 of 3 at 2026-05-01T12:00:30Z")
    assert first.status["phase"] == "Failed"
    # Not stalled: the operator goes on by itself at that time; still degraded meanwhile.
    assert cond(first, "Stalled")["status"] == "False" and cond(first, "Progressing")["status"] == "True"
    assert cond(first, "Degraded")["status"] == "True"
    assert first.status["optimizationRetry"] == {"job": JOB, "revision": first.status["currentRevision"],
                                                 "generation": 1, "reason": "HostUnreachable", "retries": 0,
                                                 "nextRetryTime": "2026-05-01T12:00:30Z"}
    assert first.requeue_after == timedelta(seconds=30), "woken when the rerun is due"
    assert deleted(first) == [] and first.actions.create == ()
    assert first.status.get("revisions") is None, "a revision whose Job will be rerun is not refused (yet)"
    assert not any(e.reason == "OptimizationRetried" for e in first.events)

    early = decide(failed(), first.status, now=due - timedelta(seconds=1))
    assert deleted(early) == [] and early.actions.create == () and early.status_patch is None
    assert early.requeue_after == timedelta(seconds=1)

    rerun = decide(failed(), first.status, now=due)
    assert deleted(rerun) == [("Job", JOB)]
    assert rerun.actions.create == (), "created again by the next reconcile, once the failed Job is gone"
    (event,) = [e for e in rerun.events if e.reason == "OptimizationRetried"]
    assert "retry 1 of 3" in event.message and "HostUnreachable" in event.message and JOB in event.message
    assert rerun.status["optimizationRetry"]["retries"] == 1 and "nextRetryTime" not in rerun.status["optimizationRetry"]
    assert cond(rerun, "Optimized")["status"] == "Unknown"
    assert cond(rerun, "Stalled")["status"] == "False" and cond(rerun, "Degraded")["status"] == "False"

    gone = decide(Observed(), rerun.status, now=due + timedelta(seconds=1))
    (job,) = gone.actions.create
    assert job["metadata"]["name"] == JOB, "the same deterministic name"
    assert deleted(gone) == [] and all(e.reason != "OptimizationRetried" for e in gone.events)
    assert "retry 1 of 3 after HostUnreachable" in cond(gone, "Optimized")["message"]
    running = decide(Observed(jobs={JOB: JobObservation(JOB, "Running")}), gone.status, now=due + timedelta(seconds=5))
    assert "retry 1 of 3 after HostUnreachable" in cond(running, "Optimized")["message"]
    assert running.actions.create == () and deleted(running) == []


def test_back_off_doubles_and_after_the_last_rerun_it_stays_failed() -> None:
    status: dict[str, Any] = {}
    now = T0
    for attempt, wait in ((1, 30), (2, 60), (3, 120)):
        scheduled = decide(failed(), status, now=now)
        assert f"retry {attempt} of 3 at" in cond(scheduled, "Optimized")["message"]
        assert scheduled.requeue_after == timedelta(seconds=wait)
        now += timedelta(seconds=wait)
        rerun = decide(failed(), scheduled.status, now=now)
        assert deleted(rerun) == [("Job", JOB)], attempt
        assert any(e.reason == "OptimizationRetried" and f"retry {attempt} of 3" in e.message for e in rerun.events)
        status = rerun.status
        now += timedelta(seconds=20)  # the rerun runs and fails again
    exhausted = decide(failed(), status, now=now)
    assert deleted(exhausted) == [] and exhausted.actions.create == ()
    assert exhausted.status["phase"] == "Failed"
    assert cond(exhausted, "Stalled")["status"] == "True" and cond(exhausted, "Progressing")["status"] == "False"
    assert cond(exhausted, "Optimized")["message"].endswith("gave up after 3 retries")
    assert exhausted.status["optimizationRetry"]["retries"] == 3
    assert [r["phase"] for r in exhausted.status["revisions"]] == ["Refused"]
    assert exhausted.requeue_after is None
    # Later still: nothing moves (idempotent, and no fourth rerun).
    later = decide(failed(), exhausted.status, now=now + timedelta(hours=2))
    assert later.status_patch is None and deleted(later) == [] and later.actions.create == ()
    assert not any(e.reason == "OptimizationRetried" for e in later.events)


def test_a_reason_a_rerun_would_repeat_is_never_rerun() -> None:
    for reason in ("OutOfMemory", "DeadlineExceeded", "DatasetUnreadable", "CredentialsInvalid"):
        first = decide(failed(reason, "no"))
        assert cond(first, "Stalled")["status"] == "True", reason
        assert "optimizationRetry" not in first.status and first.requeue_after is None
        assert "retry" not in cond(first, "Optimized")["message"]
        later = decide(failed(reason, "no"), first.status, now=T0 + timedelta(hours=1))
        assert deleted(later) == [] and later.actions.create == () and later.status_patch is None, reason


def test_store_write_failed_mid_run_is_rerun_too() -> None:
    first = decide(failed("StoreWriteFailed", "writing int8 to s3://bucket/store: connection reset"))
    assert first.status["optimizationRetry"]["reason"] == "StoreWriteFailed"
    assert deleted(decide(failed("StoreWriteFailed", "x"), first.status, now=T0 + timedelta(seconds=30))) == [("Job", JOB)]


def test_a_restarted_operator_resumes_the_count_and_the_wait_from_status() -> None:
    # Two reruns made and a third due at 12:05:00, as an earlier operator process wrote it.
    before = decide(failed())
    stored = {**before.status, "optimizationRetry": {**before.status["optimizationRetry"], "retries": 2,
                                                       "nextRetryTime": "2026-05-01T12:05:00Z"}}
    restarted = decide(failed(), stored, now=datetime(2026, 5, 1, 12, 3, 0, tzinfo=UTC), config=PlannerConfig(
        default_artifacts_uri="file:///var/lib/optimodel/store"))
    assert deleted(restarted) == [] and restarted.requeue_after == timedelta(minutes=2)
    assert "retry 3 of 3 at 2026-05-01T12:05:00Z" in cond(restarted, "Optimized")["message"]
    due = decide(failed(), restarted.status, now=datetime(2026, 5, 1, 12, 5, 0, tzinfo=UTC))
    assert deleted(due) == [("Job", JOB)] and due.status["optimizationRetry"]["retries"] == 3


def test_a_new_generation_counts_afresh() -> None:
    exhausted = decide(failed(), {"optimizationRetry": {"job": JOB, "revision": decide(failed()).status[
        "currentRevision"], "generation": 1, "reason": "HostUnreachable", "retries": 3}})
    assert cond(exhausted, "Stalled")["status"] == "True"
    edited = decide(failed(), exhausted.status, generation=2)  # e.g. replicas changed: same revision, same Job
    assert edited.status["optimizationRetry"]["generation"] == 2
    assert edited.status["optimizationRetry"]["retries"] == 0
    assert "retry 1 of 3 at" in cond(edited, "Optimized")["message"]
    assert cond(edited, "Stalled")["status"] == "False"


def test_each_state_reconciled_twice_changes_nothing_the_second_time() -> None:
    waiting = decide(failed())
    assert decide(failed(), waiting.status).status_patch is None
    rerun = decide(failed(), waiting.status, now=T0 + timedelta(seconds=30))
    created = decide(Observed(), rerun.status, now=T0 + timedelta(seconds=31))
    again = decide(Observed(), created.status, now=T0 + timedelta(seconds=31))
    assert again.status_patch is None and again.actions == created.actions and deleted(again) == []


def test_no_rerun_when_retries_are_switched_off() -> None:
    off = PlannerConfig(default_artifacts_uri="file:///var/lib/optimodel/store", job_retry_limit=0)
    first = decide(failed(), config=off)
    assert cond(first, "Stalled")["status"] == "True" and "retry" not in cond(first, "Optimized")["message"]
    assert deleted(decide(failed(), first.status, now=T0 + timedelta(hours=1), config=off)) == []
