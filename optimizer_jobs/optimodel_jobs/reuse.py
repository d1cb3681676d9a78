"""Reuse of unchanged variants by content: the build key and the store's build records.

A variant's *build* (quantizing, converting, pruning, distilling, exporting) yields a model before the
provider-specific graph optimizations are baked in. Its bytes are determined by the build key's
material: the source's content (sha256) and its spec, the task and seed, the variant's own build spec
and those of its ``from`` chain, the content (sha256) of every dataset the chain trains, calibrates or
exports on, the static-int8 fallback's judge (tuning data, gate, metric), the CPU's VNNI flag for
int8 ``auto`` settings, the library versions, and the optimizer's own code. ``<store>/builds/<key>.json``
(:class:`optimodel_contracts.runrecord.BuildRecord`) points at that model's blob; a later run with the
same key (the next execution provider's Job, or an unchanged variant of an edited spec) fetches it,
verified, instead of building, then bakes, evaluates and measures it as usual.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fsspec

from optimodel_contracts.artifacts import (
    BLOB_PREFIX,
    ArtifactIntegrityError,
    ArtifactManifest,
    put_bytes,
    read_manifest,
    sha256_file,
    write_artifact,
)
from optimodel_contracts.jobconfig import CalibrationSpec, DatasetSpec, OptimizeConfig, VariantSpec

KEY_VERSION = 1


@cache
def code_digest() -> str:
    """sha256 over the optimizer's own source files: a change in how variants are built is a new key."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class ContentDigests:
    """sha256 of files by URI, computed once per run."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, uri: str) -> str:
        if uri not in self._known:
            digest = hashlib.sha256()
            with fsspec.open(uri, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            self._known[uri] = digest.hexdigest()
        return self._known[uri]


def chain_of(config: OptimizeConfig, variant: VariantSpec) -> list[VariantSpec]:
    """The variant and its ``from`` ancestors, root first (the config's references are already checked)."""
    by_name = {v.name: v for v in config.variants}
    chain = [variant]
    while chain[0].from_ is not None:
        chain.insert(0, by_name[chain[0].from_])
    return chain


def build_material(
    config: OptimizeConfig, variant: VariantSpec, *, source_sha256: str, has_vnni: bool,
    versions: dict[str, str], digest: Callable[[str], str],
) -> dict[str, Any]:
    """Everything that determines the bytes of ``variant``'s build (see the module's docstring)."""

    def data(spec: DatasetSpec | None) -> dict[str, Any] | None:
        if spec is None:
            return None
        return {**spec.model_dump(mode="json", exclude={"uri"}), "sha256": digest(spec.uri)}

    calibration = config.calibration or CalibrationSpec()
    evaluation = data(config.evaluation.dataset)
    split = config.evaluation.split.model_dump(mode="json")
    # The pipeline's fall-backs (Pipeline._secondary / _training): calibration <- training <- the evaluation
    # rows of calibrationFraction (only when the spec allows it), and training <- calibration <- those rows.
    allowed = {"evaluation": evaluation, "split": split} if config.evaluation.split.calibration_fraction > 0 else None
    calibration_default = data(calibration.dataset or config.training) or allowed
    training_default = data(config.training or calibration.dataset) or allowed
    steps = []
    for step in chain_of(config, variant):
        entry: dict[str, Any] = {"spec": step.model_dump(mode="json", exclude={"name", "pool", "gate", "from_"})}
        if step.quantize is not None:
            entry["vnni"] = has_vnni
            if step.quantize.mode == "static":
                own = step.quantize.calibration.dataset if step.quantize.calibration else None
                entry["calibration"] = (step.quantize.calibration or calibration).model_dump(mode="json", exclude={"dataset"})
                entry["data"] = data(own) or calibration_default
                # The accuracy-aware fallback judges candidates on the tuning rows with the variant's gate: the
                # tuning dataset, or the evaluation rows the split gives to tuning (its settings are in "settings").
                gate = step.gate.model_dump(mode="json") if step.gate else None
                entry["judge"] = {"evaluation": evaluation, "tuning": data(config.evaluation.tuning_dataset), "gate": gate,
                                  "settings": config.evaluation.model_dump(mode="json", exclude={"dataset"}),
                                  "task": config.task}
        elif step.prune is not None or step.distill is not None:
            own = step.prune.dataset if step.prune is not None else step.distill.dataset  # type: ignore[union-attr]
            entry["data"] = data(own) or training_default
            entry["export_examples"] = evaluation
            teacher = step.distill.teacher if step.distill is not None else None
            if teacher is not None:
                entry["teacher_sha256"] = digest(teacher.uri)
        steps.append(entry)
    source: dict[str, Any] = {**config.source.model_dump(mode="json", exclude={"uri", "sha256"}), "sha256": source_sha256}
    if config.source.format != "onnx":
        source["export_examples"] = evaluation  # a torch source is exported with evaluation samples
    return {
        "key_version": KEY_VERSION,
        "source": source,
        "task": config.task,
        "seed": config.seed,
        "chain": steps,
        "libraries": {k: v for k, v in versions.items() if k != "python"},
        "code": code_digest(),
    }


def build_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Manifests of unchanged variants

MANIFEST_INDEX_PREFIX = "manifest-index"
# What changes from one run of the same variant to the next without the variant changing: when the manifest
# was written, the latency and memory measured this time, and how the model was come by (built or reused).
_VOLATILE_METRICS = ("latency", "source_latency", "peak_memory_mb")
_VOLATILE_DETAILS = ("build", "latency_threads", "latency_source")


def manifest_identity(manifest: ArtifactManifest) -> str:
    """sha256 of what makes a manifest the same artifact: the model's bytes (its sha256), tensors, gate,
    lineage, drift reference, accuracy figures and details, without the measurements of one run."""
    raw = manifest.model_dump(mode="json", exclude={"created_at"})
    raw["metrics"] = {k: v for k, v in raw["metrics"].items() if k not in _VOLATILE_METRICS}
    raw["details"] = {k: v for k, v in raw["details"].items() if k not in _VOLATILE_DETAILS}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def write_artifact_once(store_uri: str, model_path: Path, manifest: ArtifactManifest) -> str:
    """:func:`optimodel_contracts.artifacts.write_artifact`, except that a variant whose manifest identity
    the store already holds (``manifest-index/<name>/<identity>``, naming the manifest) gets that manifest's
    URI back and nothing new is written. The manifest found is read and verified (its name is the sha256 of
    its bytes, its blob is there); a damaged one is written afresh."""
    digest, size = sha256_file(Path(model_path))
    filled = manifest.model_copy(update={"sha256": digest, "size_bytes": size, "blob": f"{BLOB_PREFIX}/{digest}.onnx"})
    identity = manifest_identity(filled)
    index = f"{MANIFEST_INDEX_PREFIX}/{manifest.name}/{identity}"
    base = store_uri.rstrip("/")
    try:
        with fsspec.open(f"{base}/{index}", "rb") as handle:
            known = f"{base}/{handle.read().decode().strip()}"
        previous = read_manifest(known)
        fs, root = fsspec.core.url_to_fs(store_uri)
        if previous.sha256 == digest and fs.size(f"{root.rstrip('/')}/{previous.blob}") == size:
            return known
    except (FileNotFoundError, ArtifactIntegrityError, UnicodeDecodeError):
        pass  # none yet, or one that cannot be trusted: write it (below) and point the index at the new one
    uri = write_artifact(store_uri, model_path, manifest)
    put_bytes(store_uri, index, uri.removeprefix(f"{base}/").encode())
    return uri
