"""Step: latency on the target provider, variants interleaved, warm-up excluded; size and peak memory.

Interleaving: every round runs a block of calls on each model in turn (in an order rotated each
round), so that a noisy neighbour or a thermal change hurts all variants alike instead of whichever
happened to run during it. Warm-up calls are made before the first round and at the start of every
block (after a short pause that lets the previous model's spinning thread pool go idle) and are
never recorded.

Noise: each round's block median is kept (``blocks_p50_ms``, in round order), so the p50 has an interval
(``p50_low_ms``/``p50_high_ms``, order statistics of the block medians) and a variant's speed-up over the
source can be judged round by round (:mod:`optimodel_contracts.choice`, which ``auto`` decides with).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimodel_contracts.choice import median_interval
from optimodel_jobs.runtime import make_session


SETTLE_S = 0.02
BLOCK_WARMUP = 2


@dataclass(frozen=True)
class LatencyStats:
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float
    samples: int
    blocks_p50_ms: tuple[float, ...] = ()
    """The median of each interleaved round's block, in round order (empty: not measured in rounds)."""
    p50_low_ms: float | None = None
    p50_high_ms: float | None = None
    """A 90% interval of the p50 from the block medians; None with fewer than 5 rounds."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, tuple):
                out[key] = [_precise(v) for v in value]
            else:
                out[key] = _precise(value) if isinstance(value, float) else value
        return out


def _precise(value: float) -> float:
    # Four decimals of a millisecond hide the difference between two 0.009 ms models; keep 4 significant digits.
    return float(f"{value:.4g}") if 0 < abs(value) < 1 else round(value, 4)


def summarize(batch_size: int, timings_s: list[float], blocks_s: list[list[float]] | None = None) -> LatencyStats:
    """Pure: percentiles (ms) and throughput (samples/s) from per-call timings; ``blocks_s``: the same
    timings per interleaved round, for the block medians and the p50's interval."""
    values = np.asarray(timings_s, dtype=np.float64) * 1000.0
    mean = float(values.mean())
    blocks = tuple(float(np.median(np.asarray(b, dtype=np.float64) * 1000.0)) for b in blocks_s or [] if b)
    interval = median_interval(blocks) if blocks else None
    return LatencyStats(
        batch_size=batch_size,
        p50_ms=float(np.percentile(values, 50)),
        p90_ms=float(np.percentile(values, 90)),
        p99_ms=float(np.percentile(values, 99)),
        mean_ms=mean,
        throughput_per_s=batch_size * 1000.0 / mean,
        samples=len(values),
        blocks_p50_ms=blocks,
        p50_low_ms=None if interval is None else interval[0],
        p50_high_ms=None if interval is None else interval[1],
    )


def batch_of(inputs: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """The first ``batch_size`` samples, repeated if the data holds fewer."""
    result = {}
    for name, array in inputs.items():
        reps = -(-batch_size // len(array))
        result[name] = np.ascontiguousarray(np.concatenate([array] * reps)[:batch_size])
    return result


def measure_interleaved(
    models: Mapping[str, Path],
    inputs: Mapping[str, np.ndarray],
    batch_sizes: list[int],
    providers: list[str],
    threads: int,
    iterations: int,
    warmup: int,
    rounds: int,
) -> dict[str, dict[int, LatencyStats]]:
    """{model name: {batch size: stats}}; ``iterations`` recorded calls per model and batch size."""
    sessions = {name: make_session(path, providers, threads) for name, path in models.items()}
    input_names = {name: [i.name for i in s.get_inputs()] for name, s in sessions.items()}  # type: ignore[attr-defined]
    results: dict[str, dict[int, LatencyStats]] = {name: {} for name in models}
    per_round = max(1, iterations // rounds)
    order = list(models)
    for batch_size in batch_sizes:
        feed = batch_of(inputs, batch_size)
        feeds = {name: {n: feed[n] for n in input_names[name]} for name in models}
        for name in order:
            for _ in range(warmup):
                sessions[name].run(None, feeds[name])  # type: ignore[attr-defined]
        timings: dict[str, list[float]] = {name: [] for name in models}
        blocks: dict[str, list[list[float]]] = {name: [] for name in models}
        for round_index in range(rounds):
            rotation = order[round_index % len(order) :] + order[: round_index % len(order)]
            for name in rotation:
                session, fed = sessions[name], feeds[name]
                # Each session has its own intra-op thread pool whose threads spin after a run; let the
                # previous model's pool go idle and re-warm this one, so no model pays for its neighbour.
                time.sleep(SETTLE_S)
                for _ in range(BLOCK_WARMUP):
                    session.run(None, fed)  # type: ignore[attr-defined]
                block: list[float] = []
                for _ in range(per_round):
                    started = time.perf_counter()
                    session.run(None, fed)  # type: ignore[attr-defined]
                    block.append(time.perf_counter() - started)
                timings[name].extend(block)
                blocks[name].append(block)
        for name in models:
            results[name][batch_size] = summarize(batch_size, timings[name], blocks[name])
    return results


_MEMORY_PROBE = r"""
import json, sys
import numpy as np, onnxruntime as ort

def status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

# Reset the high-water mark so that what the imports touched does not hide the model's own peak.
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
except OSError:
    pass
before = status_kib("VmRSS")
options = ort.SessionOptions(); options.intra_op_num_threads = int(sys.argv[2]); options.log_severity_level = 3
session = ort.InferenceSession(sys.argv[1], options, providers=json.loads(sys.argv[3]))
data = np.load(sys.argv[4])
feed = {i.name: data[i.name] for i in session.get_inputs()}
for _ in range(3):
    session.run(None, feed)
after = status_kib("VmHWM")
print(json.dumps({"peak_kib": max(0, after - before)}))
"""


def peak_memory_mb(model: Path, batch: Mapping[str, np.ndarray], providers: list[str], threads: int, scratch: Path) -> float:
    """Peak resident memory the model adds to a fresh process (load + 3 runs at the largest batch), MiB.

    A child process is the only honest way: ONNX Runtime's arenas are native memory that an in-process
    measurement would attribute to whichever model happened to grow them first.
    """
    feed_path = scratch / f"memory-feed-{model.stem}.npz"
    np.savez(feed_path, **batch)
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(model), str(threads), json.dumps(providers), str(feed_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])["peak_kib"] / 1024.0
