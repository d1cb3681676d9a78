"""The served model: an ONNX Runtime session, the checks of inputs against its signature, and running it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InferenceFailed, InvalidInput
from .protocol import datatype_of
from .providers import ProviderPlan, plan_from_session, plan_providers

log = logging.getLogger(__name__)

# ONNX Runtime's type strings for the numeric tensors we serve.
_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorSignature:
    """One input or output as the session declares it; ``None`` in ``shape`` is a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def datatype(self) -> str:
        return datatype_of(self.dtype)

    def wire_shape(self) -> list[int]:
        """Shape as the protocol's metadata writes it: -1 for a dynamic dimension."""
        return [-1 if d is None else d for d in self.shape]


def _signature(node) -> TensorSignature:  # noqa: ANN001 - onnxruntime.NodeArg has no public type
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise ValueError(f"tensor {node.name!r} has type {node.type}, which this server does not serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node.shape or []))
    return TensorSignature(node.name, dtype, shape)


def check_inputs(signatures: dict[str, TensorSignature], inputs: dict[str, np.ndarray]) -> None:
    """Refuse inputs that do not fit the model, naming what is wrong. Pure."""
    missing = [name for name in signatures if name not in inputs]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; the model takes {list(signatures)}")
    for name, array in inputs.items():
        sig = signatures.get(name)
        if sig is None:
            raise InvalidInput(f"unknown input {name!r}; the model takes {list(signatures)}")
        if array.dtype != sig.dtype:
            raise InvalidInput(
                f"input {name!r} has datatype {datatype_of(array.dtype)} but the model expects {sig.datatype}"
            )
        if array.ndim != len(sig.shape) or any(
            want is not None and want != got for want, got in zip(sig.shape, array.shape)
        ):
            raise InvalidInput(
                f"input {name!r} has shape {list(array.shape)} but the model expects {sig.wire_shape()} (-1: any size)"
            )
        if array.size == 0:
            raise InvalidInput(f"input {name!r} has shape {list(array.shape)}, which holds no values")


class OnnxModel:
    """An ONNX Runtime session over a verified model file."""

    def __init__(self, path: Path, requested_provider: str, intra_op_threads: int) -> None:
        import onnxruntime as ort  # the server's one heavy import, kept out of the CLI's import time

        self._ort = ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads would steal the core the event loop needs between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        plan = plan_providers(requested_provider, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=plan.providers)
        self.provider_plan: ProviderPlan = plan_from_session(plan, self.session.get_providers())
        self.inputs = {node.name: _signature(node) for node in self.session.get_inputs()}
        self.outputs = {node.name: _signature(node) for node in self.session.get_outputs()}
        self.output_names = list(self.outputs)
        # Requests can be stacked along the first axis only if every tensor's first axis is dynamic.
        self.batchable = all(
            len(sig.shape) >= 1 and sig.shape[0] is None
            for sig in (*self.inputs.values(), *self.outputs.values())
        )
        self.intra_op_threads = intra_op_threads

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        check_inputs(self.inputs, inputs)

    def check_output_names(self, names: list[str] | None) -> None:
        if names is None:
            return
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; the model produces {self.output_names}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output; errors from ONNX Runtime become domain errors (never a crash)."""
        try:
            results = self.session.run(self.output_names, feeds)
        except self._ort.capi.onnxruntime_pybind11_state.InvalidArgument as error:
            raise InvalidInput(f"the model refused the inputs: {error}") from error
        except Exception as error:  # noqa: BLE001 - any runtime failure is reported, not raised through
            log.exception("inference failed")
            raise InferenceFailed(f"inference failed: {error}") from error
        return dict(zip(self.output_names, results))

    def warm_up(self) -> None:
        """One inference on zeros, so the first request does not pay for lazy initialisation."""
        feeds = {
            sig.name: np.zeros(tuple(1 if d is None else d for d in sig.shape), dtype=sig.dtype)
            for sig in self.inputs.values()
        }
        self.run(feeds)
