"""Which variant each node pool serves, from what the gate said on that pool's provider.

``auto`` is :func:`optimodel_contracts.choice.choose_auto`, the rule the optimizer's own report uses too:
a variant serves only when it is faster than the source beyond measurement noise (by the pool's
``objective``), else the source serves and the reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from optimodel_contracts.choice import Candidate, Timing, choose_auto
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


def candidate(m: Measured) -> Candidate:
    """What `auto` compares of one variant. A manifest written before the rounds were recorded has only
    p50s: they stand in (at the benchmark's batch size), and the choice then asks for a margin."""
    latency: Mapping[int, Timing] = m.latency
    source_latency: Mapping[int, Timing] = m.source_latency
    if not latency and m.p50_ms is not None:
        latency = {m.batch_size or 1: Timing(m.p50_ms)}
    if not source_latency and m.source_p50_ms is not None:
        source_latency = {m.batch_size or 1: Timing(m.source_p50_ms)}
    # auto's tie-break ("then the more accurate") is a selection: like the optimizer's, it looks at the tuning
    # rows' drop; the held-out one only where an older manifest has no other.
    drop = m.tuning_drop if m.tuning_drop is not None else m.drop
    return Candidate(m.variant, latency, source_latency, m.size_bytes, drop)


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
    passed = {name: m for name, m in measured.items() if name != SOURCE and m.deployable}
    source = measured.get(SOURCE)
    pick = choose_auto([candidate(m) for m in passed.values()], pool.objective.value,
                       source_size_bytes=None if source is None else source.size_bytes, where=f"on {provider}")
    if pick.variant == SOURCE:
        return _source(pool, measured, pick.reason)
    return PoolChoice(pool.name, pick.variant, passed[pick.variant], pick.reason)
