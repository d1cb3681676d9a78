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


class Split(ApiModel):
    """How one evaluation dataset is divided into roles, deterministically by a SHA-256 of each row's bytes
    with `seed` (the manifest records the seed, the method and the row counts). Tuning rows are the only
    rows a search or a selection may look at (the static-int8 fallback's rounds, `auto`'s tie-break);
    the other rows are held out for the gate's verdict and the reported figures."""

    seed: int = Field(0, ge=0, le=2_147_483_647)
    """Seed mixed into each row's hash; another seed draws another split of the same rows."""
    tuning_fraction: float = Field(0.3, gt=0, lt=1)
    """Share of the rows given to tuning; ignored when evaluation.tuningDataset is set (then `dataset` is
    wholly held out)."""
    calibration_fraction: float = Field(0.0, ge=0, lt=1)
    """Share of the rows that may calibrate (static int8) and train (prune fine-tuning, distill) when no
    calibration or training dataset is given. 0 (the default) keeps evaluation rows out of calibration and
    training; above 0 is your explicit leave to use them, and the manifest and the report say so. These
    rows reach neither tuning nor held-out; tuningFraction + calibrationFraction must stay below 1."""

    cel_rules = (
        CelRule(
            rule="self.tuningFraction + self.calibrationFraction < 1.0",
            message="evaluation.split.tuningFraction + evaluation.split.calibrationFraction must be below 1 "
            "(some rows must be left held out for the gate)",
            check=lambda s: s.tuning_fraction + s.calibration_fraction < 1.0,
            field_path=".calibrationFraction",
        ),
    )


class Slices(ApiModel):
    """The gate's per-slice check: overall accuracy within budget can hide a collapse on one class or one
    segment (quantization and pruning hurt rare classes first). Every slice of the held-out rows with at
    least `minSize` rows must stay within `maxDrop`; the worst slice is reported in status.variants[].worstSlice,
    the manifest and the report."""

    per_class: bool = True
    """One slice per true label (classification metrics; ignored for mae and mse)."""
    columns: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=128)]], Field(max_length=16)] = (
        Field(default_factory=list)
    )
    """Extra columns of the evaluation data (not model inputs), e.g. region: one slice per value."""
    max_drop: float = Field(0.05, ge=0, le=1_000_000)
    """Largest tolerated loss of the metric on any one slice, in maxDropMode units (0.05 = five accuracy
    points when absolute)."""
    max_drop_mode: DropMode = DropMode.ABSOLUTE
    """Whether slices.maxDrop is absolute or relative to the source's score on the slice."""
    min_size: int = Field(30, ge=1, le=100_000_000)
    """Slices with fewer held-out rows are reported as too small and not judged."""

    cel_rules = (
        CelRule(
            rule="self.maxDropMode != 'relative' || self.maxDrop <= 1.0",
            message="evaluation.slices.maxDrop must be at most 1 when evaluation.slices.maxDropMode is relative",
            check=lambda s: s.max_drop_mode != DropMode.RELATIVE or s.max_drop <= 1.0,
            field_path=".maxDrop",
        ),
        CelRule(
            rule="self.columns.all(c, self.columns.exists_one(d, d == c))",
            message="evaluation.slices.columns must not name a column twice",
            check=lambda s: len(set(s.columns)) == len(s.columns),
            field_path=".columns",
        ),
    )


class Evaluation(ApiModel):
    """How every variant is judged against the source: the metric, the allowed drop and the gate's defaults."""

    dataset: Uri
    """Labelled evaluation data (absolute path, file://, s3:// or gs://). Without tuningDataset it is split
    (see `split`) into tuning and held-out rows; with it, wholly held out. Never used to calibrate or train
    unless split.calibrationFraction says so."""
    tuning_dataset: Uri | None = None
    """Labelled data any search or selection may look at (fallback rounds, `auto`'s tie-break); when set,
    `dataset` is held out whole for the gate's verdict and the reported figures."""
    split: Split | None = None
    """How `dataset` is divided into tuning and held-out rows (defaults as below when unset)."""
    slices: Slices | None = None
    """The gate's per-class and per-column check (defaults as below when unset)."""
    metric: Metric = Metric.ACCURACY
    """Quality metric computed for the source and for every variant on the held-out rows."""
    top_k: int | None = Field(None, ge=2, le=100)
    """k for metric topK (and only then)."""
    higher_is_better: bool | None = None
    """Direction of the metric; follows from it, may be stated for clarity but must agree."""
    max_drop: float = Field(ge=0, le=1_000_000)
    """Largest tolerated loss of the metric against the source (see maxDropMode); 0 tolerates none."""
    max_drop_mode: DropMode = DropMode.ABSOLUTE
    """Whether maxDrop is absolute or relative to the source's score."""
    min_samples: int = Field(100, ge=1, le=100_000_000)
    """The gate refuses to judge on fewer held-out rows than this (after the split)."""
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
        CelRule(
            rule="!has(self.tuningDataset) || self.tuningDataset != self.dataset",
            message="evaluation.tuningDataset must differ from evaluation.dataset (the held-out data cannot also tune)",
            check=lambda e: e.tuning_dataset is None or e.tuning_dataset != e.dataset,
            field_path=".tuningDataset",
        ),
    )
