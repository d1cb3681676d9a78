"""The operator's only conversation with the API server beyond kopf's watches: read an OptimizedModel's
children, apply what the planner decided, patch the status.

In steady state children and models are read from kopf's watch streams (controller/cache.py), and from
the API server whenever the cache cannot vouch for being as new as this process's own last write; nothing
is remembered across a restart, so an operator restarted at any moment resumes from what is stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.controller.cache import DEPLOYMENTS, JOBS, MODELS, PLURAL_OF_KIND, SERVICES, WatchCache
from optimodel_operator.planner.loop import Actions, DeploymentObservation, JobObservation, Observed, RouteWeights
from optimodel_operator.planner.naming import (
    ANNOTATION_DRIFT_PROFILED,
    ANNOTATION_VARIANT_KIND,
    LABEL_MODEL,
    LABEL_POOL,
    LABEL_REVISION,
    LABEL_VARIANT,
    label_value,
)
from optimodel_operator.planner.results import RunObservation
from optimodel_operator.planner.revision import JobPlan
from optimodel_operator.planner.view import ResourceView

FIELD_MANAGER = "optimodel"
_OOM_REASONS = {"OOMKilled"}


def load_config() -> None:
    """In a pod: its service account; elsewhere: KUBECONFIG, as kopf itself logs in."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


@dataclass
class Clients:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi
    dynamic: dynamic.DynamicClient

    @classmethod
    def create(cls) -> Clients:
        api = client.ApiClient()
        return cls(client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api),
                   client.CustomObjectsApi(api), dynamic.DynamicClient(api))


def _owned(items: Iterable[Any], uid: str) -> list[dict[str, Any]]:
    out = []
    for item in items:
        obj = item if isinstance(item, dict) else client.ApiClient().sanitize_for_serialization(item)
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("uid") == uid for o in owners):
            out.append(obj)
    return out


def _termination(pod: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(reason, message) of a Job pod's failed container, from its termination message when it has one."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if not terminated:
            continue
        if terminated.get("reason") in _OOM_REASONS:
            return "OutOfMemory", f"container {status.get('name')} exceeded its memory limit (exit {terminated.get('exitCode')})"
        text = (terminated.get("message") or "").strip()
        if text:
            try:
                payload = json.loads(text.splitlines()[-1])
                if isinstance(payload, dict) and payload.get("reason"):
                    return str(payload["reason"]), str(payload.get("message") or "")
            except ValueError:
                pass
        if terminated.get("exitCode"):
            tail = f": {text[-500:]}" if text else ""
            return terminated.get("reason") or "Error", f"exit code {terminated.get('exitCode')}{tail}"
    return None, None


def _job_pods(clients: Clients, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    pods = clients.core.list_namespaced_pod(job["metadata"]["namespace"],
                                            label_selector=f"job-name={job['metadata']['name']}").items
    return sorted((client.ApiClient().sanitize_for_serialization(p) for p in pods),
                  key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def _waiting_reason(clients: Clients, job: Mapping[str, Any]) -> str | None:
    """Why a Job's pod does not run yet (unschedulable: no node with a free GPU, ...), or None."""
    if (job.get("status") or {}).get("active", 0) == 0 or (job.get("status") or {}).get("ready"):
        return None
    for pod in _job_pods(clients, job):
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return f"its pod is not scheduled: {condition.get('message') or condition.get('reason')}"
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
                return f"its container waits: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return None


def _job_observation(clients: Clients, job: Mapping[str, Any]) -> JobObservation:
    name = job["metadata"]["name"]
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return JobObservation(name, "Complete")
    if "Failed" not in conditions:
        status = job.get("status") or {}
        return JobObservation(name, "Running", message=_waiting_reason(clients, job),
                              unstarted=not status.get("ready"))
    failed = conditions["Failed"]
    if failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return JobObservation(name, "Failed", "DeadlineExceeded",
                              f"ran past its deadline (activeDeadlineSeconds={deadline})")
    for pod in _job_pods(clients, job):
        reason, message = _termination(pod)
        if reason:
            return JobObservation(name, "Failed", reason, message)
    return JobObservation(name, "Failed", failed.get("reason") or "OptimizationFailed", failed.get("message"))


def _ready_reason_of(pod_ip: str, port: int, timeout: float) -> str | None:
    """What a model server that is not ready says about itself (GET /v2/health/ready answers 503 with its state
    and reason): only a refusal (an artifact that failed verification or loading) is reported; a server still
    loading, or one that cannot be reached (a NetworkPolicy of the user's), tells nothing."""
    # httpx, not urllib: urllib's global opener can be replaced by any library the operator imports.
    try:
        answer = httpx.get(f"http://{pod_ip}:{port}/v2/health/ready", timeout=timeout)
        body = answer.json() if answer.status_code == 503 else None
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(body, dict) and body.get("state") == "Refused" and body.get("reason"):
        return f"its server refused the artifact: {str(body['reason'])[:500]}"
    return None


def _unready_reason(clients: Clients, deployment: Mapping[str, Any], port: int, timeout: float = 0.5) -> str | None:
    """Why a Deployment's pods are not ready, from the first pod that can say: a container waiting in a crash
    loop (with its last termination message), or a running server that refused its artifact."""
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not selector:
        return None
    pods = clients.core.list_namespaced_pod(deployment["metadata"]["namespace"],
                                            label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))
    for item in pods.items:
        pod = client.ApiClient().sanitize_for_serialization(item)
        status = pod.get("status") or {}
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            continue
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("CrashLoopBackOff", "CreateContainerError", "ErrImagePull",
                                         "ImagePullBackOff", "CreateContainerConfigError"):
                last = ((container.get("lastState") or {}).get("terminated") or {}).get("message") or ""
                said = f": {last.strip().splitlines()[-1][:500]}" if last.strip() else ""
                return f"pod {pod['metadata']['name']} {waiting['reason']}{said}"
            if (container.get("state") or {}).get("running") and status.get("podIP"):
                why = _ready_reason_of(status["podIP"], port, timeout)
                if why:
                    return f"pod {pod['metadata']['name']}: {why}"
    return None


def _children(clients: Clients, cache: WatchCache | None, plural: str, namespace: str, model_label: str,
              uid: str) -> list[dict[str, Any]]:
    """A model's children of one kind: from the watch cache when it can answer, else listed from the API."""
    cached = cache.children(plural, namespace, model_label) if cache is not None else None
    if cached is not None:
        return _owned(cached, uid)
    selector = f"{LABEL_MODEL}={model_label}"
    listing = {JOBS: clients.batch.list_namespaced_job, DEPLOYMENTS: clients.apps.list_namespaced_deployment,
               SERVICES: clients.core.list_namespaced_service}[plural]
    return _owned(listing(namespace, label_selector=selector).items, uid)


def observe(clients: Clients, view: ResourceView, plans: list[JobPlan],
            read_run: Any, server_port: int = 8080, cache: WatchCache | None = None) -> Observed:
    label, ns = label_value(view.name), view.namespace
    jobs = _children(clients, cache, JOBS, ns, label, view.uid)
    deployments = _children(clients, cache, DEPLOYMENTS, ns, label, view.uid)
    services = _children(clients, cache, SERVICES, ns, label, view.uid)
    runs: dict[str, RunObservation] = {plan.job_name: read_run(plan) for plan in plans}
    seen_deployments = {}
    for d in deployments:
        meta, spec, status = d["metadata"], d.get("spec") or {}, d.get("status") or {}
        labels = meta.get("labels") or {}
        replicas = int(spec.get("replicas") or 0)
        current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0) and int(
            status.get("updatedReplicas") or 0) >= replicas
        annotations = meta.get("annotations") or {}
        seen_deployments[meta["name"]] = DeploymentObservation(
            name=meta["name"], revision=labels.get(LABEL_REVISION, ""), pool=labels.get(LABEL_POOL, ""),
            replicas=replicas, available=int(status.get("availableReplicas") or 0), current=current,
            variant=labels.get(LABEL_VARIANT, ""), variant_kind=annotations.get(ANNOTATION_VARIANT_KIND),
            drift_profiled=annotations.get(ANNOTATION_DRIFT_PROFILED) == "true",
            # Asked only of a Deployment whose pods stay unready: a healthy one costs no extra call.
            unready_reason=None if current and int(status.get("availableReplicas") or 0) >= replicas
            else _unready_reason(clients, d, server_port),
        )
    return Observed(
        jobs={j["metadata"]["name"]: _job_observation(clients, j) for j in jobs},
        runs=runs,
        deployments=seen_deployments,
        services=frozenset(s["metadata"]["name"] for s in services),
    )


def _resource(clients: Clients, obj: Mapping[str, Any]) -> Any:
    return clients.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


# What this process last applied to each child and the resourceVersion the API server answered with. While a
# child still has that version (nothing, not even its status, changed it since) and the planner wants the same
# body, a server-side apply would be a no-op, and is not sent: every reconcile applies every child, and a steady
# state must write nothing. Forgotten on restart (the first reconcile applies once), and when a child is gone.
_applied: dict[tuple[str, str, str, str], tuple[str, str]] = {}


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _version(answer: Any) -> str:
    """The resourceVersion of what the API server answered: the dynamic client's objects (camelCase), the typed
    client's (snake_case) or a dict; "" when there is none (never delivered by a watch: the object is then read
    from the API until one read confirms the cache)."""
    if isinstance(answer, Mapping):
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")
    meta = getattr(answer, "metadata", None)
    return str(getattr(meta, "resource_version", None) or getattr(meta, "resourceVersion", None) or "")


def _wrote(cache: WatchCache | None, kind: str, namespace: str, name: str, answer: Any, deleted: bool = False) -> None:
    plural = PLURAL_OF_KIND.get(kind)
    if cache is not None and plural is not None:
        cache.wrote(plural, namespace, name, None if deleted else _version(answer))


def apply_actions(clients: Clients, namespace: str, actions: Actions,
                  cache: WatchCache | None = None) -> list[tuple[str, str, str]]:
    """Create, apply, delete; returns (verb, kind, name) for each change actually made (for events). Each
    write is noted in the cache, so that the next reconcile reads the API until the watch has delivered it."""
    done: list[tuple[str, str, str]] = []
    for obj in actions.create:
        try:
            created = _resource(clients, obj).create(body=obj, namespace=namespace)
            _wrote(cache, obj["kind"], namespace, obj["metadata"]["name"], created)
            done.append(("Created", obj["kind"], obj["metadata"]["name"]))
        except ApiException as error:
            if error.status != 409:  # already there: created by an earlier reconcile
                raise
    for obj in actions.apply:
        resource = _resource(clients, obj)
        name = obj["metadata"]["name"]
        key = (obj["apiVersion"], obj["kind"], namespace, name)
        digest = _digest(obj)
        plural = PLURAL_OF_KIND.get(obj["kind"])
        known, cached = cache.lookup(plural, namespace, name) if cache is not None and plural else (False, None)
        if known and cached is not None and _applied.get(key) == (digest, cached["metadata"].get("resourceVersion")):
            continue  # the watch shows the version this body was applied to, unchanged since: nothing to send
        # Anything else (the cache behind, the child changed or absent) is checked against the API server, so a
        # child just created is not reported created twice, and a no-op apply is not sent.
        try:
            before = resource.get(name=name, namespace=namespace).metadata.resourceVersion
        except ApiException as error:
            if error.status != 404:
                raise
            before = None
            _applied.pop(key, None)
        if before is not None and _applied.get(key) == (digest, before):
            continue  # the same body onto the same object version: the apply would change nothing
        answer = resource.server_side_apply(body=obj, name=name, namespace=namespace, field_manager=FIELD_MANAGER,
                                            force_conflicts=True)
        after = answer.metadata.resourceVersion
        _applied[key] = (digest, after)
        _wrote(cache, obj["kind"], namespace, name, answer)
        if before is None:
            done.append(("Created", obj["kind"], name))
        elif before != after:
            done.append(("Updated", obj["kind"], name))
    for name, replicas in actions.scale:
        try:
            scaled = clients.apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})
            # The scale subresource answers with its Deployment's resourceVersion.
            _wrote(cache, "Deployment", namespace, name, scaled)
            done.append(("Scaled", "Deployment", f"{name} to {replicas}"))
        except ApiException as error:
            if error.status != 404:
                raise
    for weights in actions.routes:
        done += set_route_weights(clients, namespace, weights)
    for kind, name in actions.delete:
        api_version = {"Deployment": "apps/v1", "Job": "batch/v1"}.get(kind, "v1")  # a Job is rerun by deleting it
        _applied.pop((api_version, kind, namespace, name), None)
        _wrote(cache, kind, namespace, name, None, deleted=True)
        try:
            clients.dynamic.resources.get(api_version=api_version, kind=kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"})
            done.append(("Deleted", kind, name))
        except ApiException as error:
            if error.status != 404:
                raise
    return done


GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"


def route_rules(rules: list[dict[str, Any]], weights: RouteWeights, port: int = 80) -> list[dict[str, Any]]:
    """Every rule of an HTTPRoute with its backends replaced by the stable and canary Services at their
    weights (matches, filters and everything else in the rule stay as the user wrote them)."""
    backends = [
        {"group": "", "kind": "Service", "name": weights.stable_service, "port": port, "weight": weights.stable_weight},
        {"group": "", "kind": "Service", "name": weights.canary_service, "port": port, "weight": weights.canary_weight},
    ]
    return [{**rule, "backendRefs": backends} for rule in (rules or [{}])]


def set_route_weights(clients: Clients, namespace: str, weights: RouteWeights) -> list[tuple[str, str, str]]:
    """Write the weights into the HTTPRoute; ("Missing", ...) when it does not exist (the rollout goes on by
    the Services alone and the resource says so in an Event)."""
    try:
        route = clients.custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, namespace, "httproutes",
                                                            weights.route)
    except ApiException as error:
        if error.status == 404:
            return [("Missing", "HTTPRoute", weights.route)]
        raise
    rules = (route.get("spec") or {}).get("rules") or []
    wanted = route_rules(rules, weights)
    if wanted == rules:
        return []
    clients.custom.patch_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, namespace, "httproutes",
                                                  weights.route, {"spec": {"rules": wanted}})
    return [("Updated", "HTTPRoute", f"{weights.route} ({weights.stable_service}={weights.stable_weight}, "
                                     f"{weights.canary_service}={weights.canary_weight})")]


def post_event(clients: Clients, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event about the OptimizedModel, through the API directly: decisions are also taken on the rollout's
    wake-up thread, outside kopf's handler context where kopf.event() posts."""
    meta = obj["metadata"]
    now = datetime.now(UTC)
    body = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
                           "kind": obj.get("kind", "OptimizedModel"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": reason[:128], "message": message[:1024],
        "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
        "source": {"component": "optimodel"}, "reportingComponent": "optimodel",
    }
    try:
        clients.core.create_namespaced_event(meta["namespace"], body)
    except ApiException as error:
        if error.status not in (403, 404):  # the namespace is going away: nothing to tell
            raise


def read_model(clients: Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def model(clients: Clients, cache: WatchCache | None, namespace: str, name: str) -> dict[str, Any] | None:
    """The OptimizedModel as last delivered by the watch when that is not older than this process's last status
    patch of it (controller/cache.py), else from the API server; None when it does not exist."""
    if cache is not None:
        known, body = cache.lookup(MODELS, namespace, name)
        if known:
            return body
    body = read_model(clients, namespace, name)
    if cache is not None:
        if body is None:
            cache.gone(MODELS, namespace, name)
        cache.confirm(MODELS, namespace, name, body)
    return body


def patch_status(clients: Clients, namespace: str, name: str, patch: Mapping[str, Any],
                 cache: WatchCache | None = None) -> None:
    """Patch the status; the version answered is noted, so no reconcile plans from a cached model older than it."""
    patched = clients.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                                   {"status": patch})
    if cache is not None:
        # No version answered (never seen): "" is never delivered, so the model is read from the API until the
        # cache is confirmed current by one such read.
        cache.wrote(MODELS, namespace, name, _version(patched))
