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
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables the kubelet would give the container (without the runtime's own PATH/HOME/HOSTNAME).

    `services` (from `service_env`) come first: `env`/`envFrom` override them and `$(VAR)` sees them."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(services or {})
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


# --- Service environment variables ---------------------------------------------------------------


def _env_name(service_name: str) -> str:
    return service_name.upper().replace("-", "_")


def _service_ip_set(service: Json) -> bool:
    return (service.get("spec") or {}).get("clusterIP") not in (None, "", "None")


def service_env(services: list[Json], namespace: str, enable_service_links: bool) -> dict[str, str]:
    """The kubelet's Service variables (docker-link style): always those of `default/kubernetes`, and, when
    `enableServiceLinks` (the default), those of every Service of the pod's namespace that has a ClusterIP.

    `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` are what in-cluster clients read."""
    chosen: dict[str, Json] = {}
    for service in services:
        meta = service.get("metadata") or {}
        if not _service_ip_set(service):
            continue
        name = meta.get("name", "")
        if meta.get("namespace") == "default" and name == "kubernetes":
            chosen.setdefault(name, service)
        elif meta.get("namespace") == namespace and enable_service_links:
            chosen[name] = service
    env: dict[str, str] = {}
    for name in sorted(chosen):
        spec = chosen[name]["spec"]
        ports = spec.get("ports") or []
        if not ports:
            continue
        ip = spec["clusterIP"]
        prefix = _env_name(name)
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
        host = f"[{ip}]" if ":" in ip else ip
        for index, port in enumerate(ports):
            protocol = (port.get("protocol") or "TCP")
            url = f"{protocol.lower()}://{host}:{port['port']}"
            if index == 0:
                env[f"{prefix}_PORT"] = url
            port_prefix = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            env[port_prefix] = url
            env[f"{port_prefix}_PROTO"] = protocol.lower()
            env[f"{port_prefix}_PORT"] = str(port["port"])
            env[f"{port_prefix}_ADDR"] = ip
    return env


# --- DNS ------------------------------------------------------------------------------------------


def resolv_conf(pod: Json, cluster_dns: list[str], cluster_domain: str, host_resolv_conf: str) -> str | None:
    """The pod's /etc/resolv.conf by the kubelet's rules for `dnsPolicy` and `dnsConfig`, or None where the
    host's own file applies unchanged (Default policy, or a hostNetwork pod with ClusterFirst)."""
    spec = pod.get("spec") or {}
    namespace = pod["metadata"]["namespace"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    dns_config = spec.get("dnsConfig") or {}
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # the kubelet's rule: ClusterFirst on the host network falls back to the node's DNS
    nameservers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = list(cluster_dns)
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        options = {"ndots": "5"}
    elif policy == "Default":
        if not dns_config:
            return None
        for line in host_resolv_conf.splitlines():
            fields = line.split()
            if not fields or fields[0].startswith(("#", ";")):
                continue
            if fields[0] == "nameserver" and len(fields) > 1:
                nameservers.append(fields[1])
            elif fields[0] in ("search", "domain"):
                searches = fields[1:]
            elif fields[0] == "options":
                for option in fields[1:]:
                    key, _, value = option.partition(":")
                    options[key] = value or None
    elif policy != "None":
        raise PlanError("CreateContainerConfigError", f"unsupported dnsPolicy {policy!r}")
    for server in dns_config.get("nameservers") or []:
        if server not in nameservers:
            nameservers.append(server)
    for search in dns_config.get("searches") or []:
        if search not in searches:
            searches.append(search)
    for option in dns_config.get("options") or []:
        options[option["name"]] = option.get("value")
    lines = [f"nameserver {server}" for server in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"


# --- termination message ---------------------------------------------------------------------------

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
_MESSAGE_MAX_BYTES = 4096
_FALLBACK_MAX_BYTES = 2048
_FALLBACK_MAX_LINES = 80


def termination_message(container: Json, written: bytes, log_tail: bytes, exit_code: int) -> str | None:
    """The kubelet's `terminated.message`: what the container wrote to its terminationMessagePath (at most
    4096 bytes), or, with `terminationMessagePolicy: FallbackToLogsOnError` and a failure, the last 80 lines
    (at most 2048 bytes) of its log."""
    if written.strip():
        return written[:_MESSAGE_MAX_BYTES].decode("utf-8", errors="replace")
    if container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0:
        lines = log_tail.splitlines(keepends=True)[-_FALLBACK_MAX_LINES:]
        text = b"".join(lines)[-_FALLBACK_MAX_BYTES:]
        return text.decode("utf-8", errors="replace") or None
    return None


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
    services: Mapping[str, str] | None = None,
    resolv_conf_path: str | None = None,
    termination_log_path: str | None = None,
) -> ContainerPlan:
    """`services`: the Service variables (`service_env`); `resolv_conf_path`: the pod's resolv.conf on the host,
    bind-mounted read-only over /etc/resolv.conf in the container's own mount namespace (never the host's)."""
    # No node here is an EC2 instance: botocore (s3fs) must not probe 169.254.169.254 for credentials when a
    # pod reads s3:// without keys; it says "no credentials" at once instead. A pod's own env may override it.
    env = {"PATH": default_path, "HOME": "/root", "HOSTNAME": hostname, "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(container_env(pod, container, source, node_allocatable, services))
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
    if resolv_conf_path is not None and not any(m.container_path == "/etc/resolv.conf" for m in mounts):
        mounts.append(Mount(host_path=resolv_conf_path, container_path="/etc/resolv.conf", read_only=True))
    if termination_log_path is not None:
        target = container.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH
        mounts.append(Mount(host_path=termination_log_path, container_path=target))
    return ContainerPlan(
        name=container["name"],
        argv=argv,
        env=env,
        working_dir=container.get("workingDir") or None,
        mounts=mounts,
    )
