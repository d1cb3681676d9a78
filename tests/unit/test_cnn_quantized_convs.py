"""Static int8 of a CNN quantizes its convolutions themselves, in both forms a pool gets.

A QuantizeLinear somewhere in the graph proves nothing about the convolutions: the quantizer also
wraps the classifier's Gemm, so a graph whose every Conv stayed float still has one. These tests look
at each convolution of the source export by name:

- a CPU pool's artifact (ONNX Runtime's ``extended`` optimizations baked in) has each as a QLinearConv
  whose weights are an 8-bit initializer, and no float Conv left;
- a GPU pool's artifact (``basic`` only: QDQ, fused by the server's own provider) has each Conv reading
  a DequantizeLinear of a QuantizeLinear'd activation and a DequantizeLinear of 8-bit weights, its
  output going only into QuantizeLinear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from optimodel_contracts.artifacts import fetch_verified
from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs.pipeline import RunResult, VariantOutcome, run
from optimodel_jobs.zoo import build

pytestmark = pytest.mark.slow

INT8_TYPES = {TensorProto.INT8, TensorProto.UINT8}


def _run_for_pool(tmp: Path, pool: dict[str, Any]) -> RunResult:
    model = build("cnn-tiny")
    config = {
        "name": model.name,
        "source": model.source_config(),
        # A wide budget and no fallback: this file checks what the quantizer does to the convolutions, not the
        # gate (the fallback may keep nodes in float by design; test_optimizer_gate.py covers it).
        "evaluation": {"dataset": str(model.evaluation), "metric": "accuracy", "maxDrop": 0.5},
        "calibration": {"dataset": str(model.calibration), "samples": 64},
        "training": str(model.train),
        "variants": [{"name": "int8-static", "quantize": {
            "mode": "static", "calibration": {"method": "minmax", "samples": 64}, "fallback": {"enabled": False}}}],
        "latency": {"batchSizes": [1], "iterations": 4, "warmup": 1, "rounds": 2, "measureMemory": False},
        "pools": [pool],
        "store": str(tmp / "store"),
        "workDir": str(tmp / "work"),
    }
    return run(parse_config(config))


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return _run_for_pool(tmp_path_factory.mktemp("cnn-cpu"), {"name": "cpu"})


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    # Without CUDA here the variant is measured on the CPU (recorded), but it is built as for a GPU pool.
    return _run_for_pool(tmp_path_factory.mktemp("cnn-gpu"), {"name": "gpu", "executionProvider": "cuda"})


def _variant(result: RunResult) -> VariantOutcome:
    outcome = next(v for v in result.variants if v.name == "int8-static")
    assert outcome.error is None, outcome.error
    assert outcome.manifest_uri is not None
    # Nothing was kept in float: every convolution below must be quantized.
    assert outcome.details["fallback"]["float_nodes"] == []
    return outcome


def _artifact(result: RunResult, tmp_path: Path) -> tuple[Any, onnx.ModelProto, Path]:
    """The artifact as a server gets it: through the store, its sha256 verified."""
    manifest, local = fetch_verified(_variant(result).manifest_uri, tmp_path / "fetched")  # type: ignore[arg-type]
    return manifest, onnx.load(str(local)), local


def _source_convs(result: RunResult) -> set[str]:
    """The convolutions of the source's own export (before any fusion renames or hides them)."""
    assert result.source.raw_path is not None
    names = {n.name for n in onnx.load(str(result.source.raw_path)).graph.node if n.op_type == "Conv"}
    assert len(names) == 3, names  # cnn-tiny: channels (8, 16, 16)
    return names


def _initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {init.name: init.data_type for init in model.graph.initializer}


def qlinear_conv_problems(model: onnx.ModelProto, convs: set[str]) -> list[str]:
    """Why the fused form does not run ``convs`` quantized (empty when it does)."""
    problems = []
    nodes = {n.name: n for n in model.graph.node}
    types = _initializer_types(model)
    for name in sorted(convs):
        node = nodes.get(name)
        if node is None or node.op_type != "QLinearConv":
            problems.append(f"{name}: {node.op_type if node else 'missing'}, not QLinearConv")
            continue
        # QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias)
        if types.get(node.input[3]) not in INT8_TYPES:
            problems.append(f"{name}: weights {node.input[3]} are not an 8-bit initializer")
    float_convs = [n.name for n in model.graph.node if n.op_type in {"Conv", "FusedConv"}]
    if float_convs:
        problems.append(f"float convolutions left: {float_convs}")
    return problems


def qdq_conv_problems(model: onnx.ModelProto, convs: set[str]) -> list[str]:
    """Why the QDQ form does not run ``convs`` quantized (empty when it does)."""
    problems = []
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    types = _initializer_types(model)
    for name in sorted(convs):
        node = nodes.get(name)
        if node is None or node.op_type != "Conv":
            problems.append(f"{name}: {node.op_type if node else 'missing'}, not Conv")
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if x_dq is None or x_dq.op_type != "DequantizeLinear":
            problems.append(f"{name}: activation {node.input[0]} is not dequantized")
        elif (quantizer := producer.get(x_dq.input[0])) is None or quantizer.op_type != "QuantizeLinear":
            problems.append(f"{name}: activation {node.input[0]} is not quantized before it is dequantized")
        if w_dq is None or w_dq.op_type != "DequantizeLinear":
            problems.append(f"{name}: weights {node.input[1]} are not dequantized")
        elif types.get(w_dq.input[0]) not in INT8_TYPES:
            problems.append(f"{name}: weights {w_dq.input[0]} are not an 8-bit initializer")
        after = consumers.get(node.output[0], [])
        if not after or any(c.op_type != "QuantizeLinear" for c in after):
            problems.append(f"{name}: output goes to {[c.op_type for c in after]}, not only QuantizeLinear")
    return problems


def _outputs(path: Path, result: RunResult) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = np.load(build(result.config.name).evaluation)
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: data[name][:64]})[0])


def test_cpu_pool_artifact_runs_every_convolution_as_qlinearconv(cpu_run: RunResult, tmp_path: Path) -> None:
    manifest, model, local = _artifact(cpu_run, tmp_path)
    assert manifest.details["kind"] == "int8-static"
    assert qlinear_conv_problems(model, _source_convs(cpu_run)) == []
    # It runs, and it computes something else than the float model (quantized), yet close to it.
    quantized, reference = _outputs(local, cpu_run), _outputs(cpu_run.source.raw_path, cpu_run)  # type: ignore[arg-type]
    assert quantized.shape == reference.shape == (64, 10)
    assert not np.array_equal(quantized, reference)
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_gpu_pool_artifact_wraps_every_convolution_in_qdq(gpu_run: RunResult, tmp_path: Path) -> None:
    manifest, model, _ = _artifact(gpu_run, tmp_path)
    assert manifest.execution_provider == "CUDAExecutionProvider"
    assert manifest.details["graph_optimization"] == "basic"
    assert qdq_conv_problems(model, _source_convs(gpu_run)) == []


def test_the_checks_refuse_float_convolutions(cpu_run: RunResult) -> None:
    """The checks above are not vacuous: on the float source export both report every convolution."""
    source = onnx.load(str(cpu_run.source.raw_path))
    convs = _source_convs(cpu_run)
    assert len(qlinear_conv_problems(source, convs)) == len(convs) + 1  # each conv, then "float convolutions left"
    assert len(qdq_conv_problems(source, convs)) >= len(convs)
