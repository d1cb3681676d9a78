"""Which variant each node pool serves, from what the gate said on that pool's provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from optimodel_operator.api.nodepools import AUTO_VARIANT, SOURCE_VARIANT, NodePool
from optimodel_operator.planner.results import SOURCE, Measured


@dataclass(frozen=True)
class PoolChoice:
    pool: str
    variant: str | None
    """The variant to serve; None when the pool must serve nothing new (see `reason`)."""
    measured: Measured | None
    reason: str
    """Why this variant (or why none), in one sentence a person can act on."""

    @property
    def blocked(self) -> bool:
        return self.variant is None


def _fastest(candidates: list[Measured]) -> Measured | None:
    # Ties (equal p50) go to the smaller artifact, then the name: the same inputs give the same choice.
    timed = [m for m in candidates if m.p50_ms is not None]
    return min(timed, key=lambda m: (m.p50_ms, m.size_bytes or 0, m.variant), default=None)


def _source(pool: NodePool, measured: Mapping[str, Measured], why: str) -> PoolChoice:
    source = measured.get(SOURCE)
    if source is None or source.manifest_uri is None:
        return PoolChoice(pool.name, None, None, f"{why}; and the source model has no artifact in the store to serve")
    return PoolChoice(pool.name, SOURCE_VARIANT, source, why)


def choose(pool: NodePool, measured: Mapping[str, Measured]) -> PoolChoice:
    """`measured`: every variant as the Job of this pool's provider measured it (plus `source`)."""
    provider = pool.execution_provider.value
    if pool.variant == SOURCE_VARIANT:
        return _source(pool, measured, "the pool asks for the source model")
    if pool.variant != AUTO_VARIANT:
        chosen = measured.get(pool.variant)
        if chosen is None:
            return PoolChoice(pool.name, None, None, f"variant {pool.variant} was not measured on {provider}")
        if not chosen.deployable:
            return PoolChoice(pool.name, None, chosen,
                              f"variant {pool.variant} failed the gate on {provider}: {chosen.reason}")
        return PoolChoice(pool.name, chosen.variant, chosen, f"variant {pool.variant} as asked; it passed the gate on {provider}")
    passed = [m for name, m in measured.items() if name != SOURCE and m.deployable]
    best = _fastest(passed)
    if best is None:
        return _source(pool, measured, f"auto: no variant passed the gate on {provider}, so the source model serves")
    others = len(passed) - 1
    return PoolChoice(pool.name, best.variant, best,
                      f"auto: {best.variant} is the fastest of {others + 1} variant(s) that passed on {provider} "
                      f"(p50 {best.p50_ms:.3f} ms)")
