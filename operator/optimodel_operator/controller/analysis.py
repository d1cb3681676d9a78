"""Running an analysis the planner asked for: every pool's queries against Prometheus, one assessment.

The only I/O is the provider's (prometheus-api-client, each query bounded by a timeout); deciding what the
result means stays in the planner. Without a Prometheus URL every query is an Error measurement, so the
rollout holds (and, at the consecutive-error limit, rolls a canary back) instead of promoting blind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from optimodel_operator.analysis.answers import Answer, QueryError, QueryErrorKind
from optimodel_operator.analysis.assess import assess
from optimodel_operator.analysis.measurement import run_analysis
from optimodel_operator.analysis.provider import PrometheusProvider
from optimodel_operator.planner.loop import AnalysisAsk, AnalysisRun

_providers: dict[tuple[str, float], PrometheusProvider] = {}


def _query(url: str | None, timeout_s: float) -> Callable[[str], Answer]:
    if not url:
        return lambda text: QueryError(text, QueryErrorKind.UNREACHABLE,
                                       "no Prometheus configured (OPTIMODEL_PROMETHEUS_URL is not set)")
    provider = _providers.get((url, timeout_s))
    if provider is None:
        provider = _providers[(url, timeout_s)] = PrometheusProvider(url, timeout_s)
    return provider.query


def _whole_seconds() -> datetime:
    # The planner's clock counts whole seconds (planner/status.py): an analysis time with a fraction put the
    # next one due a fraction past a whole second, and the model was woken every ~0.3 s until that second
    # passed (4 reconciles for nothing per analysis).
    return datetime.now(UTC).replace(microsecond=0)


def run(ask: AnalysisAsk, url: str | None, timeout_s: float,
        clock: Callable[[], datetime] = _whole_seconds) -> AnalysisRun:
    query = _query(url, timeout_s)
    measurements = []
    several = len(ask.plans) > 1
    for plan in ask.plans:
        for m in run_analysis(plan, query):
            measurements.append((plan.scope.pool, replace(m, message=f"{plan.scope.pool}: {m.message}") if several else m))
    # No pool serves the revision (its pods are all gone): nothing measured, which assess() calls NoData.
    assessment = assess([m for _, m in measurements])
    return AnalysisRun(time=clock(), request=ask.request, window=ask.window, assessment=assessment,
                       measurements=tuple(measurements))
