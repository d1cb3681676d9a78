"""Readiness, liveness and startup probes.

`ProbeSpec`/`ProbeTracker` hold the kubelet's timing and threshold rules (pure); `run_probe` performs one
httpGet / tcpSocket / exec / grpc check against the pod's address.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

Json = dict[str, Any]
ProbeKind = Literal["readiness", "liveness", "startup"]


@dataclass(frozen=True)
class ProbeSpec:
    action: Json
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_json(cls, probe: Json) -> ProbeSpec:
        action = {k: v for k, v in probe.items() if k in ("httpGet", "tcpSocket", "exec", "grpc")}
        return cls(
            action=action,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


@dataclass
class ProbeTracker:
    """One probe of one running container. `passing` is what the kubelet reports for it."""

    kind: ProbeKind
    spec: ProbeSpec
    container_started: float  # monotonic seconds
    passing: bool = False
    successes: int = 0
    failures: int = 0
    last_run: float | None = None
    last_message: str = ""

    @classmethod
    def start(cls, kind: ProbeKind, spec: ProbeSpec, now: float) -> ProbeTracker:
        # Liveness counts as passing until it fails; readiness and startup must pass first.
        return cls(kind=kind, spec=spec, container_started=now, passing=kind == "liveness")

    def due(self, now: float) -> bool:
        if now < self.container_started + self.spec.initial_delay:
            return False
        return self.last_run is None or now >= self.last_run + self.spec.period

    def record(self, ok: bool, now: float, message: str = "") -> bool:
        """Count one result; returns True when `passing` flipped."""
        self.last_run = now
        self.last_message = message
        before = self.passing
        if ok:
            self.successes += 1
            self.failures = 0
            # Startup and liveness need one success (the API enforces successThreshold 1 for them).
            needed = self.spec.success_threshold if self.kind == "readiness" else 1
            if self.successes >= needed:
                self.passing = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                self.passing = False
        return before != self.passing

    def failed_for_good(self) -> bool:
        """Liveness or startup has failed `failureThreshold` times in a row: the container must restart."""
        return self.kind in ("liveness", "startup") and self.failures >= self.spec.failure_threshold


def resolve_port(port: int | str, container: Json) -> int:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"probe names port {port!r}, which the container does not declare")


def run_probe(action: Json, *, pod_ip: str, container: Json, timeout: float, exec_pid: int | None,
              exec_env: dict[str, str] | None = None) -> tuple[bool, str]:
    """One check; (ok, message). Never raises."""
    try:
        if "httpGet" in action:
            return _http_get(action["httpGet"], pod_ip, container, timeout)
        if "tcpSocket" in action:
            spec = action["tcpSocket"]
            host = spec.get("host") or pod_ip
            with socket.create_connection((host, resolve_port(spec["port"], container)), timeout=timeout):
                return True, ""
        if "grpc" in action:
            # No gRPC health client here: a port that accepts connections counts (documented).
            with socket.create_connection((pod_ip, int(action["grpc"]["port"])), timeout=timeout):
                return True, ""
        if "exec" in action:
            if exec_pid is None:
                return False, "container process not known"
            command = action["exec"].get("command") or []
            completed = subprocess.run(
                ["nsenter", "-t", str(exec_pid), "-m", "-n", "--", *command],
                capture_output=True,
                timeout=timeout,
                env=exec_env,
            )
            output = (completed.stdout + completed.stderr).decode(errors="replace")[-500:]
            return completed.returncode == 0, output
        return False, f"probe has no supported handler: {sorted(action)}"
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout}s"
    except (OSError, ValueError, http.client.HTTPException) as error:
        return False, str(error)


def _http_get(spec: Json, pod_ip: str, container: Json, timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or pod_ip
    port = resolve_port(spec.get("port", 80), container)
    path = spec.get("path") or "/"
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/1.36")
    connection: http.client.HTTPConnection
    if spec.get("scheme", "HTTP").upper() == "HTTPS":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read(10_000)
        ok = 200 <= response.status < 400
        return ok, "" if ok else f"HTTP probe failed with statuscode: {response.status}"
    finally:
        connection.close()
