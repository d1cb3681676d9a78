"""The optimization Job of one execution provider."""

from __future__ import annotations

import json

from optimodel_operator.api.nodepools import GPU_RESOURCE
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.builders.common import (
    Manifest,
    base_labels,
    host_path_volumes,
    metadata,
    restricted_security_context,
    store_credentials_env,
)
from optimodel_operator.planner.naming import ANNOTATION_CONFIG_HASH, LABEL_PROVIDER, LABEL_REVISION
from optimodel_operator.planner.revision import JOB_WORK_DIR, JobPlan
from optimodel_operator.planner.view import PlannerConfig, ResourceView

TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def _data_uris(spec: OptimizedModelSpec) -> list[str]:
    uris = [spec.source.uri, spec.evaluation.dataset]
    if spec.source.code_path:
        uris.append(spec.source.code_path)  # the factory's module: read by the Job like the model
    for optimization in spec.optimizations:
        if optimization.quantize and optimization.quantize.calibration:
            uris.append(optimization.quantize.calibration.dataset)
        if optimization.prune and optimization.prune.dataset:
            uris.append(optimization.prune.dataset)
        if optimization.distill:
            uris.append(optimization.distill.dataset)
    return uris


def build_job(view: ResourceView, spec: OptimizedModelSpec, plan: JobPlan, revision: str, store: str,
              config: PlannerConfig) -> Manifest:
    labels = {**base_labels(view, "optimizer"), LABEL_REVISION: revision, LABEL_PROVIDER: plan.provider}
    pool = plan.pool
    volumes, mounts = host_path_volumes(_data_uris(spec), writable=[store])
    volumes.append({"name": "work", "emptyDir": {}})
    mounts.append({"name": "work", "mountPath": JOB_WORK_DIR})
    resources: Manifest = {
        "requests": {"cpu": config.job_cpu, "memory": config.job_memory},
        "limits": {"cpu": config.job_cpu, "memory": config.job_memory},
    }
    if pool.gpus:
        resources["requests"][GPU_RESOURCE] = pool.gpus
        resources["limits"][GPU_RESOURCE] = pool.gpus
    env = [{"name": "HOME", "value": JOB_WORK_DIR}, {"name": "TMPDIR", "value": JOB_WORK_DIR},
           *store_credentials_env(spec.artifacts)]
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the Job talks to the store, never to the API server
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "optimize",
            "image": config.job_image,
            "args": ["--config", json.dumps(plan.config, sort_keys=True, separators=(",", ":"))],
            "env": env,
            "resources": resources,
            "volumeMounts": mounts,
            "terminationMessagePath": TERMINATION_MESSAGE_PATH,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": restricted_security_context(),
        }],
        "volumes": volumes,
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pool.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(view, plan.job_name, labels, {ANNOTATION_CONFIG_HASH: plan.config_hash}),
        "spec": {
            "backoffLimit": config.job_backoff_limit,
            "activeDeadlineSeconds": config.job_deadline_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
