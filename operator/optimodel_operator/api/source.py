"""Where the trained model comes from, and how every variant is judged against it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from optimodel_operator.api.common import ApiModel, CelRule, DescribedEnum, Uri, unique_by


class ModelFormat(DescribedEnum):
    ONNX = "onnx", "An ONNX model file; the input signature is read from the graph."
    TORCH = "torch", "A TorchScript archive (torch.jit.save); needs `inputs` to export it to ONNX."


class TensorDType(DescribedEnum):
    FLOAT32 = "float32", "32-bit float."
    FLOAT16 = "float16", "16-bit float."
    FLOAT64 = "float64", "64-bit float."
    INT64 = "int64", "64-bit integer (token ids)."
    INT32 = "int32", "32-bit integer."
    INT8 = "int8", "8-bit signed integer."
    UINT8 = "uint8", "8-bit unsigned integer (images)."
    BOOL = "bool", "Boolean (masks)."


class TensorSpec(ApiModel):
    """One model input: its name, element type and shape."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Input name, as the model (or its ONNX export) calls it."""
    dtype: TensorDType = TensorDType.FLOAT32
    """Element type."""
    shape: Annotated[list[Annotated[int, Field(ge=-1, le=1_000_000)]], Field(min_length=1, max_length=8)]
    """Dimensions; -1 marks a dynamic one (usually the batch), e.g. [-1, 3, 224, 224]."""


class ModelSource(ApiModel):
    """The trained model to optimize."""

    uri: Uri
    """Location of the model: an absolute path, file://, s3:// or gs:// (read through fsspec)."""
    format: ModelFormat
    """Serialization of the model at `uri`."""
    inputs: Annotated[list[TensorSpec], Field(min_length=1, max_length=16), AfterValidator(unique_by("name"))] | None = None
    """Input signature, for models it cannot be read from (required for `torch`)."""
    sha256: Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{64}$", max_length=64)] | None = None
    """Expected SHA-256 of the file at `uri`; the optimization Jobs refuse a model that differs."""
    factory: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$", max_length=256)
    ] | None = None
    """`module:function` that builds the model's architecture as a torch nn.Module, e.g. `mymodels:build_mlp`:
    the student of `distill` (called with the student's `layers` and `hidden`); a TorchScript model cannot say it."""
    code_path: Uri | None = None
    """Folder or .py file holding the factory's module (absolute path, file://, s3:// or gs://): the optimization
    Job reads it like the source (a node-local path is mounted read-only, a store URI fetched with the store's
    credentials) and imports the factory from it."""

    cel_rules = (
        CelRule(
            rule="!has(self.codePath) || has(self.factory)",
            message="source.codePath holds the module of source.factory; set source.factory too",
            check=lambda s: s.code_path is None or s.factory is not None,
            field_path=".codePath",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.format != 'torch' || has(self.inputs)",
            message="source.inputs is required when source.format is torch (the signature cannot be read from TorchScript)",
            check=lambda s: s.format != ModelFormat.TORCH or s.inputs is not None,
            field_path=".inputs",
            reason="FieldValueRequired",
        ),
    )


class Metric(DescribedEnum):
    ACCURACY = "accuracy", "Share of samples whose top-1 class is right (higher is better)."
    TOP_K = "topK", "Share of samples whose label is among the `topK` highest scores (higher is better)."
    F1 = "f1", "Macro-averaged F1 score over the classes (higher is better)."
    MAE = "mae", "Mean absolute error of a regression (lower is better)."
    MSE = "mse", "Mean squared error of a regression (lower is better)."

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.TOP_K, Metric.F1)


class DropMode(DescribedEnum):
    ABSOLUTE = "absolute", "maxDrop is in the metric's own units (0.01 = one accuracy point)."
    RELATIVE = "relative", "maxDrop is a fraction of the source's score (0.01 = 1% of it); at most 1."


class Benchmark(ApiModel):
    """How latency is measured for the gate (on each node pool's execution provider)."""

    batch_size: int = Field(1, ge=1, le=1024)
    """Batch size of the timed requests."""
    iterations: int = Field(200, ge=10, le=100_000)
    """Timed runs; p50 and p99 are taken over them."""
    warmup: int = Field(20, ge=0, le=10_000)
    """Untimed runs before timing starts."""


class Evaluation(ApiModel):
    """How every variant is judged against the source: the metric, the allowed drop and the gate's defaults."""

    dataset: Uri
    """Labelled evaluation data (absolute path, file://, s3:// or gs://), never used for training."""
    metric: Metric = Metric.ACCURACY
    """Quality metric computed for the source and for every variant on `dataset`."""
    top_k: int | None = Field(None, ge=2, le=100)
    """k for metric topK (and only then)."""
    higher_is_better: bool | None = None
    """Direction of the metric; follows from it, may be stated for clarity but must agree."""
    max_drop: float = Field(ge=0, le=1_000_000)
    """Largest tolerated loss of the metric against the source (see maxDropMode); 0 tolerates none."""
    max_drop_mode: DropMode = DropMode.ABSOLUTE
    """Whether maxDrop is absolute or relative to the source's score."""
    min_samples: int = Field(100, ge=1, le=100_000_000)
    """The gate refuses to judge on fewer evaluation samples than this."""
    max_latency_ms: float | None = Field(None, gt=0, le=600_000)
    """Gate default: largest p99 latency (ms) a variant may show on its pool's provider."""
    min_speedup: float | None = Field(None, gt=0, le=1000)
    """Gate default: smallest p50 speed-up over the source on the same provider (1.0 = no slower)."""
    max_size_mib: float | None = Field(None, gt=0, le=1_000_000, alias="maxSizeMiB")
    """Gate default: largest artifact size in MiB."""
    benchmark: Benchmark = Field(default_factory=Benchmark)
    """Latency measurement settings."""

    cel_rules = (
        CelRule(
            rule="self.metric != 'topK' || has(self.topK)",
            message="evaluation.topK is required when evaluation.metric is topK",
            check=lambda e: e.metric != Metric.TOP_K or e.top_k is not None,
            field_path=".topK",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.metric == 'topK' || !has(self.topK)",
            message="evaluation.topK applies only when evaluation.metric is topK",
            check=lambda e: e.metric == Metric.TOP_K or e.top_k is None,
            field_path=".topK",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="!has(self.higherIsBetter) || self.higherIsBetter == (self.metric in ['accuracy', 'topK', 'f1'])",
            message="evaluation.higherIsBetter contradicts evaluation.metric (accuracy, topK, f1: true; mae, mse: false)",
            check=lambda e: e.higher_is_better is None or e.higher_is_better == e.metric.higher_is_better,
            field_path=".higherIsBetter",
        ),
        CelRule(
            rule="self.maxDropMode != 'relative' || self.maxDrop <= 1.0",
            message="evaluation.maxDrop must be at most 1 when evaluation.maxDropMode is relative",
            check=lambda e: e.max_drop_mode != DropMode.RELATIVE or e.max_drop <= 1.0,
            field_path=".maxDrop",
        ),
    )
