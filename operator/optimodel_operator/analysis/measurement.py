"""From the spec and Prometheus' answers to measurements. Pure: no I/O (the provider is injected).

One analysis run of a canary revision on one pool:

1. :func:`plan_analysis` turns ``spec.rollout`` (slo, drift, minSamples, checks) and the canary's
   :class:`Scope` into an :class:`AnalysisPlan`: the checks to run, each with its PromQL and threshold.
2. a provider answers each query of ``plan.queries`` (``provider.PrometheusProvider.query``, or anything
   with the same shape in tests): an :data:`Answer` per query text.
3. :func:`measure` turns the answers into one :class:`Measurement` per check.

Phases: ``Successful`` (within its threshold), ``Failed`` (beyond it), ``Inconclusive`` (no data: no
series, NaN, or fewer than ``minSamples`` requests in the window — then every check is Inconclusive,
never Successful, whatever its value), ``Error`` (Prometheus unreachable, too slow, or it refused the
query). The request count itself is never Failed: too little traffic is no data, not a bad canary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from optimodel_contracts.artifacts import population_stability_index

from optimodel_operator.analysis import queries
from optimodel_operator.analysis.answers import Answer, QueryError, QueryErrorKind, QueryResult
from optimodel_operator.analysis.queries import Scope
from optimodel_operator.api.rollout import Rollout

REQUEST_COUNT = "request-count"
P99_LATENCY = "p99-latency"
ERROR_RATE = "error-rate"
INPUT_DRIFT = "input-drift"
PREDICTION_DRIFT = "prediction-drift"


class MeasurementPhase(StrEnum):
    SUCCESSFUL = "Successful"  # measured, within its threshold
    FAILED = "Failed"  # measured, beyond its threshold
    INCONCLUSIVE = "Inconclusive"  # no data, or fewer than minSamples requests in the window
    ERROR = "Error"  # Prometheus unreachable, too slow, or the query refused


class CheckKind(StrEnum):
    """What a check is about: the rollout reacts differently to an input-drift failure (fall back to a
    safer float revision) than to an SLO or prediction-drift failure (roll back to the stable one)."""

    REQUEST_COUNT = "RequestCount"
    LATENCY = "Latency"
    ERROR_RATE = "ErrorRate"
    INPUT_DRIFT = "InputDrift"
    PREDICTION_DRIFT = "PredictionDrift"
    USER = "User"

    @property
    def is_slo(self) -> bool:
        return self in (CheckKind.LATENCY, CheckKind.ERROR_RATE)


def fmt(value: float) -> str:
    """A value as status and events print it: 4 significant digits, no exponent for everyday sizes."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}"


@dataclass(frozen=True)
class Threshold:
    """Passing values: at most ``max`` and at least ``min`` (either may be unset, not both)."""

    max: float | None = None
    min: float | None = None

    def passes(self, value: float) -> bool:
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)

    def worst(self, values: Sequence[float]) -> float:
        """Of several series' values, the one that decides: the largest violation, else the closest to the limit."""
        if self.max is not None and max(values) > self.max:
            return max(values)
        if self.min is not None and min(values) < self.min:
            return min(values)
        return max(values) if self.max is not None else min(values)

    def compare(self, value: float, unit: str = "") -> str:
        """``"52.3 ms > 40 ms"``-style text for a value against this threshold."""
        u = f" {unit}" if unit else ""
        if self.max is not None and value > self.max:
            return f"{fmt(value)}{u} > {fmt(self.max)}{u}"
        if self.min is not None and value < self.min:
            return f"{fmt(value)}{u} < {fmt(self.min)}{u}"
        bounds = []
        if self.max is not None:
            bounds.append(f"<= {fmt(self.max)}{u}")
        if self.min is not None:
            bounds.append(f">= {fmt(self.min)}{u}")
        return f"{fmt(value)}{u} " + " and ".join(bounds)


@dataclass(frozen=True)
class Check:
    """One check of a plan: its name, what it is about, its PromQL and its threshold.

    ``stable_query`` is set for prediction drift only: the stable revision's output bins, compared with
    the canary's (``query``) on the same live traffic."""

    name: str
    kind: CheckKind
    query: str
    threshold: Threshold
    unit: str = ""
    stable_query: str | None = None

    @property
    def query_text(self) -> str:
        """The PromQL as recorded in a measurement (both queries, one per line, for prediction drift)."""
        return self.query if self.stable_query is None else f"{self.query}\n{self.stable_query}"


@dataclass(frozen=True)
class Measurement:
    """One check's result in one analysis run, as status records it."""

    name: str
    kind: CheckKind
    query: str
    value: float | None
    phase: MeasurementPhase
    threshold: Threshold
    message: str


@dataclass(frozen=True)
class AnalysisPlan:
    """The checks of one analysis run of ``scope`` (the canary revision on one pool)."""

    scope: Scope
    min_samples: int
    samples: Check
    checks: tuple[Check, ...]

    @property
    def queries(self) -> tuple[str, ...]:
        """Every distinct PromQL the provider must answer, in order."""
        texts: list[str] = []
        for check in (self.samples, *self.checks):
            for text in (check.query, check.stable_query):
                if text is not None and text not in texts:
                    texts.append(text)
        return tuple(texts)


def plan_analysis(rollout: Rollout, canary: Scope, stable_revision: str | None = None, *,
                  drift_profiled: bool = True) -> AnalysisPlan:
    """The checks ``rollout`` asks for, scoped to ``canary``.

    - ``request-count`` always (its threshold is ``minSamples``; it gates every other check);
    - ``p99-latency`` / ``error-rate`` when ``rollout.slo`` sets ``p99LatencyMs`` / ``maxErrorRate``;
    - ``input-drift`` when ``rollout.drift`` is set and the artifact has a drift profile (``drift_profiled``);
    - ``prediction-drift`` as well when a different stable revision serves the pool (none during the guard
      after promotion, when the canary is the stable revision);
    - every ``rollout.checks`` entry, its placeholders filled from ``canary``.
    """
    samples = Check(REQUEST_COUNT, CheckKind.REQUEST_COUNT, queries.request_count(canary),
                    Threshold(min=float(rollout.min_samples)), "requests")
    checks: list[Check] = []
    slo = rollout.slo
    if slo is not None and slo.p99_latency_ms is not None:
        checks.append(Check(P99_LATENCY, CheckKind.LATENCY, queries.p99_latency_ms(canary),
                            Threshold(max=slo.p99_latency_ms), "ms"))
    if slo is not None and slo.max_error_rate is not None:
        checks.append(Check(ERROR_RATE, CheckKind.ERROR_RATE, queries.error_rate(canary),
                            Threshold(max=slo.max_error_rate)))
    if rollout.drift is not None and drift_profiled:
        limit = Threshold(max=rollout.drift.max_psi)
        checks.append(Check(INPUT_DRIFT, CheckKind.INPUT_DRIFT, queries.input_drift_psi(canary), limit, "PSI"))
        if stable_revision is not None and stable_revision != canary.revision:
            checks.append(Check(PREDICTION_DRIFT, CheckKind.PREDICTION_DRIFT, queries.output_bins(canary), limit,
                                "PSI", stable_query=queries.output_bins(canary.with_revision(stable_revision))))
    for user in rollout.checks or ():
        checks.append(Check(user.name, CheckKind.USER, queries.render(user.query, canary),
                            Threshold(max=user.max, min=user.min)))
    return AnalysisPlan(canary, rollout.min_samples, samples, tuple(checks))


def _error(check: Check, answer: QueryError, value: float | None = None) -> Measurement:
    return Measurement(check.name, check.kind, check.query_text, value, MeasurementPhase.ERROR, check.threshold,
                       f"{check.name}: Prometheus {answer.kind.value}: {answer.message}".rstrip(": "))


def _inconclusive(check: Check, value: float | None, why: str) -> Measurement:
    return Measurement(check.name, check.kind, check.query_text, value, MeasurementPhase.INCONCLUSIVE,
                       check.threshold, f"{check.name}: {why}")


def measure_samples(check: Check, answer: Answer) -> Measurement:
    """The request count against ``minSamples``: Successful when enough, else Inconclusive (never Failed)."""
    if isinstance(answer, QueryError):
        return _error(check, answer)
    values = answer.finite_values()
    if not values:
        return _inconclusive(check, None, "no requests seen in the window (no series)")
    count = sum(values)
    if not check.threshold.passes(count):
        return _inconclusive(check, count, f"{check.threshold.compare(count, check.unit)} (minSamples)")
    return Measurement(check.name, check.kind, check.query_text, count, MeasurementPhase.SUCCESSFUL, check.threshold,
                       f"{check.name} {check.threshold.compare(count, check.unit)}")


def _not_enough(samples: Measurement) -> str | None:
    """Why other checks cannot be judged on this run's sample size, or None when they can."""
    if samples.phase is MeasurementPhase.SUCCESSFUL:
        return None
    if samples.phase is MeasurementPhase.ERROR:
        return "request count unknown (its query failed)"
    if samples.value is None:
        return "no requests in the window"
    return f"too few requests to judge ({fmt(samples.value)} < minSamples {fmt(samples.threshold.min or 0)})"


def _judged(check: Check, value: float, samples: Measurement | None) -> Measurement:
    why_not = _not_enough(samples) if samples is not None else None
    if why_not is not None:
        return _inconclusive(check, value, f"{fmt(value)}{' ' + check.unit if check.unit else ''}, but {why_not}")
    passed = check.threshold.passes(value)
    return Measurement(check.name, check.kind, check.query_text, value,
                       MeasurementPhase.SUCCESSFUL if passed else MeasurementPhase.FAILED, check.threshold,
                       f"{check.name} {check.threshold.compare(value, check.unit)}")


def measure_value(check: Check, answer: Answer, samples: Measurement | None = None) -> Measurement:
    """A check whose query answers one number (or a vector: the worst series decides).

    ``samples`` is this run's request-count measurement: unless it is Successful, the check is at best
    Inconclusive (its value still recorded). No series or only NaN (e.g. a quantile over no requests) is
    Inconclusive; an unanswered query is Error."""
    if isinstance(answer, QueryError):
        return _error(check, answer)
    values = answer.finite_values()
    if not values:
        why = "no data (the query matched no series)" if not answer.samples else "no data (NaN: nothing to compute it over)"
        return _inconclusive(check, None, why)
    return _judged(check, check.threshold.worst(values), samples)


def _bins(answer: QueryResult) -> dict[str, float]:
    counts: dict[str, float] = {}
    for sample in answer.samples:
        if not math.isnan(sample.value):
            key = sample.labels.get(queries.OUTPUT_BIN_LABEL, "")
            counts[key] = counts.get(key, 0.0) + max(sample.value, 0.0)
    return counts


def _bin_order(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def prediction_psi(canary: Mapping[str, float], stable: Mapping[str, float]) -> float | None:
    """PSI of the canary's predictions per output bin against the stable revision's, or None when either
    side counted nothing (no data is not "no drift"). Bins missing on one side count 0 there."""
    keys = sorted(set(canary) | set(stable), key=_bin_order)
    observed = [max(canary.get(k, 0.0), 0.0) for k in keys]
    reference = [max(stable.get(k, 0.0), 0.0) for k in keys]
    if sum(observed) <= 0 or sum(reference) <= 0:
        return None
    return population_stability_index(reference, observed)


def measure_prediction_drift(check: Check, canary: Answer, stable: Answer,
                             samples: Measurement | None = None,
                             min_predictions: int = queries.DRIFT_MIN_ROWS) -> Measurement:
    """The canary's output distribution against the stable revision's over the same window."""
    for answer in (canary, stable):
        if isinstance(answer, QueryError):
            return _error(check, answer)
    assert isinstance(canary, QueryResult) and isinstance(stable, QueryResult)
    canary_bins, stable_bins = _bins(canary), _bins(stable)
    psi = prediction_psi(canary_bins, stable_bins)
    if psi is None:
        side = "canary" if sum(canary_bins.values()) <= 0 else "stable revision"
        return _inconclusive(check, None, f"no predictions counted for the {side} in the window")
    # Two samples of the same distribution differ by chance: with k bins and n predictions a side, PSI is
    # about 2(k-1)/n from noise alone (0.4 for 10 classes and 50 rows). Below min_predictions a side, a
    # difference is not evidence.
    fewest = min(sum(canary_bins.values()), sum(stable_bins.values()))
    if fewest < min_predictions:
        return _inconclusive(check, psi, f"{fmt(psi)} PSI, but too few predictions to compare "
                                         f"({fmt(fewest)} < {min_predictions} on one side)")
    return _judged(check, psi, samples)


def measure(plan: AnalysisPlan, answers: Mapping[str, Answer]) -> tuple[Measurement, ...]:
    """Every check of ``plan`` judged from ``answers`` (query text → answer); the request count first.
    A query missing from ``answers`` counts as an unanswered one (Error)."""

    def answer(text: str) -> Answer:
        found = answers.get(text)
        return found if found is not None else QueryError(text, QueryErrorKind.MALFORMED, "no answer was collected")

    samples = measure_samples(plan.samples, answer(plan.samples.query))
    results = [samples]
    for check in plan.checks:
        if check.stable_query is not None:
            results.append(measure_prediction_drift(check, answer(check.query), answer(check.stable_query), samples))
        else:
            results.append(measure_value(check, answer(check.query), samples))
    return tuple(results)


def run_analysis(plan: AnalysisPlan, query: Callable[[str], Answer]) -> tuple[Measurement, ...]:
    """Ask ``query`` (e.g. ``PrometheusProvider.query``) every query of ``plan`` once, then :func:`measure`."""
    return measure(plan, {text: query(text) for text in plan.queries})
