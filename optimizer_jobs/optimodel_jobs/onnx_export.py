"""torch -> ONNX export by our own code, with a dynamic batch axis on every input and output."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

OPSET = 17


def export_module(
    module: object,
    example_inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    path: Path,
) -> Path:
    """Export ``module`` (an nn.Module or a TorchScript module) to ``path``; inputs keep their names.

    The TorchScript-based exporter is used on purpose: it yields the plain Gemm/MatMul/Softmax graphs
    that ONNX Runtime's quantizer and fusions recognise, and it is fast on our small CPUs.
    """
    import torch

    module.eval()  # type: ignore[attr-defined]
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in example_inputs.values())
    input_names = list(example_inputs)
    dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tensors,
            str(path),
            input_names=input_names,
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def export_program(program: object, example_inputs: Mapping[str, np.ndarray], output_names: Sequence[str], path: Path) -> Path:
    """Export a ``torch.export.ExportedProgram`` (only the dynamo exporter takes those)."""
    import torch

    tensors = tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in example_inputs.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, tensors, input_names=list(example_inputs), output_names=list(output_names), dynamo=True
        )
        onnx_program.save(str(path))
    return path
