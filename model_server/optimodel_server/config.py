"""Server configuration (one validated object, filled from flags and environment by ``cli``) and the
pure helpers that derive defaults from the container: the CPU limit from cgroup files."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ExecutionProviderName = Literal["cpu", "cuda", "tensorrt"]
InlineMode = Literal["auto", "always", "never"]

MAX_FAULT_LATENCY_MS = 600_000.0


class FaultConfig(BaseModel):
    """Fault injection for end-to-end tests; every field's default means "off"."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    added_latency_ms: float = Field(0.0, ge=0.0, le=MAX_FAULT_LATENCY_MS, description="Sleep added to every inference request.")
    error_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of inference requests answered with a 500.")
    input_shift: float = Field(0.0, description="Constant added to every floating-point input before inference.")
    output_bias: float = Field(0.0, description=(
        "Constant added to the first class's score after inference: predictions lean to class 0, from inputs "
        "that do not drift (a permutation of classes would not do: on balanced traffic the class histogram "
        "stays the same)."))
    seed: int | None = Field(None, description="Seed of the error draw, for reproducible tests.")

    @property
    def enabled(self) -> bool:
        return self.added_latency_ms > 0 or self.error_ratio > 0 or self.input_shift != 0 or self.output_bias != 0


class ServerConfig(BaseModel):
    """Everything the server needs to start. Field descriptions double as ``--help`` text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest_uri: str = Field(..., min_length=1, description="URI of the artifact manifest (path, file://, any fsspec URL).")
    model_name: str | None = Field(None, description="Name served under /v2/models/{name}; defaults to the manifest's.")
    revision: str = Field("0", min_length=1, description="Revision label (the operator's revision), on every metric.")
    pool: str = Field("default", min_length=1, description="Node pool label, on every metric.")
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    cache_dir: Path = Field(Path("/tmp/optimodel-server"), description="Where the verified blob is copied.")
    execution_provider: ExecutionProviderName | None = Field(
        None, description="cpu, cuda or tensorrt; defaults to the manifest's intended provider, else cpu."
    )
    intra_op_threads: int | None = Field(None, ge=1, le=1024, description="Defaults to the container's CPU limit.")
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0, description="0: batch only what is already queued.")
    max_queue: int = Field(256, ge=1, le=1_000_000, description="Queued requests beyond this are answered 503.")
    max_inflight: int = Field(1024, ge=1, le=1_000_000, description="Requests in flight beyond this are answered 429.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    inline_inference: InlineMode = Field(
        "auto", description="Run inference on the event loop (auto: while a batch takes under 2 ms) or in a worker thread."
    )
    drift_enabled: bool = True
    drift_window: int = Field(10_000, ge=100, description="Rows in the sliding drift window.")
    drift_interval_s: float = Field(5.0, gt=0.0, description="How often PSI gauges are recomputed.")
    drift_max_rows_per_interval: int = Field(2_000, ge=1, description="Sampling cap between two updates.")
    shutdown_delay_s: float = Field(0.0, ge=0.0, le=300.0, description="Not-ready time before draining on SIGTERM.")
    graceful_timeout_s: float = Field(20.0, ge=0.0, le=600.0, description="Longest drain of in-flight requests.")
    fetch_retry_initial_s: float = Field(
        1.0, gt=0.0, le=300.0, description="First wait before fetching again from an unreachable artifact store."
    )
    fetch_retry_max_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest wait between fetches from an unreachable store (the wait doubles up to it)."
    )
    log_level: str = "info"
    faults: FaultConfig = FaultConfig()
    fault_control: bool = Field(
        False, description="Serve GET/PUT /v2/faults to read and change fault injection at runtime (tests, benchmarks)."
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> ServerConfig:
        if self.fetch_retry_max_s < self.fetch_retry_initial_s:
            raise ValueError(
                f"fetch_retry_max_s ({self.fetch_retry_max_s}) must be at least fetch_retry_initial_s "
                f"({self.fetch_retry_initial_s})"
            )
        return self


def cgroup_cpu_limit(cpu_max: str | None = None, cfs_quota: str | None = None, cfs_period: str | None = None) -> float | None:
    """CPUs allowed by cgroup v2 (`cpu.max`, "QUOTA PERIOD" or "max PERIOD") or v1 (quota/period files).

    Returns None when there is no limit. Pure: callers pass file contents.
    """
    if cpu_max is not None:
        parts = cpu_max.split()
        if len(parts) == 2 and parts[0] != "max":
            quota, period = float(parts[0]), float(parts[1])
            if quota > 0 and period > 0:
                return quota / period
        return None
    if cfs_quota is not None and cfs_period is not None:
        quota, period = float(cfs_quota.strip()), float(cfs_period.strip())
        if quota > 0 and period > 0:
            return quota / period
    return None


def threads_for(limit: float | None, affinity: int) -> int:
    """Intra-op threads for a CPU limit: never more than the cores we may run on, never fewer than one.

    A fractional limit rounds down: a 1.5-CPU pod with two spinning threads gets throttled.
    """
    if limit is None:
        return max(1, affinity)
    return max(1, min(affinity, math.floor(limit)))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def container_cpu_threads(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Threads to give ONNX Runtime in this container (cgroup limit, bounded by CPU affinity)."""
    limit = cgroup_cpu_limit(cpu_max=_read(cgroup_root / "cpu.max"))
    if limit is None:
        limit = cgroup_cpu_limit(
            cfs_quota=_read(cgroup_root / "cpu" / "cpu.cfs_quota_us"),
            cfs_period=_read(cgroup_root / "cpu" / "cpu.cfs_period_us"),
        )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return threads_for(limit, affinity)
