"""kopf handlers for OptimizedModel. Thin on purpose: read the object and its children, ask the
planner, apply what it decided.

Level-triggered: every trigger (the resource created, changed or found at start-up; one of its Jobs or
Deployments changing) runs the same reconcile, which reads everything back from the API server and the
store, recomputes the whole status and patches only what differs. Killed at any moment, the operator
resumes from what is stored: Jobs have deterministic names (a second create is refused), results live
in the store.

No kopf timer or daemon on purpose: kopf gives those a finalizer, and a finalizer would block the
deletion of OptimizedModels (and of their namespaces) whenever the operator is not running. The
rollout's periodic analyses come from controller.wakeups instead: each reconcile says when the next is
due, and on start-up kopf's resume handler reconciles every model, which schedules them again. Children
carry ownerReferences, so the garbage collector removes them with the resource.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.controller import analysis, kube, metrics, store
from optimodel_operator.controller.quiet import HeldStatus, routine
from optimodel_operator.controller.settings import planner_config, prometheus_timeout_s, prometheus_url
from optimodel_operator.controller.wakeups import RETRY_AFTER_ERROR_S, Wakeups
from optimodel_operator.planner.naming import LABEL_MANAGED_BY, MANAGED_BY
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.revision import effective_store, job_plans
from optimodel_operator.planner.validation import judge_spec
from optimodel_operator.planner.view import ResourceView

KOPF_PREFIX = f"kopf.{GROUP}"
_clients: kube.Clients | None = None
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _model_lock(namespace: str, name: str) -> threading.Lock:
    # Handlers run on kopf's thread pool: the lock of a model must be created once, under a guard,
    # or two first reconciles of the same model could each get a lock of their own and act twice.
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def _now() -> datetime:
    return datetime.now(UTC)


def clients() -> kube.Clients:
    global _clients
    if _clients is None:
        kube.load_config()
        _clients = kube.Clients.create()
    return _clients


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the structural schema would prune status.kopf. Under a prefix
    # of its own: kopf leaves every annotation of its storage's prefix out of the diff, and the rollout's
    # commands (optimodel.io/command) and fault flags (optimodel.io/inject-faults) must trigger a reconcile.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    # Our Events come from the status diff and from what we change; kopf's "Handler succeeded" are noise.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Reconciles of different models run side by side; one model's are serialized by a lock.
    # 16: reconciles mostly wait on the API server; with 8, hundreds of models applied at once waited in line
    # (benchmarks/scale.py).
    settings.execution.max_workers = 16
    clients()
    _wakeups.start()


def reconcile_model(body: dict[str, Any], logger: logging.Logger | kopf.Logger) -> Decision:
    """Read, decide (running an analysis first when one is due), apply: the whole loop for one OptimizedModel."""
    api = clients()
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    started = time.monotonic()
    with _model_lock(namespace, name):
        _queued_done((namespace, name))  # from here on, everything is read afresh: later child events count again
        fresh = kube.read_model(api, namespace, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            _wakeups.cancel(namespace, name)
            metrics.MODELS.forget(namespace, name)
            _held.forget((namespace, name))
            return reconcile(ResourceView.from_body(body), _now(), planner_config())
        # Planned from the status as last decided: stored, plus the guard's routine records held in memory.
        current = _held.view((namespace, name), fresh)
        view = ResourceView.from_body(current)
        config = planner_config()
        verdict = judge_spec(view.spec, config)
        plans = job_plans(verdict.spec, view.name, effective_store(verdict.spec, config.default_artifacts_uri)) \
            if verdict.spec is not None else []
        observed = kube.observe(api, view, plans, store.read_run, config.server_port)
        decision = reconcile(view, _now(), config, observed)
        analysed = decision.analysis is not None
        if decision.analysis is not None:
            result = analysis.run(decision.analysis, prometheus_url(), prometheus_timeout_s())
            logger.info("analysis of revision %s over %s: %s (%s)", result.request.revision, result.window,
                        result.assessment.verdict.value, result.assessment.reason)
            decision = reconcile(view, result.time, config, dataclasses.replace(observed, analysis=result))
        changes = kube.apply_actions(api, namespace, decision.actions)
        if routine(current.get("status") or {}, decision.status_patch, analysed, decision.events, changes):
            assert decision.status_patch is not None
            _held.hold((namespace, name), fresh["metadata"].get("resourceVersion", ""), decision.status_patch)
        elif decision.status_patch:
            kube.patch_status(api, namespace, name, _held.with_held((namespace, name), decision.status_patch))
        # The operator's metrics come from the status just decided (the whole of it, written or unchanged).
        metrics.MODELS.observe(namespace, name, fresh.get("spec") or {}, decision.status)
        for verb, kind, child in changes:
            if verb == "Missing":
                kube.post_event(api, fresh, "Warning", "HTTPRouteMissing",
                                f"{kind} {child} (rollout.trafficRouting.gatewayAPI) does not exist; "
                                "traffic splits by the Services alone")
                continue
            kube.post_event(api, fresh, "Normal", f"{kind}{verb}", f"{verb.lower()} {kind} {child}")
            logger.info("%s %s %s", verb.lower(), kind, child)
        for event in decision.events:
            kube.post_event(api, fresh, event.type, event.reason, event.message)
            logger.info("event %s %s: %s", event.type, event.reason, event.message)
        if decision.requeue_after is not None:
            _wakeups.schedule(namespace, name, decision.requeue_after.total_seconds())
        if analysed:
            logger.info("%s/%s: after an analysis, reconciled in %.3fs", namespace, name, time.monotonic() - started)
        return decision


def _wake(namespace: str, name: str) -> None:
    model = kube.read_model(clients(), namespace, name)
    if model is not None:
        reconcile_model(model, logging.getLogger("optimodel.rollout"))


# The rollout's clock: each reconcile says when the next analysis is due, and this wakes the model then.
# Routine guard records of promoted revisions, held rather than written (controller/quiet.py).
_held = HeldStatus()
_wakeups = Wakeups(_wake)


@kopf.on.cleanup()
def stop_wakeups(**_: Any) -> None:
    _wakeups.stop()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_on_change(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    decision = reconcile_model(dict(body), logger)
    if decision.permanent_error:
        # Not retried: only a spec change (a new update event) can fix it; the status says why.
        raise kopf.PermanentError(decision.permanent_error)


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_event(event: kopf.RawEvent, **_: Any) -> None:
    # No reconcile runs for a deleted model (no finalizer, on purpose): its metrics are dropped here.
    if event.get("type") == "DELETED":
        meta = event["object"].get("metadata", {})
        metrics.MODELS.forget(meta.get("namespace", ""), meta.get("name", ""))


def _owner_name(body: kopf.Body) -> str | None:
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "OptimizedModel" and owner.get("apiVersion", "").startswith(GROUP + "/"):
            return str(owner["name"])
    return None


# Models with a reconcile queued after a child's event that has not yet started reading (it waits for a worker
# or for the model's lock): a further child event of theirs adds nothing, since that reconcile reads everything
# after it. A Deployment's status moves 4-5 times as it comes up; at scale each move ran a whole reconcile, and
# models' first reconciles waited behind them (benchmarks/scale.py).
_queued: set[tuple[str, str]] = set()
_queued_guard = threading.Lock()


def _queue(key: tuple[str, str]) -> bool:
    """True when no reconcile of the model is queued yet (the caller runs one)."""
    with _queued_guard:
        if key in _queued:
            return False
        _queued.add(key)
        return True


def _queued_done(key: tuple[str, str]) -> None:
    with _queued_guard:
        _queued.discard(key)


def _on_child(body: kopf.Body, logger: kopf.Logger) -> None:
    owner = _owner_name(body)
    namespace = body.get("metadata", {}).get("namespace")
    if owner is None or namespace is None:
        return
    if not _queue((namespace, owner)):
        return
    try:
        model = kube.read_model(clients(), namespace, owner)
        if model is None:
            return  # the resource is gone; the garbage collector takes its children
        reconcile_model(model, logger)
    except ApiException as error:
        if error.status == 403 and "being terminated" in str(error.body):
            return  # its namespace is being deleted: nothing to repair there
        _retry_later(namespace, owner, body, error, logger)
    except Exception as error:  # noqa: BLE001 - retried below, as any failed reconcile
        _retry_later(namespace, owner, body, error, logger)
    finally:
        # Normally done when the reconcile took the model's lock; this covers a return or a failure before it
        # (at worst another queued reconcile runs once more, never one too few).
        _queued_done((namespace, owner))


def _retry_later(namespace: str, owner: str, body: kopf.Body, error: Exception, logger: kopf.Logger) -> None:
    # kopf does not retry event handlers, and a finished Job sends no further event: without a retry, a
    # completion seen while the API server was restarting left the model "optimizing" for good. The wake-up
    # thread reconciles it again (and keeps retrying while that fails).
    logger.warning("reconcile of %s/%s after a change of its %s failed: %s; again in %.0f s", namespace, owner,
                   body.get("kind", "child"), error, RETRY_AFTER_ERROR_S)
    _wakeups.schedule(namespace, owner, RETRY_AFTER_ERROR_S)


# Children changing (a Job finishing, a Deployment becoming available) move the loop on.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def job_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    _on_child(body, logger)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
def deployment_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    _on_child(body, logger)

