"""Fault injection for end-to-end tests of the rollout: added latency, an error ratio, shifted inputs.

Off unless configured (every default is "no fault"). The decisions are plain functions of the config
and an injected random source, so tests can pin them.

The config is one frozen object that :meth:`FaultInjector.reconfigure` replaces whole (runtime fault
control, ``PUT /v2/faults``): a request takes its decision from one config, so it sees the old settings
or the new ones, never a mix. The wire form of that control (``parse_fault_update``, ``fault_wire``) is
here too, hand-checked so every refusal names the field.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import MAX_FAULT_LATENCY_MS, FaultConfig
from .errors import InvalidInput


@dataclass(frozen=True, slots=True)
class FaultDecision:
    delay_s: float
    fail: bool
    input_shift: float = 0.0


class FaultInjector:
    def __init__(self, config: FaultConfig, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = rng or random.Random(config.seed)
        # ``config`` first, then ``enabled``: a reader that sees a stale ``enabled`` either skips faults
        # (the old, off config) or takes a decision from the new config, which is "no fault" when off.
        self.config = config
        self.enabled = config.enabled

    def reconfigure(self, config: FaultConfig) -> FaultConfig:
        """Replace the live settings for the requests that decide from now on; returns the old ones.

        The random source is kept (a seeded run stays reproducible across changes).
        """
        return self.update(lambda _: config)[0]

    def update(self, change: Callable[[FaultConfig], FaultConfig]) -> tuple[FaultConfig, FaultConfig]:
        """(old, new): ``change`` applied to the live config, read and replaced under one lock, so two
        concurrent partial updates do not lose one another. An exception from ``change`` changes nothing."""
        with self._lock:
            old = self.config
            new = change(old)
            self.config = new
            self.enabled = new.enabled
        return old, new

    def decide(self) -> FaultDecision:
        """What to do to this request (everything from one config, read once)."""
        config = self.config
        fail = config.error_ratio > 0 and self._rng.random() < config.error_ratio
        return FaultDecision(delay_s=config.added_latency_ms / 1000.0, fail=fail, input_shift=config.input_shift)

    def shift_inputs(self, inputs: dict[str, np.ndarray], shift: float | None = None) -> dict[str, np.ndarray]:
        """Add ``shift`` (default: the configured constant) to floating-point inputs (integer inputs such
        as token ids are left alone)."""
        if shift is None:
            shift = self.config.input_shift
        if shift == 0:
            return inputs
        return {
            name: (array + np.asarray(shift, dtype=array.dtype)) if array.dtype.kind == "f" else array
            for name, array in inputs.items()
        }


# ---- wire form of runtime fault control (GET / PUT /v2/faults) -------------------------------------

# wire key -> FaultConfig field
WIRE_FIELDS: dict[str, str] = {"latencyMs": "added_latency_ms", "errorRatio": "error_ratio", "inputShift": "input_shift",
                               "outputBias": "output_bias"}


def fault_wire(config: FaultConfig) -> dict[str, float]:
    """``{"latencyMs": ..., "errorRatio": ..., "inputShift": ...}`` (the seed is a startup setting only)."""
    return {key: float(getattr(config, name)) for key, name in WIRE_FIELDS.items()}


def _number(key: str, value: Any) -> float:
    # bool is an int in Python, not a number on the wire.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{key} must be a number, got {json.dumps(value)[:80]}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{key} must be finite, got {value}")
    return number


def parse_fault_update(body: bytes, current: FaultConfig) -> FaultConfig:
    """The config a ``PUT /v2/faults`` body asks for: ``current`` with the keys given replaced.

    Any subset of ``latencyMs`` (0 to 600,000), ``errorRatio`` (0 to 1) and ``inputShift`` (finite);
    anything else is an :class:`InvalidInput` naming the field.
    """
    try:
        # The standard parser (a tiny body, off the hot path): it reads NaN, Infinity and 1e400, so
        # their refusal below names the field instead of a bare parse error.
        document = json.loads(body)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidInput(f"body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidInput(f"body must be a JSON object with any of {', '.join(WIRE_FIELDS)}")
    unknown = sorted(set(document) - set(WIRE_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; the fields are {', '.join(WIRE_FIELDS)}")
    values = {key: _number(key, value) for key, value in document.items()}
    latency = values.get("latencyMs")
    if latency is not None and not 0 <= latency <= MAX_FAULT_LATENCY_MS:
        raise InvalidInput(f"latencyMs must be between 0 and {MAX_FAULT_LATENCY_MS:g}, got {latency:g}")
    ratio = values.get("errorRatio")
    if ratio is not None and not 0 <= ratio <= 1:
        raise InvalidInput(f"errorRatio must be between 0 and 1, got {ratio:g}")
    update = {WIRE_FIELDS[key]: value for key, value in values.items()}
    # Validated again by the model itself (one source of truth for the bounds).
    return FaultConfig(**{**current.model_dump(), **update})


def bias_outputs(outputs: dict[str, np.ndarray], bias: float) -> dict[str, np.ndarray]:
    """``bias`` added to the first class's score of every floating-point output of two or more axes (its
    predictions lean to class 0); other outputs are left alone."""
    if bias == 0:
        return outputs
    out = {}
    for name, array in outputs.items():
        if array.dtype.kind == "f" and array.ndim >= 2:
            array = array.copy()
            array[..., 0] += np.asarray(bias, dtype=array.dtype)
        out[name] = array
    return out
