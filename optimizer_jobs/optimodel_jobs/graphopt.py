"""Step: bake ONNX Runtime's graph optimizations into the file, offline.

``extended`` (constant folding, redundant-node removal, Gemm/Conv/BN/GELU/LayerNorm/SkipLayerNorm and
QDQ -> QLinear fusions) is what CPU pools get. It is applied for the CPU provider, whose fused contrib
ops need that provider; so variants for GPU pools get ``basic`` only (provider-independent rewrites)
and the server's session does the rest for its own provider. Layout rewrites (``all``: NCHWc) are
hardware-specific and never saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Level = Literal["basic", "extended"]


def bake(source: Path, destination: Path, level: Level = "extended") -> Path:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    options.optimized_model_filepath = str(destination)
    options.log_severity_level = 3
    destination.parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return destination


def level_for(provider: str) -> Level:
    return "extended" if provider == "cpu" else "basic"
