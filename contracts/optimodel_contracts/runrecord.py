"""What an optimization Job run leaves in the store, for the operator (and people) to read back.

``<store>/runs/<name>/<spec_hash[:16]>.json`` (:func:`run_record_uri`) holds a :class:`RunRecord`: per
variant its kind, gate verdict, error, manifest URI and whether it was built or reused, plus the variant
chosen per pool; the source's entry carries the manifest URI of the source model's own artifact. The
figures a rollout needs (metrics, latency, size) are in each variant's manifest
(:func:`optimodel_contracts.artifacts.read_manifest`); the record repeats them for the report.

``<store>/builds/<build-key>.json`` holds a :class:`BuildRecord`: a variant's model as built (before the
provider-specific graph optimizations are baked in), keyed by everything that determines its bytes, so a
later run (another execution provider's Job, or an unchanged variant of a changed spec) reuses it.

A record is read leniently (unknown fields ignored) so an older operator reads a newer Job's record;
``schema_version`` is raised only for changes an old reader must not misread.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimodel_contracts.artifacts import DataRoles, GateVerdict
from optimodel_contracts.errors import ReasonedError
from optimodel_contracts.jobconfig import OptimizeConfig

RUN_SCHEMA_VERSION = 1
BUILD_SCHEMA_VERSION = 1
RUNS_PREFIX = "runs"
BUILDS_PREFIX = "builds"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RunRecordError(ReasonedError):
    """A run or build record that cannot be used. Reasons: ``RunRecordMissing``, ``RunRecordInvalid``,
    ``UnsupportedSchemaVersion``."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RecordedError(_Record):
    """A refusal of one variant: a reason from :mod:`optimodel_contracts.errors` and a sentence."""

    reason: str
    message: str


class BuildInfo(_Record):
    """How a variant's model came to be in this run: built now, or reused from ``<store>/builds/<key>.json``."""

    key: str
    reused: bool = False
    record_uri: str | None = None
    # The seconds the original build took (when reused: the build that was saved, not this run).
    build_seconds: float | None = None


class VariantRecord(_Record):
    """One variant (or the source) as this run saw it."""

    name: str
    kind: str
    start_from: str | None = Field(default=None, alias="from")
    pool: str | None = None
    provider_requested: str | None = None
    provider_used: str | None = None
    provider_fallback: str | None = None
    metric: float | None = None
    drop: float | None = None
    agreement: float | None = None
    gate: GateVerdict | None = None
    latency: dict[str, dict[str, Any]] = Field(default_factory=dict)
    size_bytes: int | None = None
    parameters: int | None = None
    peak_memory_mb: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    error: RecordedError | None = None
    manifest_uri: str | None = None
    # Seconds this run spent on the variant (build or reuse, and its evaluation).
    build_seconds: float = 0.0
    build: BuildInfo | None = None

    @property
    def reused(self) -> bool:
        return self.build is not None and self.build.reused


class RunRecord(_Record):
    """One Job run of one config (``spec_hash``): the source, every variant, the choice per pool."""

    schema_version: int = RUN_SCHEMA_VERSION
    name: str
    spec_hash: str
    metric: str
    # The source model as this Job measured it; ``source.manifest_uri`` is its own artifact (variant name
    # ``source``, gate passed and deployable), served by pools with ``variant: source`` or as ``auto``'s fallback.
    source: VariantRecord
    variants: list[VariantRecord]
    chosen: dict[str, str | None]
    # Per pool, why it serves what ``chosen`` says (auto's speed-ups and intervals); absent in older records.
    choice_reasons: dict[str, str] = Field(default_factory=dict)
    result_uri: str | None = None
    report: str | None = None
    # Which rows played which role and which role decided what (issue 13); absent in older records.
    data_roles: DataRoles | None = None

    def variant(self, name: str) -> VariantRecord:
        for record in self.variants:
            if record.name == name:
                return record
        raise KeyError(f"run {self.name}/{self.spec_hash[:16]} has no variant {name!r}")

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, by_alias=True).encode()


class BuildRecord(_Record):
    """A variant's model as built (before baking), content-addressed in the store's blobs."""

    schema_version: int = BUILD_SCHEMA_VERSION
    key: str
    variant: str
    kind: str
    blob: str  # blobs/sha256/<hex>.onnx, relative to the store
    sha256: str
    size_bytes: int
    details: dict[str, Any] = Field(default_factory=dict)
    build_seconds: float = 0.0
    # What the key was computed from (for people; the key is its sha256).
    material: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def run_record_uri(store: str, config: OptimizeConfig) -> str:
    """Where a run of ``config`` writes its record: ``<store>/runs/<name>/<spec_hash[:16]>.json``."""
    return f"{store.rstrip('/')}/{RUNS_PREFIX}/{config.name}/{config.spec_hash()[:16]}.json"


def build_record_uri(store: str, key: str) -> str:
    """``<store>/builds/<key>.json``; ``key`` is a 64-hex build key."""
    if not _HEX64.match(key):
        raise ValueError(f"build key {key!r} is not 64 hex characters")
    return f"{store.rstrip('/')}/{BUILDS_PREFIX}/{key}.json"


def _read_json(uri: str) -> dict[str, Any]:
    try:
        with fsspec.open(uri, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as error:
        raise RunRecordError("RunRecordMissing", f"no record at {uri}") from error
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunRecordError("RunRecordInvalid", f"record {uri} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise RunRecordError("RunRecordInvalid", f"record {uri} is not a JSON object")
    return raw


def _check_version(uri: str, raw: dict[str, Any], newest: int) -> None:
    version = raw.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= newest:
        raise RunRecordError(
            "UnsupportedSchemaVersion", f"record {uri} has schema_version {version!r}; this reader knows 1..{newest}"
        )


def read_run_record(uri: str) -> RunRecord:
    """Read and validate a run record; raises :class:`RunRecordError` (``RunRecordMissing`` when absent)."""
    raw = _read_json(uri)
    _check_version(uri, raw, RUN_SCHEMA_VERSION)
    try:
        return RunRecord.model_validate(raw)
    except ValidationError as error:
        raise RunRecordError("RunRecordInvalid", f"run record {uri}: {error}") from error


def find_run_record(store: str, config: OptimizeConfig) -> RunRecord | None:
    """The record of a previous run of exactly this config, or None when it was never run (or never finished)."""
    try:
        return read_run_record(run_record_uri(store, config))
    except RunRecordError as error:
        if error.reason == "RunRecordMissing":
            return None
        raise


def read_build_record(uri: str) -> BuildRecord:
    raw = _read_json(uri)
    _check_version(uri, raw, BUILD_SCHEMA_VERSION)
    try:
        return BuildRecord.model_validate(raw)
    except ValidationError as error:
        raise RunRecordError("RunRecordInvalid", f"build record {uri}: {error}") from error
