"""Data roles and the slice-aware gate (issue 13): the tuning rows are the only evaluation rows a search or a
selection looks at, the held-out rows only give the final verdict and the reported figures, evaluation rows
never calibrate or train unless the spec says so, and the gate judges each class and each named slice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from optimodel_contracts.artifacts import ArtifactManifest, GateVerdict, read_manifest
from optimodel_contracts.jobconfig import EvaluationSpec, SplitSpec, parse_config
from optimodel_contracts.runrecord import RunRecord
from optimodel_jobs import errors
from optimodel_jobs.datasets import Dataset
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.gate import METRICS, decide, slice_check
from optimodel_jobs.pipeline import run
from optimodel_jobs.splits import CALIBRATION, HELD_OUT, TUNING, assign_roles
from optimodel_jobs.zoo import build

FAST = {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False}


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build("digits-mlp-tiny")


def _rows(x: np.ndarray) -> set[bytes]:
    return {np.ascontiguousarray(row).tobytes() for row in np.asarray(x, dtype=np.float32)}


def _evaluation(**kwargs: Any) -> EvaluationSpec:
    return EvaluationSpec.model_validate({"dataset": "eval.npz", **kwargs})


# --------------------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------------------


def test_the_split_is_a_hash_of_each_row_whatever_the_order_and_duplicates_share_a_role() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 2000)
    table = Dataset("t.npz", {"x": x}, labels)
    roles = assign_roles(table, SplitSpec(seed=0, tuning_fraction=0.3), tuning_given=False)
    assert set(np.unique(roles)) == {HELD_OUT, TUNING}
    assert 0.25 < float(np.mean(roles == TUNING)) < 0.35  # about tuningFraction
    again = assign_roles(table, SplitSpec(seed=0, tuning_fraction=0.3), tuning_given=False)
    assert np.array_equal(roles, again)  # deterministic
    order = rng.permutation(2000)
    shuffled = assign_roles(Dataset("t.csv", {"x": x[order]}, labels[order].astype(np.float64)), SplitSpec(), False)
    assert np.array_equal(shuffled, roles[order])  # a row's role is its own, not its position's or its file's
    other_seed = assign_roles(table, SplitSpec(seed=1), False)
    assert not np.array_equal(other_seed, roles)
    doubled = Dataset("t.npz", {"x": np.concatenate([x, x])}, np.concatenate([labels, labels]))
    twice = assign_roles(doubled, SplitSpec(), False)
    assert np.array_equal(twice[:2000], twice[2000:])  # a duplicate of a held-out row is held out too
    three = assign_roles(table, SplitSpec(tuning_fraction=0.3, calibration_fraction=0.2), False)
    assert set(np.unique(three)) == {HELD_OUT, TUNING, CALIBRATION}
    assert 0.15 < float(np.mean(three == CALIBRATION)) < 0.25
    given = assign_roles(table, SplitSpec(tuning_fraction=0.3), tuning_given=True)
    assert not (given == TUNING).any()  # a tuning dataset of its own: every row of this one is held out


def test_split_fractions_must_leave_rows_held_out() -> None:
    with pytest.raises(OptimizeError, match="tuningFraction"):
        parse_config({"source": {"uri": "m.onnx"}, "evaluation": {"dataset": "e.npz", "split": {"tuningFraction": 0.6, "calibrationFraction": 0.4}}})


# --------------------------------------------------------------------------------------------------
# The slice gate (pure)
# --------------------------------------------------------------------------------------------------


def _one_hot(classes: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[classes]


def test_a_collapse_on_one_class_fails_the_gate_though_overall_accuracy_is_within_one_percent() -> None:
    """2002 rows, 10 classes, class 3 rare (40 rows); the variant gets 12 of them wrong: overall -0.6 points
    (within maxDrop 0.01), class 3 -30 points (over the per-class budget of 5)."""
    labels = np.concatenate([np.full(40 if c == 3 else 218, c) for c in range(10)])
    source = _one_hot(labels, 10)
    predicted = labels.copy()
    predicted[np.flatnonzero(labels == 3)[:12]] = 4
    variant = _one_hot(predicted, 10)
    spec = _evaluation(maxDrop=0.01)
    metric = METRICS["accuracy"]
    check = slice_check(spec.slices, metric, "classification", True, variant, source, labels, {})
    overall = float(np.mean(predicted == labels))
    assert 1.0 - overall < 0.01
    verdict = decide(spec, metric, 1.0, overall, overall, True, check)
    assert not verdict.passed and not verdict.deployable
    assert verdict.worst_slice is not None and verdict.worst_slice.name == "class=3"
    assert verdict.worst_slice.size == 40 and verdict.worst_slice.drop == pytest.approx(0.3, abs=1e-6)
    assert "slice class=3" in verdict.reason and "slices.maxDrop 0.05" in verdict.reason
    assert verdict.slices_judged == 10 and verdict.slices_too_small == 0
    # Without the slices, the same figures pass: the slice check is what refuses it.
    assert decide(spec, metric, 1.0, overall, overall, True, None).passed


def test_slices_too_small_are_counted_not_judged_and_named_columns_are_slices() -> None:
    labels = np.array([0] * 50 + [1] * 50 + [2] * 10)
    source = _one_hot(labels, 3)
    predicted = labels.copy()
    predicted[100:110] = 0  # class 2 wrecked, but it has 10 rows (< minSize 30)
    region = np.array(["eu"] * 60 + ["us"] * 50)
    predicted[60:64] = 2  # four rows of class 1, all in region "us"
    spec = _evaluation(slices={"columns": ["region"], "minSize": 30, "maxDrop": 0.05})
    check = slice_check(spec.slices, METRICS["accuracy"], "classification", True, _one_hot(predicted, 3), source, labels,
                        {"region": region})
    names = {s.name: s for s in check.judged}
    assert set(names) == {"class=0", "class=1", "region=eu", "region=us"}
    assert check.too_small == 1
    assert names["region=us"].drop == pytest.approx(14 / 50) and not names["region=us"].passed
    assert check.worst is not None and check.worst.name == "region=us"
    # Regression: no per-class slices, only the named columns, in the metric's direction (lower is better).
    values = np.linspace(0, 1, 100)
    segment = np.array(["a"] * 50 + ["b"] * 50)
    worse = values.copy()
    worse[50:] += 0.5
    regression = slice_check(_evaluation(slices={"columns": ["segment"], "minSize": 30}).slices, METRICS["mae"], "regression",
                             False, worse[:, None], values[:, None], values, {"segment": segment})
    assert [s.name for s in regression.judged] == ["segment=a", "segment=b"]
    assert regression.worst is not None and regression.worst.name == "segment=b" and regression.worst.drop == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# Through the pipeline
# --------------------------------------------------------------------------------------------------


def _outlier_calibration(mlp: Any, folder: Path) -> Path:
    """The calibration set with one row of huge values: every activation range (and so every int8 step) is
    set by that row, the ordinary rows all round to the same few levels, and plain static int8 collapses."""
    data = dict(np.load(mlp.calibration))
    x = data["x"].copy()
    x[0] = 1000.0
    data["x"] = x
    path = folder / "calibration-with-outlier.npz"
    np.savez(path, **data)
    return path


def _fallback_config(mlp: Any, tmp: Path, calibration: Path) -> dict[str, Any]:
    return {
        "name": "fallback",
        "source": {"uri": str(mlp.onnx)},
        "evaluation": {"dataset": str(mlp.evaluation), "metric": "accuracy", "maxDrop": 0.02},
        "calibration": {"dataset": str(calibration), "samples": 64},
        "variants": [{"name": "int8-static", "quantize": {"mode": "static", "fallback": {"maxRounds": 3, "nodesPerRound": 1}}}],
        "latency": FAST,
        "store": str(tmp / "store"),
        "workDir": str(tmp / "work"),
    }


@pytest.mark.slow
def test_static_int8_fallback_is_forced_and_held_out_rows_never_reach_the_tuning_loop(
    mlp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outlier makes round 0 fail on every machine (the fallback is needed, not maybe needed); every model the
    fallback judges sees tuning rows only, calibration sees calibration rows only, and the held-out rows reach
    nothing but the final verdict, which is computed once per variant after the last round."""
    import optimodel_jobs.pipeline as pipeline
    import optimodel_jobs.quantize as quantize

    seen: list[tuple[str, set[bytes]]] = []  # (model file, rows it was run on), in order
    real_predict = pipeline.predict

    def spy_predict(path: Path, data: Any, threads: int) -> np.ndarray:
        seen.append((Path(path).name, _rows(data.inputs["x"])))
        return real_predict(path, data, threads)

    calibrated: list[set[bytes]] = []
    real_once = quantize.quantize_static_once

    def spy_once(pre: Path, dest: Path, spec: Any, calibration: Any, data: Any, *rest: Any, **named: Any) -> Any:
        calibrated.append(_rows(data.take(calibration.samples).inputs["x"]))
        return real_once(pre, dest, spec, calibration, data, *rest, **named)

    ranked: list[set[bytes]] = []
    real_rank = quantize.rank_sensitive_nodes

    def spy_rank(float_path: Path, qdq_path: Path, data: Any, *rest: Any, **named: Any) -> Any:
        ranked.append(_rows(data.inputs["x"]))
        return real_rank(float_path, qdq_path, data, *rest, **named)

    monkeypatch.setattr(pipeline, "predict", spy_predict)
    monkeypatch.setattr(quantize, "quantize_static_once", spy_once)
    monkeypatch.setattr(quantize, "rank_sensitive_nodes", spy_rank)

    calibration = _outlier_calibration(mlp, tmp_path)
    result = run(parse_config(_fallback_config(mlp, tmp_path, calibration)))

    # The roles, recomputed here from the file and the spec (not from the pipeline's own split).
    raw = np.load(mlp.evaluation)
    roles = assign_roles(Dataset("e", {"x": raw["x"].astype(np.float32)}, raw["label"]), SplitSpec(), tuning_given=False)
    held_out, tuning = _rows(raw["x"][roles == HELD_OUT]), _rows(raw["x"][roles == TUNING])
    assert held_out and tuning and not held_out & tuning

    outcome = result.variants[0]
    assert outcome.error is None, outcome.error
    fallback = outcome.details["fallback"]
    attempts = fallback["attempts"]
    # Forced: round 0 fails, the fallback keeps nodes in float, and it ends in a pass, within maxRounds.
    assert attempts[0]["passed"] is False and attempts[0]["float_nodes"] == []
    assert 2 <= len(attempts) <= 4 and attempts[-1]["passed"] is True
    assert [len(a["float_nodes"]) for a in attempts] == list(range(len(attempts)))
    assert fallback["float_nodes"] == attempts[-1]["float_nodes"] and fallback["last_ranking"]
    assert fallback["judged_on"].startswith("tuning rows")

    # Every model run saw exactly the tuning rows or exactly the held-out rows, never a mix.
    kinds = ["tuning" if rows == tuning else "held_out" if rows == held_out else "other" for _, rows in seen]
    assert "other" not in kinds, [(name, len(rows)) for name, rows in seen]
    final = f"baked-{len(attempts) - 1}.onnx"  # the last round's model is the variant's
    on_tuning = [name for (name, _), kind in zip(seen, kinds) if kind == "tuning"]
    on_held_out = [name for (name, _), kind in zip(seen, kinds) if kind == "held_out"]
    # The tuning loop: the source's reference, then each round's candidate, then the chosen one recorded.
    assert on_tuning == ["model.onnx", *[f"baked-{i}.onnx" for i in range(len(attempts))], final]
    # The held-out rows: the source's reference and the one final verdict of the variant, nothing else, and the
    # verdict only after the last round was settled.
    assert on_held_out == ["model.onnx", final]
    assert kinds.index("held_out", 1) > max(i for i, kind in enumerate(kinds) if kind == "tuning")
    for rows in ranked:  # the sensitivity ranking reads calibration rows
        assert not rows & held_out and not rows & tuning
    assert calibrated and all(not rows & (held_out | tuning) for rows in calibrated)

    assert outcome.gate is not None and outcome.gate.passed and outcome.gate.deployable, outcome.gate
    assert outcome.details["tuning"]["rows"] == len(tuning) and outcome.details["tuning"]["passed"] is True
    # The kept nodes really are float in the final graph: their weights are still float initializers.
    assert outcome.raw_path is not None
    qdq = onnx.load(str(outcome.raw_path))
    float_weights = {i.name for i in qdq.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    kept = [n for n in qdq.graph.node if n.name in fallback["float_nodes"]]
    assert len(kept) == len(fallback["float_nodes"]) and all(n.input[1] in float_weights for n in kept)

    manifest = read_manifest(outcome.manifest_uri or "")
    roles_recorded = manifest.data_roles
    assert roles_recorded is not None
    assert roles_recorded.held_out_rows == len(held_out) and roles_recorded.tuning_rows == len(tuning)
    assert roles_recorded.seed == 0 and "sha256" in roles_recorded.method
    assert roles_recorded.calibration_source == "calibration dataset" and not roles_recorded.evaluation_used_for_training
    assert roles_recorded.decided_on == {"fallback": "tuning", "auto_choice": "tuning", "gate_verdict": "held_out",
                                         "slices": "held_out", "reported_metrics": "held_out"}
    assert manifest.metrics["evaluated_on"] == "held_out"
    record = RunRecord.model_validate_json((result.work_dir / "result.json").read_bytes())
    assert record.data_roles == roles_recorded


@pytest.mark.slow
def test_evaluation_rows_calibrate_only_when_the_spec_says_so_and_it_is_recorded(mlp: Any, tmp_path: Path) -> None:
    base = {
        "name": "roles",
        "source": {"uri": str(mlp.onnx)},
        "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.05},
        "variants": [{"name": "int8s", "quantize": {"mode": "static", "calibration": {"samples": 32}}}],
        "latency": FAST,
        "store": str(tmp_path / "store"),
    }
    with pytest.raises(OptimizeError) as refused:
        run(parse_config({**base, "workDir": str(tmp_path / "a")}))
    assert refused.value.reason == errors.CONFIG_INVALID
    for field_name in ("calibration.dataset", "training", "evaluation.split.calibrationFraction"):
        assert field_name in refused.value.message

    allowed = {**base, "workDir": str(tmp_path / "b"),
               "evaluation": {**base["evaluation"], "split": {"calibrationFraction": 0.2}}}
    result = run(parse_config(allowed))
    roles = result.data_roles
    assert roles is not None and roles.evaluation_used_for_training
    assert roles.calibration_source == "evaluation split (calibrationFraction)" and roles.calibration_rows > 0
    assert roles.held_out_rows + roles.tuning_rows + roles.calibration_rows == 540
    manifest = read_manifest(result.variants[0].manifest_uri or "")
    assert manifest.data_roles == roles
    assert result.report_path is not None
    page = result.report_path.read_text()
    assert "calibrationFraction" in page and "evaluation rows calibrate" in page


@pytest.mark.slow
def test_min_samples_counts_held_out_rows(mlp: Any, tmp_path: Path) -> None:
    config = parse_config({
        "source": {"uri": str(mlp.onnx)},
        "evaluation": {"dataset": str(mlp.evaluation), "minSamples": 500},  # 540 rows, about 380 held out
        "variants": [], "latency": FAST, "store": str(tmp_path / "store"), "workDir": str(tmp_path / "w"),
    })
    with pytest.raises(OptimizeError) as caught:
        run(config)
    assert caught.value.reason == errors.DATASET_TOO_SMALL and "held-out" in caught.value.message


@pytest.mark.slow
def test_a_slice_column_is_judged_shown_and_never_fed_to_the_model(mlp: Any, tmp_path: Path) -> None:
    data = dict(np.load(mlp.evaluation))
    # A segment the model does not see: even and odd rows of the file.
    data["region"] = np.where(np.arange(len(data["label"])) % 2 == 0, "eu", "us")
    path = tmp_path / "eval-with-region.npz"
    np.savez(path, **data)
    config = {
        "name": "sliced",
        "source": {"uri": str(mlp.onnx)},
        "evaluation": {"dataset": str(path), "maxDrop": 0.05, "slices": {"columns": ["region"], "minSize": 30}},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "latency": FAST, "store": str(tmp_path / "store"), "workDir": str(tmp_path / "w"),
    }
    result = run(parse_config(config))
    gate = result.variants[0].gate
    assert gate is not None and gate.worst_slice is not None
    assert gate.slices_judged + gate.slices_too_small == 12  # 10 classes + 2 regions
    manifest = read_manifest(result.variants[0].manifest_uri or "")
    assert manifest.gate.worst_slice == gate.worst_slice
    assert result.report_path is not None and gate.worst_slice.name in result.report_path.read_text()

    missing = {**config, "workDir": str(tmp_path / "m"),
               "evaluation": {**config["evaluation"], "slices": {"columns": ["country"]}}}
    with pytest.raises(OptimizeError) as caught:
        run(parse_config(missing))
    assert "evaluation.slices.columns" in caught.value.message and "country" in caught.value.message


def test_manifests_written_before_data_roles_and_slices_still_load() -> None:
    old = {
        "schema_version": 1, "name": "int8", "sha256": "a" * 64, "size_bytes": 1, "blob": f"blobs/sha256/{'a' * 64}.onnx",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 64]}], "outputs": [],
        "task": "classification", "gate": {"passed": True, "reason": "ok", "deployable": True},
        "lineage": {"source_sha256": "b" * 64, "spec_hash": "c" * 64},
    }
    manifest = ArtifactManifest.model_validate(old)
    assert manifest.data_roles is None and manifest.gate.worst_slice is None and manifest.gate.slices_judged == 0
    assert GateVerdict.model_validate(old["gate"]).slices_too_small == 0


@pytest.mark.parametrize(("evaluation", "names"), [
    ({"dataset": "e.npz", "tuningDataset": "e.npz"}, "evaluation.tuningDataset must differ"),
    ({"dataset": "e.npz", "slices": {"maxDropMode": "relative", "maxDrop": 1.5}}, "evaluation.slices.maxDrop (1.5)"),
    ({"dataset": "e.npz", "split": {"tuningFraction": 0.6, "calibrationFraction": 0.4}}, "evaluation.split.tuningFraction"),
])
def test_a_job_config_written_by_hand_is_refused_where_the_api_would_refuse_it(evaluation: dict, names: str) -> None:
    with pytest.raises(OptimizeError) as refused:
        parse_config({"source": {"uri": "m.onnx"}, "evaluation": evaluation, "pools": [{"name": "cpu"}]})
    assert names in str(refused.value)
