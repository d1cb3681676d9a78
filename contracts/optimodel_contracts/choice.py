"""`auto`: which variant a pool serves, decided from interleaved latency measurements, never by one p50.

Shared by the optimizer (``optimodel optimize``'s per-pool choice) and the operator (``planner/choice.py``),
so both choose alike. Pure and standard library only: the operator must not import torch, and the rule
is tested on generated measurements without a model or a cluster.

The measurement (``optimodel_jobs/latency.py``) times the source and the variants of one provider in
rounds: each round runs a block of calls on every model in turn. A round's block medians of the source and
a variant were taken minutes apart at most, under the same neighbours, so their ratio (the variant's
speed-up in that round) is a paired sample; across rounds those ratios show the noise. The speed-up's
interval is a distribution-free confidence interval for the median of the per-round ratios (order
statistics of the sign test; no normality assumed): 90% two-sided, i.e. the variant is faster than the
source with 95% confidence when the interval's lower bound is above 1. Five rounds (the default) give
``[smallest, largest]`` ratio; fewer rounds cannot reach that confidence at all, so then (and for records
written before the rounds were kept) a fixed margin stands in for the interval: the p50 speed-up must be
at least :data:`MARGIN`.

The rule:

- ``latency`` (the default objective): at the smallest batch size measured (batch 1 unless asked
  otherwise), a variant is eligible only when it is faster than the source beyond noise. Among the eligible,
  the fastest (median ratio) and every variant whose interval overlaps its interval are tied; a tie goes to
  the smaller artifact, then the more accurate one (smaller drop), then the name. Nothing eligible: the
  source serves, and the reason names each variant's speed-up.
- ``throughput``: the same at the largest batch size measured (requests batched up to it).
- ``size``: the smallest artifact among the variants smaller than the source that are not slower than the
  source beyond noise (speed-up interval not wholly below 1); then more accurate, then the name.

So ``auto`` never serves a variant measured slower than the source, the same figures always give the same
choice, and a difference within noise does not flip it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

SOURCE = "source"
Objective = Literal["latency", "throughput", "size"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "throughput", "size")
CONFIDENCE = 0.90
"""Two-sided confidence of a speed-up interval (each bound 95% one-sided)."""
MARGIN = 1.10
"""The p50 speed-up a variant needs when its rounds cannot bound the noise (fewer than 5, or none recorded)."""


def order_statistic(n: int, confidence: float = CONFIDENCE) -> int | None:
    """The 1-based rank k such that ``[x_(k), x_(n+1-k)]`` of n samples covers their median with at least
    ``confidence`` (sign test: P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2); None when n is too small
    for any k (n < 5 at 90%)."""
    tail = (1.0 - confidence) / 2.0
    best: int | None = None
    below = 0.0
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2.0**n  # P(B <= k - 1)
        if below > tail:
            break
        best = k
    return best


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Distribution-free interval for the median of ``values`` (order statistics); None for too few values."""
    k = order_statistic(len(values), confidence)
    if k is None:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[len(ordered) - k]


@dataclass(frozen=True)
class Timing:
    """One model at one batch size: its p50 and the median of each interleaved round's block, in round order."""

    p50_ms: float
    blocks_p50_ms: tuple[float, ...] = ()

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any] | None) -> Timing | None:
        """From a recorded ``LatencyStats.as_dict()`` (older records have no ``blocks_p50_ms``)."""
        if not stats or stats.get("p50_ms") is None:
            return None
        blocks = tuple(float(b) for b in stats.get("blocks_p50_ms") or ())
        return cls(float(stats["p50_ms"]), blocks)


def timings(latency: Mapping[Any, Mapping[str, Any]] | None) -> dict[int, Timing]:
    """``{"1": {...stats}, "8": {...}}`` (a manifest's or run record's latency) -> ``{1: Timing, 8: Timing}``."""
    out: dict[int, Timing] = {}
    for batch, stats in (latency or {}).items():
        timing = Timing.from_stats(stats)
        if timing is not None:
            out[int(batch)] = timing
    return out


@dataclass(frozen=True)
class Speedup:
    """The source's latency over the variant's at one batch size: above 1 the variant is faster."""

    batch_size: int
    estimate: float
    """Median of the per-round ratios (or the ratio of the p50s when rounds are not usable)."""
    low: float | None
    high: float | None
    """The interval's bounds; None when the rounds cannot bound the noise (then :data:`MARGIN` applies)."""
    rounds: int

    @property
    def faster(self) -> bool:
        """Faster than the source beyond measurement noise."""
        return self.low > 1.0 if self.low is not None else self.estimate >= MARGIN

    @property
    def slower(self) -> bool:
        """Slower than the source beyond measurement noise."""
        return self.high < 1.0 if self.high is not None else self.estimate <= 1.0 / MARGIN

    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high) if self.low is not None and self.high is not None else (self.estimate, self.estimate)

    def overlaps(self, other: Speedup) -> bool:
        """Not told apart by the measurement (intervals intersect; without intervals: equal estimates)."""
        low, high = self.bounds()
        other_low, other_high = other.bounds()
        return low <= other_high and other_low <= high

    def describe(self) -> str:
        """E.g. ``0.65x the source's speed (90% interval 0.61-0.70x over 5 rounds, batch 1)``."""
        if self.low is not None and self.high is not None:
            noise = f"{CONFIDENCE:.0%} interval {self.low:.2f}-{self.high:.2f}x over {self.rounds} rounds"
        elif self.rounds:
            noise = f"p50; {self.rounds} round(s) cannot bound the noise, so it must reach {MARGIN:.2f}x"
        else:
            noise = f"p50; no rounds recorded, so it must reach {MARGIN:.2f}x"
        return f"{self.estimate:.2f}x the source's speed ({noise}, batch {self.batch_size})"


def speedup(variant: Mapping[int, Timing], source: Mapping[int, Timing], batch_size: int) -> Speedup | None:
    """The variant's speed-up at ``batch_size`` against the source measured in the same rounds."""
    mine, theirs = variant.get(batch_size), source.get(batch_size)
    if mine is None or theirs is None or mine.p50_ms <= 0 or theirs.p50_ms <= 0:
        return None
    rounds = len(mine.blocks_p50_ms)
    if rounds and rounds == len(theirs.blocks_p50_ms) and all(b > 0 for b in mine.blocks_p50_ms):
        ratios = [s / v for s, v in zip(theirs.blocks_p50_ms, mine.blocks_p50_ms, strict=True)]
        interval = median_interval(ratios)
        if interval is not None:
            return Speedup(batch_size, statistics.median(ratios), interval[0], interval[1], rounds)
        return Speedup(batch_size, theirs.p50_ms / mine.p50_ms, None, None, rounds)
    return Speedup(batch_size, theirs.p50_ms / mine.p50_ms, None, None, 0)


@dataclass(frozen=True)
class Candidate:
    """A variant that passed the gate (deployable), with what the choice needs to know of it."""

    name: str
    latency: Mapping[int, Timing]
    source_latency: Mapping[int, Timing]
    """The source, measured in the same interleaved rounds as this variant."""
    size_bytes: int | None = None
    drop: float | None = None
    """Loss against the source in the gate's unit; smaller is more accurate."""


@dataclass(frozen=True)
class AutoChoice:
    variant: str
    """A candidate's name, or :data:`SOURCE`."""
    reason: str
    """Why, in one sentence a person can act on."""
    objective: Objective
    speedup: Speedup | None = None
    """The chosen variant's speed-up (None for the source)."""


def batch_for(objective: Objective, candidate: Candidate) -> int | None:
    """Latency: the smallest batch size measured for both the variant and the source; throughput: the largest."""
    common = sorted(set(candidate.latency) & set(candidate.source_latency))
    if not common:
        return None
    return common[-1] if objective == "throughput" else common[0]


def _mib(size: int | None) -> str:
    return "unknown size" if size is None else f"{size / 2**20:.2f} MiB"


def _tie_key(candidate: Candidate) -> tuple[float, float, str]:
    size = math.inf if candidate.size_bytes is None else float(candidate.size_bytes)
    drop = math.inf if candidate.drop is None or math.isnan(candidate.drop) else candidate.drop
    return size, drop, candidate.name


def _tie_break(chosen: Candidate, tied: list[Candidate]) -> str:
    """Which criterion separated the chosen variant from the ones tied with it."""
    others = [c for c in tied if c.name != chosen.name]
    if not others:
        return ""
    key = _tie_key(chosen)
    if all(_tie_key(c)[0] > key[0] for c in others):
        why = "the smallest artifact"
    elif all(_tie_key(c)[:2] > key[:2] for c in others):
        why = "the most accurate of the smallest"
    else:
        why = "first by name among equals"
    return f"; tied within noise with {', '.join(c.name for c in others)}, it is {why}"


def choose_auto(
    candidates: Sequence[Candidate], objective: Objective = "latency", *, source_size_bytes: int | None = None,
    where: str = "",
) -> AutoChoice:
    """The variant ``auto`` serves: see the module's docstring. ``candidates`` are the variants that passed
    the gate where the pool serves; ``where`` (e.g. ``"on cpu"``) goes into the reason."""
    where = f" {where}" if where else ""
    prefix = f"auto ({objective})"
    if not candidates:
        return AutoChoice(SOURCE, f"{prefix}: no variant passed the gate{where}, so the source model serves", objective)
    measured: list[tuple[Candidate, Speedup]] = []
    unmeasured: list[str] = []
    for candidate in sorted(candidates, key=lambda c: c.name):
        batch = batch_for(objective, candidate)
        found = None if batch is None else speedup(candidate.latency, candidate.source_latency, batch)
        if found is None:
            unmeasured.append(candidate.name)
        else:
            measured.append((candidate, found))
    unknown = f"; {', '.join(unmeasured)} not timed against the source" if unmeasured else ""
    if objective == "size":
        smaller = [(c, s) for c, s in measured
                   if c.size_bytes is not None and (source_size_bytes is None or c.size_bytes < source_size_bytes)]
        eligible = [(c, s) for c, s in smaller if not s.slower]
        if not eligible:
            slower = "; ".join(f"{c.name} is {s.describe()}" for c, s in smaller if s.slower)
            why = (f"every variant smaller than the source is slower than it beyond measurement noise{where} ({slower})"
                   if slower else f"no variant that passed{where} is smaller than the source")
            return AutoChoice(SOURCE, f"{prefix}: {why}{unknown}: the source serves ({_mib(source_size_bytes)})", objective)
        chosen, found = min(eligible, key=lambda pair: _tie_key(pair[0]))
        return AutoChoice(
            chosen.name,
            f"{prefix}: {chosen.name} is the smallest variant that passed{where} ({_mib(chosen.size_bytes)}, the source "
            f"{_mib(source_size_bytes)}) and is not slower than the source: {found.describe()}{unknown}",
            objective, found,
        )
    faster = [(c, s) for c, s in measured if s.faster]
    if not faster:
        figures = "; ".join(f"{c.name} is {s.describe()}" for c, s in measured) or "no variant was timed"
        return AutoChoice(
            SOURCE,
            f"{prefix}: no variant is faster than the source beyond measurement noise{where} ({figures}){unknown}: "
            "the source serves",
            objective,
        )
    # The fastest by estimate, and every variant the measurement cannot tell from it.
    # ``measured`` is in name order and max() keeps the first of equals: deterministic.
    _, best = max(faster, key=lambda pair: (pair[1].estimate, pair[1].bounds()[0]))
    tied = [c for c, s in faster if s.overlaps(best)]
    chosen = min(tied, key=_tie_key)
    found = next(s for c, s in faster if c.name == chosen.name)
    return AutoChoice(
        chosen.name,
        f"{prefix}: {chosen.name} is {found.describe()}{where}{_tie_break(chosen, tied)}{unknown}",
        objective, found,
    )
