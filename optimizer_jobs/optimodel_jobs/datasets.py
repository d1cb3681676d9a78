"""Datasets (.npz / .parquet / .csv through fsspec) bound to a model's inputs, with clear refusals.

Reading (I/O) and binding (pure checks against the model's input specs) are separate steps, so that a
torch source can take its input names from the data before it is exported.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np

from optimodel_jobs import errors
from optimodel_contracts.artifacts import TensorSpec
from optimodel_contracts.jobconfig import DatasetSpec
from optimodel_jobs.errors import OptimizeError

_LABEL_FALLBACKS = ("label", "labels", "y", "target")


@dataclass
class RawTable:
    """Arrays (npz) or columns (tables) as read, before they are matched to a model."""

    uri: str
    arrays: dict[str, np.ndarray]
    tabular: bool


@dataclass
class Dataset:
    uri: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    # The evaluation table's slice columns (evaluation.slices.columns): not model inputs, one value per row.
    slices: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, count: int | None) -> Dataset:
        if count is None or count >= len(self):
            return self
        return Dataset(
            self.uri,
            {k: v[:count] for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[:count],
            {k: v[:count] for k, v in self.slices.items()},
        )

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield {k: v[start : start + batch_size] for k, v in self.inputs.items()}


def read_table(uri: str) -> RawTable:
    """Read a dataset file; unknown formats and unreadable files raise OptimizeError."""
    suffix = uri.rsplit("?", 1)[0].lower()
    if not suffix.endswith((".npz", ".parquet", ".csv")):
        raise OptimizeError(
            errors.DATASET_FORMAT_UNKNOWN, f"dataset {uri}: unknown format; use .npz, .parquet or .csv"
        )
    try:
        with fsspec.open(uri, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise OptimizeError(errors.DATASET_UNREADABLE, f"dataset {uri} does not exist") from None
    except Exception as error:  # noqa: BLE001 - the protocol's own errors vary (s3, gcs, http...)
        raise OptimizeError(errors.DATASET_UNREADABLE, f"dataset {uri} cannot be read: {error}") from None
    try:
        if suffix.endswith(".npz"):
            with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
                return RawTable(uri, {key: archive[key] for key in archive.files}, tabular=False)
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(payload)) if suffix.endswith(".parquet") else pd.read_csv(io.BytesIO(payload))
    except Exception as error:  # noqa: BLE001 - corrupt files fail in many ways; the message keeps the cause
        raise OptimizeError(errors.DATASET_UNREADABLE, f"dataset {uri} is corrupt or truncated: {error}") from None
    arrays: dict[str, np.ndarray] = {}
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype == object and len(values) and isinstance(values[0], (list, np.ndarray)):
            values = np.stack([np.asarray(v) for v in values])  # parquet list columns hold whole tensors
        arrays[str(column)] = values
    return RawTable(uri, arrays, tabular=True)


def split_off_columns(raw: RawTable, columns: Sequence[str], field_name: str) -> tuple[RawTable, dict[str, np.ndarray]]:
    """The table without ``columns`` (not model inputs: they must not feed the model) and those columns' values;
    a missing one is refused naming ``field_name``."""
    missing = [c for c in columns if c not in raw.arrays]
    if missing:
        raise OptimizeError(
            errors.INPUT_MISMATCH,
            f"{field_name} names {missing}, which dataset {raw.uri} does not have (it has {', '.join(raw.arrays) or 'nothing'}); "
            "a slice column is an extra column (or array) of the evaluation data, not a model input",
        )
    values = {c: np.asarray(raw.arrays[c]) for c in columns}
    for column, array in values.items():
        if array.ndim != 1:
            raise OptimizeError(errors.SHAPE_MISMATCH, f"{field_name}: {column!r} of {raw.uri} must hold one value per row, it has shape {list(array.shape)}")
    rest = RawTable(raw.uri, {k: v for k, v in raw.arrays.items() if k not in values}, raw.tabular)
    return rest, values


def label_key(raw: RawTable, label: str) -> str | None:
    if label in raw.arrays:
        return label
    if label == "label":
        return next((key for key in _LABEL_FALLBACKS if key in raw.arrays), None)
    return None


def feature_names(raw: RawTable, spec: DatasetSpec) -> list[str]:
    """The input names a dataset provides (used to export a torch source with matching names)."""
    label = label_key(raw, spec.label)
    if raw.tabular:
        return list(spec.columns) if spec.columns else ["x"]
    return [key for key in raw.arrays if key != label]


def feature_columns(raw: RawTable, spec: DatasetSpec) -> list[str]:
    """A table's feature columns when dataset.columns is unset: every column but the label (see label_key)."""
    label = label_key(raw, spec.label)
    return [c for c in raw.arrays if c != label]


def example_inputs(raw: RawTable, spec: DatasetSpec, names: Sequence[str], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Two samples per input, to export a torch source with: the same columns / arrays that ``bind`` feeds the
    model later (the label left out by the same rule), so a feature-count problem shows before the export.
    ``dtypes``: the declared ``source.inputs`` types; undeclared float64 becomes float32."""
    if raw.tabular:
        mapping = spec.columns or {names[0]: feature_columns(raw, spec)}
        arrays = {}
        for name, columns in mapping.items():
            missing = [c for c in columns if c not in raw.arrays]
            if missing:
                raise OptimizeError(errors.INPUT_MISMATCH, f"dataset {raw.uri} has no columns {missing} for input {name!r}")
            _numeric_columns(raw, columns)
            arrays[name] = np.concatenate([raw.arrays[c][:2].reshape(min(2, len(raw.arrays[c])), -1) for c in columns], axis=1)
    else:
        missing = [n for n in names if n not in raw.arrays]
        if missing:
            raise OptimizeError(errors.INPUT_MISMATCH, f"dataset {raw.uri} lacks arrays {missing} named by source.inputs")
        arrays = {name: raw.arrays[name][:2] for name in names}
    examples = {}
    for name, array in arrays.items():
        if name in dtypes:
            array = array.astype(dtypes[name])  # the signature the user declared
        elif array.dtype == np.float64:
            array = array.astype(np.float32)
        examples[name] = array
    return examples


def _numeric_columns(raw: RawTable, columns: Sequence[str]) -> None:
    """Feature columns must hold numbers: a text column (often the label under another name) is named."""
    for column in columns:
        values = raw.arrays[column]
        if values.dtype.kind not in "biuf" and not (values.dtype == object and len(values) and isinstance(values[0], np.ndarray)):
            sample = ", ".join(repr(v) for v in list(dict.fromkeys(values[:50].tolist()))[:3])
            raise OptimizeError(
                errors.SHAPE_MISMATCH,
                f"dataset {raw.uri}: feature column {column!r} holds {values.dtype} values ({sample}), not numbers. "
                f"If it is the label, say so with dataset: {{uri: {raw.uri}, label: {column}}}; otherwise encode it as "
                "numbers or leave it out with dataset.columns",
            )


def bind(
    raw: RawTable, spec: DatasetSpec, model_inputs: Sequence[TensorSpec], need_labels: bool,
    slices: dict[str, np.ndarray] | None = None,
) -> Dataset:
    """Match the data to the model's inputs: names, per-sample shapes and dtypes; refuse what won't fit."""
    label = label_key(raw, spec.label)
    if need_labels:
        require_label(raw, spec)
    inputs = _tabular_inputs(raw, spec, model_inputs, label) if raw.tabular else _npz_inputs(raw, model_inputs, label)
    lengths = {name: len(array) for name, array in inputs.items()}
    if label is not None:
        lengths[label] = len(raw.arrays[label])
    if len(set(lengths.values())) > 1:
        raise OptimizeError(errors.SHAPE_MISMATCH, f"dataset {raw.uri}: arrays differ in length: {lengths}")
    if not lengths or next(iter(lengths.values())) == 0:
        raise OptimizeError(errors.DATASET_EMPTY, f"dataset {raw.uri} holds no samples")
    try:
        bound = {tensor.name: _fit(raw.uri, tensor, inputs[tensor.name]) for tensor in model_inputs}
    except OptimizeError as error:
        if not raw.tabular or error.reason != errors.SHAPE_MISMATCH:
            raise
        # A table's width problem is usually a column too many (an unnamed label, an id) or too few: say which fed it.
        features = spec.columns or {model_inputs[0].name: [c for c in raw.arrays if c != label]}
        used = "; ".join(f"{name} <- {len(cols)} columns {', '.join(cols[:5])}{', ...' if len(cols) > 5 else ''}"
                         for name, cols in features.items())
        raise OptimizeError(
            error.reason, f"{error.message} (features: {used}; label column: {label or 'none'}; "
            "dataset.label names the label, dataset.columns picks the features)",
        ) from None
    labels = None if label is None else np.asarray(raw.arrays[label])
    return Dataset(raw.uri, bound, labels, dict(slices or {})).take(spec.samples)


def require_label(raw: RawTable, spec: DatasetSpec) -> None:
    """LabelsMissing, naming every name looked for and the setting that fixes it, when the data has no label.
    Checked as soon as the data is read: otherwise a torch source is exported with the would-be label as an input."""
    if label_key(raw, spec.label) is None:
        kind = "column" if raw.tabular else "array"
        looked = (
            f"{kind}s named {', '.join(repr(n) for n in _LABEL_FALLBACKS)} (the names read when dataset.label is unset)"
            if spec.label == "label" else f"a {kind} named {spec.label!r} (dataset.label)"
        )
        raise OptimizeError(
            errors.LABELS_MISSING,
            f"dataset {raw.uri} has none of the {looked}; it has {', '.join(raw.arrays) or 'nothing'}, and the metric "
            f"needs labels. Name the label {kind} with dataset: {{uri: {raw.uri}, label: <{kind}>}}, "
            "or use metric: agreement (no labels)",
        )


def _npz_inputs(raw: RawTable, model_inputs: Sequence[TensorSpec], label: str | None) -> dict[str, np.ndarray]:
    available = [key for key in raw.arrays if key != label]
    wanted = [tensor.name for tensor in model_inputs]
    missing = [name for name in wanted if name not in raw.arrays]
    if missing and len(wanted) == 1 and len(available) == 1:
        # One input, one array: the name does not matter.
        return {wanted[0]: raw.arrays[available[0]]}
    if missing:
        raise OptimizeError(
            errors.INPUT_MISMATCH,
            f"dataset {raw.uri} lacks arrays for model inputs {missing}; it has {available or 'none'}",
        )
    return {name: raw.arrays[name] for name in wanted}


def _tabular_inputs(
    raw: RawTable, spec: DatasetSpec, model_inputs: Sequence[TensorSpec], label: str | None
) -> dict[str, np.ndarray]:
    mapping = spec.columns
    if mapping is None:
        if len(model_inputs) != 1:
            raise OptimizeError(
                errors.INPUT_MISMATCH,
                f"dataset {raw.uri} is a table and the model has {len(model_inputs)} inputs; "
                "say which columns feed which input with dataset.columns",
            )
        mapping = {model_inputs[0].name: [c for c in raw.arrays if c != label]}
    unknown_inputs = sorted(set(mapping) - {t.name for t in model_inputs})
    if unknown_inputs:
        raise OptimizeError(errors.INPUT_MISMATCH, f"dataset.columns names {unknown_inputs}, which the model does not take")
    result: dict[str, np.ndarray] = {}
    for name, columns in mapping.items():
        missing = [c for c in columns if c not in raw.arrays]
        if missing:
            raise OptimizeError(errors.INPUT_MISMATCH, f"dataset {raw.uri} has no columns {missing} for input {name!r}")
        if not columns:
            raise OptimizeError(errors.INPUT_MISMATCH, f"dataset {raw.uri} has no feature columns for input {name!r}")
        _numeric_columns(raw, columns)
        parts = [raw.arrays[c].reshape(len(raw.arrays[c]), -1) for c in columns]
        result[name] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    for tensor in model_inputs:
        if tensor.name not in result:
            raise OptimizeError(errors.INPUT_MISMATCH, f"no columns of {raw.uri} feed model input {tensor.name!r}")
    return result


def _fit(uri: str, tensor: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Reshape (when the element count matches) and cast one input to the model's shape and dtype."""
    sample_shape = tensor.shape[1:]
    array = np.asarray(array)
    if array.ndim == 1 and len(sample_shape) >= 1:
        array = array.reshape(-1, 1)
    if all(d is not None for d in sample_shape) and tuple(array.shape[1:]) != tuple(sample_shape):
        expected = int(np.prod(sample_shape)) if sample_shape else 1
        if int(np.prod(array.shape[1:])) != expected:
            raise OptimizeError(
                errors.SHAPE_MISMATCH,
                f"dataset {uri}: input {tensor.name!r} has samples of shape {list(array.shape[1:])}, "
                f"the model expects {sample_shape}",
            )
        array = array.reshape((len(array), *sample_shape))
    elif len(array.shape) - 1 != len(sample_shape):
        raise OptimizeError(
            errors.SHAPE_MISMATCH,
            f"dataset {uri}: input {tensor.name!r} has rank {array.ndim}, the model expects rank {len(tensor.shape)}",
        )
    for axis, (have, want) in enumerate(zip(array.shape[1:], sample_shape, strict=True), start=1):
        if want is not None and have != want:
            raise OptimizeError(
                errors.SHAPE_MISMATCH, f"dataset {uri}: input {tensor.name!r} axis {axis} is {have}, model expects {want}"
            )
    dtype = np.dtype(tensor.dtype)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise OptimizeError(
                errors.SHAPE_MISMATCH, f"dataset {uri}: input {tensor.name!r} must hold integers ({tensor.dtype})"
            )
    try:
        return np.ascontiguousarray(array.astype(dtype, copy=False))
    except (TypeError, ValueError) as error:
        raise OptimizeError(
            errors.SHAPE_MISMATCH, f"dataset {uri}: input {tensor.name!r} cannot be cast to {tensor.dtype}: {error}"
        ) from None
