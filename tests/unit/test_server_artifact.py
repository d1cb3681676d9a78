"""A corrupt, mismatched or undeployable artifact is never served: readiness stays false, the log says
why, and a metric counts it. A good artifact is served only after its sha256 was checked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from optimodel_contracts.artifacts import read_manifest, store_root_of

from _server_helpers import infer_body, make_client, sample_value, scrape
from optimodel_server.sample_artifact import write_sample_artifact


def _blob_path(manifest_uri: str) -> Path:
    manifest = read_manifest(manifest_uri)
    return Path(store_root_of(manifest_uri)) / manifest.blob


def _assert_refused(client, plane, registry, reason: str, metric: str) -> None:  # noqa: ANN001
    assert plane.state.value == "Refused"
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["state"] == "Refused"
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/models/mlp/ready").status_code == 503
    response = client.post("/v2/models/mlp/infer", json=infer_body())
    assert response.status_code == 503 and "not ready" in response.json()["error"]
    families = scrape(client)
    base = {"model": "mlp", "revision": "0", "pool": "default"}
    assert sample_value(families, metric, reason=reason, **base) == 1
    assert sample_value(families, "optimodel_model_ready", **base) == 0


def test_flipped_byte_in_the_blob_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    blob = _blob_path(uri)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="optimodel_server"):
        client, plane, registry = make_client(uri, tmp_path)
    try:
        _assert_refused(client, plane, registry, "HashMismatch", "optimodel_artifact_integrity_failures_total")
        assert any("MODEL REFUSED (HashMismatch)" in record.getMessage() for record in caplog.records)
        # Nothing unverified was left where the loader could pick it up.
        assert not list((tmp_path / "cache").glob("*.onnx"))
    finally:
        client.__exit__(None, None, None)


def test_truncated_blob_is_refused(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    blob = _blob_path(uri)
    blob.write_bytes(blob.read_bytes()[:-10])
    client, plane, registry = make_client(uri, tmp_path)
    try:
        _assert_refused(client, plane, registry, "SizeMismatch", "optimodel_artifact_integrity_failures_total")
    finally:
        client.__exit__(None, None, None)


def test_missing_blob_is_refused(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    _blob_path(uri).unlink()
    client, plane, registry = make_client(uri, tmp_path, model_name="mlp")
    try:
        _assert_refused(client, plane, registry, "BlobMissing", "optimodel_artifact_integrity_failures_total")
    finally:
        client.__exit__(None, None, None)


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    path = Path(uri)
    doc = json.loads(path.read_text())
    doc["sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    client, plane, registry = make_client(uri, tmp_path, model_name="mlp")
    try:
        _assert_refused(client, plane, registry, "ManifestHashMismatch", "optimodel_artifact_integrity_failures_total")
    finally:
        client.__exit__(None, None, None)


def test_artifact_that_failed_its_gate_is_not_served(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8, deployable=False)
    client, plane, registry = make_client(uri, tmp_path)
    try:
        _assert_refused(client, plane, registry, "NotDeployable", "optimodel_model_load_failures_total")
        assert "accuracy gate" in client.get("/v2/health/ready").json()["reason"]
    finally:
        client.__exit__(None, None, None)


def test_good_artifact_is_served_from_a_verified_copy(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    client, plane, _ = make_client(uri, tmp_path)
    try:
        assert plane.state.value == "Ready"
        assert plane.loaded.path.parent == tmp_path / "cache"
        assert plane.loaded.path.name == f"{plane.loaded.manifest.sha256}.onnx"
        assert client.post("/v2/models/mlp/infer", json=infer_body()).status_code == 200
    finally:
        client.__exit__(None, None, None)
