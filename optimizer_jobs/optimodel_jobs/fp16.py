"""Step: float16 conversion for GPU pools, keeping float32 inputs and outputs (callers need no change)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimodel_contracts.jobconfig import ConvertSpec


def convert(source: Path, destination: Path, spec: ConvertSpec) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    # ONNX Runtime's default block list keeps ops that have no float16 kernel in float32, with Cast
    # nodes around them; keep_io_types adds the Casts at the graph's edges.
    converted = convert_float_to_float16(model, keep_io_types=spec.keep_io_types, disable_shape_infer=False)
    onnx.save(converted, str(destination))
    return {"dtype": "float16", "keep_io_types": spec.keep_io_types}
