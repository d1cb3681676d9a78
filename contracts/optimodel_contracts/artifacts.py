"""The artifact format shared by the optimization Jobs (writers) and the model server (readers).

An artifact store is any fsspec location (a plain path, ``file://``, ``s3://``, ``memory://`` ...)
laid out as::

    <store>/blobs/sha256/<hex>.onnx            the model, content-addressed by its sha256
    <store>/manifests/<variant>/<hex>.json     a versioned manifest, named by the sha256 of its bytes
    <store>/runs/<name>/<spec-hash[:16]>.json  a Job run's record (:mod:`optimodel_contracts.runrecord`)
    <store>/builds/<build-key>.json            a variant built before, reused by content (runrecord.BuildRecord)
    <store>/manifest-index/<variant>/<identity> the manifest an unchanged variant keeps (optimodel_jobs.reuse)

Both are written under a temporary name and then moved into place, so a partial upload is never
visible under its final name. Readers verify the blob's sha256 and size against the manifest before
they hand the file to anyone (:func:`fetch_verified`).

The drift maths (:func:`bin_counts`, :func:`population_stability_index`) lives here too, so that the
optimizer, which records the reference profile, and the server, which scores live traffic against it,
cannot disagree on a bin boundary.

This module imports only the standard library, pydantic, fsspec and numpy: the server image imports it
and must not pull in torch or onnxruntime through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from optimodel_contracts.errors import ReasonedError

SCHEMA_VERSION = 1
BLOB_PREFIX = "blobs/sha256"
MANIFEST_PREFIX = "manifests"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_PATH = re.compile(r"^blobs/sha256/([0-9a-f]{64})\.onnx$")
_CHUNK = 1 << 20


class ArtifactIntegrityError(ReasonedError):
    """An artifact or manifest that must not be used; ``reason`` is a machine-readable CamelCase word.

    Reasons: ``ManifestMissing``, ``ManifestInvalid``, ``ManifestHashMismatch``,
    ``UnsupportedSchemaVersion``, ``ManifestOutsideStore``, ``BlobPathInvalid``, ``BlobMissing``,
    ``SizeMismatch``, ``HashMismatch``.
    """


# --------------------------------------------------------------------------------------------------
# Drift reference profile
# --------------------------------------------------------------------------------------------------


class FeatureProfile(BaseModel):
    """Quantile bins of one scalar feature and how often the reference data fell in each.

    Bin ``i`` holds values ``v`` with ``edges[i-1] <= v < edges[i]`` (the first bin is open below,
    the last open above), which is exactly what :func:`bin_counts` computes.

    Where the feature comes from, so that the server extracts the same one (:func:`extract_feature`):
    ``tensor`` names the model input (``None`` for the model output profile); ``reduction`` is
    ``"value"`` (the element at ``flat_index`` of one sample, flattened) or ``"mean"`` (the mean of all
    of one sample's elements, used for wide inputs such as images).
    """

    name: str
    edges: list[float]
    reference: list[float]
    tensor: str | None = None
    flat_index: int | None = None
    reduction: Literal["value", "mean"] = "value"

    @model_validator(mode="after")
    def _check_shape(self) -> FeatureProfile:
        if len(self.reference) != len(self.edges) + 1:
            raise ValueError(
                f"feature {self.name!r}: reference has {len(self.reference)} bins, "
                f"expected len(edges)+1 = {len(self.edges) + 1}"
            )
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"feature {self.name!r}: edges must be strictly increasing")
        total = float(sum(self.reference))
        if not np.isclose(total, 1.0, atol=1e-6):
            raise ValueError(f"feature {self.name!r}: reference frequencies sum to {total}, not 1")
        if self.reduction == "value" and self.tensor is not None and self.flat_index is None:
            raise ValueError(f"feature {self.name!r}: reduction 'value' needs flat_index")
        return self


class DriftReference(BaseModel):
    """The reference the server's PSI is computed against, from the evaluation data.

    Inputs: for narrow inputs (<= ``max_features`` elements per sample) one profile per element; for
    wider ones (images, token ids) a bounded, evenly spaced set of elements plus the per-sample mean.
    ``output``: for classifiers the predicted-class frequencies, with ``edges`` the class boundaries
    ``k + 0.5``; for regressors quantile bins of the prediction.
    """

    inputs: list[FeatureProfile]
    output: FeatureProfile
    sample_count: int = 0
    reduction: str = ""


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Count ``values`` per bin of ``edges`` (len(edges)+1 bins); NaNs are dropped, infinities kept."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[~np.isnan(flat)]
    edge_array = np.asarray(edges, dtype=np.float64)
    # side="right": a value equal to an edge belongs to the bin above it, as FeatureProfile says.
    index = np.searchsorted(edge_array, flat, side="right")
    return np.bincount(index, minlength=len(edge_array) + 1).astype(np.int64)


def population_stability_index(
    reference: Sequence[float], observed_counts: Sequence[float], eps: float = 1e-4
) -> float:
    """PSI = sum((o - r) * ln(o / r)) over bins, with both frequencies floored at ``eps``.

    ``reference`` are frequencies (sum 1); ``observed_counts`` raw counts per bin (normalised here).
    Raises ValueError when the bin counts differ or nothing was observed: "no data" is not "no drift".
    """
    ref = np.asarray(reference, dtype=np.float64)
    obs = np.asarray(observed_counts, dtype=np.float64)
    if ref.shape != obs.shape or ref.ndim != 1:
        raise ValueError(f"reference has {ref.shape} bins but observed has {obs.shape}")
    if np.any(obs < 0) or np.any(ref < 0):
        raise ValueError("bin counts and frequencies must be non-negative")
    total = obs.sum()
    if total <= 0:
        raise ValueError("no observations: PSI is undefined without data")
    ref_total = ref.sum()
    if ref_total <= 0:
        raise ValueError("reference frequencies are all zero")
    ref_freq = np.maximum(ref / ref_total, eps)
    obs_freq = np.maximum(obs / total, eps)
    return float(np.sum((obs_freq - ref_freq) * np.log(obs_freq / ref_freq)))


def quantile_profile(
    name: str,
    values: np.ndarray,
    bins: int = 10,
    *,
    tensor: str | None = None,
    flat_index: int | None = None,
    reduction: Literal["value", "mean"] = "value",
) -> FeatureProfile:
    """A profile with (at most) ``bins`` quantile bins; ties collapse bins rather than make empty ones."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError(f"feature {name!r}: no finite values to profile")
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        # A constant feature: one bin around the value, so a move either way shows up as drift.
        half_width = 0.5 * max(abs(low), 1.0)
        edges = [low - half_width, low + half_width]
    else:
        inner = np.quantile(flat, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        edges = [float(e) for e in np.unique(inner)]
    counts = bin_counts(flat, edges)
    reference = (counts / counts.sum()).tolist()
    return FeatureProfile(
        name=name,
        edges=edges,
        reference=_renormalise(reference),
        tensor=tensor,
        flat_index=flat_index,
        reduction=reduction,
    )


def class_profile(name: str, predicted: np.ndarray, num_classes: int) -> FeatureProfile:
    """Predicted-class frequencies with edges at k + 0.5 (classes 0..num_classes-1)."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    edges = [k + 0.5 for k in range(num_classes - 1)]
    counts = bin_counts(np.asarray(predicted), edges)
    if counts.sum() == 0:
        raise ValueError(f"feature {name!r}: no predictions to profile")
    return FeatureProfile(name=name, edges=edges, reference=_renormalise((counts / counts.sum()).tolist()))


def extract_feature(batch: np.ndarray, profile: FeatureProfile) -> np.ndarray:
    """Per-sample values of ``profile``'s feature from a batch of one input tensor (first axis = batch)."""
    array = np.asarray(batch)
    per_sample = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    if profile.reduction == "mean":
        return per_sample.astype(np.float64).mean(axis=1)
    index = profile.flat_index or 0
    if index >= per_sample.shape[1]:
        raise ValueError(
            f"feature {profile.name!r}: flat_index {index} outside a sample of {per_sample.shape[1]} elements"
        )
    return per_sample[:, index].astype(np.float64)


def _renormalise(freqs: list[float]) -> list[float]:
    total = sum(freqs)
    return [f / total for f in freqs]


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


class TensorSpec(BaseModel):
    """One model input or output: its name, dtype ("float32", "int64", ...) and shape (None = dynamic)."""

    name: str
    dtype: str
    shape: list[int | None]


class SliceResult(BaseModel):
    """One slice of the held-out data as the gate judged it: ``name`` is ``class=3`` or ``region=eu``;
    ``drop`` is in the slice budget's units (absolute, or relative to the source's metric), positive = worse."""

    name: str
    size: int
    source_metric: float
    variant_metric: float
    drop: float
    max_drop: float
    passed: bool


class GateVerdict(BaseModel):
    """The accuracy gate's decision; a variant that did not pass is never deployable. ``worst_slice``: the
    judged slice with the largest drop (None when no slice was judged, and in manifests written before
    slices were judged); a failed slice makes ``passed`` False with the reason naming it."""

    passed: bool
    reason: str
    deployable: bool
    worst_slice: SliceResult | None = None
    slices_judged: int = 0
    slices_too_small: int = 0

    @model_validator(mode="after")
    def _never_deploy_a_failure(self) -> GateVerdict:
        if self.deployable and not self.passed:
            raise ValueError("a variant that failed the gate cannot be deployable")
        return self


class DataRoles(BaseModel):
    """Which rows played which role in a run, and which role decided what (``decided_on``: e.g.
    ``{"fallback": "tuning", "auto_choice": "tuning", "gate_verdict": "held_out", "reported_metrics":
    "held_out"}``). ``calibration_source`` / ``training_source``: ``"calibration dataset"``, ``"training
    dataset"``, ``"evaluation split (calibrationFraction)"`` or ``"none"``; ``evaluation_used_for_training``
    is True only when the spec allowed it explicitly (``evaluation.split.calibrationFraction`` > 0)."""

    seed: int | None
    method: str
    held_out_uri: str
    tuning_uri: str
    held_out_rows: int
    tuning_rows: int
    calibration_rows: int
    calibration_source: str
    training_source: str
    evaluation_used_for_training: bool
    decided_on: dict[str, str] = Field(default_factory=dict)


class Lineage(BaseModel):
    """Where an artifact came from, enough to reproduce it."""

    source_sha256: str
    spec_hash: str
    parent_variant: str | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None


class ArtifactManifest(BaseModel):
    """A versioned description of one optimized model; ``sha256``/``size_bytes``/``blob`` are filled by
    :func:`write_artifact`."""

    schema_version: int = SCHEMA_VERSION
    name: str
    sha256: str = ""
    size_bytes: int = 0
    blob: str = ""
    format: Literal["onnx"] = "onnx"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: Literal["classification", "regression"]
    metrics: dict[str, Any] = Field(default_factory=dict)
    gate: GateVerdict
    lineage: Lineage
    execution_provider: str = "CPUExecutionProvider"
    drift_reference: DriftReference | None = None
    # None in manifests written before data roles were recorded.
    data_roles: DataRoles | None = None
    # Variant-specific facts (e.g. the nodes kept in float by the accuracy-aware fallback).
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError(f"variant name {value!r} must be 1-128 of [A-Za-z0-9._-], starting alnum")
        return value


# --------------------------------------------------------------------------------------------------
# Store I/O
# --------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a local file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _join(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative}"


def _atomic_put_bytes(fs: fsspec.AbstractFileSystem, data: bytes, final_path: str) -> None:
    parent = final_path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    temp = f"{parent}/.tmp-{uuid.uuid4().hex}-{final_path.rsplit('/', 1)[1]}"
    try:
        fs.pipe_file(temp, data)
        fs.mv(temp, final_path)
    finally:
        if fs.exists(temp):
            fs.rm(temp)


def _atomic_put_file(fs: fsspec.AbstractFileSystem, local: Path, final_path: str) -> None:
    parent = final_path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    temp = f"{parent}/.tmp-{uuid.uuid4().hex}-{final_path.rsplit('/', 1)[1]}"
    try:
        fs.put_file(str(local), temp)
        fs.mv(temp, final_path)
    finally:
        if fs.exists(temp):
            fs.rm(temp)


def put_bytes(store_uri: str, relative: str, payload: bytes) -> str:
    """Write ``payload`` at ``<store>/<relative>`` atomically (temporary name, then moved); return its URI."""
    if relative.startswith("/") or ".." in relative.split("/"):
        raise ValueError(f"{relative!r} must be a relative path inside the store")
    fs, root = fsspec.core.url_to_fs(store_uri)
    _atomic_put_bytes(fs, payload, f"{root.rstrip('/')}/{relative}")
    return _join(store_uri, relative)


def write_artifact(
    store_uri: str, model_path: Path, manifest: ArtifactManifest, manifest_name: str | None = None
) -> str:
    """Upload ``model_path`` content-addressed and its manifest; return the manifest's URI.

    ``sha256``, ``size_bytes`` and ``blob`` of ``manifest`` are filled in here. The manifest lands at
    ``manifests/<name>/<sha256 of its JSON>.json`` unless ``manifest_name`` (a file name, no slashes)
    is given, in which case it is ``manifests/<name>/<manifest_name>``.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist")
    digest, size = sha256_file(model_path)
    blob_rel = f"{BLOB_PREFIX}/{digest}.onnx"
    filled = manifest.model_copy(update={"sha256": digest, "size_bytes": size, "blob": blob_rel})
    # Round-trip through validation so that a manifest we write is always one we can read back.
    filled = ArtifactManifest.model_validate(filled.model_dump())

    fs, root = fsspec.core.url_to_fs(store_uri)
    root = root.rstrip("/")
    blob_path = f"{root}/{blob_rel}"
    # Content addressing makes a second upload of the same bytes pointless, unless what is there is damaged.
    if not (fs.exists(blob_path) and fs.size(blob_path) == size):
        _atomic_put_file(fs, model_path, blob_path)

    payload = filled.model_dump_json(indent=2).encode()
    if manifest_name is None:
        manifest_name = f"{hashlib.sha256(payload).hexdigest()}.json"
    elif "/" in manifest_name or manifest_name.startswith("."):
        raise ValueError(f"manifest_name {manifest_name!r} must be a plain file name")
    manifest_rel = f"{MANIFEST_PREFIX}/{filled.name}/{manifest_name}"
    _atomic_put_bytes(fs, payload, f"{root}/{manifest_rel}")
    return _join(store_uri, manifest_rel)


def read_manifest(manifest_uri: str) -> ArtifactManifest:
    """Read and validate a manifest; a content-addressed name (64 hex chars) is checked against its bytes."""
    try:
        with fsspec.open(manifest_uri, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as error:
        raise ArtifactIntegrityError("ManifestMissing", f"no manifest at {manifest_uri}") from error
    stem = manifest_uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
    if _HEX64.match(stem) and hashlib.sha256(payload).hexdigest() != stem:
        raise ArtifactIntegrityError(
            "ManifestHashMismatch", f"manifest {manifest_uri} does not hash to its name (altered or truncated)"
        )
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactIntegrityError("ManifestInvalid", f"manifest {manifest_uri} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ArtifactIntegrityError("ManifestInvalid", f"manifest {manifest_uri} is not a JSON object")
    version = raw.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ArtifactIntegrityError(
            "UnsupportedSchemaVersion",
            f"manifest {manifest_uri} has schema_version {version!r}; this reader knows 1..{SCHEMA_VERSION}",
        )
    try:
        return ArtifactManifest.model_validate(raw)
    except ValidationError as error:
        raise ArtifactIntegrityError("ManifestInvalid", f"manifest {manifest_uri}: {error}") from error


def store_root_of(manifest_uri: str) -> str:
    """The store a manifest URI belongs to: everything before its last ``/manifests/``."""
    index = manifest_uri.rfind(f"/{MANIFEST_PREFIX}/")
    if index < 0:
        raise ArtifactIntegrityError(
            "ManifestOutsideStore", f"{manifest_uri} is not under a '{MANIFEST_PREFIX}/' folder of a store"
        )
    return manifest_uri[:index] or "/"


def fetch_verified(
    manifest_uri: str, dest_dir: Path, store_uri: str | None = None
) -> tuple[ArtifactManifest, Path]:
    """Copy the manifest's blob into ``dest_dir`` and verify sha256 and size before returning it.

    The file appears under its final name (``<sha256>.onnx``) only after it verified; a mismatch or a
    missing blob raises :class:`ArtifactIntegrityError` and leaves nothing behind.
    """
    manifest = read_manifest(manifest_uri)
    root = store_uri if store_uri is not None else store_root_of(manifest_uri)
    final = fetch_blob_verified(root, manifest.blob, manifest.sha256, manifest.size_bytes, dest_dir, named_by=manifest_uri)
    return manifest, final


def fetch_blob_verified(
    store_uri: str, blob: str, sha256: str, size_bytes: int, dest_dir: Path, named_by: str = "a record"
) -> Path:
    """Copy ``<store>/<blob>`` into ``dest_dir`` as ``<sha256>.onnx``, verified (size, sha256) before it
    appears under that name; ``blob`` must be ``blobs/sha256/<sha256>.onnx``. Raises ArtifactIntegrityError."""
    match = _BLOB_PATH.match(blob)
    if match is None or match.group(1) != sha256:
        raise ArtifactIntegrityError(
            "BlobPathInvalid", f"blob path {blob!r} in {named_by} is not blobs/sha256/<its sha256>.onnx"
        )
    blob_uri = _join(store_uri, blob)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{sha256}.onnx"
    partial = dest_dir / f".{sha256}.{uuid.uuid4().hex}.partial"
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            with fsspec.open(blob_uri, "rb") as source, open(partial, "wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
        except FileNotFoundError as error:
            raise ArtifactIntegrityError("BlobMissing", f"blob {blob_uri} named by {named_by} is missing") from error
        if size != size_bytes:
            raise ArtifactIntegrityError("SizeMismatch", f"blob {blob_uri} has {size} bytes, {named_by} says {size_bytes}")
        if digest.hexdigest() != sha256:
            raise ArtifactIntegrityError(
                "HashMismatch", f"blob {blob_uri} hashes to {digest.hexdigest()}, {named_by} says {sha256}"
            )
        os.replace(partial, final)
    finally:
        if partial.exists():
            partial.unlink()
    return final


def put_blob(store_uri: str, model_path: Path) -> tuple[str, str, int]:
    """Upload a local file content-addressed; return (blob path relative to the store, sha256, size)."""
    digest, size = sha256_file(Path(model_path))
    blob_rel = f"{BLOB_PREFIX}/{digest}.onnx"
    fs, root = fsspec.core.url_to_fs(store_uri)
    blob_path = f"{root.rstrip('/')}/{blob_rel}"
    if not (fs.exists(blob_path) and fs.size(blob_path) == size):
        _atomic_put_file(fs, Path(model_path), blob_path)
    return blob_rel, digest, size
