"""The optimized variants to build from the source: quantize, convert, prune, distill, and chains of them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from optimodel_operator.api.common import ApiModel, CelRule, DescribedEnum, Name, Uri, unique_by
from optimodel_operator.api.source import DropMode

RESERVED_VARIANT_NAMES = ("auto", "source")


class QuantizationMode(DescribedEnum):
    DYNAMIC = "dynamic", "Weights quantized ahead of time, activations at run time; needs no data."
    STATIC = "static", "Weights and activations quantized ahead of time from calibration data."


class WeightType(DescribedEnum):
    INT8 = "int8", "Signed 8-bit weights."
    UINT8 = "uint8", "Unsigned 8-bit weights."


class CalibrationMethod(DescribedEnum):
    MINMAX = "minmax", "Activation ranges from the observed minimum and maximum."
    ENTROPY = "entropy", "Ranges that minimize the KL divergence of the activation histograms."
    PERCENTILE = "percentile", "Ranges clipped at the 99.999th percentile of the activations."


class Calibration(ApiModel):
    """Data and method used to find activation ranges for static quantization."""

    dataset: Uri
    """Representative inputs (absolute path, file://, s3:// or gs://); labels are not needed."""
    method: CalibrationMethod = CalibrationMethod.MINMAX
    """How activation ranges are derived."""
    samples: int = Field(256, ge=1, le=100_000)
    """Number of samples read from the dataset."""


class Quantize(ApiModel):
    """8-bit integer quantization with onnxruntime."""

    mode: QuantizationMode
    """dynamic or static."""
    weight_type: WeightType = WeightType.INT8
    """Integer type of the weights."""
    per_channel: bool | None = None
    """Quantize weights per output channel rather than per tensor; unset lets the optimizer choose per model."""
    calibration: Calibration | None = None
    """Calibration for static mode (required there, refused for dynamic)."""

    cel_rules = (
        CelRule(
            rule="self.mode != 'static' || has(self.calibration)",
            message="quantize.calibration is required when quantize.mode is static",
            check=lambda q: q.mode != QuantizationMode.STATIC or q.calibration is not None,
            field_path=".calibration",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.mode != 'dynamic' || !has(self.calibration)",
            message="quantize.calibration applies only when quantize.mode is static",
            check=lambda q: q.mode != QuantizationMode.DYNAMIC or q.calibration is None,
            field_path=".calibration",
            reason="FieldValueForbidden",
        ),
    )


class FloatType(DescribedEnum):
    FLOAT16 = "float16", "IEEE half precision."


class Convert(ApiModel):
    """Conversion of the weights and operators to a narrower float type."""

    dtype: FloatType = FloatType.FLOAT16
    """Target float type."""
    keep_io_types: bool = True
    """Keep float32 model inputs and outputs (casts inside the graph), so clients need not change."""


class PruneGranularity(DescribedEnum):
    CHANNEL = "channel", "Whole output channels (rows) of Linear layers."
    FILTER = "filter", "Whole output filters of Conv layers."


class PruneNorm(DescribedEnum):
    L1 = "l1", "Remove the structures with the smallest L1 norm."
    L2 = "l2", "Remove the structures with the smallest L2 norm."


class Prune(ApiModel):
    """Structured pruning in torch, optionally followed by fine-tuning."""

    amount: float = Field(gt=0, lt=1)
    """Share of the structures to remove in each pruned layer, between 0 and 1 exclusive."""
    granularity: PruneGranularity = PruneGranularity.CHANNEL
    """What one removed structure is."""
    heads_amount: float | None = Field(None, ge=0, lt=1)
    """Share of attention heads to remove in each attention layer (transformer models); unset keeps them."""
    norm: PruneNorm = PruneNorm.L2
    """Importance measure."""
    fine_tune_epochs: int = Field(1, ge=0, le=1000)
    """Epochs of fine-tuning after pruning; 0 skips it."""
    dataset: Uri | None = None
    """Labelled training data for fine-tuning (required when fineTuneEpochs > 0)."""

    cel_rules = (
        CelRule(
            rule="self.fineTuneEpochs == 0 || has(self.dataset)",
            message="prune.dataset is required when prune.fineTuneEpochs is above 0",
            check=lambda p: p.fine_tune_epochs == 0 or p.dataset is not None,
            field_path=".dataset",
            reason="FieldValueRequired",
        ),
    )


class StudentSize(ApiModel):
    """Shape of the smaller model trained to imitate the teacher."""

    layers: int = Field(ge=1, le=64)
    """Number of hidden layers (or blocks)."""
    hidden: int = Field(ge=1, le=65_536)
    """Width of the hidden layers."""


class Distill(ApiModel):
    """Knowledge distillation: train a smaller student on the teacher's softened outputs."""

    student: StudentSize
    """Size of the student."""
    dataset: Uri
    """Training data (absolute path, file://, s3:// or gs://)."""
    epochs: int = Field(3, ge=1, le=1000)
    """Training epochs."""
    temperature: float = Field(2.0, gt=0, le=100)
    """Softmax temperature applied to teacher and student logits."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the soft (teacher) loss; 1 - alpha weighs the hard-label loss."""
    learning_rate: float = Field(0.001, gt=0, le=1)
    """Optimizer learning rate."""
    batch_size: int = Field(64, ge=1, le=65_536)
    """Training batch size."""


class GateOverride(ApiModel):
    """Per-variant replacements for the gate defaults in spec.evaluation; unset fields keep them."""

    max_drop: float | None = Field(None, ge=0, le=1_000_000)
    """Largest tolerated loss of the metric for this variant."""
    max_drop_mode: DropMode | None = None
    """absolute or relative, for this variant's maxDrop."""
    max_latency_ms: float | None = Field(None, gt=0, le=600_000)
    """Largest p99 latency (ms) for this variant."""
    min_speedup: float | None = Field(None, gt=0, le=1000)
    """Smallest p50 speed-up over the source for this variant."""
    max_size_mib: float | None = Field(None, gt=0, le=1_000_000, alias="maxSizeMiB")
    """Largest artifact size in MiB for this variant."""

    cel_rules = (
        CelRule(
            rule="!has(self.maxDropMode) || self.maxDropMode != 'relative' || !has(self.maxDrop) || self.maxDrop <= 1.0",
            message="gate.maxDrop must be at most 1 when gate.maxDropMode is relative",
            check=lambda g: g.max_drop_mode != DropMode.RELATIVE or g.max_drop is None or g.max_drop <= 1.0,
            field_path=".maxDrop",
        ),
    )


OPTIMIZATION_KINDS = ("quantize", "convert", "prune", "distill")


class Optimization(ApiModel):
    """One named variant: exactly one of quantize, convert, prune, distill, applied to the source or
    to another variant named in `from` (e.g. distill, then quantize the student)."""

    name: Name
    """Variant name, unique in the list; node pools refer to it. `auto` and `source` are reserved."""
    start_from: Name | None = Field(None, alias="from")
    """Another variant this one starts from; unset means the source model."""
    quantize: Quantize | None = None
    """8-bit quantization."""
    convert: Convert | None = None
    """Float16 conversion."""
    prune: Prune | None = None
    """Structured pruning."""
    distill: Distill | None = None
    """Knowledge distillation into a smaller student."""
    gate: GateOverride | None = None
    """Gate thresholds for this variant, overriding spec.evaluation."""

    @property
    def kind(self) -> str:
        """Which of quantize/convert/prune/distill this variant is (the CEL rule guarantees one)."""
        return next(k for k in OPTIMIZATION_KINDS if getattr(self, k) is not None)

    cel_rules = (
        CelRule(
            rule="[has(self.quantize), has(self.convert), has(self.prune), has(self.distill)].filter(x, x).size() == 1",
            message="each optimizations[] entry must set exactly one of quantize, convert, prune, distill",
            check=lambda o: sum(getattr(o, k) is not None for k in OPTIMIZATION_KINDS) == 1,
        ),
        CelRule(
            rule="!(self.name in ['auto', 'source'])",
            message="optimizations[].name must not be 'auto' or 'source' (reserved for nodePools[].variant)",
            check=lambda o: o.name not in RESERVED_VARIANT_NAMES,
            field_path=".name",
        ),
        CelRule(
            rule="!has(self.from) || self.from != self.name",
            message="optimizations[].from must name another variant, not the variant itself",
            check=lambda o: o.start_from != o.name,
            field_path=".from",
        ),
    )


Optimizations = Annotated[
    list[Optimization], Field(min_length=1, max_length=16), AfterValidator(unique_by("name"))
]
