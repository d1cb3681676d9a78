"""Volumes as local folders: where each kind lives and what files ConfigMap/Secret/projected volumes hold."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from optimodel_localcluster.node_agent.plan import PlanError
from optimodel_localcluster.node_agent.volumes import (
    decode_config_map_data,
    decode_secret_data,
    materialize_volumes,
    volume_files,
    volume_paths,
)


class Source:
    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return {"app.conf": b"mode=fast", "other": b"x"} if name == "cfg" else None

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return {"token": b"t0k"} if name == "sec" else None


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
    "spec": {
        "containers": [{"name": "main", "resources": {"limits": {"cpu": "2"}}}],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": "/tmp/somewhere"}},
            {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "conf/app.conf"}]}},
            {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu"}}]}},
            {"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "nfs", "nfs": {"server": "x", "path": "/"}},
        ],
    },
}


def volume(name: str) -> dict:
    return next(v for v in POD["spec"]["volumes"] if v["name"] == name)


def test_volume_paths(tmp_path: Path) -> None:
    paths = volume_paths(POD, tmp_path / "pod", tmp_path / "state")
    assert paths["scratch"] == str(tmp_path / "pod" / "volumes" / "scratch")
    assert paths["host"] == "/tmp/somewhere"
    assert paths["claim"] == str(tmp_path / "state" / "pvc" / "ns_models")
    assert "nfs" not in paths  # not mappable: a container mounting it waits with a config error


def test_files_of_each_kind() -> None:
    tokens: list[tuple[str | None, int]] = []

    def token(audience: str | None, seconds: int) -> str | None:
        tokens.append((audience, seconds))
        return "jwt"

    assert volume_files(POD, volume("cfg"), Source(), token, {}) == {"conf/app.conf": (b"mode=fast", 0o644)}
    assert volume_files(POD, volume("sec"), Source(), token, {}) == {"token": (b"t0k", 0o400)}
    assert volume_files(POD, volume("info"), Source(), token, {}) == {
        "labels": (b'app="a"', 0o644), "cpu": (b"2", 0o644)}
    assert volume_files(POD, volume("kube-api-access"), Source(), token, {}) == {
        "token": (b"jwt", 0o644), "ca.crt": (b"x", 0o644), "namespace": (b"ns", 0o644)}
    assert tokens == [(None, 3607)]


def test_refused_token_leaves_the_file_out_but_keeps_the_volume() -> None:
    files = volume_files(POD, volume("kube-api-access"), Source(), lambda *_: None, {})
    assert sorted(files) == ["ca.crt", "namespace"]


def test_missing_config_map_holds_the_container_unless_optional() -> None:
    missing = {"name": "v", "configMap": {"name": "absent"}}
    with pytest.raises(PlanError, match='configmap "absent" not found') as error:
        volume_files(POD, missing, Source(), lambda *_: None, {})
    assert error.value.reason == "ContainerCreating"
    missing["configMap"]["optional"] = True
    assert volume_files(POD, missing, Source(), lambda *_: None, {}) == {}


def test_materialize_writes_files_and_replaces_removed_keys(tmp_path: Path) -> None:
    pod = {"metadata": POD["metadata"], "spec": {"volumes": [volume("scratch"), volume("sec"), volume("claim")]}}
    paths = materialize_volumes(pod, tmp_path / "pod", tmp_path / "state", Source(), lambda *_: None, {})
    secret_dir = Path(paths["sec"])
    assert (secret_dir / "token").read_bytes() == b"t0k"
    assert (secret_dir / "token").stat().st_mode & 0o777 == 0o400
    assert Path(paths["scratch"]).is_dir() and Path(paths["claim"]).is_dir()
    (secret_dir / "stale").write_text("old")
    materialize_volumes(pod, tmp_path / "pod", tmp_path / "state", Source(), lambda *_: None, {})
    assert sorted(p.name for p in secret_dir.iterdir()) == ["token"]


def test_host_path_types(tmp_path: Path) -> None:
    target = tmp_path / "made" / "here"
    pod = {"metadata": POD["metadata"], "spec": {"volumes": [
        {"name": "d", "hostPath": {"path": str(target), "type": "DirectoryOrCreate"}}]}}
    materialize_volumes(pod, tmp_path / "pod", tmp_path, Source(), lambda *_: None, {})
    assert target.is_dir()
    pod["spec"]["volumes"] = [{"name": "f", "hostPath": {"path": str(tmp_path / "nope"), "type": "File"}}]
    with pytest.raises(PlanError, match="is not a File"):
        materialize_volumes(pod, tmp_path / "pod", tmp_path, Source(), lambda *_: None, {})


def test_decoding_api_objects() -> None:
    assert decode_secret_data({"data": {"k": base64.b64encode(b"v").decode()}}) == {"k": b"v"}
    assert decode_config_map_data({"data": {"a": "1"}, "binaryData": {"b": base64.b64encode(b"\x00").decode()}}) == {
        "a": b"1", "b": b"\x00"}
