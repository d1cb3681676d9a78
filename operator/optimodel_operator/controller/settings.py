"""The operator's configuration, from its environment (the Deployment sets it from a ConfigMap).

| variable | meaning | default |
|---|---|---|
| OPTIMODEL_DEFAULT_ARTIFACTS | artifact store of resources that name none | none (such resources are refused) |
| OPTIMODEL_PROMETHEUS_URL | Prometheus the rollout analysis queries | none |
| OPTIMODEL_JOB_IMAGE | image of the optimization Jobs | optimodel/jobs:dev |
| OPTIMODEL_SERVER_IMAGE | image of the model servers on CPU pools | optimodel/server:dev |
| OPTIMODEL_SERVER_GPU_IMAGE | image of the model servers on pools with a cuda or tensorrt provider | optimodel/server-gpu:dev |
| OPTIMODEL_JOB_CPU / OPTIMODEL_JOB_MEMORY | request = limit of each optimization Job | 1 / 4Gi |
| OPTIMODEL_JOB_DEADLINE_SECONDS | activeDeadlineSeconds of each optimization Job | 3600 |
| OPTIMODEL_JOB_BACKOFF_LIMIT | backoffLimit of each optimization Job | 1 |
| OPTIMODEL_ANALYSIS_MIN_WINDOW_SECONDS | shortest PromQL window of an analysis (a few scrape intervals) | 5 |
| OPTIMODEL_PROMETHEUS_TIMEOUT_SECONDS | bound on each query to Prometheus | 3 |
"""

from __future__ import annotations

import os

from optimodel_operator.planner.view import PlannerConfig

ARTIFACTS_ENV = "OPTIMODEL_DEFAULT_ARTIFACTS"
PROMETHEUS_ENV = "OPTIMODEL_PROMETHEUS_URL"


def planner_config() -> PlannerConfig:
    env = os.environ
    defaults = PlannerConfig()
    return PlannerConfig(
        default_artifacts_uri=env.get(ARTIFACTS_ENV) or None,
        job_image=env.get("OPTIMODEL_JOB_IMAGE") or defaults.job_image,
        server_image=env.get("OPTIMODEL_SERVER_IMAGE") or defaults.server_image,
        server_gpu_image=env.get("OPTIMODEL_SERVER_GPU_IMAGE") or defaults.server_gpu_image,
        job_cpu=env.get("OPTIMODEL_JOB_CPU") or defaults.job_cpu,
        job_memory=env.get("OPTIMODEL_JOB_MEMORY") or defaults.job_memory,
        job_deadline_seconds=int(env.get("OPTIMODEL_JOB_DEADLINE_SECONDS") or defaults.job_deadline_seconds),
        job_backoff_limit=int(env.get("OPTIMODEL_JOB_BACKOFF_LIMIT") or defaults.job_backoff_limit),
        analysis_min_window_seconds=int(env.get("OPTIMODEL_ANALYSIS_MIN_WINDOW_SECONDS")
                                        or defaults.analysis_min_window_seconds),
    )


def prometheus_url() -> str | None:
    return os.environ.get(PROMETHEUS_ENV) or None


def prometheus_timeout_s() -> float:
    return float(os.environ.get("OPTIMODEL_PROMETHEUS_TIMEOUT_SECONDS") or 3)
