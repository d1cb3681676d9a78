"""From the spec and Prometheus' raw answers to measurements: each phase of each kind of check."""

from __future__ import annotations

import math

import pytest

from optimodel_operator.analysis import queries
from optimodel_operator.analysis.answers import QueryError, QueryErrorKind, QueryResult, Sample
from optimodel_operator.analysis.measurement import (
    CheckKind,
    MeasurementPhase,
    measure,
    plan_analysis,
    prediction_psi,
    run_analysis,
)
from optimodel_operator.analysis.queries import Scope
from optimodel_operator.api.rollout import Rollout

S, F, I, E = (MeasurementPhase.SUCCESSFUL, MeasurementPhase.FAILED, MeasurementPhase.INCONCLUSIVE,
              MeasurementPhase.ERROR)
CANARY = Scope("ml", "digits", "r2", "cpu", "30s")
ROLLOUT = Rollout.model_validate({
    "slo": {"p99LatencyMs": 40, "maxErrorRate": 0.01},
    "drift": {"maxPSI": 0.2},
    "minSamples": 100,
    "checks": [{"name": "gpu-util", "query": 'avg(util{pool="{{pool}}"})', "max": 0.9, "min": 0.1}],
})
PLAN = plan_analysis(ROLLOUT, CANARY, stable_revision="r1")


def value(v: float, **labels: str) -> QueryResult:
    return QueryResult("q", (Sample(labels, v),))


def bins(*counts: float) -> QueryResult:
    return QueryResult("q", tuple(Sample({"bin": str(i)}, c) for i, c in enumerate(counts)))


EMPTY = QueryResult("q", ())
DOWN = QueryError("q", QueryErrorKind.UNREACHABLE, "connection refused")
GOOD = {
    queries.request_count(CANARY): value(250),
    queries.p99_latency_ms(CANARY): value(12.5),
    queries.error_rate(CANARY): value(0.0),
    queries.input_drift_psi(CANARY): value(0.03),
    queries.output_bins(CANARY): bins(500, 500, 500, 500),
    queries.output_bins(CANARY.with_revision("r1")): bins(1000, 1000, 1000, 1000),
    'avg(util{pool="cpu"})': value(0.5),
}


def phases(answers: dict) -> dict[str, MeasurementPhase]:
    return {m.name: m.phase for m in measure(PLAN, answers)}


def test_the_plan_has_every_check_the_spec_asks_for_with_its_threshold() -> None:
    assert [c.name for c in (PLAN.samples, *PLAN.checks)] == [
        "request-count", "p99-latency", "error-rate", "input-drift", "prediction-drift", "gpu-util"]
    by_name = {c.name: c for c in PLAN.checks}
    assert by_name["p99-latency"].threshold.max == 40
    assert by_name["error-rate"].threshold.max == 0.01
    assert by_name["input-drift"].threshold.max == by_name["prediction-drift"].threshold.max == 0.2
    assert (by_name["gpu-util"].threshold.min, by_name["gpu-util"].threshold.max) == (0.1, 0.9)
    assert PLAN.samples.threshold.min == 100
    assert set(PLAN.queries) == set(GOOD)


@pytest.mark.parametrize(
    ("rollout", "stable", "profiled", "names"),
    [
        ({}, None, True, ["request-count"]),
        ({"slo": {"p99LatencyMs": 40}}, None, True, ["request-count", "p99-latency"]),
        ({"drift": {}}, None, True, ["request-count", "input-drift"]),
        ({"drift": {}}, "r2", True, ["request-count", "input-drift"]),  # guard after promotion: canary is stable
        ({"drift": {}}, "r1", True, ["request-count", "input-drift", "prediction-drift"]),
        ({"drift": {}}, "r1", False, ["request-count"]),  # an artifact without a drift profile
    ],
)
def test_which_checks_are_planned(rollout: dict, stable: str | None, profiled: bool, names: list[str]) -> None:
    plan = plan_analysis(Rollout.model_validate(rollout), CANARY, stable, drift_profiled=profiled)
    assert [c.name for c in (plan.samples, *plan.checks)] == names


def test_all_within_thresholds_is_successful_with_values_and_queries_recorded() -> None:
    ms = {m.name: m for m in measure(PLAN, GOOD)}
    assert {n: m.phase for n, m in ms.items()} == dict.fromkeys(ms, S)
    assert ms["p99-latency"].value == 12.5 and ms["p99-latency"].query == queries.p99_latency_ms(CANARY)
    assert ms["p99-latency"].message == "p99-latency 12.5 ms <= 40 ms"
    assert ms["request-count"].value == 250
    assert ms["prediction-drift"].value == pytest.approx(0.0)
    assert ms["prediction-drift"].query.splitlines() == [queries.output_bins(CANARY),
                                                         queries.output_bins(CANARY.with_revision("r1"))]
    assert ms["prediction-drift"].kind is CheckKind.PREDICTION_DRIFT


@pytest.mark.parametrize(
    ("query", "answer", "name", "message"),
    [
        (queries.p99_latency_ms(CANARY), value(52.3), "p99-latency", "p99-latency 52.3 ms > 40 ms"),
        (queries.p99_latency_ms(CANARY), value(math.inf), "p99-latency", "p99-latency inf ms > 40 ms"),
        (queries.error_rate(CANARY), value(0.3), "error-rate", "error-rate 0.3 > 0.01"),
        (queries.input_drift_psi(CANARY), value(0.8), "input-drift", "input-drift 0.8 PSI > 0.2 PSI"),
        ('avg(util{pool="cpu"})', value(0.95), "gpu-util", "gpu-util 0.95 > 0.9"),
        ('avg(util{pool="cpu"})', value(0.05), "gpu-util", "gpu-util 0.05 < 0.1"),
        # A vector: the worst series decides.
        ('avg(util{pool="cpu"})', QueryResult("q", (Sample({"a": "1"}, 0.5), Sample({"a": "2"}, 0.97))),
         "gpu-util", "gpu-util 0.97 > 0.9"),
    ],
)
def test_beyond_a_threshold_is_failed(query: str, answer: QueryResult, name: str, message: str) -> None:
    ms = {m.name: m for m in measure(PLAN, {**GOOD, query: answer})}
    assert ms[name].phase is F and ms[name].message == message
    assert [n for n, m in ms.items() if m.phase is not S] == [name]


def test_predictions_that_differ_from_the_stable_revisions_fail() -> None:
    answers = {**GOOD, queries.output_bins(CANARY): bins(1900, 50, 50, 0)}
    ms = {m.name: m for m in measure(PLAN, answers)}
    assert ms["prediction-drift"].phase is F and ms["prediction-drift"].value > 0.2


@pytest.mark.parametrize(
    ("query", "answer", "name"),
    [
        (queries.p99_latency_ms(CANARY), EMPTY, "p99-latency"),
        (queries.p99_latency_ms(CANARY), value(math.nan), "p99-latency"),  # quantile over no requests
        (queries.error_rate(CANARY), value(math.nan), "error-rate"),  # 0 / 0
        (queries.input_drift_psi(CANARY), EMPTY, "input-drift"),  # no drift gauge yet
        (queries.output_bins(CANARY), bins(0, 0, 0, 0), "prediction-drift"),
        (queries.output_bins(CANARY.with_revision("r1")), EMPTY, "prediction-drift"),
    ],
)
def test_no_data_is_inconclusive_not_successful(query: str, answer: QueryResult, name: str) -> None:
    ms = {m.name: m for m in measure(PLAN, {**GOOD, query: answer})}
    assert ms[name].phase is I and ms[name].value is None
    assert "no data" in ms[name].message or "no predictions" in ms[name].message


@pytest.mark.parametrize("count", [EMPTY, value(99), value(0)])
def test_fewer_than_min_samples_makes_every_check_inconclusive_even_a_failing_one(count: QueryResult) -> None:
    answers = {**GOOD, queries.request_count(CANARY): count, queries.p99_latency_ms(CANARY): value(500.0)}
    ms = {m.name: m for m in measure(PLAN, answers)}
    assert {m.phase for m in ms.values()} == {I}
    assert ms["p99-latency"].value == 500.0, "the value is still recorded"
    assert "requests" in ms["p99-latency"].message


def test_exactly_min_samples_is_enough() -> None:
    assert set(phases({**GOOD, queries.request_count(CANARY): value(100)}).values()) == {S}


def test_prometheus_unreachable_is_error() -> None:
    ms = {m.name: m for m in measure(PLAN, dict.fromkeys(GOOD, DOWN))}
    assert {m.phase for m in ms.values()} == {E}
    assert "Unreachable" in ms["p99-latency"].message and "connection refused" in ms["p99-latency"].message


def test_one_query_failing_is_error_for_that_check_and_unknown_samples_hold_the_others() -> None:
    assert phases({**GOOD, queries.error_rate(CANARY): DOWN})["error-rate"] is E
    assert phases({**GOOD, queries.output_bins(CANARY.with_revision("r1")): DOWN})["prediction-drift"] is E
    held = phases({**GOOD, queries.request_count(CANARY): DOWN})
    assert held.pop("request-count") is E and set(held.values()) == {I}


def test_a_query_nobody_answered_is_error() -> None:
    assert phases({})["p99-latency"] is E


def test_run_analysis_asks_each_query_once() -> None:
    asked: list[str] = []

    def query(text: str) -> QueryResult:
        asked.append(text)
        return GOOD[text]

    assert {m.phase for m in run_analysis(PLAN, query)} == {S}
    assert sorted(asked) == sorted(GOOD)


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [
        ({"0": 10, "1": 10}, {"0": 100, "1": 100}, 0.0),
        ({"0": 10}, {"0": 5, "1": 5}, "positive"),  # a bin missing on one side counts 0
        ({}, {"0": 1}, None),
        ({"0": 1}, {"0": 0.0}, None),
    ],
)
def test_prediction_psi_between_two_revisions(canary: dict, stable: dict, expected: object) -> None:
    psi = prediction_psi(canary, stable)
    if expected == "positive":
        assert psi is not None and psi > 1
    else:
        assert psi == (pytest.approx(expected) if expected is not None else None)


def test_prediction_psi_orders_bins_numerically() -> None:
    many = {str(i): float(i + 1) for i in range(12)}
    assert prediction_psi(many, many) == pytest.approx(0.0)


def test_too_few_predictions_to_compare_is_inconclusive_whatever_the_psi() -> None:
    # 40 predictions a side: chance alone moves PSI by ~0.2 over 4 bins; no evidence either way.
    answers = {**GOOD, queries.output_bins(CANARY): bins(30, 5, 5, 0),
               queries.output_bins(CANARY.with_revision("r1")): bins(10, 10, 10, 10)}
    (m,) = [m for m in measure(PLAN, answers) if m.name == "prediction-drift"]
    assert m.phase is MeasurementPhase.INCONCLUSIVE and m.value is not None and m.value > 0.2
    assert "too few predictions to compare (40 < 500 on one side)" in m.message
