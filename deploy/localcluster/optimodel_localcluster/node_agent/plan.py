"""Pod spec -> what to run for one container: argv, environment, working dir, mounts (pure).

Follows the kubelet's rules: envFrom first, then env in order, each value `$(VAR)`-expanded against the
variables defined before it (`$$` escapes); command/args expanded against the final environment. A
missing ConfigMap/Secret/key that is not optional is a `PlanError` the pod worker reports as
`CreateContainerConfigError` and retries, as the kubelet does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from kubernetes.utils import parse_quantity

Json = dict[str, Any]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class PlanError(Exception):
    """The container cannot be started yet; `reason` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ObjectSource(Protocol):
    """ConfigMaps and Secrets of the pod's namespace, as key -> bytes (None when the object is absent)."""

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    working_dir: str | None
    mounts: list[Mount] = field(default_factory=list)


# --- $(VAR) expansion -------------------------------------------------------------------------


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` is a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(variables[name] if name in variables else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


# --- downward API -------------------------------------------------------------------------------


def field_value(pod: Json, path: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath` for `pod`."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    match = _FIELD_KEY.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name", ""),
        "metadata.namespace": lambda: meta.get("namespace", ""),
        "metadata.uid": lambda: meta.get("uid", ""),
        "metadata.labels": lambda: _format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: _format_map(meta.get("annotations") or {}),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.hostIPs": lambda: ",".join(a["ip"] for a in status.get("hostIPs") or []),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.podIPs": lambda: ",".join(a["ip"] for a in status.get("podIPs") or []),
    }
    if path not in simple:
        raise PlanError("CreateContainerConfigError", f"unsupported fieldRef fieldPath {path!r}")
    return str(simple[path]())


def _format_map(values: Mapping[str, str]) -> str:
    # The kubelet's downward-API file format: one `key="value"` line per entry, sorted by key.
    return "\n".join(f'{key}="{values[key]}"' for key in sorted(values))


def resource_value(
    pod: Json, container_name: str, resource: str, divisor: str | None, node_allocatable: Mapping[str, str]
) -> str:
    """A `resourceFieldRef` value: ceil(quantity / divisor); unset limits fall back to the node's allocatable."""
    container = _find_container(pod, container_name)
    if container is None:
        raise PlanError("CreateContainerConfigError", f"resourceFieldRef names unknown container {container_name!r}")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise PlanError("CreateContainerConfigError", f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    quantity = Decimal(parse_quantity(raw))
    unit = Decimal(parse_quantity(divisor or "1"))
    if unit <= 0:
        raise PlanError("CreateContainerConfigError", f"resourceFieldRef divisor must be positive, got {divisor!r}")
    return str(math.ceil(quantity / unit))


def _find_container(pod: Json, name: str) -> Json | None:
    spec = pod.get("spec", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") == name:
            return container
    return None


# --- environment --------------------------------------------------------------------------------


def _lookup_key(
    source: ObjectSource, kind: str, namespace: str, ref: Json
) -> str | None:
    name = ref.get("name", "")
    key = ref.get("key", "")
    optional = bool(ref.get("optional", False))
    getter = source.config_map if kind == "configmap" else source.secret
    data = getter(namespace, name)
    if data is None:
        if optional:
            return None
        raise PlanError("CreateContainerConfigError", f'{kind} "{name}" not found')
    if key not in data:
        if optional:
            return None
        label = "ConfigMap" if kind == "configmap" else "Secret"
        raise PlanError("CreateContainerConfigError", f"couldn't find key {key} in {label} {namespace}/{name}")
    return data[key].decode("utf-8", errors="replace")


def container_env(
    pod: Json,
    container: Json,
    source: ObjectSource,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The variables the kubelet would give the container (without the runtime's own PATH/HOME/HOSTNAME)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for entry in container.get("envFrom") or []:
        prefix = entry.get("prefix", "")
        if "configMapRef" in entry:
            ref, kind, data = entry["configMapRef"], "configmap", None
            data = source.config_map(namespace, ref.get("name", ""))
        elif "secretRef" in entry:
            ref, kind = entry["secretRef"], "secret"
            data = source.secret(namespace, ref.get("name", ""))
        else:
            continue
        if data is None:
            if ref.get("optional"):
                continue
            raise PlanError("CreateContainerConfigError", f'{kind} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            name = prefix + key
            if _ENV_NAME.match(name):  # the kubelet skips keys that are not valid variable names
                env[name] = value.decode("utf-8", errors="replace")
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        value_from = var["valueFrom"]
        value: str | None
        if "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            value = resource_value(
                pod, ref.get("containerName") or container["name"], ref["resource"], ref.get("divisor"),
                node_allocatable,
            )
        elif "configMapKeyRef" in value_from:
            value = _lookup_key(source, "configmap", namespace, value_from["configMapKeyRef"])
        elif "secretKeyRef" in value_from:
            value = _lookup_key(source, "secret", namespace, value_from["secretKeyRef"])
        else:
            raise PlanError("CreateContainerConfigError", f"env {name}: unsupported valueFrom {sorted(value_from)}")
        if value is not None:
            env[name] = value
    return env


# --- command ------------------------------------------------------------------------------------


def image_repository(image: str) -> str:
    """`registry:5000/optimodel/server:1.2@sha256:..` -> `optimodel/server`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def container_argv(container: Json, env: Mapping[str, str], entrypoints: Mapping[str, list[str]]) -> list[str]:
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    if command:
        return command + args
    image = container.get("image", "")
    entrypoint = entrypoints.get(image_repository(image))
    if entrypoint is None:
        known = ", ".join(sorted(entrypoints)) or "none"
        raise PlanError(
            "CreateContainerError",
            f"image {image!r} has no entrypoint known to the local node agent (it runs commands on the host "
            f"instead of pulling images); set `command`, or use one of: {known}",
        )
    return list(entrypoint) + args


# --- the whole plan -----------------------------------------------------------------------------


def container_plan(
    pod: Json,
    container: Json,
    *,
    source: ObjectSource,
    volume_paths: Mapping[str, str],
    node_allocatable: Mapping[str, str],
    entrypoints: Mapping[str, list[str]],
    default_path: str,
    hostname: str,
) -> ContainerPlan:
    env = {"PATH": default_path, "HOME": "/root", "HOSTNAME": hostname}
    env.update(container_env(pod, container, source, node_allocatable))
    argv = container_argv(container, env, entrypoints)
    mounts: list[Mount] = []
    for mount in container.get("volumeMounts") or []:
        volume = mount["name"]
        if volume not in volume_paths:
            raise PlanError("CreateContainerConfigError", f"volumeMount {volume!r} names no mappable volume of the pod")
        host = volume_paths[volume]
        sub_path = mount.get("subPath") or expand(mount.get("subPathExpr", ""), env)
        if sub_path:
            if sub_path.startswith("/") or ".." in sub_path.split("/"):
                raise PlanError("CreateContainerConfigError", f"invalid subPath {sub_path!r}")
            host = f"{host.rstrip('/')}/{sub_path}"
        mounts.append(Mount(host_path=host, container_path=mount["mountPath"], read_only=bool(mount.get("readOnly"))))
    return ContainerPlan(
        name=container["name"],
        argv=argv,
        env=env,
        working_dir=container.get("workingDir") or None,
        mounts=mounts,
    )
