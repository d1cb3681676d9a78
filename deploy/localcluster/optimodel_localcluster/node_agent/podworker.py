"""One thread per pod bound to our nodes: sandbox, init containers, containers, probes, status, deletion.

Each tick the worker looks at its containers (exits, probes, back-off), starts what is due, computes the
whole status with `status.pod_status` and patches it only when it changed. Every state change is saved
to the pod's folder first, so an agent restart re-adopts running containers (their shims keep running).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import shutil
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import cgroups, network, records, runtime
from .config import NodeAgentConfig, NodeSpec
from .kubeapi import ApiError, KubeApi, pod_path
from .nodes import HOST_IP
from .plan import PlanError, container_plan, resolv_conf, service_env, termination_message
from .probes import ProbeSpec, ProbeTracker, run_probe
from .records import ContainerRecordState, PodRecord
from .restart import backoff_delay, crashes_after_exit, should_restart
from .status import ContainerRecord, PodView, Sandbox, Terminated, pod_status, readiness_gates_ok, rfc3339
from .volumes import (
    decode_config_map_data,
    decode_secret_data,
    has_service_account_token,
    materialize_volumes,
    token_refresh_delay,
)

Json = dict[str, Any]
log = logging.getLogger(__name__)

PLAN_RETRY_SECONDS = 3.0
VANISHED_GRACE_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 5.0


class AddressBook:
    """Pod addresses in use across all nodes (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[ipaddress.IPv4Address] = set()

    def allocate(self, cidr: ipaddress.IPv4Network, reserved: list[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
        from .ipam import allocate_address

        with self._lock:
            address = allocate_address(cidr, self._used, reserved)
            self._used.add(address)
            return address

    def claim(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used.add(address)

    def release(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used.discard(address)


@dataclass
class AgentContext:
    api: KubeApi
    config: NodeAgentConfig
    state_dir: Path
    nodes: dict[str, NodeSpec]
    pod_cidrs: dict[str, ipaddress.IPv4Network]
    addresses: AddressBook = field(default_factory=AddressBook)


class ApiObjectSource:
    """ConfigMaps and Secrets read straight from the API server at container start."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        body = self.api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return None if body is None else decode_config_map_data(body)

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        body = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return None if body is None else decode_secret_data(body)


class ContainerRun:
    """Runtime bookkeeping of one container of the pod."""

    def __init__(self, spec: Json, is_init: bool, files: runtime.RunFiles, state: ContainerRecordState) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.is_init = is_init
        self.sidecar = is_init and spec.get("restartPolicy") == "Always"
        self.files = files
        self.state = state
        self.popen: subprocess.Popen[bytes] | None = None
        self.next_start = 0.0
        self.kill_deadline: float | None = None
        self.kill_reason: str | None = None
        self.env: dict[str, str] | None = None
        self.probes: dict[str, ProbeTracker] = {}
        self.record = ContainerRecord(name=self.name, image=spec.get("image", ""), sidecar=self.sidecar,
                                      restart_count=state.restart_count)
        if state.last_exit:
            last = _terminated_from_json(state.last_exit)
            if state.done:
                self.record.state = "terminated"
                self.record.terminated = last
                self.record.reason = None
            else:
                self.record.last_terminated = last
        if state.handle is not None and not state.done:
            # Re-adopted after an agent restart: the shim may still run (the next tick checks).
            self.record.state = "running"
            self.record.reason = None
            self.record.started_at = _parse_time(state.handle.started_at)
            self.record.pid = state.handle.shim_pid
            self.record.started = True
            self.record.ready = not spec.get("readinessProbe")
            for kind, key in (("readiness", "readinessProbe"), ("liveness", "livenessProbe")):
                if spec.get(key):
                    self.probes[kind] = ProbeTracker.start(kind, ProbeSpec.from_json(spec[key]), time.monotonic())  # type: ignore[arg-type]

    def ever_ran(self) -> bool:
        return self.state.last_exit is not None


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _terminated_from_json(body: Json) -> Terminated:
    return Terminated(
        exit_code=int(body["exitCode"]),
        reason=body.get("reason") or "Error",
        started_at=_parse_time(body.get("startedAt")),
        finished_at=_parse_time(body.get("finishedAt")) or dt.datetime.now(dt.timezone.utc),
        message=body.get("message"),
        container_id=body.get("containerID"),
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _resource_version(pod: Json) -> int:
    text = pod.get("metadata", {}).get("resourceVersion", "0")
    return int(text) if text.isdigit() else 0


class PodWorker(threading.Thread):
    def __init__(self, context: AgentContext, pod: Json, existing: PodRecord | None,
                 on_crash: Callable[[PodWorker], None] | None = None) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.context = context
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.node = context.nodes[pod["spec"]["nodeName"]]
        self.dir = records.pod_dir(context.state_dir, self.namespace, self.pod_name, self.uid)
        self._lock = threading.Lock()
        self._pod = pod
        self._wake = threading.Event()
        self._vanished = False
        self._shutdown = False
        self._terminating = False
        self._last_status: Json | None = None
        self.finished = threading.Event()
        # The traceback of an exception nobody foresaw that ended the loop (None while it runs, and when it
        # ended as planned: pod deleted, gone from the API, agent shutting down); `on_crash` is then called
        # with this worker, after `finished` is set, so that the agent can start another for the pod.
        self.crash: str | None = None
        self.on_crash = on_crash
        spec = pod["spec"]
        self.host_network = bool(spec.get("hostNetwork"))
        self.record = existing or PodRecord(
            uid=self.uid, namespace=self.namespace, name=self.pod_name, node=self.node.name,
            host_network=self.host_network, start_time=rfc3339(_utcnow()),
        )
        self.init = [self._container(c, True) for c in spec.get("initContainers") or []]
        self.containers = [self._container(c, False) for c in spec.get("containers") or []]
        self.message: str | None = None
        # When the projected service-account tokens are next rewritten (time.time()); None: no token yet.
        # Containers re-adopted after an agent restart get fresh tokens at once (their age is unknown).
        has_tokens = any(has_service_account_token(v) for v in spec.get("volumes") or [])
        self._token_refresh_at: float | None = time.time() if existing is not None and has_tokens else None
        records.save(self.dir, self.record)

    def _container(self, spec: Json, is_init: bool) -> ContainerRun:
        state = self.record.containers.setdefault(spec["name"], ContainerRecordState())
        return ContainerRun(spec, is_init, runtime.RunFiles(self.dir, spec["name"]), state)

    # --- called from the agent's threads ---------------------------------------------------------
    def update(self, pod: Json) -> None:
        with self._lock:
            if _resource_version(pod) >= _resource_version(self._pod):
                self._pod = pod
        self._wake.set()

    def vanish(self) -> None:
        self._vanished = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    @property
    def gone(self) -> bool:
        return self._vanished

    @property
    def pod(self) -> Json:
        with self._lock:
            return self._pod

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            self.crash = traceback.format_exc()
            log.exception("pod worker %s/%s failed", self.namespace, self.pod_name)
        finally:
            self.finished.set()
        if self.crash is not None and self.on_crash is not None:
            self.on_crash(self)

    def take_over(self, previous: PodWorker) -> None:
        """Continue from a worker of the same pod that crashed: keep its container processes' Popen objects,
        so that their exits are reaped and read as the previous worker would have (a shim that exited and was
        never waited for stays a zombie, which `runtime.is_alive` counts as running)."""
        before = {(c.is_init, c.name): c for c in [*previous.init, *previous.containers]}
        for container in [*self.init, *self.containers]:
            old = before.get((container.is_init, container.name))
            if old is not None and old.popen is not None and container.state.handle is old.state.handle:
                container.popen = old.popen

    def kill_containers(self) -> None:
        """SIGKILL whatever of this (finished) worker's containers still runs, and reap it."""
        for container in [*self.init, *self.containers]:
            handle = container.state.handle
            if handle is not None and runtime.is_alive(handle):
                runtime.signal_group(handle, signal.SIGKILL)
                if container.popen is not None:
                    try:
                        container.popen.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        log.warning("%s/%s: container %s outlived SIGKILL", self.namespace, self.pod_name, container.name)

    def _loop(self) -> None:
        period = self.context.config.sync_period_seconds
        while True:
            if self._vanished:
                log.info("pod %s/%s is gone from the API: stopping its processes", self.namespace, self.pod_name)
                self._stop_all(VANISHED_GRACE_SECONDS)
                self._teardown_sandbox()
                shutil.rmtree(self.dir, ignore_errors=True)
                return
            if self._shutdown:
                self._stop_all(SHUTDOWN_GRACE_SECONDS, record_exits=False)
                self._teardown_sandbox(keep_address=True)
                return
            pod = self.pod
            if pod["metadata"].get("deletionTimestamp"):
                self._delete_pod(pod)
                return
            self._step()
            self._publish()
            self._wake.wait(period)
            self._wake.clear()

    # --- sandbox ---------------------------------------------------------------------------------
    def _pod_ip(self) -> str | None:
        return HOST_IP if self.host_network else self.record.pod_ip

    def _ensure_sandbox(self) -> bool:
        if self.host_network or self.record.terminal:
            return True
        config = self.context.config
        try:
            if self.record.pod_ip is None:
                cidr = self.context.pod_cidrs[self.node.name]
                address = self.context.addresses.allocate(cidr, [config.bridge_address])
                self.record.pod_ip = str(address)
                records.save(self.dir, self.record)
            else:
                self.context.addresses.claim(ipaddress.IPv4Address(self.record.pod_ip))
            namespace = network.netns_name(self.uid)
            if not network.netns_exists(namespace):
                network.create_pod_network(
                    self.uid, ipaddress.IPv4Address(self.record.pod_ip), config.pod_network,
                    config.bridge_address, config.bridge_name,
                )
                self.record.netns = namespace
                records.save(self.dir, self.record)
            self.message = None
            return True
        except (network.NetworkError, RuntimeError) as error:
            self.message = f"failed to create the pod sandbox: {error}"
            log.warning("%s/%s: %s", self.namespace, self.pod_name, self.message)
            return False

    def _teardown_sandbox(self, keep_address: bool = False) -> None:
        if self.context.config.cgroup_root is not None:
            cgroups.remove(self.context.config.cgroup_root, self.uid)
        if not self.host_network:
            network.delete_pod_network(self.uid)
            if self.record.pod_ip and not keep_address:
                self.context.addresses.release(ipaddress.IPv4Address(self.record.pod_ip))

    # --- containers ------------------------------------------------------------------------------
    def _restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy", "Always")

    def _step(self) -> None:
        if self.record.terminal:
            return
        if not self._ensure_sandbox():
            return
        initialized = True
        for container in self.init:
            self._observe(container)
            if container.sidecar:
                self._maybe_start(container)
                if not (container.record.state == "running" and container.record.started):
                    initialized = False
                    break
                continue
            if container.state.done:
                if container.record.terminated and container.record.terminated.exit_code != 0:
                    initialized = False  # failed for good (restartPolicy Never): the pod is Failed
                    break
                continue
            if container.record.state != "running":
                self._maybe_start(container)
            initialized = False
            break
        if initialized:
            for container in self.containers:
                self._observe(container)
                self._maybe_start(container)
        self._maybe_refresh_tokens()

    def _maybe_refresh_tokens(self) -> None:
        if self._token_refresh_at is None or time.time() < self._token_refresh_at or not self._running():
            return
        self._token_refresh_at = None
        try:
            materialize_volumes(self.pod, self.dir, self.context.state_dir, ApiObjectSource(self.context.api),
                                self._request_token, self.node.capacity, only_tokens=True)
            log.info("%s/%s: refreshed service account tokens", self.namespace, self.pod_name)
        except (PlanError, OSError, ApiError, httpx.HTTPError) as error:
            log.warning("%s/%s: token refresh failed (retrying): %s", self.namespace, self.pod_name, error)
        if self._token_refresh_at is None:  # the request failed: try again shortly
            self._token_refresh_at = time.time() + 10

    def _observe(self, container: ContainerRun) -> None:
        handle = container.state.handle
        if container.record.state != "running" or handle is None:
            return
        finished = container.popen.poll() is not None if container.popen is not None else not runtime.is_alive(handle)
        if finished:
            code = container.popen.returncode if container.popen is not None else None
            if code is not None and code < 0:
                code = 128 - code
            self._on_exit(container, runtime.read_exit(container.files, code))
            return
        now = time.monotonic()
        if container.kill_deadline is not None:
            if now >= container.kill_deadline:
                runtime.signal_group(handle, signal.SIGKILL)
            return
        self._probe(container, now)

    def _probe(self, container: ContainerRun, now: float) -> None:
        pod_ip = self._pod_ip() or HOST_IP
        child = runtime.child_pid(container.files)

        def check(tracker: ProbeTracker) -> None:
            ok, message = run_probe(tracker.spec.action, pod_ip=pod_ip, container=container.spec,
                                    timeout=tracker.spec.timeout, exec_pid=child, exec_env=container.env)
            tracker.record(ok, time.monotonic(), message)

        startup = container.probes.get("startup")
        if startup is not None and not container.record.started:
            if startup.due(now):
                check(startup)
                if startup.passing:
                    container.record.started = True
                elif startup.failed_for_good():
                    self._kill(container, f"Container {container.name} failed startup probe, will be restarted")
            return
        container.record.started = True
        liveness = container.probes.get("liveness")
        if liveness is not None and liveness.due(now):
            check(liveness)
            if liveness.failed_for_good():
                self._kill(container, f"Container {container.name} failed liveness probe, will be restarted: "
                                      f"{liveness.last_message}")
                return
        readiness = container.probes.get("readiness")
        if readiness is None:
            container.record.ready = True
        elif readiness.due(now):
            check(readiness)
            container.record.ready = readiness.passing

    def _grace_seconds(self) -> float:
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    def _kill(self, container: ContainerRun, reason: str) -> None:
        log.info("%s/%s: %s", self.namespace, self.pod_name, reason)
        container.kill_reason = reason
        container.record.ready = False
        if container.state.handle is not None:
            runtime.signal_group(container.state.handle, signal.SIGTERM)
        container.kill_deadline = time.monotonic() + self._grace_seconds()

    def _on_exit(self, container: ContainerRun, exit_status: runtime.Exit) -> None:
        record = container.record
        terminated = Terminated(
            exit_code=exit_status.code,
            reason=exit_status.reason,
            started_at=record.started_at,
            finished_at=exit_status.finished_at,
            message=self._termination_message(container, exit_status.code) or exit_status.message
            or container.kill_reason,
            container_id=record.container_id,
        )
        container.state.handle = None
        container.popen = None
        container.probes = {}
        container.kill_deadline = None
        container.kill_reason = None
        record.ready = False
        record.started = False
        container.state.last_exit = {**terminated.to_json(), "containerID": record.container_id}
        if self._terminating:
            restart = False
        elif container.sidecar:
            restart = True
        elif container.is_init:
            restart = exit_status.code != 0 and self._restart_policy() != "Never"
        else:
            restart = should_restart(self._restart_policy(), exit_status.code)
        log.info("%s/%s: container %s exited with %s (%s)%s", self.namespace, self.pod_name, container.name,
                 exit_status.code, exit_status.reason, "; restarting" if restart else "")
        if restart:
            config = self.context.config
            ran = (exit_status.finished_at - (record.started_at or exit_status.finished_at)).total_seconds()
            container.state.crashes = crashes_after_exit(container.state.crashes, ran, config.backoff_max_seconds)
            delay = backoff_delay(container.state.crashes, config.backoff_initial_seconds, config.backoff_max_seconds)
            record.last_terminated = terminated
            record.terminated = None
            record.state = "waiting"
            record.reason = "CrashLoopBackOff" if delay > 0 else "ContainerCreating"
            record.message = (
                f"back-off {int(delay)}s restarting failed container={container.name} "
                f"pod={self.pod_name}_{self.namespace}({self.uid})" if delay > 0 else None
            )
            container.next_start = time.monotonic() + delay
        else:
            record.state = "terminated"
            record.terminated = terminated
            record.reason = None
            record.message = None
            container.state.done = True
        records.save(self.dir, self.record)

    def _request_token(self, audience: str | None, expiration: int) -> str | None:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        body: Json = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": max(expiration, 600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid},
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        try:
            answer = self.context.api.create(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body
            )
            status = answer.get("status") or {}
            token = status.get("token")
            if token:
                expires = _parse_time(status.get("expirationTimestamp"))
                valid = (expires - _utcnow()).total_seconds() if expires else float(body["spec"]["expirationSeconds"])
                due = time.time() + token_refresh_delay(body["spec"]["expirationSeconds"], valid)
                self._token_refresh_at = due if self._token_refresh_at is None else min(self._token_refresh_at, due)
            return token
        except Exception as error:
            log.warning("%s/%s: no service account token: %s", self.namespace, self.pod_name, error)
            return None

    def _maybe_start(self, container: ContainerRun) -> None:
        if container.record.state == "running" or container.state.done or self._terminating:
            return
        now = time.monotonic()
        if now < container.next_start:
            return
        pod = self.pod
        config = self.context.config
        source = ApiObjectSource(self.context.api)
        try:
            volume_paths = materialize_volumes(pod, self.dir, self.context.state_dir, source, self._request_token,
                                               self.node.capacity)
            plan = container_plan(
                pod, container.spec, source=source, volume_paths=volume_paths,
                node_allocatable=self.node.capacity, entrypoints=config.entrypoints, default_path=config.path,
                hostname=pod["spec"].get("hostname") or self.pod_name,
                services=self._service_env(), resolv_conf_path=self._resolv_conf(),
                termination_log_path=self._fresh_termination_log(container),
            )
        except PlanError as error:
            self._waiting(container, error.reason, error.message)
            return
        except (OSError, ApiError, httpx.HTTPError) as error:
            # The API server unreachable (restarting) while a ConfigMap, Secret or token is read: wait and try
            # again next tick, as a kubelet does. Uncaught, it ended the pod's worker: the pod stayed "Running"
            # with its container gone for good (seen with the operator restarting during an API server restart).
            self._waiting(container, "CreateContainerError", str(error))
            return
        if container.ever_ran():
            container.state.restart_count += 1
        netns = None if self.host_network else network.netns_name(self.uid)
        limits = None
        root = self.context.config.cgroup_root
        if root is not None and cgroups.available(root):
            try:
                limits = cgroups.create(root, self.uid, container.name,
                                        cgroups.limits_of(container.spec, self.context.config.pids_max))
            except (OSError, ValueError) as error:
                self._waiting(container, "CreateContainerError", f"cannot set the container's cgroups: {error}")
                return
        try:
            handle, popen = runtime.launch(plan, container.files, netns,
                                           records.mountpoints_record(self.context.state_dir), limits)
        except OSError as error:
            self._waiting(container, "CreateContainerError", f"cannot start the container's process: {error}")
            return
        container.state.handle = handle
        container.popen = popen
        container.env = plan.env
        record = container.record
        record.state = "running"
        record.reason = None
        record.message = None
        record.started_at = _utcnow()
        record.pid = handle.shim_pid
        record.restart_count = container.state.restart_count
        now = time.monotonic()
        container.probes = {}
        for kind, key in (("startup", "startupProbe"), ("readiness", "readinessProbe"), ("liveness", "livenessProbe")):
            if container.spec.get(key):
                container.probes[kind] = ProbeTracker.start(kind, ProbeSpec.from_json(container.spec[key]), now)  # type: ignore[arg-type]
        record.started = "startup" not in container.probes
        record.ready = record.started and "readiness" not in container.probes
        log.info("%s/%s: started container %s (pid %s): %s", self.namespace, self.pod_name, container.name,
                 handle.shim_pid, " ".join(plan.argv)[:200])
        records.save(self.dir, self.record)

    def _fresh_termination_log(self, container: ContainerRun) -> str:
        path = container.files.termination_log
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return str(path)

    def _termination_message(self, container: ContainerRun, exit_code: int) -> str | None:
        try:
            written = container.files.termination_log.read_bytes()[:8192]
        except OSError:
            written = b""
        try:
            with open(container.files.log, "rb") as log_file:
                log_file.seek(0, 2)
                log_file.seek(max(0, log_file.tell() - 16384))
                tail = log_file.read()
        except OSError:
            tail = b""
        return termination_message(container.spec, written, tail, exit_code)

    def _service_env(self) -> dict[str, str]:
        """Service variables from the Services that exist now (the kubelet reads them at container start)."""
        api = self.context.api
        services = []
        master = api.get("/api/v1/namespaces/default/services/kubernetes")
        if master is not None:
            services.append(master)
        links = self.pod["spec"].get("enableServiceLinks", True)
        if links:
            listing = api.request("GET", f"/api/v1/namespaces/{self.namespace}/services")
            services += [{**item, "metadata": {**item["metadata"], "namespace": self.namespace}}
                         for item in listing.get("items") or []]
        return service_env(services, self.namespace, bool(links))

    def _resolv_conf(self) -> str | None:
        """Write the pod's resolv.conf into its folder; its path, or None where the host's file applies."""
        config = self.context.config
        try:
            host = Path("/etc/resolv.conf").read_text()
        except OSError:
            host = ""
        text = resolv_conf(self.pod, [str(ip) for ip in config.cluster_dns], config.cluster_domain, host)
        if text is None:
            return None
        path = self.dir / "resolv.conf"
        temporary = path.with_name("resolv.conf.tmp")
        temporary.write_text(text)
        temporary.chmod(0o644)
        temporary.replace(path)
        return str(path)

    def _waiting(self, container: ContainerRun, reason: str, message: str) -> None:
        if (container.record.reason, container.record.message) != (reason, message):
            log.warning("%s/%s: container %s waits: %s: %s", self.namespace, self.pod_name, container.name, reason, message)
        container.record.state = "waiting"
        container.record.reason = reason
        container.record.message = message
        container.next_start = time.monotonic() + PLAN_RETRY_SECONDS

    # --- status ----------------------------------------------------------------------------------
    def _view(self) -> PodView:
        sandbox = None
        if self.host_network:
            sandbox = Sandbox(pod_ip=HOST_IP, ready=not self.record.terminal)
        elif self.record.pod_ip:
            sandbox = Sandbox(pod_ip=self.record.pod_ip,
                              ready=not self.record.terminal and network.netns_exists(network.netns_name(self.uid)))
        for container in [*self.init, *self.containers]:
            if container.record.state == "waiting" and container.record.reason == "ContainerCreating" and not container.is_init:
                if any(not (c.state.done or (c.sidecar and c.record.started)) for c in self.init):
                    container.record.reason = "PodInitializing"
            elif container.record.reason == "PodInitializing" and container.record.state == "waiting":
                if all(c.state.done or (c.sidecar and c.record.started) for c in self.init):
                    container.record.reason = "ContainerCreating"
        return PodView(
            init=[c.record for c in self.init],
            containers=[c.record for c in self.containers],
            sandbox=sandbox,
            host_ip=HOST_IP,
            start_time=_parse_time(self.record.start_time),
            terminal_after_deletion=self._terminating,
            readiness_gates_ok=readiness_gates_ok(self.pod),
            extra_message=self.message,
        )

    def _publish(self) -> None:
        pod = self.pod
        status = pod_status(pod, self._view(), _utcnow())
        if status == self._last_status:
            return
        try:
            answer = self.context.api.merge_patch(pod_path(self.namespace, self.pod_name, "status"), {"status": status})
        except ApiError as error:
            if error.status == 404:
                self._vanished = True
                return
            log.warning("%s/%s: status update failed: %s", self.namespace, self.pod_name, error)
            return
        except Exception as error:  # connection trouble: try again next tick
            log.warning("%s/%s: status update failed: %s", self.namespace, self.pod_name, error)
            return
        self.update(answer)
        self._last_status = status
        if status["phase"] in ("Succeeded", "Failed") and not self.record.terminal:
            log.info("%s/%s: %s", self.namespace, self.pod_name, status["phase"])
            self.record.terminal = True
            records.save(self.dir, self.record)
            self._stop_all(1.0)
            self._teardown_sandbox()

    # --- stopping --------------------------------------------------------------------------------
    def _running(self) -> list[ContainerRun]:
        return [c for c in [*self.init, *self.containers] if c.record.state == "running" and c.state.handle]

    def _stop_all(self, grace: float, record_exits: bool = True) -> None:
        """Stop every running container. Without `record_exits` (agent shutdown) the exits stay unrecorded,
        so the restarted agent reads them from the shims' exit files and applies the restart policy."""
        if not record_exits:
            handles = [(c.state.handle, c.popen) for c in self._running()]
            for handle, _ in handles:
                runtime.signal_group(handle, signal.SIGTERM)  # type: ignore[arg-type]
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(
                (p.poll() is None) if p is not None else runtime.is_alive(h) for h, p in handles  # type: ignore[arg-type]
            ):
                time.sleep(0.1)
            for handle, popen in handles:
                runtime.stop(handle, 0, popen)  # type: ignore[arg-type]
            return
        self._terminating = True
        running = self._running()
        for container in running:
            runtime.signal_group(container.state.handle, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for container in self._running():
                self._observe_exit_only(container)
            if not self._running():
                break
            time.sleep(0.1)
        for container in self._running():
            runtime.signal_group(container.state.handle, signal.SIGKILL)  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while self._running() and time.monotonic() < deadline:
            for container in self._running():
                self._observe_exit_only(container)
            time.sleep(0.05)

    def _observe_exit_only(self, container: ContainerRun) -> None:
        handle = container.state.handle
        if handle is None:
            return
        if container.popen is not None:
            code = container.popen.poll()
            if code is None:
                return
            code = 128 - code if code < 0 else code
        else:
            if runtime.is_alive(handle):
                return
            code = None
        self._on_exit(container, runtime.read_exit(container.files, code))

    def _delete_pod(self, pod: Json) -> None:
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        grace = float(grace if grace is not None else self._grace_seconds())
        log.info("%s/%s: deleting (grace %ss)", self.namespace, self.pod_name, grace)
        self._stop_all(grace)
        if not self.record.terminal:
            self._publish()
        self._teardown_sandbox()
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        try:
            self.context.api.delete(pod_path(self.namespace, self.pod_name), body)
        except ApiError as error:
            if error.status != 409:  # 409: the uid changed, a new pod of the same name: not ours to delete
                log.warning("%s/%s: final delete failed: %s", self.namespace, self.pod_name, error)
        shutil.rmtree(self.dir, ignore_errors=True)
