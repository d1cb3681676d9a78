"""The artifact store: content addressing, atomic writes, verified reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import pytest

from optimodel_contracts.artifacts import (
    ArtifactIntegrityError,
    ArtifactManifest,
    GateVerdict,
    Lineage,
    TensorSpec,
    fetch_verified,
    read_manifest,
    write_artifact,
)


def _manifest(name: str = "int8") -> ArtifactManifest:
    return ArtifactManifest(
        name=name,
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 64])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[None, 10])],
        task="classification",
        metrics={"accuracy": 0.97, "source_accuracy": 0.975},
        gate=GateVerdict(passed=True, reason="drop 0.5% <= 1%", deployable=True),
        lineage=Lineage(source_sha256="a" * 64, spec_hash="b" * 64, seed=0),
    )


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"pretend-onnx-bytes" * 1000)
    return path


def test_blob_is_content_addressed_and_manifest_filled(tmp_path: Path, model_file: Path) -> None:
    store = tmp_path / "store"
    uri = write_artifact(str(store), model_file, _manifest())
    expected = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert (store / "blobs" / "sha256" / f"{expected}.onnx").read_bytes() == model_file.read_bytes()
    manifest = read_manifest(uri)
    assert manifest.sha256 == expected
    assert manifest.size_bytes == model_file.stat().st_size
    assert manifest.blob == f"blobs/sha256/{expected}.onnx"
    # The manifest is named by the hash of its own bytes.
    assert Path(uri).stem == hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    # No temporary files are left next to the final ones.
    assert not [p for p in store.rglob("*") if p.name.startswith(".tmp-")]


def test_round_trip_through_fetch_verified(tmp_path: Path, model_file: Path) -> None:
    uri = write_artifact(f"file://{tmp_path}/store", model_file, _manifest())
    assert uri.startswith("file://")
    manifest, local = fetch_verified(uri, tmp_path / "dest")
    assert local.read_bytes() == model_file.read_bytes()
    assert local.name == f"{manifest.sha256}.onnx"
    assert manifest.gate.deployable


def test_memory_protocol_works(model_file: Path, tmp_path: Path) -> None:
    uri = write_artifact("memory://artifact-test-store", model_file, _manifest("fp16"))
    manifest, local = fetch_verified(uri, tmp_path / "dest")
    assert manifest.name == "fp16"
    assert local.stat().st_size == model_file.stat().st_size


def test_corrupt_blob_is_refused_and_nothing_is_left(tmp_path: Path, model_file: Path) -> None:
    store = tmp_path / "store"
    uri = write_artifact(str(store), model_file, _manifest())
    blob = next((store / "blobs" / "sha256").glob("*.onnx"))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, one flipped byte
    blob.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactIntegrityError) as caught:
        fetch_verified(uri, dest)
    assert caught.value.reason == "HashMismatch"
    assert list(dest.iterdir()) == []


def test_truncated_blob_is_refused(tmp_path: Path, model_file: Path) -> None:
    store = tmp_path / "store"
    uri = write_artifact(str(store), model_file, _manifest())
    blob = next((store / "blobs" / "sha256").glob("*.onnx"))
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(ArtifactIntegrityError) as caught:
        fetch_verified(uri, tmp_path / "dest")
    assert caught.value.reason == "SizeMismatch"


def test_missing_blob_is_refused(tmp_path: Path, model_file: Path) -> None:
    store = tmp_path / "store"
    uri = write_artifact(str(store), model_file, _manifest())
    next((store / "blobs" / "sha256").glob("*.onnx")).unlink()
    with pytest.raises(ArtifactIntegrityError) as caught:
        fetch_verified(uri, tmp_path / "dest")
    assert caught.value.reason == "BlobMissing"


def test_damaged_blob_is_replaced_on_rewrite(tmp_path: Path, model_file: Path) -> None:
    store = tmp_path / "store"
    write_artifact(str(store), model_file, _manifest())
    blob = next((store / "blobs" / "sha256").glob("*.onnx"))
    blob.write_bytes(b"short")
    uri = write_artifact(str(store), model_file, _manifest())
    _, local = fetch_verified(uri, tmp_path / "dest")
    assert local.read_bytes() == model_file.read_bytes()


def test_tampered_manifest_is_refused(tmp_path: Path, model_file: Path) -> None:
    uri = write_artifact(str(tmp_path / "store"), model_file, _manifest())
    raw = json.loads(Path(uri).read_text())
    raw["gate"]["passed"] = True
    raw["metrics"]["accuracy"] = 0.99
    Path(uri).write_text(json.dumps(raw))
    with pytest.raises(ArtifactIntegrityError) as caught:
        read_manifest(uri)
    assert caught.value.reason == "ManifestHashMismatch"


def test_truncated_manifest_with_chosen_name_is_refused(tmp_path: Path, model_file: Path) -> None:
    uri = write_artifact(str(tmp_path / "store"), model_file, _manifest(), manifest_name="latest.json")
    assert uri.endswith("manifests/int8/latest.json")
    Path(uri).write_bytes(Path(uri).read_bytes()[:50])
    with pytest.raises(ArtifactIntegrityError) as caught:
        read_manifest(uri)
    assert caught.value.reason == "ManifestInvalid"


def test_manifest_pointing_outside_blobs_is_refused(tmp_path: Path, model_file: Path) -> None:
    uri = write_artifact(str(tmp_path / "store"), model_file, _manifest(), manifest_name="m.json")
    raw = json.loads(Path(uri).read_text())
    raw["blob"] = "../../etc/passwd"
    Path(uri).write_text(json.dumps(raw))
    with pytest.raises(ArtifactIntegrityError) as caught:
        fetch_verified(uri, tmp_path / "dest")
    assert caught.value.reason == "BlobPathInvalid"


def test_missing_manifest_and_future_schema(tmp_path: Path, model_file: Path) -> None:
    with pytest.raises(ArtifactIntegrityError) as caught:
        read_manifest(str(tmp_path / "store" / "manifests" / "x" / "nope.json"))
    assert caught.value.reason == "ManifestMissing"
    uri = write_artifact(str(tmp_path / "store"), model_file, _manifest(), manifest_name="m.json")
    raw = json.loads(Path(uri).read_text())
    raw["schema_version"] = 99
    Path(uri).write_text(json.dumps(raw))
    with pytest.raises(ArtifactIntegrityError) as caught:
        read_manifest(uri)
    assert caught.value.reason == "UnsupportedSchemaVersion"


def test_partial_upload_is_never_visible(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload that dies mid-way leaves no file under the final blob name."""
    store = tmp_path / "store"
    fs = fsspec.filesystem("file")
    real_mv = type(fs).mv

    def failing_mv(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - fsspec's own signature
        raise OSError("connection reset during upload")

    monkeypatch.setattr(type(fs), "mv", failing_mv)
    with pytest.raises(OSError, match="connection reset"):
        write_artifact(str(store), model_file, _manifest())
    monkeypatch.setattr(type(fs), "mv", real_mv)
    assert not list((store / "blobs" / "sha256").glob("*.onnx"))
    assert not [p for p in store.rglob("*") if p.is_file()]


def test_failed_gate_cannot_be_deployable() -> None:
    with pytest.raises(ValueError, match="cannot be deployable"):
        GateVerdict(passed=False, reason="drop 5% > 1%", deployable=True)


def test_bad_variant_name_refused() -> None:
    with pytest.raises(ValueError, match="variant name"):
        _manifest("../escape")
