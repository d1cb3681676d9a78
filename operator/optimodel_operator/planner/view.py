"""The plain data the planner reads from one OptimizedModel object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ResourceView:
    """What the planner needs of the object as the API server returned it."""

    name: str
    namespace: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any] = field(default_factory=dict)
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ResourceView:
        metadata = body.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            generation=int(metadata.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            uid=str(metadata.get("uid", "")),
            annotations=dict(metadata.get("annotations") or {}),
        )


@dataclass(frozen=True)
class PlannerConfig:
    """Operator-wide settings the decisions depend on (the operator's configuration)."""

    default_artifacts_uri: str | None = None
    job_image: str = "optimodel/jobs:dev"
    server_image: str = "optimodel/server:dev"
    server_gpu_image: str = "optimodel/server-gpu:dev"
    """Image of servers on pools whose execution provider needs a GPU (onnxruntime-gpu instead of onnxruntime)."""
    job_cpu: str = "1"
    """CPU request and limit of an optimization Job (its latency figures are measured under it)."""
    job_memory: str = "4Gi"
    job_deadline_seconds: int = 3600
    """activeDeadlineSeconds of an optimization Job."""
    job_backoff_limit: int = 1
    job_retry_limit: int = 3
    """Reruns of a Job that failed for a transient reason (planner.retry); 0: never rerun by itself."""
    job_retry_backoff_seconds: int = 30
    """Wait before the first rerun; doubled before each next one."""
    server_port: int = 8080
    analysis_min_window_seconds: int = 5
    """Shortest PromQL window an analysis reads (rate() needs a few scrapes in it)."""
