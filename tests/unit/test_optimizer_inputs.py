"""Bad input ends in a clear message and a machine-readable reason, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest

from optimodel_jobs import errors
from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.pipeline import run
from optimodel_jobs.zoo import build


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build("digits-mlp-tiny")


def _config(mlp: Any, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "bad-input",
        "source": {"uri": str(mlp.onnx), "format": "onnx"},
        "evaluation": {"dataset": str(mlp.evaluation), "metric": "accuracy"},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(tmp_path / "store"),
        "workDir": str(tmp_path / "work"),
    }
    config.update(changes)
    return config


def _refusal(config: dict[str, Any]) -> OptimizeError:
    with pytest.raises(OptimizeError) as caught:
        run(parse_config(config))
    assert "Traceback" not in caught.value.message
    return caught.value


def test_truncated_onnx_source(mlp: Any, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(mlp.onnx.read_bytes()[:200])
    error = _refusal(_config(mlp, tmp_path, source={"uri": str(truncated)}))
    assert error.reason == errors.SOURCE_UNREADABLE
    assert "truncated or not an ONNX model" in error.message


def test_missing_source(mlp: Any, tmp_path: Path) -> None:
    error = _refusal(_config(mlp, tmp_path, source={"uri": str(tmp_path / "nope.onnx")}))
    assert error.reason == errors.SOURCE_UNREADABLE
    assert "does not exist" in error.message


def test_state_dict_that_does_not_fit_the_factory(mlp: Any, tmp_path: Path) -> None:
    source = mlp.source_config() | {"factoryKwargs": {"hidden": [32]}}
    error = _refusal(_config(mlp, tmp_path, source=source))
    assert error.reason == errors.STATE_DICT_MISMATCH


def test_unknown_factory(mlp: Any, tmp_path: Path) -> None:
    source = mlp.source_config() | {"factory": "optimodel_jobs.models:no_such_model"}
    assert _refusal(_config(mlp, tmp_path, source=source)).reason == errors.FACTORY_NOT_FOUND


def test_input_names_that_do_not_match(mlp: Any, tmp_path: Path) -> None:
    data = np.load(mlp.evaluation)
    path = tmp_path / "renamed.npz"
    np.savez(path, pixels=data["x"], other=data["x"], label=data["label"])
    error = _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(path)}))
    assert error.reason == errors.INPUT_MISMATCH
    assert "'x'" in error.message and "pixels" in error.message


def test_shapes_that_do_not_match(mlp: Any, tmp_path: Path) -> None:
    data = np.load(mlp.evaluation)
    path = tmp_path / "narrow.npz"
    np.savez(path, x=data["x"][:, :50], label=data["label"])
    error = _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(path)}))
    assert error.reason == errors.SHAPE_MISMATCH
    assert "[50]" in error.message and "[64]" in error.message


def test_labels_missing_when_the_metric_needs_them(mlp: Any, tmp_path: Path) -> None:
    path = tmp_path / "unlabeled.npz"
    np.savez(path, x=np.load(mlp.evaluation)["x"])
    error = _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(path), "metric": "accuracy"}))
    assert error.reason == errors.LABELS_MISSING
    # ...while the agreement metric needs none and the run goes through.
    result = run(parse_config(_config(mlp, tmp_path, evaluation={"dataset": str(path), "metric": "agreement"})))
    assert result.source.metric == 1.0


def test_empty_dataset(mlp: Any, tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((0, 64), np.float32), label=np.zeros(0, np.int64))
    assert _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(path)})).reason == errors.DATASET_EMPTY


def test_unknown_metric_is_refused_before_any_work(mlp: Any, tmp_path: Path) -> None:
    error = _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(mlp.evaluation), "metric": "bleu"}))
    assert error.reason == errors.UNKNOWN_METRIC
    assert "accuracy" in error.message  # the known ones are listed
    assert not (tmp_path / "work" / "source").exists()


def test_unknown_format_and_corrupt_dataset(mlp: Any, tmp_path: Path) -> None:
    other = tmp_path / "data.txt"
    other.write_text("1,2,3")
    assert _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(other)})).reason == errors.DATASET_FORMAT_UNKNOWN
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(mlp.evaluation.read_bytes()[:300])
    assert _refusal(_config(mlp, tmp_path, evaluation={"dataset": str(corrupt)})).reason == errors.DATASET_UNREADABLE


def test_csv_and_parquet_through_fsspec(mlp: Any, tmp_path: Path) -> None:
    data = np.load(mlp.evaluation)
    frame = pd.DataFrame(data["x"], columns=[f"f{i}" for i in range(64)])
    frame["label"] = data["label"]
    with fsspec.open("memory://optimizer-test/eval.csv", "w") as handle:
        frame.to_csv(handle, index=False)
    frame.to_parquet(tmp_path / "eval.parquet")
    for uri in ("memory://optimizer-test/eval.csv", f"file://{tmp_path}/eval.parquet"):
        # A tuning dataset of its own: every row of the table is held out, so the score is the whole file's.
        evaluation = {"dataset": uri, "tuningDataset": str(mlp.calibration)}
        result = run(parse_config(_config(mlp, tmp_path, evaluation=evaluation, variants=[])))
        assert result.source.metric == pytest.approx(float(mlp.meta["torch_eval_accuracy"]), abs=1e-6)


def test_config_problems_name_the_field(mlp: Any, tmp_path: Path) -> None:
    with pytest.raises(OptimizeError) as caught:
        parse_config(_config(mlp, tmp_path, evaluation={"dataset": "x.npz", "maxDrop": -1}))
    assert caught.value.reason == errors.CONFIG_INVALID
    assert "evaluation.maxDrop" in caught.value.message or "evaluation.max_drop" in caught.value.message
    error = _refusal(_config(mlp, tmp_path, variants=[{"name": "b", "from": "a", "quantize": {}}]))
    assert error.reason == errors.VARIANT_PARENT_UNKNOWN


def test_pruning_an_onnx_source_fails_that_variant_only(mlp: Any, tmp_path: Path) -> None:
    variants = [{"name": "pruned", "prune": {"amount": 0.5}}, {"name": "int8", "quantize": {"mode": "dynamic"}}]
    result = run(parse_config(_config(mlp, tmp_path, variants=variants, training=str(mlp.train))))
    pruned, int8 = result.variants
    assert pruned.error is not None and pruned.error.reason == errors.TORCH_SOURCE_REQUIRED
    assert pruned.gate is not None and not pruned.gate.deployable
    assert int8.error is None and int8.manifest_uri is not None


def test_job_entrypoint_reports_reason_as_json(mlp: Any, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(mlp.onnx.read_bytes()[:100])
    config = json.dumps(_config(mlp, tmp_path, source={"uri": str(truncated)}))
    termination = tmp_path / "termination-log"
    completed = subprocess.run(
        [sys.executable, "-m", "optimodel_jobs", "--config", config],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OPTIMODEL_TERMINATION_LOG": str(termination)},
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr + completed.stdout
    payload = json.loads(completed.stderr.strip().splitlines()[-1])
    assert payload["reason"] == errors.SOURCE_UNREADABLE
    assert json.loads(termination.read_text()) == payload


def test_source_hash_and_too_few_samples(mlp: Any, tmp_path: Path) -> None:
    error = _refusal(_config(mlp, tmp_path, source={"uri": str(mlp.onnx), "sha256": "0" * 64}))
    assert error.reason == errors.SOURCE_HASH_MISMATCH
    evaluation = {"dataset": str(mlp.evaluation), "minSamples": 100_000}
    error = _refusal(_config(mlp, tmp_path, evaluation=evaluation))
    assert error.reason == errors.DATASET_TOO_SMALL and "100000" in error.message


def test_job_entrypoint_takes_an_operator_resource(mlp: Any, tmp_path: Path) -> None:
    resource = {
        "kind": "OptimizedModel", "metadata": {"name": "from-resource"},
        "spec": {
            "source": {"uri": str(mlp.onnx), "format": "onnx"},
            "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.02,
                           "benchmark": {"batchSize": 1, "iterations": 10, "warmup": 1}},
            "optimizations": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
            "nodePools": [{"name": "cpu", "variant": "auto", "replicas": 2}],
            "artifacts": {"uri": str(tmp_path / "store")},
        },
    }
    completed = subprocess.run(
        [sys.executable, "-m", "optimodel_jobs", "--resource", json.dumps(resource), "--work-dir", str(tmp_path / "w"), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["name"] == "from-resource"
    # auto: int8 only when faster than the source beyond noise (test_auto_choice.py); the reason weighs it.
    assert result["chosen"]["cpu"] in {"int8", "source"} and "int8" in result["choice_reasons"]["cpu"]
    assert result["variants"][0]["manifest_uri"].startswith(str(tmp_path / "store"))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecates TorchScript; users still have such files
def test_torchscript_and_exported_program_sources(mlp: Any, tmp_path: Path) -> None:
    """Every torch form the issue names is exported to ONNX by our code and scores like the original."""
    import torch

    from optimodel_jobs.source import load_torch_module
    from optimodel_contracts.jobconfig import SourceSpec

    module = load_torch_module(SourceSpec.model_validate(mlp.source_config()), mlp.state_dict)
    example = torch.from_numpy(np.load(mlp.evaluation)["x"][:2])
    torch.jit.save(torch.jit.trace(module, example), tmp_path / "model.ts")
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    for source in (
        {"uri": str(tmp_path / "model.ts"), "format": "torch"},  # the operator API's "torch" = TorchScript
        {"uri": str(tmp_path / "model.pt2"), "format": "exported_program"},
    ):
        whole = {"dataset": str(mlp.evaluation), "tuningDataset": str(mlp.calibration)}  # every evaluation row held out
        result = run(parse_config(_config(mlp, tmp_path, source=source, variants=[], evaluation=whole)))
        assert result.source.metric == pytest.approx(float(mlp.meta["torch_eval_accuracy"]), abs=1e-6), source
