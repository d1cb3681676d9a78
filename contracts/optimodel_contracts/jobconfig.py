"""The optimization Job's configuration: one plain JSON/YAML document, camelCase or snake_case keys.

Names and meanings are the ``OptimizedModel`` API's wherever the two say the same thing (``source.format:
torch`` is TorchScript, ``evaluation.maxDropMode`` defaults to ``absolute``, ``prune.amount`` /
``headsAmount``, ``distill.alpha`` weighs the soft loss, ``learningRate``, ``executionProvider``,
``quantize.weightType`` ...), with the API's defaults; what the Job adds (``state_dict`` and
``exported_program`` sources, ``latency``, ``fallback``, budgets per variant ...) is the Job's own.
:mod:`optimodel_contracts.from_resource` is the one mapping from the API, and a unit test walks every
API field through it. This module does not import the operator's API types, so the Job image does not
depend on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from optimodel_contracts import errors
from optimodel_contracts.errors import OptimizeError


class Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class InputSpec(Spec):
    """One declared model input (the API's ``source.inputs[]``): checked against the model's own
    signature and the dataset's arrays; ``-1`` (or null) marks a dynamic dimension."""

    name: str = Field(min_length=1)
    dtype: Literal["float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"] = "float32"
    shape: list[int | None] = Field(min_length=1)


class SourceSpec(Spec):
    """The model to optimize. ``onnx``; ``torch``: a TorchScript archive (``torch.jit.save``), as in the
    API; ``state_dict``: a ``torch.save`` state dict, ``factory`` makes the module; ``exported_program``:
    a ``torch.export.save`` file. ``factory`` (with ``factoryKwargs``) is also the default student
    architecture of distillation. ``codePath``: a folder or a ``.py`` file holding the factory's module
    (a local path, relative to the config file's folder, or any fsspec URI, fetched), put on the import
    path before the factory is imported; the config file's folder and the working directory are searched
    after it (optimodel_jobs.source.import_factory)."""

    uri: str
    format: Literal["onnx", "torch", "state_dict", "exported_program"] = "onnx"
    factory: str | None = None
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    code_path: str | None = Field(default=None, min_length=1)
    inputs: list[InputSpec] | None = None
    output_names: list[str] = Field(default_factory=lambda: ["logits"])
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")

    @property
    def input_names(self) -> list[str] | None:
        return [i.name for i in self.inputs] if self.inputs else None

    @model_validator(mode="after")
    def _state_dict_needs_factory(self) -> SourceSpec:
        if self.format == "state_dict" and not self.factory:
            raise ValueError("source.format state_dict needs source.factory (the function that makes the module)")
        return self


class DatasetSpec(Spec):
    """A dataset file (.npz, .parquet, .csv) through any fsspec URI.

    ``.npz``: one array per model input, named after it, plus the label array. Tables: the label
    column plus feature columns (``columns`` maps input names to columns; by default every other
    column feeds the model's only input, reshaped to its shape)."""

    uri: str
    samples: int | None = Field(default=None, gt=0)
    label: str = "label"
    columns: dict[str, list[str]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_uri(cls, value: Any) -> Any:
        return {"uri": value} if isinstance(value, str) else value


class Budgets(Spec):
    """Gate limits besides accuracy, checked once latency and size are measured (unset: no limit)."""

    max_latency_ms: float | None = Field(default=None, gt=0)  # p99 at the smallest batch size
    min_speedup: float | None = Field(default=None, gt=0)  # p50 of the source / p50 of the variant
    max_size_mib: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("maxSizeMiB", "maxSizeMib", "max_size_mib")
    )


class SplitSpec(Spec):
    """How one evaluation dataset is divided into roles, deterministically by a hash of each row's bytes
    (optimodel_jobs.splits): ``tuningFraction`` of the rows is the tuning split, the only rows a search or
    a selection may look at (the static-int8 fallback's rounds, ``auto``'s tie-break); the rest is held out
    for the gate's verdict and the reported figures. ``calibrationFraction`` > 0 is the user's explicit
    leave to calibrate and train on evaluation rows: those rows then reach neither tuning nor held-out, and
    the manifest and the report say so. ``tuningFraction`` is ignored when ``evaluation.tuningDataset`` is set."""

    seed: int = Field(default=0, ge=0)
    tuning_fraction: float = Field(default=0.3, gt=0, lt=1)
    calibration_fraction: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _fractions_leave_held_out_rows(self) -> SplitSpec:
        if self.tuning_fraction + self.calibration_fraction >= 1:
            raise ValueError(
                f"evaluation.split.tuningFraction ({self.tuning_fraction}) + calibrationFraction "
                f"({self.calibration_fraction}) must be < 1: nothing would be left held out"
            )
        return self


class SliceSpec(Spec):
    """The gate's per-slice check: overall accuracy within budget can hide a collapse on one class or one
    segment. ``perClass`` (classification): one slice per true label; ``columns``: extra columns of the
    evaluation table (not model inputs), one slice per value. Each slice's drop must stay within
    ``maxDrop`` (in ``maxDropMode`` units); slices with fewer than ``minSize`` held-out rows are reported
    as too small and not judged."""

    per_class: bool = True
    columns: list[str] = Field(default_factory=list)
    max_drop: float = Field(default=0.05, ge=0)
    max_drop_mode: Literal["absolute", "relative"] = "absolute"
    min_size: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _relative_budget_is_a_share(self) -> SliceSpec:
        # The API refuses the same (a CEL rule); a Job config written by hand gets the same answer.
        if self.max_drop_mode == "relative" and self.max_drop > 1:
            raise ValueError(f"evaluation.slices.maxDrop ({self.max_drop}) must be at most 1 when maxDropMode is relative")
        return self


class EvaluationSpec(Budgets):
    """``dataset``: held out for the gate's verdict and the reported figures. Without ``tuningDataset`` it
    is split (``split``) into tuning and held-out rows; with it, ``dataset`` is wholly held out.
    ``minSamples`` applies to the held-out rows."""

    dataset: DatasetSpec
    tuning_dataset: DatasetSpec | None = None
    split: SplitSpec = Field(default_factory=SplitSpec)
    slices: SliceSpec = Field(default_factory=SliceSpec)
    metric: str = "accuracy"
    top_k: int | None = Field(default=None, ge=2)
    max_drop: float = Field(default=0.01, ge=0)
    max_drop_mode: Literal["absolute", "relative"] = "absolute"
    higher_is_better: bool | None = None
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    min_samples: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _tuning_rows_are_not_the_held_out_ones(self) -> EvaluationSpec:
        # Tuning on the rows that decide the verdict is what the split exists to prevent (the API refuses it too).
        if self.tuning_dataset is not None and self.tuning_dataset.uri == self.dataset.uri:
            raise ValueError(f"evaluation.tuningDataset must differ from evaluation.dataset ({self.dataset.uri}): "
                             "the held-out rows would tune")
        return self


class CalibrationSpec(Spec):
    dataset: DatasetSpec | None = None
    samples: int = Field(default=256, gt=0)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    # Job-only: the percentile of method percentile (the API's method says 99.999).
    percentile: float = Field(default=99.999, gt=90, le=100)


class FallbackSpec(Spec):
    """Accuracy-aware fallback for static int8: keep the most sensitive nodes in float and retry."""

    enabled: bool = True
    max_rounds: int = Field(default=3, ge=0, le=20)
    nodes_per_round: int = Field(default=2, ge=1, le=100)


class QuantizeSpec(Spec):
    mode: Literal["dynamic", "static"] = "dynamic"
    calibration: CalibrationSpec | None = None
    weight_type: Literal["int8", "uint8"] = "int8"
    # "auto" (the API's unset): per-channel scales where they pay (static, or CPUs without VNNI).
    per_channel: bool | Literal["auto"] = "auto"
    # "auto": 7-bit weights on CPUs without VNNI, where u8s8 products saturate (see quantize.py).
    reduce_range: bool | Literal["auto"] = "auto"
    op_types: list[str] | None = None
    fallback: FallbackSpec = Field(default_factory=FallbackSpec)


class ConvertSpec(Spec):
    dtype: Literal["float16"] = "float16"
    keep_io_types: bool = True


class GateOverride(Budgets):
    """Per-variant replacements for the evaluation's gate settings."""

    max_drop: float | None = Field(default=None, ge=0)
    max_drop_mode: Literal["absolute", "relative"] | None = None


class PruneSpec(Spec):
    """Structured pruning: ``amount`` of the hidden neurons / channels / FFN units removed;
    ``heads_amount`` of the attention heads (unset: heads are kept, as in the API). ``dataset``: data
    for the importance pass and fine-tuning (default: the job's training data)."""

    amount: float = Field(default=0.5, gt=0, lt=1)
    heads_amount: float | None = Field(default=None, ge=0, lt=1)
    dataset: DatasetSpec | None = None
    # Recorded in the manifest, not obeyed: the model's structure decides what a unit is (neuron,
    # channel, head), and importance is measured on data (activation x outgoing weight norm).
    granularity: Literal["channel", "filter"] = "channel"
    norm: Literal["l1", "l2"] = "l2"
    fine_tune_epochs: int = Field(default=1, ge=0)
    lr: float = Field(default=5e-4, gt=0)
    temperature: float = Field(default=2.0, gt=0)


class DistillSpec(Spec):
    """A student made by ``studentFactory`` (default: the source's factory) with the source's kwargs
    overridden by ``student``, trained on the teacher's soft labels at ``temperature``."""

    student: dict[str, Any] = Field(default_factory=dict)
    student_factory: str | None = None
    teacher: SourceSpec | None = None
    dataset: DatasetSpec | None = None
    epochs: int = Field(default=3, ge=1)
    temperature: float = Field(default=2.0, gt=0)
    # Weight of the soft (teacher) loss, as in the API; 1 - alpha weighs the hard-label loss (when the
    # data has labels; without labels the soft loss alone is used, and recorded).
    alpha: float = Field(default=0.5, ge=0, le=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, gt=0)


class VariantSpec(Spec):
    """One variant. At most one of quantize / convert / prune / distill; none means "the source with
    ONNX Runtime's graph optimizations baked in". ``from`` starts it from another variant (a chain)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    from_: str | None = Field(default=None, validation_alias=AliasChoices("from", "from_"), serialization_alias="from")
    pool: str | None = None
    gate: GateOverride | None = None
    quantize: QuantizeSpec | None = None
    convert: ConvertSpec | None = None
    prune: PruneSpec | None = None
    distill: DistillSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VariantSpec:
        chosen = [k for k in ("quantize", "convert", "prune", "distill") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"variant {self.name!r} sets {' and '.join(chosen)}; a variant does one thing (chain them with 'from')")
        return self

    @property
    def kind(self) -> str:
        if self.quantize is not None:
            return f"int8-{self.quantize.mode}"
        if self.convert is not None:
            return "fp16"
        if self.prune is not None:
            return "pruned"
        if self.distill is not None:
            return "distilled"
        return "fp32-optimized"


class LatencySpec(Spec):
    """How latency is measured (the API's ``evaluation.benchmark``: ``batchSize`` -> ``batchSizes:
    [batchSize]``, same ``iterations`` and ``warmup`` defaults); the smallest batch size is the gate's."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    iterations: int = Field(default=200, gt=0)
    warmup: int = Field(default=20, ge=0)
    rounds: int = Field(default=5, gt=0)
    cpu_limit: float | None = Field(default=None, gt=0)
    measure_memory: bool = True

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError("batchSizes must be a non-empty list of positive integers")
        return value


class PoolSpec(Spec):
    """A node pool (the API's ``nodePools[]``): its execution provider, the variant it names (None:
    ``auto``), its CPU limit (the API's ``resources.limits.cpu``, in cores) and what ``auto`` optimizes
    there (:mod:`optimodel_contracts.choice`): ``latency`` at the smallest batch size, ``throughput`` at
    the largest, or ``size``."""

    name: str
    execution_provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    variant: str | None = None
    cpu_limit: float | None = Field(default=None, gt=0)
    objective: Literal["latency", "throughput", "size"] = "latency"


class OptimizeConfig(Spec):
    name: str = Field(default="model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    task: Literal["classification", "regression"] = "classification"
    source: SourceSpec
    evaluation: EvaluationSpec
    calibration: CalibrationSpec | None = None
    training: DatasetSpec | None = None
    variants: list[VariantSpec] = Field(
        default_factory=list, validation_alias=AliasChoices("variants", "optimizations")
    )
    latency: LatencySpec = Field(default_factory=LatencySpec)
    pools: list[PoolSpec] = Field(
        default_factory=lambda: [PoolSpec(name="cpu")], validation_alias=AliasChoices("pools", "nodePools", "node_pools")
    )
    store: str = "./optimodel-store"
    work_dir: str | None = None
    report: str | None = None
    seed: int = 0
    # The folder of the config file (load_config sets it): a relative source.codePath is resolved against
    # it and the factory's module is searched in it. Where the config was read from, not what was asked:
    # left out of the spec hash, like workDir.
    config_dir: str | None = None

    @model_validator(mode="after")
    def _references(self) -> OptimizeConfig:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        reserved = sorted({"source", "auto"} & set(names))
        if reserved:
            raise ValueError(f"variant names {reserved} are reserved (the source model / automatic choice)")
        pool_names = {p.name for p in self.pools}
        for variant in self.variants:
            if variant.pool is not None and variant.pool not in pool_names:
                raise ValueError(f"variant {variant.name!r} names pool {variant.pool!r}, which is not in pools")
        for pool in self.pools:
            if pool.variant == "auto":
                pool.variant = None
            if pool.variant is not None and pool.variant != "source" and pool.variant not in names:
                raise ValueError(f"pool {pool.name!r} names variant {pool.variant!r}, which is not in variants")
        return self

    def spec_hash(self) -> str:
        """A stable hash of what was asked for (lineage); key order and defaults do not change it."""
        # A pool's objective only changes the choice among the same measurements, not what is built or
        # measured: left out, so changing it (or this field's arrival) reuses the run and keeps every hash.
        exclude: Any = {"work_dir": True, "report": True, "config_dir": True, "pools": {"__all__": {"objective"}}}
        canonical = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_config(raw: dict[str, Any]) -> OptimizeConfig:
    """Validate a config dict; problems become one readable OptimizeError naming the fields."""
    try:
        return OptimizeConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in issue['loc']) or '(root)'}: {issue['msg']}" for issue in error.errors()
        )
        raise OptimizeError(errors.CONFIG_INVALID, f"invalid optimize config: {problems}") from None


def load_config(text_or_path: str) -> OptimizeConfig:
    """Read a config from inline JSON, or a .json / .yaml file path."""
    stripped = text_or_path.strip()
    if stripped.startswith("{"):
        try:
            return parse_config(json.loads(stripped))
        except json.JSONDecodeError as error:
            raise OptimizeError(errors.CONFIG_INVALID, f"config is not valid JSON: {error}") from None
    path = Path(text_or_path)
    if not path.is_file():
        raise OptimizeError(errors.CONFIG_INVALID, f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse failure is the same problem for the user
        raise OptimizeError(errors.CONFIG_INVALID, f"config file {path} cannot be parsed: {error}") from None
    if not isinstance(raw, dict):
        raise OptimizeError(errors.CONFIG_INVALID, f"config file {path} must hold a mapping at the top level")
    raw.setdefault("configDir", str(path.resolve().parent))
    return parse_config(raw)
