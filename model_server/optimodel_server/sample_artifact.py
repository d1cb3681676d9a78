"""A small MLP classifier built with ``onnx.helper`` and written as a real artifact (with a drift
reference), for tests, the benchmark and demos. Made locally from a seed: nothing is downloaded.

Needs the ``onnx`` package (the jobs extra), which the server image itself does not need.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from optimodel_contracts.artifacts import (
    ArtifactManifest,
    DriftReference,
    GateVerdict,
    Lineage,
    TensorSpec,
    class_profile,
    quantile_profile,
    write_artifact,
)

INPUT_NAME = "features"
OUTPUT_NAME = "logits"


def mlp_onnx_bytes(features: int = 64, hidden: int = 128, classes: int = 4, seed: int = 0,
                   batch_dim: str | int = "batch") -> bytes:
    """Serialized ONNX model: features -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = [features, hidden, hidden, classes]
    nodes, inits = [], []
    current = INPUT_NAME
    for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        last = layer == len(sizes) - 2
        out = OUTPUT_NAME if last else f"h{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [out if last else f"g{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{layer}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch_dim, classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="optimodel-sample")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_inputs(features: int = 64, rows: int = 2000, seed: int = 1) -> np.ndarray:
    """The "training distribution" the drift reference is profiled on: standard normal features."""
    return np.random.default_rng(seed).standard_normal((rows, features)).astype(np.float32)


def drift_reference_for(model_bytes: bytes, inputs: np.ndarray, classes: int, bins: int = 10) -> DriftReference:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    profiles = [
        quantile_profile(f"{INPUT_NAME}[{i}]", inputs[:, i], bins, tensor=INPUT_NAME, flat_index=i)
        for i in range(inputs.shape[1])
    ]
    return DriftReference(
        inputs=profiles,
        output=class_profile(OUTPUT_NAME, np.argmax(logits, axis=1), classes),
        sample_count=int(inputs.shape[0]),
        reduction="one profile per input element",
    )


def write_sample_artifact(store_uri: str, *, name: str = "mlp", features: int = 64, hidden: int = 128,
                          classes: int = 4, seed: int = 0, with_drift: bool = True,
                          deployable: bool = True, batch_dim: str | int = "batch") -> str:
    """Write the MLP and its manifest into ``store_uri``; return the manifest URI."""
    model_bytes = mlp_onnx_bytes(features, hidden, classes, seed, batch_dim)
    dim = batch_dim if isinstance(batch_dim, int) else None
    drift = drift_reference_for(model_bytes, reference_inputs(features), classes) if with_drift else None
    manifest = ArtifactManifest(
        name=name,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=[dim, features])],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[dim, classes])],
        task="classification",
        gate=GateVerdict(passed=deployable, reason="sample model" if deployable else "sample: gate failed", deployable=deployable),
        lineage=Lineage(source_sha256="0" * 64, spec_hash="sample", seed=seed),
        drift_reference=drift,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model_bytes)
        return write_artifact(store_uri, path, manifest)
