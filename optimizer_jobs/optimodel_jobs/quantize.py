"""Steps: int8 quantization (dynamic; static QDQ with calibration) and the accuracy-aware fallback.

Hardware note, why ``reduceRange``/``perChannel`` default to "auto": on x86 CPUs without VNNI, ONNX
Runtime's u8s8 kernels multiply with VPMADDUBSW, which adds pairs of u8*s8 products into a saturating
int16; with full 8-bit weights that sum can overflow and accuracy suffers. 7-bit weights
(``reduce_range``) cannot overflow it, and per-channel scales win back the lost resolution. CPUs with
VNNI (VPDPBUSD accumulates in int32) need neither, so "auto" only turns them on where they matter.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimodel_contracts.jobconfig import CalibrationSpec, QuantizeSpec
from optimodel_jobs.datasets import Dataset

QUANTIZED_OP_TYPES = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
        "QLinearMatMul", "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
        "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
    }
)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger; our progress output says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # The calibrators also print() their histogram settings; keep the Job's output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


@functools.cache
def cpu_has_vnni() -> bool:
    """True when the CPU has VNNI (AVX512-VNNI, AVX-VNNI or AMX), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class IntSettings:
    per_channel: bool
    reduce_range: bool
    why: str


def resolve_settings(spec: QuantizeSpec, has_vnni: bool) -> IntSettings:
    """Pure: the per-channel / reduce-range choice for a spec on a CPU with or without VNNI."""
    reduce_range = (not has_vnni) if spec.reduce_range == "auto" else bool(spec.reduce_range)
    if spec.per_channel == "auto":
        per_channel = spec.mode == "static" or not has_vnni
    else:
        per_channel = bool(spec.per_channel)
    cpu = "VNNI" if has_vnni else "no VNNI (u8s8 saturation risk)"
    return IntSettings(per_channel, reduce_range, f"CPU has {cpu}: per_channel={per_channel}, reduce_range={reduce_range}")


def quantize_dynamic(source: Path, destination: Path, spec: QuantizeSpec, has_vnni: bool) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    settings = resolve_settings(spec, has_vnni)
    # ONNX Runtime's dynamic quantizer itself rewrites Gemm as MatMul (there is no integer Gemm).
    op_types = spec.op_types or ["MatMul", "Attention", "LSTM", "GRU"]
    with _quiet_root_logger():
        ort_quantize_dynamic(
            source,
            destination,
            op_types_to_quantize=op_types,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            weight_type=QuantType.QUInt8 if spec.weight_type == "uint8" else QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    return {"mode": "dynamic", "op_types": op_types, "weight_type": spec.weight_type, "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range, "hardware": settings.why}


def preprocess(source: Path, destination: Path) -> Path:
    """ONNX Runtime's quantization pre-processing: symbolic shape inference + graph optimization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(destination), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - symbolic shape inference refuses some graphs; ONNX's own still works
        quant_pre_process(str(source), str(destination), skip_symbolic_shape=True)
    return destination


def _calibration_reader(data: Dataset, batch_size: int = 16) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = data.batches(batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = data.batches(batch_size)

    return Reader()


def quantize_static_once(
    preprocessed: Path,
    destination: Path,
    spec: QuantizeSpec,
    calibration: CalibrationSpec,
    data: Dataset,
    has_vnni: bool,
    exclude: list[str],
) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = resolve_settings(spec, has_vnni)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration.method]
    with _quiet_root_logger():
        quantize_static(
            preprocessed,
            destination,
            _calibration_reader(data.take(calibration.samples)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=spec.op_types,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if spec.weight_type == "uint8" else QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=method,
            extra_options={"CalibPercentile": calibration.percentile, "WeightSymmetric": spec.weight_type == "int8",
                           "ActivationSymmetric": False},
        )
    return {"mode": "static", "format": "QDQ", "weight_type": spec.weight_type, "calibration": calibration.method,
            "calibration_samples": min(calibration.samples, len(data)), "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range, "hardware": settings.why}


# --------------------------------------------------------------------------------------------------
# Accuracy-aware fallback
# --------------------------------------------------------------------------------------------------


def _with_outputs(model: Any, names: list[str]) -> Any:
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(helper.make_empty_tensor_value_info(name))
    return copy


def _run_all(model: Any, data: Dataset, threads: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    input_names = [i.name for i in session.get_inputs()]
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data.batches(32):
        for name, value in zip(names, session.run(None, {n: batch[n] for n in input_names}), strict=True):
            collected[name].append(np.asarray(value, dtype=np.float64))
    return {n: np.concatenate(v) if v[0].ndim else np.array(v) for n, v in collected.items()}


def rank_sensitive_nodes(
    float_model_path: Path, qdq_model_path: Path, data: Dataset, threads: int, skip: set[str]
) -> list[tuple[str, float]]:
    """Nodes the quantizer touched, ranked by the error they add themselves (most sensitive first).

    Each node's output is compared between the float and the fake-quantized (QDQ, unfused) model on
    the same inputs; a node's own contribution is its relative error minus the largest error already
    present on the quantized nodes feeding it, so that an error is blamed where it appears, not
    everywhere downstream.
    """
    import onnx

    float_model = onnx.load(str(float_model_path))
    qdq_model = onnx.load(str(qdq_model_path))
    qdq_inputs_of = {n.name: list(n.input) for n in qdq_model.graph.node}
    # A node was quantized when one of its inputs now comes from a DequantizeLinear.
    dequantized = {o for n in qdq_model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    candidates = [
        n for n in float_model.graph.node
        if n.name in qdq_inputs_of and n.name not in skip and any(i in dequantized for i in qdq_inputs_of[n.name])
    ]
    # The quantizer may fold a following Relu into a node or rename its output; pair each quantized
    # node's output with the float tensor that carries the same values.
    float_tensors = {o for n in float_model.graph.node for o in n.output}
    qdq_output_of = {n.name: n.output[0] for n in qdq_model.graph.node}
    pairs: dict[str, tuple[str, str]] = {}
    for node in candidates:
        quantized_name = qdq_output_of[node.name]
        float_name = quantized_name.removesuffix("_QuantizeLinear_Input")
        if float_name in float_tensors:
            pairs[node.name] = (float_name, quantized_name)
    candidates = [n for n in candidates if n.name in pairs]
    if not candidates:
        return []
    reference = _run_all(_with_outputs(float_model, [f for f, _ in pairs.values()]), data, threads)
    quantized = _run_all(_with_outputs(qdq_model, [q for _, q in pairs.values()]), data, threads)
    error = {}
    for node in candidates:
        float_name, quantized_name = pairs[node.name]
        want, got = reference[float_name], quantized[quantized_name]
        error[node.name] = float(np.linalg.norm(got - want) / (np.linalg.norm(want) + 1e-12))
    producer = {o: n for n in float_model.graph.node for o in n.output}
    candidate_names = {n.name for n in candidates}

    def upstream_error(tensor: str, seen: set[str]) -> float:
        node = producer.get(tensor)
        if node is None or node.name in seen:
            return 0.0
        seen.add(node.name)
        if node.name in candidate_names:
            return error[node.name]
        return max((upstream_error(i, seen) for i in node.input), default=0.0)

    own = {
        n.name: error[n.name] - max((upstream_error(i, set()) for i in n.input), default=0.0) for n in candidates
    }
    return sorted(own.items(), key=lambda item: item[1], reverse=True)


@dataclass
class Attempt:
    round: int
    float_nodes: list[str]
    passed: bool
    reason: str
    metric: float


@dataclass
class FallbackOutcome:
    path: Path
    details: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)


def quantize_static_with_fallback(
    source: Path,
    work: Path,
    spec: QuantizeSpec,
    calibration: CalibrationSpec,
    data: Dataset,
    has_vnni: bool,
    threads: int,
    finish: Callable[[Path, Path], Path],
    judge: Callable[[Path], tuple[bool, str, float]],
    parent_passed: bool = True,
) -> FallbackOutcome:
    """Static QDQ; while the gate (``judge``) refuses it, keep the most sensitive nodes in float, up to
    ``fallback.maxRounds`` retries. ``finish(qdq, out)`` bakes the graph optimizations."""
    preprocessed = preprocess(source, work / "preprocessed.onnx")
    excluded: list[str] = []
    attempts: list[Attempt] = []
    sensitivity: list[tuple[str, float]] = []
    # Keeping nodes in float can only win back what quantization lost; when the model it starts from
    # already misses the gate, retrying would only make it slower.
    rounds = spec.fallback.max_rounds if spec.fallback.enabled and parent_passed else 0
    details: dict[str, Any] = {}
    final = work / "final.onnx"
    for round_index in range(rounds + 1):
        qdq = work / f"qdq-{round_index}.onnx"
        details = quantize_static_once(preprocessed, qdq, spec, calibration, data, has_vnni, excluded)
        candidate = finish(qdq, work / f"baked-{round_index}.onnx")
        passed, reason, metric = judge(candidate)
        attempts.append(Attempt(round_index, list(excluded), passed, reason, metric))
        final = candidate
        if passed or round_index == rounds:
            break
        probe = data.take(min(64, len(data)))
        sensitivity = rank_sensitive_nodes(preprocessed, qdq, probe, threads, skip=set(excluded))
        if not sensitivity:
            break
        excluded += [name for name, _ in sensitivity[: spec.fallback.nodes_per_round]]
    details["fallback"] = {
        "enabled": spec.fallback.enabled,
        "skipped": None if parent_passed else "the variant it starts from misses the gate itself",
        "rounds": len(attempts) - 1,
        "float_nodes": attempts[-1].float_nodes,
        "attempts": [a.__dict__ for a in attempts],
        "last_ranking": [{"node": n, "own_error": round(e, 6)} for n, e in sensitivity[:10]],
    }
    return FallbackOutcome(final, details, attempts)
