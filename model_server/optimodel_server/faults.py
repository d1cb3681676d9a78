"""Fault injection for end-to-end tests of the rollout: added latency, an error ratio, shifted inputs.

Off unless configured (every default is "no fault"). The decisions are plain functions of the config
and an injected random source, so tests can pin them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .config import FaultConfig


@dataclass(frozen=True)
class FaultDecision:
    delay_s: float
    fail: bool


class FaultInjector:
    def __init__(self, config: FaultConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.enabled = config.enabled
        self._rng = rng or random.Random(config.seed)

    def decide(self) -> FaultDecision:
        """What to do to this request."""
        fail = self.config.error_ratio > 0 and self._rng.random() < self.config.error_ratio
        return FaultDecision(delay_s=self.config.added_latency_ms / 1000.0, fail=fail)

    def shift_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the configured constant to floating-point inputs (integer inputs such as token ids are left alone)."""
        shift = self.config.input_shift
        if shift == 0:
            return inputs
        return {
            name: (array + np.asarray(shift, dtype=array.dtype)) if array.dtype.kind == "f" else array
            for name, array in inputs.items()
        }
