"""A user's own data (.npz, .csv, .parquet) with a torch source: label and shape problems are data problems.

Each test reproduces a failure a first user met: a CSV whose label column is ``target`` was fed to the export
with the label as a 31st feature (``ExportFailed ... mat1 and mat2 shapes cannot be multiplied``); a dataset with
one feature too few failed the same way; ``LabelsMissing`` named only ``label``. The "Bring your own data"
example of docs/optimizer.md is run as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from optimodel_contracts.artifacts import TensorSpec
from optimodel_contracts.jobconfig import DatasetSpec, parse_config
from optimodel_jobs import errors
from optimodel_jobs.datasets import bind, read_table
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.pipeline import run

ROOT = Path(__file__).resolve().parents[2]

MODULE = """
from torch import nn


def build_mlp(features: int = 30, hidden: int = 16, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
"""


@pytest.fixture()
def project(tmp_path: Path) -> dict[str, Any]:
    """A state dict of a 30-feature MLP made by the user's own factory (ownmlp_data.py), and the cancer data."""
    import torch

    (tmp_path / "ownmlp_data.py").write_text(MODULE)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.save(net.state_dict(), tmp_path / "mlp.pt")
    data = load_breast_cancer()
    return {"dir": tmp_path, "x": data.data.astype(np.float32), "y": data.target.astype(np.int64),
            "columns": [str(c) for c in data.feature_names]}


def _config(project: dict[str, Any], dataset: Any, metric: str = "accuracy") -> dict[str, Any]:
    folder = project["dir"]
    return {
        "name": "own-data",
        "source": {"uri": str(folder / "mlp.pt"), "format": "state_dict", "factory": "ownmlp_data:build_mlp"},
        "evaluation": {"dataset": dataset, "metric": metric, "maxDrop": 1.0},
        "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(folder / "store"),
        "workDir": str(folder / "work"),
        "configDir": str(folder),
    }


def _refusal(config: dict[str, Any]) -> OptimizeError:
    with pytest.raises(OptimizeError) as caught:
        run(parse_config(config))
    return caught.value


def test_csv_with_a_target_column_feeds_the_torch_export_without_it(project: dict[str, Any]) -> None:
    frame = pd.DataFrame(project["x"], columns=project["columns"])
    frame["target"] = project["y"]
    csv = project["dir"] / "cancer.csv"
    frame.to_csv(csv, index=False)
    result = run(parse_config(_config(project, str(csv))))
    assert result.source.metric is not None
    from optimodel_jobs.source import tensor_specs

    # exported with the 30 feature columns: the label column `target` is left out, as bind leaves it out
    assert tensor_specs(result.source.path)[0][0].shape == [None, 30]


def test_one_feature_too_few_is_a_data_problem_naming_the_file(project: dict[str, Any]) -> None:
    npz = project["dir"] / "short.npz"
    np.savez(npz, x=project["x"][:, :29], label=project["y"])
    error = _refusal(_config(project, str(npz)))
    assert error.reason == errors.SHAPE_MISMATCH, error
    assert error.message.startswith(f"dataset {npz}: samples of input 'x' have shape [29] (29 features)")
    assert "first layer 0 (Linear) expects 30 features" in error.message
    assert "ExportFailed" not in str(error)


def test_a_torchscript_source_too_few_features_names_the_cause() -> None:
    import torch

    from optimodel_jobs.source import check_data_fits

    net = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    traced = torch.jit.trace(net, torch.zeros(1, 30))
    with pytest.raises(OptimizeError) as caught:
        check_data_fits(traced, {"x": np.zeros((2, 29), np.float32)}, "data/short.npz")
    assert caught.value.reason == errors.SHAPE_MISMATCH
    assert "first layer 0 (Linear) expects 30 features" in caught.value.message
    assert "mat1 and mat2 shapes cannot be multiplied (2x29 and 30x8)" in caught.value.message
    check_data_fits(traced, {"x": np.zeros((2, 30), np.float32)}, "data/ok.npz")  # fits: no error


def test_labels_missing_lists_every_accepted_name_and_the_setting(project: dict[str, Any]) -> None:
    npz = project["dir"] / "nolabel.npz"
    np.savez(npz, x=project["x"], diagnosis=project["y"])
    error = _refusal(_config(project, str(npz)))
    assert error.reason == errors.LABELS_MISSING
    assert "'label', 'labels', 'y', 'target'" in error.message
    assert "it has x, diagnosis" in error.message
    assert f"dataset: {{uri: {npz}, label: <array>}}" in error.message
    # and the setting it points to works
    assert run(parse_config(_config(project, {"uri": str(npz), "label": "diagnosis"}))).source.metric is not None


def test_a_named_label_that_is_absent_is_named(project: dict[str, Any]) -> None:
    frame = pd.DataFrame(project["x"], columns=project["columns"])
    frame["target"] = project["y"]
    csv = project["dir"] / "cancer.csv"
    frame.to_csv(csv, index=False)
    error = _refusal(_config(project, {"uri": str(csv), "label": "diagnosis"}))
    assert error.reason == errors.LABELS_MISSING
    assert "has none of the a column named 'diagnosis' (dataset.label)" in error.message


def test_a_text_column_among_the_features_is_named(project: dict[str, Any]) -> None:
    frame = pd.DataFrame(project["x"], columns=project["columns"])
    frame["diagnosis"] = np.where(project["y"] == 1, "benign", "malignant")
    frame["label"] = project["y"]
    csv = project["dir"] / "text.csv"
    frame.to_csv(csv, index=False)
    error = _refusal(_config(project, str(csv)))
    assert error.reason == errors.SHAPE_MISMATCH
    assert "feature column 'diagnosis' holds object values ('malignant', 'benign')" in error.message
    assert f"dataset: {{uri: {csv}, label: diagnosis}}" in error.message


def _docs_block(path: Path, title: str) -> str:
    text = path.read_text()
    found = re.findall(rf"```python title={re.escape(title)}\n(.*?)```", text, flags=re.S)
    assert len(found) == 1, f"{path} must hold exactly one ```python title={title} block"
    return found[0]


def test_the_bring_your_own_data_example_runs_as_written(tmp_path: Path) -> None:
    code = _docs_block(ROOT / "docs" / "optimizer.md", "make_data.py")
    (tmp_path / "make_data.py").write_text(code)
    done = subprocess.run([sys.executable, "make_data.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    model_input = [TensorSpec(name="x", dtype="float32", shape=[None, 30])]
    for name, spec in (
        ("cancer.npz", DatasetSpec(uri=str(tmp_path / "cancer.npz"))),
        ("cancer.csv", DatasetSpec(uri=str(tmp_path / "cancer.csv"))),
        ("cancer.parquet", DatasetSpec(uri=str(tmp_path / "cancer.parquet"), label="diagnosis")),
    ):
        bound = bind(read_table(spec.uri), spec, model_input, need_labels=True)
        assert bound.inputs["x"].shape == (569, 30) and bound.inputs["x"].dtype == np.float32, name
        assert bound.labels is not None and set(np.unique(bound.labels)) == {0, 1}, name


def test_a_table_one_column_too_wide_for_an_onnx_model_names_its_columns(tmp_path: Path) -> None:
    """An ONNX source does not go through the torch check: the bind step says which columns fed the input."""
    frame = pd.DataFrame(np.zeros((4, 3), np.float32), columns=["a", "b", "patient_id"])
    frame["outcome"] = [0, 1, 0, 1]
    csv = tmp_path / "wide.csv"
    frame.to_csv(csv, index=False)
    spec = DatasetSpec(uri=str(csv), label="outcome")
    with pytest.raises(OptimizeError) as caught:
        bind(read_table(spec.uri), spec, [TensorSpec(name="x", dtype="float32", shape=[None, 2])], need_labels=True)
    assert caught.value.reason == errors.SHAPE_MISMATCH
    assert caught.value.message.startswith(f"dataset {csv}: input 'x' has samples of shape [3], the model expects [2]")
    assert "features: x <- 3 columns a, b, patient_id; label column: outcome" in caught.value.message
