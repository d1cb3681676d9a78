"""ONNX Runtime sessions: execution providers for a pool, thread counts from the CPU limit, inference.

Which provider a pool asks for and what it actually got are both recorded: when CUDA or TensorRT is
not present the variant is measured on the CPU and the result says so (``fallback``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimodel_jobs.datasets import Dataset

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class ProviderChoice:
    requested: str
    providers: list[str]
    fallback: str | None  # why the requested provider is not the one used, None when it is

    @property
    def effective(self) -> str:
        return self.providers[0]


def choose_providers(requested: str, available: list[str] | None = None) -> ProviderChoice:
    """Pure: the providers to use for a pool's ``provider`` given what this ONNX Runtime build has."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    wanted = PROVIDERS[requested]
    usable = [p for p in wanted if p in available]
    fallback = None
    if usable[0] != wanted[0]:
        fallback = f"{wanted[0]} is not available here (have: {', '.join(available)}); measured on {usable[0]}"
    return ProviderChoice(requested, usable, fallback)


def cpu_limit_from_environment() -> float:
    """The pod's CPU limit: OPTIMODEL_CPU_LIMIT, else the cgroup quota (v2, then v1), else the CPU count."""
    if value := os.environ.get("OPTIMODEL_CPU_LIMIT"):
        return float(value)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_v1 = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_v1 = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_v1 > 0:
            return quota_v1 / period_v1
    except (OSError, ValueError):
        pass
    return float(len(os.sched_getaffinity(0)))


def threads_for(cpu_limit: float) -> int:
    """Intra-op threads for a CPU limit: never more threads than whole CPUs (throttling), at least one."""
    return max(1, math.floor(cpu_limit + 1e-9))


def make_session(model: Path, providers: list[str], threads: int, optimize: bool = True) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model), options, providers=providers)


def predict(model: Path, data: Dataset, threads: int, batch_size: int = 128, output_index: int = 0) -> np.ndarray:
    """The model's first output over the whole dataset, on the CPU (accuracy does not depend on the pool)."""
    session = make_session(model, ["CPUExecutionProvider"], threads)
    names = [i.name for i in session.get_inputs()]  # type: ignore[attr-defined]
    outputs = []
    for batch in data.batches(batch_size):
        outputs.append(session.run(None, {n: batch[n] for n in names})[output_index])  # type: ignore[attr-defined]
    return np.concatenate(outputs, axis=0)
