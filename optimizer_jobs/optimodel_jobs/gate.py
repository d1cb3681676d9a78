"""Metrics and the accuracy gate: pure functions over predictions, no I/O.

The gate compares a variant with the source on the same held-out data: the metric's drop (relative
to the source's value, or absolute), in the metric's own direction, and how often the variant's
predictions agree with the source's. A variant that misses is never deployable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optimodel_jobs import errors
from optimodel_contracts.artifacts import GateVerdict, SliceResult
from optimodel_contracts.jobconfig import Budgets, EvaluationSpec, GateOverride, SliceSpec
from optimodel_jobs.errors import OptimizeError


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    needs_labels: bool
    tasks: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray | None, np.ndarray], float]  # (outputs, labels, source outputs)


def _predicted_classes(outputs: np.ndarray) -> np.ndarray:
    outputs = np.asarray(outputs)
    if outputs.ndim == 1:
        return (outputs > 0.5).astype(np.int64) if outputs.dtype.kind == "f" else outputs.astype(np.int64)
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > 0).astype(np.int64)  # a single logit
    return np.argmax(outputs, axis=-1)


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None, _source: np.ndarray) -> float:
    assert labels is not None
    return float(np.mean(_predicted_classes(outputs) == labels.reshape(-1)))


def _f1_macro(outputs: np.ndarray, labels: np.ndarray | None, _source: np.ndarray) -> float:
    assert labels is not None
    predicted, truth = _predicted_classes(outputs), labels.reshape(-1)
    scores = []
    for cls in np.unique(np.concatenate([predicted, truth])):
        tp = np.sum((predicted == cls) & (truth == cls))
        fp = np.sum((predicted == cls) & (truth != cls))
        fn = np.sum((predicted != cls) & (truth == cls))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _regression_values(outputs: np.ndarray) -> np.ndarray:
    return np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)


def _mse(outputs: np.ndarray, labels: np.ndarray | None, _source: np.ndarray) -> float:
    assert labels is not None
    return float(np.mean((_regression_values(outputs) - np.asarray(labels, np.float64).reshape(len(outputs), -1)) ** 2))


def _mae(outputs: np.ndarray, labels: np.ndarray | None, _source: np.ndarray) -> float:
    assert labels is not None
    return float(np.mean(np.abs(_regression_values(outputs) - np.asarray(labels, np.float64).reshape(len(outputs), -1))))


def _rmse(outputs: np.ndarray, labels: np.ndarray | None, source: np.ndarray) -> float:
    return float(np.sqrt(_mse(outputs, labels, source)))


def agreement(outputs: np.ndarray, source_outputs: np.ndarray, task: str) -> float:
    """Classification: share of samples with the source's predicted class. Regression: R^2 of the
    variant's predictions against the source's (1 = identical)."""
    if task == "classification":
        return float(np.mean(_predicted_classes(outputs) == _predicted_classes(source_outputs)))
    mine, theirs = _regression_values(outputs), _regression_values(source_outputs)
    spread = float(np.sum((theirs - theirs.mean(axis=0)) ** 2))
    residual = float(np.sum((mine - theirs) ** 2))
    return 1.0 if spread == 0 and residual == 0 else 1.0 - residual / max(spread, 1e-12)


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, True, ("classification",), _accuracy),
    "f1_macro": Metric("f1_macro", True, True, ("classification",), _f1_macro),
    "mse": Metric("mse", False, True, ("regression",), _mse),
    "mae": Metric("mae", False, True, ("regression",), _mae),
    "rmse": Metric("rmse", False, True, ("regression",), _rmse),
    # Without labels, agreement with the source is the metric (the source scores 1.0).
    "agreement": Metric("agreement", True, False, ("classification", "regression"), lambda o, _l, s: 0.0),
}


# The OptimizedModel API's spellings.
ALIASES = {"f1": "f1_macro", "topK": "top_k", "topk": "top_k"}


def _top_k(k: int) -> Callable[[np.ndarray, np.ndarray | None, np.ndarray], float]:
    def compute(outputs: np.ndarray, labels: np.ndarray | None, _source: np.ndarray) -> float:
        assert labels is not None
        best = np.argsort(-np.asarray(outputs), axis=-1)[:, :k]
        return float(np.mean(np.any(best == labels.reshape(-1, 1), axis=1)))

    return compute


def metric_for(name: str, task: str, top_k: int | None = None) -> Metric:
    name = ALIASES.get(name, name)
    if name == "top_k":
        if top_k is None:
            raise OptimizeError(errors.UNKNOWN_METRIC, "metric top_k needs evaluation.topK (k)")
        return Metric(f"top{top_k}", True, True, ("classification",), _top_k(top_k))
    metric = METRICS.get(name)
    if metric is None:
        known = sorted([*METRICS, "top_k", *ALIASES])
        raise OptimizeError(errors.UNKNOWN_METRIC, f"unknown metric {name!r}; known: {', '.join(known)}")
    if task not in metric.tasks:
        raise OptimizeError(errors.UNKNOWN_METRIC, f"metric {name!r} does not apply to a {task} task")
    return metric


def with_override(evaluation: EvaluationSpec, override: GateOverride | None) -> EvaluationSpec:
    """The evaluation settings for one variant: its own gate fields replace the defaults."""
    if override is None:
        return evaluation
    changes = {k: v for k, v in override.model_dump().items() if v is not None}
    return evaluation.model_copy(update=changes)


def apply_budgets(
    verdict: GateVerdict, budgets: Budgets, p99_ms: float | None, speedup: float | None, size_bytes: int | None
) -> GateVerdict:
    """Pure: the accuracy verdict, then the latency / speed-up / size limits (a failure names each)."""
    if not verdict.passed:
        return verdict
    problems = []
    if budgets.max_latency_ms is not None and (p99_ms is None or p99_ms > budgets.max_latency_ms):
        problems.append(f"p99 {p99_ms if p99_ms is None else round(p99_ms, 3)} ms exceeds maxLatencyMs {budgets.max_latency_ms}")
    if budgets.min_speedup is not None and (speedup is None or speedup < budgets.min_speedup):
        problems.append(f"speed-up {speedup if speedup is None else round(speedup, 3)}x is below minSpeedup {budgets.min_speedup}")
    if budgets.max_size_mib is not None and (size_bytes is None or size_bytes / 2**20 > budgets.max_size_mib):
        size = None if size_bytes is None else round(size_bytes / 2**20, 3)
        problems.append(f"size {size} MiB exceeds maxSizeMiB {budgets.max_size_mib}")
    if not problems:
        return verdict
    return verdict.model_copy(update={"passed": False, "deployable": False, "reason": f"{verdict.reason}; but {'; '.join(problems)}"})


def score(metric: Metric, outputs: np.ndarray, labels: np.ndarray | None, source_outputs: np.ndarray, task: str) -> float:
    if metric.name == "agreement":
        return agreement(outputs, source_outputs, task)
    return metric.compute(outputs, labels, source_outputs)


def metric_drop(source_value: float, variant_value: float, higher_is_better: bool, drop_type: str) -> float:
    """How much worse the variant is, in the metric's direction (negative = better than the source)."""
    worse_by = (source_value - variant_value) if higher_is_better else (variant_value - source_value)
    if drop_type == "absolute":
        return worse_by
    return worse_by / abs(source_value) if source_value != 0 else worse_by


# --------------------------------------------------------------------------------------------------
# Slices: overall accuracy within budget can hide a collapse on one class or one segment
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceCheck:
    """Every slice big enough to judge (``judged``) and how many were too small to."""

    judged: list[SliceResult]
    too_small: int

    @property
    def worst(self) -> SliceResult | None:
        return max(self.judged, key=lambda s: (s.drop, -s.size, s.name)) if self.judged else None

    @property
    def failed(self) -> list[SliceResult]:
        return [s for s in self.judged if not s.passed]


def _value_text(value: object) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def slice_check(
    spec: SliceSpec,
    metric: Metric,
    task: str,
    higher_is_better: bool,
    outputs: np.ndarray,
    source_outputs: np.ndarray,
    labels: np.ndarray | None,
    columns: dict[str, np.ndarray],
) -> SliceCheck:
    """Pure: the metric's drop on each slice of the rows. Classification with labels and ``perClass``: one
    slice per true label (``class=3``), judged on the class's accuracy (its recall) when the metric is
    f1_macro, whose value on the rows of one class means nothing; otherwise every slice is judged on the
    gate's metric. Each of ``columns`` (name -> one value per row): one slice per value (``region=eu``)."""
    groups: list[tuple[str, np.ndarray]] = []
    if spec.per_class and task == "classification" and labels is not None:
        truth = np.asarray(labels).reshape(-1)
        groups += [(f"class={_value_text(c)}", truth == c) for c in np.unique(truth)]
    for column, values in columns.items():
        values = np.asarray(values)
        groups += [(f"{column}={_value_text(v)}", values == v) for v in _unique(values)]
    judged: list[SliceResult] = []
    too_small = 0
    per_class_metric = METRICS["accuracy"] if metric.name == "f1_macro" else metric
    for name, rows in groups:
        size = int(rows.sum())
        if size < spec.min_size:
            too_small += 1
            continue
        chosen = per_class_metric if name.startswith("class=") else metric
        slice_labels = None if labels is None else np.asarray(labels)[rows]
        source_value = score(chosen, source_outputs[rows], slice_labels, source_outputs[rows], task)
        variant_value = score(chosen, outputs[rows], slice_labels, source_outputs[rows], task)
        drop = metric_drop(source_value, variant_value, higher_is_better, spec.max_drop_mode)
        judged.append(SliceResult(
            name=name, size=size, source_metric=round(source_value, 6), variant_metric=round(variant_value, 6),
            drop=round(drop, 6), max_drop=spec.max_drop, passed=bool(drop <= spec.max_drop + 1e-12),
        ))
    return SliceCheck(judged, too_small)


def _unique(values: np.ndarray) -> list[object]:
    """Distinct values in first-seen order (object columns of mixed types cannot be sorted)."""
    return list(dict.fromkeys(values.tolist()))


def slice_text(result: SliceResult, mode: str = "absolute") -> str:
    """``class=3: absolute drop +0.0900 (0.7100 vs source 0.8000) on 88 rows``."""
    unit = "relative" if mode == "relative" else "absolute"
    return (f"{result.name}: {unit} drop {result.drop:+.4f} ({result.variant_metric:.4f} vs source "
            f"{result.source_metric:.4f}) on {result.size} rows")


def decide(
    evaluation: EvaluationSpec,
    metric: Metric,
    source_value: float,
    variant_value: float,
    agreement_value: float,
    outputs_finite: bool = True,
    slices: SliceCheck | None = None,
) -> GateVerdict:
    """The gate's verdict for one variant: the overall drop, the agreement, then every judged slice's drop
    (``slices``; the worst slice is recorded whatever the verdict)."""
    if not outputs_finite:
        return GateVerdict(passed=False, reason="the variant produced NaN or infinite outputs", deployable=False)
    seen = {} if slices is None else {
        "worst_slice": slices.worst, "slices_judged": len(slices.judged), "slices_too_small": slices.too_small}
    higher = metric.higher_is_better if evaluation.higher_is_better is None else evaluation.higher_is_better
    drop = metric_drop(source_value, variant_value, higher, evaluation.max_drop_mode)
    unit = "relative" if evaluation.max_drop_mode == "relative" else "absolute"
    described = f"{metric.name} {variant_value:.4f} vs source {source_value:.4f}: {unit} drop {drop:+.4f}"
    if drop > evaluation.max_drop + 1e-12:
        return GateVerdict(passed=False, reason=f"{described} exceeds maxDrop {evaluation.max_drop}", deployable=False, **seen)
    if evaluation.min_agreement is not None and agreement_value < evaluation.min_agreement:
        return GateVerdict(
            passed=False,
            reason=f"agreement with the source {agreement_value:.4f} is below minAgreement {evaluation.min_agreement}",
            deployable=False, **seen,
        )
    mode = evaluation.slices.max_drop_mode
    if slices is not None and slices.failed:
        worst = slices.worst
        assert worst is not None
        others = len(slices.failed) - 1
        return GateVerdict(
            passed=False, deployable=False, **seen,
            reason=f"{described} within maxDrop {evaluation.max_drop}, but slice {slice_text(worst, mode)} exceeds "
            f"slices.maxDrop {worst.max_drop}" + (f" (and {others} more slice{'s' if others > 1 else ''})" if others else ""),
        )
    within = "" if slices is None or slices.worst is None else (
        f"; worst slice {slice_text(slices.worst, mode)} within slices.maxDrop {slices.worst.max_drop}")
    return GateVerdict(passed=True, reason=f"{described} within maxDrop {evaluation.max_drop}{within}", deployable=True, **seen)
