"""The accuracy gate: a table of pure cases and a deliberately broken variant through the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optimodel_contracts.artifacts import read_manifest
from optimodel_contracts.jobconfig import EvaluationSpec, parse_config
from optimodel_jobs.gate import METRICS, agreement, decide, metric_drop
from optimodel_jobs.pipeline import run
from optimodel_jobs.zoo import build


def _evaluation(**kwargs: Any) -> EvaluationSpec:
    return EvaluationSpec.model_validate({"dataset": "eval.npz", **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "metric", "source", "variant", "agree", "passed"),
    [
        ({"maxDrop": 0.01, "maxDropMode": "relative"}, "accuracy", 0.90, 0.895, 0.99, True),  # 0.56% relative
        ({"maxDrop": 0.01, "maxDropMode": "relative"}, "accuracy", 0.90, 0.88, 0.99, False),  # 2.2% relative
        ({"maxDrop": 0.01, "maxDropMode": "absolute"}, "accuracy", 0.90, 0.891, 0.99, True),
        ({"maxDrop": 0.01, "maxDropMode": "absolute"}, "accuracy", 0.90, 0.889, 0.99, False),
        ({"maxDrop": 0.0}, "accuracy", 0.90, 0.95, 0.90, True),  # better than the source is fine
        ({"maxDrop": 0.05, "maxDropMode": "relative"}, "mse", 1.00, 1.04, 0.99, True),  # lower is better: +4% error
        ({"maxDrop": 0.05}, "mse", 1.00, 1.06, 0.99, False),
        ({"maxDrop": 0.05}, "mse", 1.00, 0.50, 0.99, True),
        ({"maxDrop": 0.05, "higherIsBetter": True}, "mse", 1.00, 0.50, 0.99, False),  # explicit override
        ({"maxDrop": 0.05, "minAgreement": 0.98}, "accuracy", 0.90, 0.90, 0.97, False),
        ({"maxDrop": 0.05, "minAgreement": 0.98}, "accuracy", 0.90, 0.90, 0.985, True),
    ],
)
def test_gate_table(kwargs: dict[str, Any], metric: str, source: float, variant: float, agree: float, passed: bool) -> None:
    verdict = decide(_evaluation(**kwargs), METRICS[metric], source, variant, agree)
    assert verdict.passed is passed
    assert verdict.deployable is passed
    assert verdict.reason


def test_non_finite_outputs_never_pass() -> None:
    verdict = decide(_evaluation(maxDrop=1.0), METRICS["accuracy"], 0.9, 0.9, 1.0, outputs_finite=False)
    assert not verdict.passed and not verdict.deployable and "NaN" in verdict.reason


def test_drop_and_agreement_maths() -> None:
    assert metric_drop(0.8, 0.6, True, "relative") == pytest.approx(0.25)
    assert metric_drop(0.8, 0.6, True, "absolute") == pytest.approx(0.2)
    assert metric_drop(2.0, 3.0, False, "relative") == pytest.approx(0.5)
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    flipped = logits.copy()
    flipped[0] = [0.0, 1.0]
    assert agreement(flipped, logits, "classification") == 0.75
    assert agreement(logits[:, :1] * 2, logits[:, :1] * 2, "regression") == 1.0


def _break_weights(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape).astype(array.dtype), init.name))
    onnx.save(model, str(target))
    return target


@pytest.mark.slow
def test_broken_variant_is_refused_and_never_chosen(tmp_path: Path) -> None:
    """Pruning 90% of the neurons without fine-tuning wrecks the model; the gate must say so."""
    mlp = build("digits-mlp-tiny")
    config = parse_config({
        "name": "broken",
        "source": mlp.source_config(),
        "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.01},
        "training": str(mlp.train),  # the importance pass reads training data, never evaluation data
        "variants": [
            {"name": "wrecked", "prune": {"amount": 0.95, "fineTuneEpochs": 0}},
            {"name": "wrecked-int8", "from": "wrecked", "quantize": {"mode": "dynamic"}},
        ],
        "pools": [{"name": "cpu"}],
        "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(tmp_path / "store"),
        "workDir": str(tmp_path / "work"),
    })
    result = run(config)
    for outcome in result.variants:
        assert outcome.gate is not None and not outcome.gate.passed and not outcome.gate.deployable
        assert "exceeds maxDrop" in outcome.gate.reason
        manifest = read_manifest(outcome.manifest_uri or "")
        assert not manifest.gate.deployable
        assert manifest.metrics["variant"] < manifest.metrics["source"]
    assert result.chosen == {"cpu": None}


@pytest.mark.slow
def test_gate_refuses_a_model_with_scrambled_weights(tmp_path: Path) -> None:
    """A variant whose weights were scrambled (same graph, same shapes) is caught by the metric."""
    mlp = build("digits-mlp-tiny")
    broken = _break_weights(mlp.onnx, tmp_path / "broken.onnx")
    base = {
        "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.05},
        "variants": [], "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(tmp_path / "store"),
    }
    good = run(parse_config({**base, "source": {"uri": str(mlp.onnx)}, "workDir": str(tmp_path / "a")}))
    bad = run(parse_config({**base, "source": {"uri": str(broken)}, "workDir": str(tmp_path / "b")}))
    assert good.source.outputs is not None and bad.source.outputs is not None
    verdict = decide(
        good.config.evaluation, METRICS["accuracy"], good.source.metric or 0, bad.source.metric or 0,
        agreement(bad.source.outputs, good.source.outputs, "classification"),
    )
    assert not verdict.passed and not verdict.deployable


# The accuracy-aware fallback of static int8 (forced on every machine by an outlier in the calibration data, its
# rounds judged on the tuning rows only): test_optimizer_data_roles.py.
