"""Reading what the optimization Jobs left in the artifact store: run records, then verified manifests.

The one place the operator touches the store. Manifests are content-addressed (their name is the
sha256 of their bytes, checked on read), so a manifest read once is cached for good; a run record is
cached once found (a Job writes it once, atomically, at the end).
"""

from __future__ import annotations

import threading
from typing import Any

from optimodel_contracts.artifacts import ArtifactIntegrityError, read_manifest
from optimodel_contracts.runrecord import RunRecordError, read_run_record
from optimodel_operator.planner.results import SOURCE, Measured, RunObservation, measured_from_error, measured_from_manifest
from optimodel_operator.planner.revision import JobPlan

_lock = threading.Lock()
_manifests: dict[str, dict[str, Any]] = {}
_records: dict[str, dict[str, Any]] = {}


def _read_record(uri: str) -> dict[str, Any] | None:
    """The run record at `uri` (validated by the contract's reader), or None when no run wrote it yet."""
    with _lock:
        if uri in _records:
            return _records[uri]
    try:
        record = read_run_record(uri).model_dump(mode="json")
    except RunRecordError as error:
        if error.reason == "RunRecordMissing":
            return None
        raise
    with _lock:
        _records[uri] = record
    return record


def _manifest(uri: str) -> dict[str, Any]:
    with _lock:
        if uri in _manifests:
            return _manifests[uri]
    manifest = read_manifest(uri).model_dump(mode="json")
    with _lock:
        _manifests[uri] = manifest
    return manifest


def _batch_size(plan: JobPlan) -> int:
    sizes = (plan.config.get("latency") or {}).get("batchSizes") or [1]
    return int(min(sizes))


def read_run(plan: JobPlan) -> RunObservation:
    """The plan's run record and the figures of each variant it lists, from their verified manifests."""
    try:
        record = _read_record(plan.run_record_uri)
    except Exception as error:  # noqa: BLE001 - any store fault (missing protocol, network, JSON) is "unreadable"
        return RunObservation(found=False, error=f"run record {plan.run_record_uri}: {error}")
    if record is None:
        return RunObservation(found=False)
    batch = _batch_size(plan)
    measured: dict[str, Measured] = {}
    entries = [*(record.get("variants") or [])]
    if isinstance(record.get("source"), dict) and record["source"].get("manifest_uri"):
        entries.append({**record["source"], "name": SOURCE})
    for entry in entries:
        name = str(entry.get("name"))
        uri = entry.get("manifest_uri")
        if entry.get("error"):
            measured[name] = measured_from_error(name, plan.provider, entry["error"])
            continue
        if not uri:
            measured[name] = measured_from_error(name, plan.provider, {"reason": "NoArtifact",
                                                                        "message": "the Job wrote no artifact for it"})
            continue
        try:
            manifest = _manifest(uri)
        except (ArtifactIntegrityError, Exception) as error:  # noqa: BLE001 - see above
            return RunObservation(found=True, error=f"manifest of {name} ({uri}): {error}")
        measured[name] = measured_from_manifest(name, plan.provider, uri, manifest, batch)
    return RunObservation(found=True, measured=measured)
