"""The agent process: registers the nodes, watches pods bound to them and runs one PodWorker per pod."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import network, records, runtime
from .config import NodeAgentConfig
from .kubeapi import ApiError, KubeApi, pod_path
from .logserver import LogServers
from .nodes import NodeKeeper, silenced_nodes
from .podworker import AgentContext, PodWorker
from .records import PodRecord

Json = dict[str, Any]
log = logging.getLogger(__name__)

PODS = "/api/v1/pods"
BOUND = {"fieldSelector": "spec.nodeName!="}
# A pod worker that crashed (an exception nobody foresaw) is replaced after a back-off that doubles with each
# crash of the same pod's workers, up to the cap; a worker that ran WORKER_BACKOFF_RESET_SECONDS without
# crashing starts the count again. Short next to a container's CrashLoopBackOff: the pod's processes are
# unattended meanwhile, and a crash of the agent's own code is more often a passing cause than a loop.
WORKER_BACKOFF_SECONDS = 1.0
WORKER_BACKOFF_MAX_SECONDS = 60.0
WORKER_BACKOFF_RESET_SECONDS = 600.0
TERMINAL_PHASES = ("Succeeded", "Failed")


def pid_file(state_dir: Path) -> Path:
    return state_dir / "node-agent.pid"


def running_agent_pid(state_dir: Path) -> int | None:
    """The pid in node-agent.pid if that process is a live node agent."""
    try:
        pid = int(pid_file(state_dir).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"optimodel_localcluster.node_agent\0run" in cmdline else None


def discard_record(directory: Path, record: PodRecord) -> None:
    """Stop whatever a pod record still runs and remove its network and folder."""
    for container in record.containers.values():
        if container.handle is not None and runtime.is_alive(container.handle):
            runtime.signal_group(container.handle, signal.SIGKILL)
    network.delete_pod_network(record.uid)
    shutil.rmtree(directory, ignore_errors=True)


class Agent:
    def __init__(self, kubeconfig: Path, state_dir: Path, config: NodeAgentConfig) -> None:
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.config = config
        self.stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()
        self.records: dict[str, tuple[Path, PodRecord]] = {}
        # Per pod uid: how many of its workers crashed in a row, and when the last one did (time.monotonic()).
        self.crashes: dict[str, tuple[int, float]] = {}
        self.api: KubeApi | None = None
        self.context: AgentContext | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        other = running_agent_pid(self.state_dir)
        if other is not None and other != os.getpid():
            log.error("another node agent (pid %s) already serves %s; stop it first", other, self.state_dir)
            return 3
        pid_file(self.state_dir).write_text(f"{os.getpid()}\n")
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        servers: LogServers | None = None
        try:
            self.api = KubeApi(self.kubeconfig)
            network.prepare_host(self.config.bridge_name, self.config.bridge_address, self.config.pod_network,
                                 self.config.service_network)
            keeper = NodeKeeper(self.api, self.config, self.stop)
            self._until_api_answers(keeper.register_all)
            if self.stop.is_set():
                return 0
            self.context = AgentContext(
                api=self.api, config=self.config, state_dir=self.state_dir,
                nodes={n.name: n for n in keeper.nodes},
                pod_cidrs={name: ipaddress.IPv4Network(cidr) for name, cidr in keeper.pod_cidrs.items()},
            )
            for directory, record in records.load_all(self.state_dir).items():
                self.records[record.uid] = (directory, record)
                if record.pod_ip and not record.host_network and not record.terminal:
                    self.context.addresses.claim(ipaddress.IPv4Address(record.pod_ip))
            threading.Thread(target=keeper.run, args=(lambda: silenced_nodes(self.state_dir),), name="heartbeats",
                             daemon=True).start()
            servers = LogServers(self.state_dir, {n.name: n.kubelet_port for n in keeper.nodes})
            servers.start()
            threading.Thread(target=self._watch_forever, name="pod-watch", daemon=True).start()
            log.info("node agent ready: nodes %s", ", ".join(n.name for n in keeper.nodes))
            while not self.stop.wait(self.config.resync_seconds):
                self._prune()
            return 0
        finally:
            self._shutdown()
            if servers is not None:
                servers.stop()
            if self.api is not None:
                self.api.close()
            if running_agent_pid(self.state_dir) in (None, os.getpid()):
                pid_file(self.state_dir).unlink(missing_ok=True)
            log.info("node agent stopped")

    def _until_api_answers(self, action: Any) -> None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                action()
                return
            except Exception as error:
                log.warning("API server not answering yet (%s); retrying", error)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _shutdown(self) -> None:
        with self.workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(timeout=20)
        log.info("stopped %d pod workers", len(workers))

    # --- pods ------------------------------------------------------------------------------------
    def _watch_forever(self) -> None:
        assert self.api is not None
        while not self.stop.is_set():
            try:
                version = self._relist()
                while not self.stop.is_set():
                    for event in self.api.watch(PODS, {**BOUND, "resourceVersion": version, "timeoutSeconds": 120}):
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), obj.get("message", "watch error"))
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            self._gone(obj)
                        else:
                            self._dispatch(obj)
                        if self.stop.is_set():
                            return
            except Exception as error:
                if self.stop.is_set():
                    return
                log.warning("pod watch interrupted (%s); listing again", error)
                self.stop.wait(1.0)

    def _relist(self) -> str:
        assert self.api is not None
        listing = self.api.request("GET", PODS, params=BOUND)
        present = set()
        for pod in listing.get("items") or []:
            present.add(pod["metadata"]["uid"])
            self._dispatch(pod)
        for uid, (directory, record) in list(self.records.items()):
            if uid not in present and uid not in self.workers:
                log.info("cleaning up pod %s/%s (no longer in the API)", record.namespace, record.name)
                discard_record(directory, record)
                del self.records[uid]
        with self.workers_lock:
            for uid, worker in self.workers.items():
                if uid not in present:
                    worker.vanish()
        return listing.get("metadata", {}).get("resourceVersion", "")

    def _dispatch(self, pod: Json) -> None:
        assert self.context is not None and self.api is not None
        node = pod.get("spec", {}).get("nodeName")
        if node not in self.context.nodes:
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            if worker is not None:
                # A finished worker keeps the latest pod too: a crashed one's replacement starts from it.
                worker.update(pod)
                return
            existing = self.records.pop(uid, None)
            phase = (pod.get("status") or {}).get("phase")
            if existing is None and (meta.get("deletionTimestamp") or phase in TERMINAL_PHASES):
                # Nothing of this pod runs here: a deleted one only needs the final delete; a finished one stays.
                if meta.get("deletionTimestamp"):
                    self._final_delete(pod)
                return
            worker = PodWorker(self.context, pod, existing[1] if existing else None, on_crash=self._worker_crashed)
            self.workers[uid] = worker
        worker.start()

    def _worker_crashed(self, worker: PodWorker) -> None:
        """Called from a worker that ended on an exception: log it and start another after the back-off.
        Before, the pod was skipped from then on: its processes ran unattended (no restart, no probe, no
        status) and a deletion never finished."""
        now = time.monotonic()
        with self.workers_lock:
            count, last = self.crashes.get(worker.uid, (0, now))
            count = 1 if now - last > WORKER_BACKOFF_RESET_SECONDS else count + 1
            self.crashes[worker.uid] = (count, now)
        delay = min(WORKER_BACKOFF_SECONDS * 2 ** (count - 1), WORKER_BACKOFF_MAX_SECONDS)
        log.error("pod worker %s/%s ended on an exception (crash %d of this pod's workers); a new worker in %.0f s:\n%s",
                  worker.namespace, worker.pod_name, count, delay, (worker.crash or "").rstrip())
        timer = threading.Timer(delay, self._replace_crashed, args=(worker,))
        timer.name = f"restart-{worker.namespace}/{worker.pod_name}"
        timer.daemon = True
        timer.start()

    def _replace_crashed(self, worker: PodWorker) -> None:
        """A new worker for a crashed worker's pod, if the pod is still in the API (no DELETED event, not
        missing from a listing) and not terminal; it re-adopts the running containers from the pod's record,
        as after an agent restart."""
        if self.stop.is_set() or self.context is None:
            return
        with self.workers_lock:
            if self.workers.get(worker.uid) is not worker:
                return  # already removed (DELETED: cleaned up there) or replaced
            pod = worker.pod
            phase = (pod.get("status") or {}).get("phase")
            if worker.gone:
                del self.workers[worker.uid]
                replacement = None
            elif phase in TERMINAL_PHASES and not pod["metadata"].get("deletionTimestamp"):
                # As for any finished pod, the finished worker stays (its folder keeps the logs) and nothing
                # runs: a container the crashed worker left running is stopped.
                log.info("pod %s/%s is %s: no new worker for it", worker.namespace, worker.pod_name, phase)
                worker.kill_containers()
                return
            else:
                replacement = PodWorker(self.context, pod, worker.record, on_crash=self._worker_crashed)
                replacement.take_over(worker)
                self.workers[worker.uid] = replacement
        if replacement is None:
            self._clean_up_after(worker)
            return
        log.info("pod %s/%s: a new pod worker after the crash", worker.namespace, worker.pod_name)
        replacement.start()

    @staticmethod
    def _clean_up_after(worker: PodWorker) -> None:
        """Stop what a crashed worker of a pod gone from the API left running (no worker will)."""
        log.info("pod %s/%s is gone from the API: cleaning up after its crashed worker", worker.namespace,
                 worker.pod_name)
        discard_record(worker.dir, worker.record)

    def _final_delete(self, pod: Json) -> None:
        assert self.api is not None
        meta = pod["metadata"]
        try:
            self.api.delete(pod_path(meta["namespace"], meta["name"]),
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as error:
            if error.status != 409:
                log.warning("final delete of %s/%s failed: %s", meta["namespace"], meta["name"], error)

    def _gone(self, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            self.crashes.pop(uid, None)
            if worker is not None and worker.finished.is_set():
                del self.workers[uid]
        if worker is None:
            return
        if not worker.finished.is_set():
            worker.vanish()
        elif worker.crash is not None:
            self._clean_up_after(worker)

    def _prune(self) -> None:
        with self.workers_lock:
            pruned = [w for w in self.workers.values() if w.finished.is_set() and w.gone]
            for worker in pruned:
                del self.workers[worker.uid]
                self.crashes.pop(worker.uid, None)
        for worker in pruned:
            if worker.crash is not None:
                self._clean_up_after(worker)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
