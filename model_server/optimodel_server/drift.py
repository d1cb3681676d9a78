"""Drift: PSI of live inputs and outputs against the artifact's reference profile, off the hot path.

The request path only hands each finished batch to :meth:`DriftMonitor.observe`, which keeps a
reference to the arrays (no copy, no maths) and, past a per-interval cap, keeps a random sample of
batches (reservoir sampling), so its cost per request is constant. Every ``interval`` a background
task bins what was kept (the shared :func:`bin_counts`), adds the counts to a sliding window of rows,
and recomputes the PSI gauges with the shared :func:`population_stability_index`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from optimodel_contracts.artifacts import DriftReference, FeatureProfile, bin_counts, extract_feature
from optimodel_contracts.artifacts import population_stability_index

log = logging.getLogger(__name__)

# Input features binned between two yields to the event loop (each is ~0.1 ms for 2,000 rows).
FEATURES_PER_STEP = 8
# Sampled batches stacked per step of the cooperative update (~0.2 ms for one-row batches).
BATCHES_PER_STEP = 128
# Input features whose PSI is computed per step (~12 µs each).
PSI_FEATURES_PER_STEP = 16


@dataclass(slots=True)
class _Chunk:
    rows: int
    inputs: list[np.ndarray]  # per input feature: counts per bin
    output: np.ndarray


def output_values(outputs: np.ndarray, profile: FeatureProfile, task: str) -> np.ndarray:
    """The per-row values the output profile is about: the predicted class for classifiers (argmax over
    the last axis of scores, or the value itself when the model emits labels), else the prediction."""
    array = np.asarray(outputs)
    if task == "classification":
        if array.dtype.kind in "iub" or array.ndim == 1:
            return array.reshape(array.shape[0], -1)[:, 0].astype(np.float64)
        flat = array.reshape(array.shape[0], -1)
        return np.argmax(flat, axis=1).astype(np.float64)
    return extract_feature(array, profile)


class DriftWindow:
    """Bin counts over the last ``window_rows`` rows, in chunks; PSI per feature and for the output."""

    def __init__(self, reference: DriftReference, window_rows: int) -> None:
        self.reference = reference
        self.window_rows = window_rows
        self._chunks: deque[_Chunk] = deque()
        self._input_totals = [np.zeros(len(p.edges) + 1, dtype=np.int64) for p in reference.inputs]
        self._output_total = np.zeros(len(reference.output.edges) + 1, dtype=np.int64)
        self.rows = 0

    def add(self, input_counts: list[np.ndarray], output_counts: np.ndarray, rows: int) -> None:
        self._chunks.append(_Chunk(rows, input_counts, output_counts))
        for total, counts in zip(self._input_totals, input_counts):
            total += counts
        self._output_total += output_counts
        self.rows += rows
        # Drop whole chunks while the rest still fills the window.
        while self._chunks and self.rows - self._chunks[0].rows >= self.window_rows:
            old = self._chunks.popleft()
            for total, counts in zip(self._input_totals, old.inputs):
                total -= counts
            self._output_total -= old.output
            self.rows -= old.rows

    def psi(self) -> tuple[dict[str, float], float] | None:
        """(PSI per input feature, output PSI), or None while the window is empty (no data is not no drift)."""
        if self.rows == 0:
            return None
        return self.feature_psi(0, len(self.reference.inputs)), self.output_psi()

    def feature_psi(self, start: int, stop: int) -> dict[str, float]:
        """PSI of input features [start, stop) that have counts (so the update can compute it in steps)."""
        return {
            profile.name: population_stability_index(profile.reference, total)
            for profile, total in zip(self.reference.inputs[start:stop], self._input_totals[start:stop])
            if total.sum() > 0
        }

    def output_psi(self) -> float:
        return population_stability_index(self.reference.output.reference, self._output_total)


def count_input(profile: FeatureProfile, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Bin counts of one input feature over a batch. Pure."""
    tensor = feeds.get(profile.tensor or next(iter(feeds)))
    if tensor is None:
        return np.zeros(len(profile.edges) + 1, dtype=np.int64)
    return bin_counts(extract_feature(tensor, profile), profile.edges)


def count_output(reference: DriftReference, task: str, output: np.ndarray) -> np.ndarray:
    return bin_counts(output_values(output, reference.output, task), reference.output.edges)


def count_batch(
    reference: DriftReference, task: str, output_name: str, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Bin counts of one (concatenated) batch for every profile. Pure."""
    rows = outputs[output_name].shape[0]
    input_counts = [count_input(profile, feeds) for profile in reference.inputs]
    return input_counts, count_output(reference, task, outputs[output_name]), rows


def _stack(
    kept: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Concatenate sampled batches whose tensors have the same per-row shapes, so that binning runs once
    per feature over all rows (per-batch binning of thousands of one-row batches took hundreds of ms)."""
    groups: dict[tuple, list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]] = {}
    for feeds, outputs in kept:
        key = tuple((n, a.shape[1:]) for n, a in feeds.items()) + tuple((n, a.shape[1:]) for n, a in outputs.items())
        groups.setdefault(key, []).append((feeds, outputs))
    stacked = []
    for members in groups.values():
        if len(members) == 1:
            stacked.append(members[0])
            continue
        feeds = {name: np.concatenate([m[0][name] for m in members]) for name in members[0][0]}
        outputs = {name: np.concatenate([m[1][name] for m in members]) for name in members[0][1]}
        stacked.append((feeds, outputs))
    return stacked


class DriftMonitor:
    """Samples finished batches and keeps the drift gauges up to date from a background task."""

    def __init__(
        self,
        reference: DriftReference,
        task: str,
        output_name: str,
        *,
        window_rows: int,
        interval_s: float,
        max_rows_per_interval: int,
        publish: Callable[[dict[str, float], float, int], None],
        rng: random.Random | None = None,
        count_outputs: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.reference = reference
        self.task = task
        self.output_name = output_name
        self.window = DriftWindow(reference, window_rows)
        self.interval_s = interval_s
        self.max_rows = max_rows_per_interval
        self._publish = publish
        # Output bin counts of every chunk folded into the window (the revision-vs-revision comparison).
        self._count_outputs = count_outputs
        self._rng = rng or random.Random()
        self._kept: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        self._kept_rows = 0
        self._seen_batches = 0
        self._task: asyncio.Task | None = None
        self._broken = False

    def observe(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Called by the batcher after each batch: O(1), no maths, no copies."""
        self._seen_batches += 1
        if self._kept_rows < self.max_rows:
            self._kept.append((feeds, outputs))
            self._kept_rows += next(iter(outputs.values())).shape[0]
            return
        # Reservoir sampling over batches: every batch of the interval is equally likely to be kept.
        slot = self._rng.randrange(self._seen_batches)
        if slot < len(self._kept):
            self._kept[slot] = (feeds, outputs)

    def _add(self, input_counts: list[np.ndarray], output_counts: np.ndarray, rows: int) -> None:
        self.window.add(input_counts, output_counts, rows)
        if self._count_outputs is not None:
            self._count_outputs(output_counts)

    def _take(self) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        kept, self._kept, self._kept_rows, self._seen_batches = self._kept, [], 0, 0
        return _stack(kept)

    def _publish_window(self) -> tuple[dict[str, float], float] | None:
        result = self.window.psi()
        if result is not None:
            per_feature, output = result
            self._publish(per_feature, output, self.window.rows)
        return result

    def update(self) -> tuple[dict[str, float], float] | None:
        """Fold what was sampled into the window and recompute PSI, in one go (tests, shutdown)."""
        for feeds, outputs in self._take():
            input_counts, output_counts, rows = count_batch(self.reference, self.task, self.output_name, feeds, outputs)
            self._add(input_counts, output_counts, rows)
        return self._publish_window()

    async def update_cooperatively(self) -> tuple[dict[str, float], float] | None:
        """The same as :meth:`update`, yielding to the event loop between small steps (stacking a few
        hundred sampled batches, binning a few features), so that the monitor never holds requests up for
        more than a fraction of a millisecond (one 3.6 ms stack of 2,000 batches cost ~1 ms of c1 p99)."""
        kept, self._kept, self._kept_rows, self._seen_batches = self._kept, [], 0, 0
        # Slices of sampled batches, each stacked and binned in short steps: binning all rows at once
        # makes fewer but longer steps, and the longest step is what a waiting request feels (measured:
        # c1 p99 ~0.85 ms stacking everything first, ~0.6 ms in slices, with PSI every second).
        for start in range(0, len(kept), BATCHES_PER_STEP):
            for feeds, outputs in _stack(kept[start:start + BATCHES_PER_STEP]):
                await asyncio.sleep(0)
                input_counts = []
                for index, profile in enumerate(self.reference.inputs):
                    input_counts.append(count_input(profile, feeds))
                    if index % FEATURES_PER_STEP == FEATURES_PER_STEP - 1:
                        await asyncio.sleep(0)
                rows = outputs[self.output_name].shape[0]
                self._add(input_counts, count_output(self.reference, self.task, outputs[self.output_name]), rows)
            await asyncio.sleep(0)
        if self.window.rows == 0:
            return None
        per_feature: dict[str, float] = {}
        for start in range(0, len(self.reference.inputs), PSI_FEATURES_PER_STEP):
            per_feature.update(self.window.feature_psi(start, start + PSI_FEATURES_PER_STEP))
            await asyncio.sleep(0)
        output = self.window.output_psi()
        self._publish(per_feature, output, self.window.rows)
        return per_feature, output

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.update_cooperatively()
            except Exception:  # noqa: BLE001 - drift must never take serving down
                if not self._broken:
                    log.exception("drift update failed; drift gauges stop updating")
                self._broken = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="drift-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
