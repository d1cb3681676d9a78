"""The verdict of one analysis run, as a pure function of its measurements (Argo Rollouts'
``assessMetricStatus`` shape): any Failed → Fail; else any Error → Error; else any Inconclusive →
NoData; else Pass. No measurements at all is NoData: nothing is ever promoted blind.

What the rollout does with a verdict (count failures against ``failureLimit``, hold or fail on NoData per
``noData``, count consecutive Errors) is the state machine's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from optimodel_operator.analysis.measurement import CheckKind, Measurement, MeasurementPhase


class Verdict(StrEnum):
    PASS = "Pass"  # every check Successful, on at least minSamples requests
    FAIL = "Fail"  # at least one check Failed (beyond its threshold)
    ERROR = "Error"  # none Failed, but Prometheus could not answer at least one query
    NO_DATA = "NoData"  # none Failed or Error, but at least one check had no data or too few requests


@dataclass(frozen=True)
class Assessment:
    """One analysis run's verdict, a one-line reason naming the deciding checks and their values, and
    which checks decided it (names and kinds: machine-readable for the rollout)."""

    verdict: Verdict
    reason: str
    failed: tuple[str, ...]
    failed_kinds: frozenset[CheckKind]
    errors: tuple[str, ...]
    inconclusive: tuple[str, ...]
    measurements: tuple[Measurement, ...]

    @property
    def input_drift_failed(self) -> bool:
        """Inputs drifted beyond what the gate evaluated: the rollout falls back to a safer (float) revision."""
        return CheckKind.INPUT_DRIFT in self.failed_kinds

    @property
    def slo_failed(self) -> bool:
        return any(kind.is_slo for kind in self.failed_kinds)

    @property
    def prediction_drift_failed(self) -> bool:
        return CheckKind.PREDICTION_DRIFT in self.failed_kinds


def _names(measurements: Sequence[Measurement], phase: MeasurementPhase) -> tuple[str, ...]:
    return tuple(m.name for m in measurements if m.phase is phase)


def _reason(measurements: Sequence[Measurement], phase: MeasurementPhase | None) -> str:
    chosen = [m for m in measurements if phase is None or m.phase is phase]
    return "; ".join(m.message for m in chosen)


def assess(measurements: Sequence[Measurement]) -> Assessment:
    """The verdict of one analysis run; ``reason`` joins the deciding measurements' messages."""
    ms = tuple(measurements)
    failed = _names(ms, MeasurementPhase.FAILED)
    errors = _names(ms, MeasurementPhase.ERROR)
    inconclusive = _names(ms, MeasurementPhase.INCONCLUSIVE)
    kinds = frozenset(m.kind for m in ms if m.phase is MeasurementPhase.FAILED)
    if not ms:
        verdict, reason = Verdict.NO_DATA, "nothing was measured"
    elif failed:
        verdict, reason = Verdict.FAIL, _reason(ms, MeasurementPhase.FAILED)
    elif errors:
        verdict, reason = Verdict.ERROR, _reason(ms, MeasurementPhase.ERROR)
    elif inconclusive:
        verdict, reason = Verdict.NO_DATA, _reason(ms, MeasurementPhase.INCONCLUSIVE)
    else:
        verdict, reason = Verdict.PASS, _reason(ms, None)
    return Assessment(verdict, reason.replace("\n", " "), failed, kinds, errors, inconclusive, ms)
