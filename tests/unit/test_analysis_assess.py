"""The verdict of one analysis run from its measurements: Fail > Error > NoData > Pass, with a reason."""

from __future__ import annotations

import itertools

import pytest

from optimodel_operator.analysis.assess import Verdict, assess
from optimodel_operator.analysis.measurement import CheckKind, Measurement, MeasurementPhase, Threshold

S, F, I, E = (MeasurementPhase.SUCCESSFUL, MeasurementPhase.FAILED, MeasurementPhase.INCONCLUSIVE,
              MeasurementPhase.ERROR)
KINDS = {"request-count": CheckKind.REQUEST_COUNT, "p99-latency": CheckKind.LATENCY,
         "error-rate": CheckKind.ERROR_RATE, "input-drift": CheckKind.INPUT_DRIFT,
         "prediction-drift": CheckKind.PREDICTION_DRIFT, "mine": CheckKind.USER}


def m(name: str, phase: MeasurementPhase, value: float | None = 1.0) -> Measurement:
    return Measurement(name, KINDS[name], f"q_{name}", value, phase, Threshold(max=2.0), f"{name} {phase.value} {value}")


@pytest.mark.parametrize(
    ("phases", "verdict"),
    [
        # Every combination of phases over three checks: the precedence is the whole rule.
        *[
            (combo, Verdict.FAIL if F in combo else Verdict.ERROR if E in combo
             else Verdict.NO_DATA if I in combo else Verdict.PASS)
            for combo in itertools.product((S, F, I, E), repeat=3)
        ],
    ],
    ids=lambda v: "-".join(p.value[0] for p in v) if isinstance(v, tuple) else str(v),
)
def test_precedence_fail_then_error_then_no_data_then_pass(phases: tuple, verdict: Verdict) -> None:
    names = ("p99-latency", "error-rate", "input-drift")
    result = assess([m(n, p) for n, p in zip(names, phases, strict=True)])
    assert result.verdict is verdict


def test_nothing_measured_is_never_a_pass() -> None:
    assert assess([]).verdict is Verdict.NO_DATA
    assert assess([]).reason == "nothing was measured"


def test_the_reason_names_the_failed_checks_and_their_values_only() -> None:
    result = assess([m("request-count", S, 300), m("p99-latency", F, 52.0), m("error-rate", S, 0),
                     m("input-drift", I, None), m("mine", F, 7.0)])
    assert result.verdict is Verdict.FAIL
    assert result.reason == "p99-latency Failed 52.0; mine Failed 7.0"
    assert result.failed == ("p99-latency", "mine") and result.inconclusive == ("input-drift",)
    assert "\n" not in result.reason


@pytest.mark.parametrize(
    ("failed", "input_drift", "slo", "prediction"),
    [
        (["input-drift"], True, False, False),
        (["p99-latency"], False, True, False),
        (["error-rate", "input-drift"], True, True, False),
        (["prediction-drift"], False, False, True),
        (["mine"], False, False, False),
    ],
)
def test_which_kind_failed_is_machine_readable(failed: list[str], input_drift: bool, slo: bool,
                                                prediction: bool) -> None:
    ms = [m("request-count", S)] + [m(name, F if name in failed else S) for name in
                                    ("p99-latency", "error-rate", "input-drift", "prediction-drift", "mine")]
    result = assess(ms)
    assert result.failed_kinds == frozenset(KINDS[n] for n in failed)
    assert (result.input_drift_failed, result.slo_failed, result.prediction_drift_failed) == (input_drift, slo, prediction)


def test_error_and_no_data_reasons_name_their_checks() -> None:
    error = assess([m("request-count", S), m("p99-latency", E), m("error-rate", I)])
    assert error.verdict is Verdict.ERROR and error.reason == "p99-latency Error 1.0" and error.errors == ("p99-latency",)
    no_data = assess([m("request-count", I, 12), m("p99-latency", I)])
    assert no_data.verdict is Verdict.NO_DATA and no_data.reason == "request-count Inconclusive 12; p99-latency Inconclusive 1.0"


def test_a_pass_lists_every_check() -> None:
    result = assess([m("request-count", S, 300), m("p99-latency", S, 3.0)])
    assert result.verdict is Verdict.PASS and result.reason == "request-count Successful 300; p99-latency Successful 3.0"
    assert result.failed == () and result.failed_kinds == frozenset()
