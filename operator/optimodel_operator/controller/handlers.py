"""kopf handlers for OptimizedModel. Thin on purpose: read the object and its children, ask the
planner, apply what it decided.

Level-triggered: every trigger (the resource created, changed or found at start-up; one of its Jobs or
Deployments changing, one of its Services deleted) runs the same reconcile, which reads everything back
(from kopf's watch streams where they are provably current, else from the API server: controller/cache.py)
and from the store, recomputes the whole status and patches only what differs. Killed at any moment, the operator
resumes from what is stored: Jobs have deterministic names (a second create is refused), results live
in the store.

No kopf timer or daemon on purpose: kopf gives those a finalizer, and a finalizer would block the
deletion of OptimizedModels (and of their namespaces) whenever the operator is not running. The
rollout's periodic analyses come from controller.wakeups instead: each reconcile says when the next is
due, and on start-up kopf's resume handler reconciles every model, which schedules them again. Children
carry ownerReferences, so the garbage collector removes them with the resource.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.controller import analysis, kube, metrics, store
from optimodel_operator.controller.cache import CACHE, DEPLOYMENTS, JOBS, MODELS, SERVICES
from optimodel_operator.controller.quiet import HeldStatus, routine
from optimodel_operator.controller.settings import planner_config, prometheus_timeout_s, prometheus_url
from optimodel_operator.controller.wakeups import RETRY_AFTER_ERROR_S, Wakeups
from optimodel_operator.planner.naming import LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY
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
def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
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
    # kopf hands its indices (the functions' names) to startup handlers; reconciles read them through CACHE.
    for plural, index_name in _INDICES.items():
        CACHE.attach(plural, kwargs[index_name])
    _wakeups.start()
    _start_auditor()


# The watch caches (controller/cache.py). async: kopf would run a sync index function on its thread pool, where
# the reconciles wait; these only copy the body.
@kopf.index(GROUP, VERSION, PLURAL)
async def model_index(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    return CACHE.index(MODELS, body)


def _child_index(plural: str, body: kopf.Body) -> dict[Any, Any] | None:
    return CACHE.index(plural, body, (body.get("metadata", {}).get("labels") or {}).get(LABEL_MODEL))


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_index(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    return _child_index(JOBS, body)


@kopf.index("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def deployment_index(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    return _child_index(DEPLOYMENTS, body)


@kopf.index("", "v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def service_index(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    return _child_index(SERVICES, body)


_INDICES = {MODELS: "model_index", JOBS: "job_index", DEPLOYMENTS: "deployment_index", SERVICES: "service_index"}


def _list_all(plural: str) -> list[dict[str, Any]]:
    """Every object of an indexed kind the operator manages (names and uids only), for the cache's audit:
    cluster-wide, or namespace by namespace (those the cache holds objects in) where the operator's role is
    namespaced and a cluster-wide list is forbidden."""
    api = clients()
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

    def names(items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            meta = item["metadata"] if isinstance(item, dict) else item.metadata.to_dict()
            out.append({"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid")}})
        return out

    if plural == MODELS:
        cluster = lambda: api.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]  # noqa: E731
        namespaced = lambda ns: api.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]  # noqa: E731
    else:
        every = {JOBS: api.batch.list_job_for_all_namespaces, DEPLOYMENTS: api.apps.list_deployment_for_all_namespaces,
                 SERVICES: api.core.list_service_for_all_namespaces}[plural]
        one = {JOBS: api.batch.list_namespaced_job, DEPLOYMENTS: api.apps.list_namespaced_deployment,
               SERVICES: api.core.list_namespaced_service}[plural]
        cluster = lambda: every(label_selector=selector).items  # noqa: E731
        namespaced = lambda ns: one(ns, label_selector=selector).items  # noqa: E731
    try:
        return names(cluster())
    except ApiException as error:
        if error.status != 403:
            raise
    return [entry for ns in CACHE.namespaces(plural) for entry in names(namespaced(ns))]


def _vanished(plural: str, body: dict[str, Any]) -> None:
    """An object deleted while a watch stream was down: a model is forgotten, a child's model reconciled."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    if plural == MODELS:
        _wakeups.cancel(namespace, name)
        metrics.MODELS.forget(namespace, name)
        _held.forget((namespace, name))
        return
    owner = _owner_name(body)
    if owner is not None:
        _wakeups.schedule(namespace, owner, 0)


def _audit_forever() -> None:
    while True:
        CACHE.wait_relisted()
        time.sleep(AUDIT_AFTER_RELIST_S)  # let the listing that was noticed finish first
        try:
            found = CACHE.audit(_list_all, _vanished)
            logging.getLogger(__name__).info("a watch listed again: %d cached object(s) were gone", found)
        except Exception as error:  # noqa: BLE001 - the next relist, or this one again, audits again
            logging.getLogger(__name__).warning("audit of the watch caches failed: %s; again in %.0f s", error,
                                                AUDIT_AFTER_RELIST_S)
            CACHE.relisted_again()


AUDIT_AFTER_RELIST_S = 5.0
_auditor: threading.Thread | None = None


def _start_auditor() -> None:
    global _auditor
    if _auditor is None:
        _auditor = threading.Thread(target=_audit_forever, name="optimodel-cache-audit", daemon=True)
        _auditor.start()


def reconcile_model(body: dict[str, Any], logger: logging.Logger | kopf.Logger) -> Decision:
    """Read, decide (running an analysis first when one is due), apply: the whole loop for one OptimizedModel."""
    api = clients()
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    started = time.monotonic()
    with _model_lock(namespace, name):
        _queued_done((namespace, name))  # from here on, everything is read afresh: later child events count again
        fresh = kube.model(api, CACHE, namespace, name)
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
        observed = kube.observe(api, view, plans, store.read_run, config.server_port, CACHE)
        decision = reconcile(view, _now(), config, observed)
        analysed = decision.analysis is not None
        if decision.analysis is not None:
            result = analysis.run(decision.analysis, prometheus_url(), prometheus_timeout_s())
            logger.info("analysis of revision %s over %s: %s (%s)", result.request.revision, result.window,
                        result.assessment.verdict.value, result.assessment.reason)
            decision = reconcile(view, result.time, config, dataclasses.replace(observed, analysis=result))
        changes = kube.apply_actions(api, namespace, decision.actions, CACHE)
        if routine(current.get("status") or {}, decision.status_patch, analysed, decision.events, changes):
            assert decision.status_patch is not None
            _held.hold((namespace, name), fresh["metadata"].get("resourceVersion", ""), decision.status_patch)
        elif decision.status_patch:
            try:
                kube.patch_status(api, namespace, name, _held.with_held((namespace, name), decision.status_patch),
                                  CACHE)
            except ApiException as error:
                if error.status != 404:
                    raise
                # Deleted meanwhile (or while a watch was down, and still cached): nothing left to reconcile.
                CACHE.gone(MODELS, namespace, name)
                _wakeups.cancel(namespace, name)
                metrics.MODELS.forget(namespace, name)
                _held.forget((namespace, name))
                return decision
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
    model = kube.model(clients(), CACHE, namespace, name)
    if model is not None:
        reconcile_model(model, logging.getLogger("optimodel.rollout"))


# The rollout's clock: each reconcile says when the next analysis is due, and this wakes the model then.
# Routine guard records of promoted revisions, held rather than written (controller/quiet.py).
_held = HeldStatus()
_wakeups = Wakeups(_wake)


@kopf.on.cleanup()
def stop_wakeups(**_: Any) -> None:
    _wakeups.stop()
    if _child_pool is not None:
        _child_pool.shutdown(wait=False, cancel_futures=True)  # queued reconciles run again after a restart


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_on_change(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    CACHE.mark_synced()
    decision = reconcile_model(dict(body), logger)
    if decision.permanent_error:
        # Not retried: only a spec change (a new update event) can fix it; the status says why.
        raise kopf.PermanentError(decision.permanent_error)


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_event(event: kopf.RawEvent, **_: Any) -> None:
    CACHE.mark_synced()
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


# A child's event only queues its model's reconcile, on a pool of our own, and returns. kopf hands an object's
# events to its handlers one at a time and updates its indices (controller/cache.py) only as it reaches each
# event: a reconcile run inside the handler of an early event (a Job's pod starting) read the cache as of that
# event, while the later ones (the Job failing) waited behind it, one whole reconcile each. With the handler
# returning at once, kopf reaches the latest event quickly, and the one reconcile queued (`_queue`) reads the
# cache after it (tests/integration/test_examples_apply.py waited 34 s per stale event with a store that hangs).
CHILD_RECONCILE_WORKERS = 16
_child_pool: ThreadPoolExecutor | None = None
_child_pool_guard = threading.Lock()


def _child_reconciles() -> ThreadPoolExecutor:
    global _child_pool
    with _child_pool_guard:
        if _child_pool is None:
            _child_pool = ThreadPoolExecutor(CHILD_RECONCILE_WORKERS, thread_name_prefix="optimodel-child")
        return _child_pool


def _on_child(body: kopf.Body, logger: kopf.Logger) -> Future[None] | None:
    """Queue a reconcile of the child's model; its future, or None when one is queued already (or no model)."""
    CACHE.mark_synced()
    owner = _owner_name(body)
    namespace = body.get("metadata", {}).get("namespace")
    if owner is None or namespace is None:
        return None
    if not _queue((namespace, owner)):
        return None
    kind = str(body.get("kind") or "child")
    # In kopf's context (copied), so that its logger of the child still posts as from the handler.
    context = contextvars.copy_context()
    return _child_reconciles().submit(context.run, _reconcile_for_child, namespace, owner, kind, logger)


def _reconcile_for_child(namespace: str, owner: str, kind: str, logger: logging.Logger | kopf.Logger) -> None:
    try:
        model = kube.model(clients(), CACHE, namespace, owner)
        if model is None:
            return  # the resource is gone; the garbage collector takes its children
        reconcile_model(model, logger)
    except ApiException as error:
        if error.status == 403 and "being terminated" in str(error.body):
            return  # its namespace is being deleted: nothing to repair there
        _retry_later(namespace, owner, kind, error, logger)
    except Exception as error:  # noqa: BLE001 - retried below, as any failed reconcile
        _retry_later(namespace, owner, kind, error, logger)
    finally:
        # Normally done when the reconcile took the model's lock; this covers a return or a failure before it
        # (at worst another queued reconcile runs once more, never one too few).
        _queued_done((namespace, owner))


def _retry_later(namespace: str, owner: str, kind: str, error: Exception,
                 logger: logging.Logger | kopf.Logger) -> None:
    # kopf does not retry event handlers, and a finished Job sends no further event: without a retry, a
    # completion seen while the API server was restarting left the model "optimizing" for good. The wake-up
    # thread reconciles it again (and keeps retrying while that fails).
    logger.warning("reconcile of %s/%s after a change of its %s failed: %s; again in %.0f s", namespace, owner,
                   kind, error, RETRY_AFTER_ERROR_S)
    _wakeups.schedule(namespace, owner, RETRY_AFTER_ERROR_S)


# Children changing (a Job finishing, a Deployment becoming available) move the loop on.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def job_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    _on_child(body, logger)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
def deployment_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    _on_child(body, logger)



# A Service deleted by someone is re-created at once (it has left the cache with the watch's DELETED event).
# Only deletions: the Services' other changes are this operator's own applies, which need no reconcile.
@kopf.on.event("", "v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY})
def service_changed(body: kopf.Body, event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    if event.get("type") == "DELETED":
        _on_child(body, logger)
