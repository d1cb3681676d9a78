"""Pure configuration decisions: CPU threads from cgroup limits, execution provider plans and their
visible fallback, fault-injection draws."""

from __future__ import annotations

import random

import numpy as np
import pytest

from optimodel_server.config import FaultConfig, cgroup_cpu_limit, threads_for
from optimodel_server.faults import FaultInjector
from optimodel_server.providers import normalise_provider, plan_from_session, plan_providers


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cpu_max": "200000 100000\n"}, 2.0),
        ({"cpu_max": "150000 100000"}, 1.5),
        ({"cpu_max": "max 100000"}, None),
        ({"cfs_quota": "50000", "cfs_period": "100000"}, 0.5),
        ({"cfs_quota": "-1", "cfs_period": "100000"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(kwargs: dict, expected: float | None) -> None:
    assert cgroup_cpu_limit(**kwargs) == expected


@pytest.mark.parametrize(
    ("limit", "affinity", "threads"),
    [(None, 8, 8), (2.0, 8, 2), (1.5, 8, 1), (0.5, 8, 1), (16.0, 4, 4)],
)
def test_threads_follow_the_cpu_limit_within_affinity(limit: float | None, affinity: int, threads: int) -> None:
    assert threads_for(limit, affinity) == threads


def test_cpu_plan_needs_nothing() -> None:
    plan = plan_providers("cpu", ["CPUExecutionProvider"])
    assert plan.providers == ["CPUExecutionProvider"] and not plan.fallback


def test_asking_for_cuda_without_it_is_a_visible_fallback() -> None:
    plan = plan_providers("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert plan.used == "cpu" and plan.fallback
    assert "cuda was asked for but is not available" in plan.describe()


def test_tensorrt_falls_back_to_cuda_then_cpu() -> None:
    plan = plan_providers("TensorrtExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert plan.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert plan.used == "cuda" and plan.fallback
    full = plan_providers("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert full.used == "tensorrt" and not full.fallback


def test_a_session_that_silently_dropped_cuda_counts_as_fallback() -> None:
    plan = plan_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not plan.fallback
    assert plan_from_session(plan, ["CPUExecutionProvider"]).fallback


def test_unknown_provider_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        normalise_provider("rocm")


def test_fault_injection_is_off_by_default_and_draws_its_ratio() -> None:
    assert not FaultConfig().enabled
    injector = FaultInjector(FaultConfig(error_ratio=0.25, added_latency_ms=5), rng=random.Random(3))
    draws = [injector.decide() for _ in range(4000)]
    assert 0.2 < sum(d.fail for d in draws) / len(draws) < 0.3
    assert draws[0].delay_s == 0.005


def test_input_shift_moves_float_inputs_only() -> None:
    injector = FaultInjector(FaultConfig(input_shift=1.5))
    shifted = injector.shift_inputs({"x": np.zeros(2, np.float32), "ids": np.zeros(2, np.int64)})
    assert shifted["x"].tolist() == [1.5, 1.5] and shifted["x"].dtype == np.float32
    assert shifted["ids"].tolist() == [0, 0]
