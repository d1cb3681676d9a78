"""Step 1: load the source model (ONNX, or torch exported to ONNX by our code) -> ``source.onnx``."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from optimodel_jobs import errors
from optimodel_contracts.artifacts import TensorSpec, sha256_file
from optimodel_contracts.jobconfig import SourceSpec
from optimodel_jobs.errors import OptimizeError


@dataclass
class Source:
    onnx_path: Path
    sha256: str  # of the file the user gave (ONNX, state dict, TorchScript or program)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    module: Any | None  # the torch module when there is one (pruning and distillation need it)
    spec: SourceSpec


def tensor_specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (initializers excluded) and outputs of an ONNX model, with numpy dtype names."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims: list[int | None] = [
            d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
        ]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        return TensorSpec(name=value.name, dtype=dtype, shape=dims)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def fetch(uri: str, destination: Path, what: str) -> Path:
    """Copy a file from any fsspec URI to a local path."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fsspec.open(uri, "rb") as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except FileNotFoundError:
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"{what} {uri} does not exist") from None
    except Exception as error:  # noqa: BLE001 - protocol errors vary
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"{what} {uri} cannot be read: {error}") from None
    return destination


def check_onnx(path: Path, uri: str) -> None:
    """Refuse a truncated / corrupt / invalid ONNX file with a readable reason."""
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise OptimizeError(
            errors.SOURCE_UNREADABLE, f"source {uri} is truncated or not an ONNX model ({type(error).__name__}: {error})"
        ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(errors.SOURCE_INVALID, f"source {uri} is not a valid ONNX model: {error}") from None
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(errors.SOURCE_INVALID, f"ONNX Runtime cannot load source {uri}: {error}") from None


def load_torch_module(spec: SourceSpec, local: Path) -> Any:
    """Build the torch module a SourceSpec describes (factory + state dict, TorchScript, or program)."""
    import torch

    from optimodel_jobs.zoo import resolve_factory

    if spec.format == "torch":
        try:
            return torch.jit.load(str(local), map_location="cpu").eval()
        except Exception as error:  # noqa: BLE001
            raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} is not a TorchScript file: {error}") from None
    if spec.format == "exported_program":
        try:
            return torch.export.load(str(local))
        except Exception as error:  # noqa: BLE001
            raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} is not a torch.export file: {error}") from None
    try:
        factory = resolve_factory(spec.factory or "")
    except (ImportError, AttributeError, ValueError) as error:
        raise OptimizeError(errors.FACTORY_NOT_FOUND, f"source.factory {spec.factory!r} cannot be imported: {error}") from None
    try:
        state = torch.load(str(local), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise OptimizeError(
            errors.SOURCE_UNREADABLE, f"source {spec.uri} is truncated or not a torch state dict: {error}"
        ) from None
    if not isinstance(state, Mapping):
        raise OptimizeError(errors.SOURCE_UNREADABLE, f"source {spec.uri} holds a {type(state).__name__}, not a state dict")
    try:
        module = factory(**spec.factory_kwargs)
    except TypeError as error:
        raise OptimizeError(errors.FACTORY_NOT_FOUND, f"source.factory {spec.factory} refused factoryKwargs: {error}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise OptimizeError(
            errors.STATE_DICT_MISMATCH, f"state dict {spec.uri} does not fit {spec.factory}: {' '.join(first)}"
        ) from None
    return module.eval()


def _check_hash(spec: SourceSpec, local: Path) -> None:
    if spec.sha256 is None:
        return
    actual = sha256_file(local)[0]
    if actual != spec.sha256:
        raise OptimizeError(
            errors.SOURCE_HASH_MISMATCH, f"source {spec.uri} has sha256 {actual}, the spec expects {spec.sha256}"
        )


def load_source(spec: SourceSpec, work_dir: Path, example_inputs: Mapping[str, np.ndarray] | None) -> Source:
    """Load and check the source; torch sources are exported with ``example_inputs`` (names + shapes)."""
    from optimodel_jobs.onnx_export import export_module, export_program

    source_dir = work_dir / "source"
    if spec.format == "onnx":
        local = fetch(spec.uri, source_dir / "source.onnx", "source")
        _check_hash(spec, local)
        check_onnx(local, spec.uri)
        inputs, outputs = tensor_specs(local)
        return Source(local, sha256_file(local)[0], inputs, outputs, None, spec)

    suffix = {"state_dict": ".pt", "torch": ".ts", "exported_program": ".pt2"}[spec.format]
    local = fetch(spec.uri, source_dir / f"source{suffix}", "source")
    _check_hash(spec, local)
    module = load_torch_module(spec, local)
    if not example_inputs:
        raise OptimizeError(errors.EXPORT_FAILED, "a torch source needs evaluation data to export it with")
    onnx_path = source_dir / "source.onnx"
    try:
        if spec.format == "exported_program":
            export_program(module, example_inputs, spec.output_names, onnx_path)
            module = module.module()
        else:
            # The exporter inlines a TorchScript module's graph in place, which would hide its structure from
            # the pruner's rebuild (optimodel_jobs.torchscript): a second copy is exported.
            exported = load_torch_module(spec, local) if spec.format == "torch" else module
            export_module(exported, example_inputs, spec.output_names, onnx_path)
    except OptimizeError:
        raise
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; the user needs the cause
        shapes = {k: list(v.shape) for k, v in example_inputs.items()}
        raise OptimizeError(
            errors.EXPORT_FAILED, f"exporting source {spec.uri} to ONNX with inputs {shapes} failed: {error}"
        ) from None
    check_onnx(onnx_path, spec.uri)
    inputs, outputs = tensor_specs(onnx_path)
    return Source(onnx_path, sha256_file(local)[0], inputs, outputs, module, spec)
