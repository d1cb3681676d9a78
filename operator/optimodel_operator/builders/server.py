"""Per node pool: the model server Deployment of one revision, and the Services of the model."""

from __future__ import annotations

from collections.abc import Mapping

from optimodel_operator.api.nodepools import GPU_RESOURCE, NodePool
from optimodel_operator.api.spec import ArtifactStore
from optimodel_operator.builders.common import (
    Manifest,
    base_labels,
    host_path_volumes,
    metadata,
    restricted_security_context,
    store_credentials_env,
)
from optimodel_operator.planner.naming import (
    ANNOTATION_ARTIFACT_SHA256,
    ANNOTATION_DRIFT_PROFILED,
    ANNOTATION_MANIFEST,
    ANNOTATION_VARIANT_KIND,
    LABEL_MODEL,
    LABEL_POOL,
    LABEL_REVISION,
    LABEL_VARIANT,
    dns_label,
    label_value,
)
from optimodel_operator.planner.view import PlannerConfig, ResourceView

CACHE_DIR = "/var/lib/optimodel/server-cache"
SHUTDOWN_DELAY_S = 3


def deployment_name(view: ResourceView, pool: str, revision: str) -> str:
    # 63 characters at most: the ReplicaSet and pod names are derived from it.
    return dns_label(view.name, pool, revision[:8], limit=47)


def model_service_name(view: ResourceView) -> str:
    return dns_label(view.name)


def pool_service_name(view: ResourceView, pool: str) -> str:
    return dns_label(view.name, pool)


def pod_labels(view: ResourceView, pool: str, revision: str, variant: str) -> dict[str, str]:
    return {**base_labels(view, "server"), LABEL_POOL: label_value(pool), LABEL_REVISION: revision,
            LABEL_VARIANT: label_value(variant)}


def fault_env(faults: Mapping[str, str] | None) -> list[Manifest]:
    """The server's fault flags as environment variables (OPTIMODEL_SERVER_FAULT_*), from e.g.
    {"latency-ms": "150"}; only for tests and demos (annotation optimodel.io/inject-faults)."""
    return [{"name": "OPTIMODEL_SERVER_FAULT_" + key.upper().replace("-", "_"), "value": value}
            for key, value in sorted((faults or {}).items())]


def build_server_deployment(
    view: ResourceView, pool: NodePool, revision: str, variant: str, manifest_uri: str, sha256: str,
    config: PlannerConfig, *, replicas: int | None = None, variant_kind: str | None = None,
    faults: Mapping[str, str] | None = None, drift_profiled: bool = False, artifacts: ArtifactStore | None = None,
) -> Manifest:
    """`replicas`: the pool's replicas unless the rollout says otherwise (a canary's share, 0 when off
    traffic). `variant_kind`: source, quantize, convert, prune or distill (drift rollbacks read it back).
    `artifacts`: the spec's store, for the credentials the server reads an object store with."""
    labels = pod_labels(view, pool.name, revision, variant)
    selector = {k: labels[k] for k in (LABEL_MODEL, LABEL_POOL, LABEL_REVISION)}
    volumes, mounts = host_path_volumes([manifest_uri], prefix="store")
    volumes.append({"name": "cache", "emptyDir": {}})
    mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    resources: Manifest = {}
    if pool.resources:
        resources = pool.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
    if pool.gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = pool.gpus
        resources.setdefault("requests", {})[GPU_RESOURCE] = pool.gpus
    port = config.server_port
    container: Manifest = {
        "name": "server",
        "image": config.server_gpu_image if pool.execution_provider.needs_gpu else config.server_image,
        "args": [
            "--manifest", manifest_uri,
            "--model-name", view.name,
            "--revision", revision,
            "--pool", pool.name,
            "--port", str(port),
            "--cache-dir", CACHE_DIR,
            "--execution-provider", pool.execution_provider.value,
            # Drift gauges and prediction counts published every second, so an analysis window of a few
            # seconds sees them move (the default 5 s would leave short windows empty).
            "--drift-interval-s", "1",
            # On SIGTERM (a scale-down at a canary step, a rollback) the server turns not-ready at once and
            # keeps its listener open this long, while the endpoints and kube-proxy let go of it: without
            # it, connections routed to a pod that is going away were refused (seen at every step).
            "--shutdown-delay-s", str(SHUTDOWN_DELAY_S),
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Ready only once the artifact is verified (sha256) and loaded: the server answers 503 until then.
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 6, "initialDelaySeconds": 10},
        "volumeMounts": mounts,
        "securityContext": restricted_security_context(),
    }
    if resources:
        container["resources"] = resources
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pool.tolerations]
    env = [*store_credentials_env(artifacts), *fault_env(faults)]
    if env:
        container["env"] = env
    annotations = {ANNOTATION_MANIFEST: manifest_uri, ANNOTATION_ARTIFACT_SHA256: sha256}
    if variant_kind:
        annotations[ANNOTATION_VARIANT_KIND] = variant_kind
    annotations[ANNOTATION_DRIFT_PROFILED] = "true" if drift_profiled else "false"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(view, deployment_name(view, pool.name, revision), labels, annotations),
        "spec": {
            "replicas": pool.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {**annotations, "prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": pod_spec,
            },
        },
    }


def _service(view: ResourceView, name: str, selector: dict[str, str], labels: dict[str, str],
             config: PlannerConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(view, name, labels),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_model_service(view: ResourceView, config: PlannerConfig) -> Manifest:
    """One Service for the model across every pool and revision that is ready."""
    labels = base_labels(view, "server")
    return _service(view, model_service_name(view), {LABEL_MODEL: labels[LABEL_MODEL], "app.kubernetes.io/component": "server"},
                    labels, config)


def build_pool_service(view: ResourceView, pool: str, config: PlannerConfig) -> Manifest:
    labels = {**base_labels(view, "server"), LABEL_POOL: label_value(pool)}
    selector = {LABEL_MODEL: labels[LABEL_MODEL], LABEL_POOL: labels[LABEL_POOL], "app.kubernetes.io/component": "server"}
    return _service(view, pool_service_name(view, pool), selector, labels, config)


def build_revision_service(view: ResourceView, name: str, revision: str, config: PlannerConfig) -> Manifest:
    """A Service of one revision across its pools: the stable or canary backend of a Gateway API HTTPRoute."""
    labels = base_labels(view, "server")
    selector = {LABEL_MODEL: labels[LABEL_MODEL], LABEL_REVISION: revision, "app.kubernetes.io/component": "server"}
    return _service(view, name, selector, labels, config)
