"""Rerunning an optimization Job that failed for a transient reason, with back-off, without a person.

A Job that failed because its store (or another host) could not be reached would succeed once the host is back;
rerunning it is what a person did by hand (delete the failed Job: the next reconcile creates it again under its
deterministic name). Here the planner does it: the failure is shown with the time of the next try, and once the
back-off has passed the failed Job is deleted. The count and the time live in status (`optimizationRetry`), so an
operator restarted in the middle resumes from there, and a new revision or generation counts afresh. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from optimodel_contracts import errors
from optimodel_operator.api.status import OptimizationRetry
from optimodel_operator.planner.diff import EventSpec
from optimodel_operator.planner.view import PlannerConfig

# Reasons (optimodel_contracts.errors, the Job's termination message) after which the same Job, run again
# unchanged, may well succeed. Everything else gives the same answer again and is never rerun by itself:
# - config, source and data reasons (ConfigInvalid, SourceUnreadable, DatasetUnreadable, ShapeMismatch, ...) and
#   VariantFailed: they follow from the spec and the bytes it names, which a rerun reads unchanged;
# - CredentialsMissing, CredentialsInvalid, PermissionDenied, StoreNotFound, FileSystemMissing: they need a person
#   (a Secret, a grant, a bucket, an image);
# - OutOfMemory and DeadlineExceeded (Kubernetes' reasons): the same limits on the same work end the same way;
# - ResultsUnreadable: the Job completed; what fails is the operator's read, which a rerun does not change.
TRANSIENT_REASONS: frozenset[str] = frozenset({
    # The host refused the connection, its name did not resolve, or it did not answer in time: the store (or a
    # source's server) restarting, a network partition. The probes say it within seconds, before any work.
    errors.HOST_UNREACHABLE,
    # A write to the store failed mid-run although the probe had written there at the start (a store gone away,
    # a 5xx, a connection reset after the file system's own retries): most often a store that comes back. Rerun,
    # the Job reuses by content what was already written.
    errors.STORE_WRITE_FAILED,
})
# After a rerun is asked for, the deletion's Job event normally wakes the reconcile that creates the Job again;
# this wakes it if that event is missed.
RERUN_RECHECK = timedelta(seconds=5)


def backoff(retries: int, config: PlannerConfig) -> timedelta:
    """The wait before rerun number `retries + 1`: the base, doubled for each rerun made (30 s, 60 s, 120 s)."""
    return timedelta(seconds=config.job_retry_backoff_seconds * 2 ** retries)


def stamp(time: datetime) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FailedJob:
    """The first failed optimization Job of the revision, as the Job reported it."""

    name: str
    reason: str
    message: str
    """What the status says of it (`Job NAME failed: ...`)."""


@dataclass(frozen=True)
class RetryDecision:
    record: OptimizationRetry | None
    """The status record to store (None: unset)."""
    rerun: str | None = None
    """A failed Job to delete now, so that the next reconcile creates it again."""
    waiting_until: datetime | None = None
    """The failed Job is rerun at this time: the revision is not stalled."""
    note: str = ""
    """What to add to the failure's messages (`retry 1 of 3 at ...`, `gave up after 3 retries`); empty when the
    failure is not transient."""
    event: EventSpec | None = None
    requeue_after: timedelta | None = None


def decide_retry(failed: FailedJob | None, previous: OptimizationRetry | None, revision: str, generation: int,
                 now: datetime, config: PlannerConfig) -> RetryDecision:
    """What to do about the revision's failed Job (None: none failed) given the stored record."""
    same = previous is not None and (previous.revision, previous.generation) == (revision, generation)
    record = previous if same else None
    limit = config.job_retry_limit
    if failed is None or failed.reason not in TRANSIENT_REASONS:
        # Nothing to rerun: the count stays for the revision (its Job may fail again), the wait goes (a Job
        # deleted or replaced by hand is no longer the failed one the wait was for).
        if record is not None and record.next_retry_time is not None:
            record = record.model_copy(update={"next_retry_time": None})
        return RetryDecision(record)
    if record is None or record.job != failed.name:
        record = OptimizationRetry(job=failed.name, revision=revision, generation=generation, reason=failed.reason,
                                   retries=0)
    record = record.model_copy(update={"reason": failed.reason})
    if record.next_retry_time is None:
        # A failure not yet answered: the first one, or the rerun's.
        if record.retries >= limit:
            note = f"gave up after {record.retries} retries" if record.retries else ""
            return RetryDecision(record, note=note)
        record = record.model_copy(update={"next_retry_time": now + backoff(record.retries, config)})
    due = record.next_retry_time
    assert due is not None
    attempt = f"retry {record.retries + 1} of {limit}"
    if now < due:
        return RetryDecision(record, waiting_until=due, note=f"{attempt} at {stamp(due)}", requeue_after=due - now)
    event = EventSpec("Normal", "OptimizationRetried",
                      (f"{attempt} after {failed.reason}: {failed.message}; Job {failed.name} is deleted and "
                       "created again")[:1024])
    return RetryDecision(record.model_copy(update={"retries": record.retries + 1, "next_retry_time": None}),
                         rerun=failed.name, note=f"{attempt} after {failed.reason}", event=event,
                         requeue_after=RERUN_RECHECK)
