"""Pod volumes as local folders.

`volume_paths` (pure) says which host folder stands for each volume; `volume_files` (pure) says which
files a ConfigMap / Secret / downward-API / projected volume holds; `materialize_volumes` writes them.
Containers see the folders at their `mountPath` through bind mounts made by the shim in a private mount
namespace (see shim.py), so nothing is mounted on the host itself.

| volume                 | host folder                                             |
|------------------------|---------------------------------------------------------|
| emptyDir (any medium)  | <pod dir>/volumes/<name>                                 |
| hostPath               | the path itself (created for DirectoryOrCreate/FileOrCreate) |
| configMap / secret / downwardAPI / projected | <pod dir>/volumes/<name>, files written at start |
| persistentVolumeClaim  | <state dir>/pvc/<namespace>_<claim> (kept across pods)   |
| anything else          | not mapped: a container mounting it waits with CreateContainerConfigError |
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .plan import Json, ObjectSource, PlanError, field_value, resource_value

# (audience, expiration seconds) -> token, or None when the API server would not issue one.
TokenRequester = Callable[[str | None, int], str | None]

_MAPPED_KINDS = ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected", "persistentVolumeClaim")


def volume_kind(volume: Json) -> str | None:
    for kind in _MAPPED_KINDS:
        if kind in volume:
            return kind
    return None


def volume_paths(pod: Json, pod_dir: Path, state_dir: Path) -> dict[str, str]:
    """Volume name -> host path, for every volume the agent can map."""
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, str] = {}
    for volume in pod.get("spec", {}).get("volumes") or []:
        kind = volume_kind(volume)
        name = volume["name"]
        if kind == "hostPath":
            paths[name] = volume["hostPath"]["path"]
        elif kind == "persistentVolumeClaim":
            paths[name] = str(state_dir / "pvc" / f"{namespace}_{volume['persistentVolumeClaim']['claimName']}")
        elif kind is not None:
            paths[name] = str(pod_dir / "volumes" / name)
    return paths


def _items(data: dict[str, bytes], items: list[Json] | None, default_mode: int) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    return {item["path"]: (data[item["key"]], item.get("mode", default_mode)) for item in items if item["key"] in data}


def _keyed_files(
    kind: str, ref: Json, namespace: str, source: ObjectSource, default_mode: int
) -> dict[str, tuple[bytes, int]]:
    name = ref.get("name") or ref.get("secretName") or ""
    data = source.config_map(namespace, name) if kind == "configMap" else source.secret(namespace, name)
    optional = bool(ref.get("optional", False))
    if data is None:
        if optional:
            return {}
        label = "configmap" if kind == "configMap" else "secret"
        raise PlanError("ContainerCreating", f'MountVolume.SetUp failed: {label} "{name}" not found')
    for item in ref.get("items") or []:
        if item["key"] not in data and not optional:
            raise PlanError("ContainerCreating", f"MountVolume.SetUp failed: key {item['key']!r} not in {kind} {name!r}")
    return _items(data, ref.get("items"), default_mode)


def _downward_files(pod: Json, items: list[Json], default_mode: int, allocatable: dict[str, str]) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            value = resource_value(pod, ref.get("containerName", ""), ref["resource"], ref.get("divisor"), allocatable)
        else:
            continue
        files[item["path"]] = (value.encode(), item.get("mode", default_mode))
    return files


def volume_files(
    pod: Json,
    volume: Json,
    source: ObjectSource,
    request_token: TokenRequester,
    allocatable: dict[str, str],
) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, mode) of a ConfigMap/Secret/downwardAPI/projected volume; {} for others."""
    namespace = pod["metadata"]["namespace"]
    if "configMap" in volume:
        spec = volume["configMap"]
        return _keyed_files("configMap", spec, namespace, source, spec.get("defaultMode", 0o644))
    if "secret" in volume:
        spec = volume["secret"]
        return _keyed_files("secret", spec, namespace, source, spec.get("defaultMode", 0o644))
    if "downwardAPI" in volume:
        spec = volume["downwardAPI"]
        return _downward_files(pod, spec.get("items") or [], spec.get("defaultMode", 0o644), allocatable)
    if "projected" in volume:
        spec = volume["projected"]
        mode = spec.get("defaultMode", 0o644)
        files: dict[str, tuple[bytes, int]] = {}
        for part in spec.get("sources") or []:
            if "configMap" in part:
                files.update(_keyed_files("configMap", part["configMap"], namespace, source, mode))
            elif "secret" in part:
                files.update(_keyed_files("secret", part["secret"], namespace, source, mode))
            elif "downwardAPI" in part:
                files.update(_downward_files(pod, part["downwardAPI"].get("items") or [], mode, allocatable))
            elif "serviceAccountToken" in part:
                token_spec = part["serviceAccountToken"]
                # A token the API server refuses is left out: the pod still starts (clients without one fail later).
                token = request_token(token_spec.get("audience"), int(token_spec.get("expirationSeconds", 3600)))
                if token is not None:
                    files[token_spec["path"]] = (token.encode(), mode)
        return files
    return {}


def has_service_account_token(volume: Json) -> bool:
    return any("serviceAccountToken" in part for part in (volume.get("projected") or {}).get("sources") or [])


def token_refresh_delay(requested_seconds: int, valid_seconds: float) -> float:
    """Seconds until a token is rewritten: at 80% of its lifetime (the requested one, or what the API server
    granted if shorter), and at least daily, as the kubelet's token manager does."""
    return min(0.8 * min(float(requested_seconds), valid_seconds), 24 * 3600.0)


def decode_secret_data(secret: Json) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


def decode_config_map_data(config_map: Json) -> dict[str, bytes]:
    data = {key: value.encode() for key, value in (config_map.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (config_map.get("binaryData") or {}).items()})
    return data


def _write_files(folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
    # Rewrite the folder whole so keys removed from the source disappear too.
    staging = folder.with_name(folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for relative, (content, mode) in files.items():
        target = staging / relative
        if not target.resolve().is_relative_to(staging.resolve()):
            raise PlanError("ContainerCreating", f"volume item path {relative!r} leaves the volume")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode & 0o777)
    if folder.exists():
        # Replace contents in place: a running container's bind mount points at this very inode. Files are
        # swapped in with rename, so a reader (a client re-reading its token) never finds one missing.
        fresh = {child.name for child in staging.iterdir()}
        for child in folder.iterdir():
            if child.name not in fresh or (child.is_dir() and not child.is_symlink()):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in staging.iterdir():
            os.replace(child, folder / child.name)
        staging.rmdir()
    else:
        staging.rename(folder)


def materialize_volumes(
    pod: Json,
    pod_dir: Path,
    state_dir: Path,
    source: ObjectSource,
    request_token: TokenRequester,
    allocatable: dict[str, str],
    only_tokens: bool = False,
) -> dict[str, str]:
    """Create every mapped volume's folder (and file content); returns volume name -> host path.

    `only_tokens`: rewrite just the projected volumes that hold a service-account token (the refresh
    of a running pod's tokens, as the kubelet does before they expire)."""
    paths = volume_paths(pod, pod_dir, state_dir)
    for volume in pod.get("spec", {}).get("volumes") or []:
        name = volume["name"]
        kind = volume_kind(volume)
        if kind is None or (only_tokens and not has_service_account_token(volume)):
            continue
        path = Path(paths[name])
        if kind == "hostPath":
            _prepare_host_path(path, volume["hostPath"].get("type") or "")
        elif kind in ("emptyDir", "persistentVolumeClaim"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            _write_files(path, volume_files(pod, volume, source, request_token, allocatable))
    return paths


def _prepare_host_path(path: Path, host_path_type: str) -> None:
    checks: dict[str, Any] = {
        "Directory": path.is_dir,
        "File": path.is_file,
        "Socket": path.is_socket,
        "CharDevice": path.is_char_device,
        "BlockDevice": path.is_block_device,
    }
    if host_path_type == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif host_path_type == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif host_path_type in checks and not checks[host_path_type]():
        raise PlanError("ContainerCreating", f"MountVolume.SetUp failed: hostPath type check failed: {path} is not a {host_path_type}")
