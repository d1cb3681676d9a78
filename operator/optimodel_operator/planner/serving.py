"""Who serves what while a revision rolls out: replicas per revision and pool, the HTTPRoute's weights, the
safer target after input drift, and the analysis plans of one analysis run. Pure: no I/O.

The rollout's state (planner.rollout.RolloutState) says which revisions take traffic and at what weight;
this module turns that into Kubernetes terms:

- by replica ratio (the default): stable and canary Deployments sit under the same Services, so kube-proxy
  spreads requests over their pods; the canary gets `replica_split(pool.replicas, weight)` of them;
- through a Gateway API HTTPRoute (`rollout.trafficRouting.gatewayAPI`): both run every replica and the
  route's backend weights carry the split (between two Services that select the stable and the canary
  revision).

Revisions off traffic keep their Deployment at 0 replicas while they may be needed again: the previous
stable revision (the guard's rollback target after promotion) and a rolled-back revision (for `retry`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from optimodel_operator.analysis.measurement import AnalysisPlan, plan_analysis
from optimodel_operator.analysis.queries import Scope
from optimodel_operator.api.nodepools import NodePool
from optimodel_operator.api.rollout import Rollout
from optimodel_operator.api.status import RolloutPhase
from optimodel_operator.planner.rollout import AnalysisRequest, RolloutState, SaferTarget, replica_split

# Variants whose accuracy holds only over the inputs the gate evaluated: static int8 clips activations to
# the calibration ranges, pruning removed what those inputs did not need.
AT_RISK_KINDS = frozenset({"quantize", "prune"})
SOURCE_KIND = "source"


@dataclass(frozen=True)
class ServerBuild:
    """What a server Deployment of the wanted revision on one pool is built from."""

    pool: NodePool
    variant: str
    kind: str
    """source, quantize, convert, prune or distill."""
    manifest_uri: str
    sha256: str
    drift_profiled: bool

    @property
    def at_risk(self) -> bool:
        return self.kind in AT_RISK_KINDS


@dataclass(frozen=True)
class Served:
    """An existing server Deployment as the rollout needs to know it (read back from its labels)."""

    name: str
    revision: str
    pool: str
    replicas: int
    variant_kind: str | None
    drift_profiled: bool


Replicas = dict[str, dict[str, int]]
"""revision -> pool -> replicas."""


def replicas_for(state: RolloutState, pools: Sequence[NodePool], gateway: bool) -> Replicas:
    """Replicas of each revision the state keeps, per pool: the stable and canary revisions' shares, 0 for
    the previous stable revision and a rolled-back one (kept for rollback and retry)."""
    out: Replicas = {}

    def put(revision: str | None, share: Mapping[str, int]) -> None:
        if revision and revision not in out:
            out[revision] = dict(share)

    full = {p.name: p.replicas for p in pools}
    off = {p.name: 0 for p in pools}
    stable, revision = state.stable_revision, state.revision
    if state.phase == RolloutPhase.CANARY and revision and stable and revision != stable:
        if gateway:
            put(revision, full)
            put(stable, full)
        else:
            splits = {p.name: replica_split(p.replicas, state.weight or 0) for p in pools}
            put(revision, {name: split[0] for name, split in splits.items()})
            put(stable, {name: split[1] for name, split in splits.items()})
    elif state.phase == RolloutPhase.PROMOTED and revision:
        put(revision, full)
    else:
        put(stable, full)
        put(revision, off)
    put(state.previous_stable_revision, off)
    return out


def first_step_replicas(rollout: Rollout, pools: Sequence[NodePool], has_stable: bool,
                        gateway: bool) -> dict[str, int]:
    """Replicas a new revision starts with before its canary begins: its share of the first step next to a
    stable revision, every replica when it is the first revision or a Gateway API route splits the traffic."""
    if not has_stable or gateway:
        return {p.name: p.replicas for p in pools}
    return {p.name: replica_split(p.replicas, rollout.steps[0])[0] for p in pools}


def safer_target(state: RolloutState, wanted: str | None, builds: Mapping[str, ServerBuild] | None,
                 served: Iterable[Served]) -> SaferTarget | None:
    """Where inputs drifting beyond the evaluated range send the revision under analysis: the revision it
    replaced when none of that one's variants is at risk; after promotion, else the wanted revision's own
    source variant on the pools that serve an at-risk one; None when nothing safer exists."""
    served = list(served)

    def float_only(revision: str | None) -> bool:
        mine = [s for s in served if s.revision == revision]
        return bool(mine) and all(s.variant_kind not in AT_RISK_KINDS for s in mine)

    if state.phase == RolloutPhase.CANARY:
        return SaferTarget(state.stable_revision) if float_only(state.stable_revision) else None
    if state.phase != RolloutPhase.PROMOTED:
        return None
    if float_only(state.previous_stable_revision):
        return SaferTarget(state.previous_stable_revision or "")
    if state.revision == wanted and builds and any(b.at_risk for b in builds.values()) \
            and not state.fallback_variant:
        return SaferTarget(wanted, SOURCE_KIND)
    return None


def route_services(model_service: str) -> tuple[str, str]:
    """(stable, canary) Services the HTTPRoute's backends name."""
    return f"{model_service}-stable", f"{model_service}-canary"


def analysis_window(request: AnalysisRequest, now: datetime, minimum_s: int) -> str:
    """The PromQL range from the step's start (or the last analysis) to now, at least `minimum_s`."""
    seconds = max(int((now - request.window_start) / timedelta(seconds=1) + 0.999), minimum_s)
    return f"{seconds}s"


def analysis_plans(rollout: Rollout, request: AnalysisRequest, namespace: str, model: str,
                   pools: Sequence[str], drift_profiled: Mapping[str, bool], window: str) -> tuple[AnalysisPlan, ...]:
    """One plan per pool the analysed revision serves, each scoped to that pool."""
    return tuple(
        plan_analysis(rollout, Scope(namespace, model, request.revision, pool, window), request.baseline,
                      drift_profiled=drift_profiled.get(pool, False))
        for pool in pools
    )


__all__ = [
    "AT_RISK_KINDS",
    "Replicas",
    "Served",
    "ServerBuild",
    "analysis_plans",
    "analysis_window",
    "first_step_replicas",
    "replicas_for",
    "route_services",
    "safer_target",
]
