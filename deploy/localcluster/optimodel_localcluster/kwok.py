"""A simulated cluster: a second, separate control plane on this host whose nodes and pods kwok simulates.

For the scale benchmark (benchmarks/scale.py): hundreds of serving Deployments on a hundred nodes cost
nothing to run, because no container runs. What is real: etcd, kube-apiserver, kube-controller-manager
(Deployment, ReplicaSet, Job, garbage-collection controllers) and kube-scheduler, the same binaries as the
shared development cluster, started from their own state directory (`~/.cache/optimodel/scale-cluster`,
`$OPTIMODEL_SCALE_CLUSTER_DIR`) on their own loopback ports (paths.SIMULATED_PORTS), so the shared cluster
that other tests use is never loaded or touched. What is simulated: kwok (sigs.k8s.io/kwok, built from the
Go module proxy, build.py) keeps the nodes it manages Ready (node leases) and moves the pods bound to them
through their lifecycle with its stock "fast" stages: a pod becomes Running and Ready as soon as it is
bound, a Job's pod Succeeded, a deleted pod goes. No node agent, kube-proxy, CoreDNS, Prometheus or S3
store runs in it.

kwok manages only nodes annotated `kwok.x-k8s.io/node: fake`; `node()` makes such a node, labelled with
its pool and tainted so that only pods that tolerate simulation land there.

kwok's stages are YAML files published in its Go module (kustomize/stage/...); they are copied once from
the module cache into `~/.cache/optimodel/kwok/<version>/stages/` (go_modules.py), like the Gateway API CRDs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from . import components, go_modules
from .build import binaries_dir, build, build_kwok, kwok_binary
from .cluster import LocalCluster
from .paths import KWOK_VERSION, SIMULATED_PORTS, LocalClusterError, Ports, cache_root

Report = Callable[[str], None]

MODULE = "sigs.k8s.io/kwok"
# The stages kwokctl itself configures by default: nodes Ready at once and kept so by their Lease; pods
# Ready once bound, Jobs' pods completed, deleted pods removed.
STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
TAINT_KEY = "kwok.x-k8s.io/node"
POOL_LABEL = "optimodel.io/pool"
# kwok hands out pod addresses from here: away from the shared cluster's pod (10.244/16) and service
# (10.96/16) networks, though nothing routes to them (no container runs).
POD_CIDR = "10.252.0.0/16"
NODE_LEASE_SECONDS = 40
# The simulated cluster's components, in start order (`down` goes the other way).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def default_state_dir() -> Path:
    return Path(os.environ.get("OPTIMODEL_SCALE_CLUSTER_DIR", cache_root() / "scale-cluster"))


def stages_dir(version: str = KWOK_VERSION) -> Path:
    return cache_root() / "kwok" / version / "stages"


def fetch_stages(report: Report = lambda _: None) -> Path:
    """kwok's stage files from its Go module, copied once into the cache; returns their folder."""
    target = stages_dir()
    if go_modules.is_cached(target) and all((target / Path(name).name).is_file() for name in STAGE_FILES):
        return target
    report(f"fetching kwok {KWOK_VERSION}'s stages from the Go module proxy (first time only)")
    module_dir, info = go_modules.download(MODULE, KWOK_VERSION, "kwok's stages")
    missing = [name for name in STAGE_FILES if not (module_dir / name).is_file()]
    if missing:
        raise LocalClusterError(f"{MODULE}@{KWOK_VERSION} has no {', '.join(missing)}")
    return go_modules.cache_copy(target, [module_dir / name for name in STAGE_FILES], info, "kustomize/stage")


def argv(kubeconfig: Path, stages: Path, ports: Ports) -> list[str]:
    config = [f"--config={stages / Path(name).name}" for name in STAGE_FILES]
    return [
        str(kwok_binary()),
        f"--kubeconfig={kubeconfig}",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}",
        f"--cidr={POD_CIDR}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--server-address={components.LOOPBACK}:{ports.kwok}",
        *config,
    ]


def node(name: str, pool: str, cpu: str = "32", memory: str = "256Gi", pods: str = "110") -> dict[str, Any]:
    """A node kwok manages: labelled with its pool, tainted so only pods that tolerate simulation land there."""
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {POOL_LABEL: pool, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"},
        },
        "spec": {"taints": [{"key": TAINT_KEY, "value": NODE_ANNOTATION_VALUE, "effect": "NoSchedule"}]},
        "status": {"allocatable": resources, "capacity": resources},
    }


# What a pod (an OptimizedModel's node pool) needs to land on a simulated node.
TOLERATION = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


class SimulatedCluster(LocalCluster):
    """The control plane of a LocalCluster, with kwok in place of the node agent, in a state dir of its own."""

    def __init__(self, state_dir: Path | None = None, ports: Ports = SIMULATED_PORTS,
                 controller_manager_qps: int | None = None) -> None:
        """`controller_manager_qps`: kube-controller-manager's client rate (its default is 20 requests/s, burst
        30), raised as clusters of hundreds of nodes raise it; None keeps the default."""
        if ports.apiserver == Ports().apiserver:
            raise LocalClusterError("a simulated cluster needs ports of its own (paths.SIMULATED_PORTS)")
        super().__init__(Path(state_dir) if state_dir else default_state_dir(), ports)
        self.controller_manager_qps = controller_manager_qps

    def controller_manager_argv(self) -> list[str]:
        argv = components.controller_manager_argv(self.config)
        if self.controller_manager_qps:
            argv += [f"--kube-api-qps={self.controller_manager_qps}",
                     f"--kube-api-burst={2 * self.controller_manager_qps}"]
        return argv

    def up(self, report: Report = lambda _: None, build_output: Report = lambda _: None,
           timeout: float = 120) -> None:
        if not (binaries_dir() / "kube-apiserver").is_file():
            report("building Kubernetes from the Go module proxy (first time only)")
        build(on_output=build_output)
        build_kwok(on_output=build_output)
        stages = fetch_stages(report)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        report("certificates and kubeconfigs")
        self._write_credentials()
        deadline = time.monotonic() + timeout
        self._ensure("etcd", components.etcd_argv(self.config), self.ports.etcd_client, report, deadline)
        self._ensure("kube-apiserver", components.apiserver_argv(self.config), self.ports.apiserver, report, deadline)
        self._ensure("kube-controller-manager", self.controller_manager_argv(), self.ports.controller_manager,
                     report, deadline)
        self._ensure("kube-scheduler", components.scheduler_argv(self.config), self.ports.scheduler,
                     report, deadline)
        self._ensure("kwok", argv(self.kubeconfig, stages, self.ports), self.ports.kwok, report, deadline)
        report("waiting for the default ServiceAccount")
        self._wait(self._default_service_account, deadline, "the default ServiceAccount", "kube-controller-manager")
        report("simulated cluster ready")

    def _healthy(self, name: str) -> bool:
        if name == "kwok":
            try:
                return httpx.get(f"http://{components.LOOPBACK}:{self.ports.kwok}/healthz",
                                 timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False
        return super()._healthy(name)

    def add_nodes(self, names: list[str], pool: str) -> None:
        import json

        documents = {"apiVersion": "v1", "kind": "List", "items": [node(name, pool) for name in names]}
        self.kubectl("apply", "-f", "-", input=json.dumps(documents), timeout=300)

    def is_up(self) -> bool:
        return all(self.process(name).is_running() and self._healthy(name) for name in COMPONENTS)

    def down(self, report: Report = lambda _: None) -> None:
        """Stop this instance's processes only (no pod network, nftables or bridge of the host is touched:
        the shared cluster owns those)."""
        extras = sorted(p.stem for p in self.layout.run.glob("*.pid") if p.stem not in COMPONENTS)
        for name in [*extras, *reversed(COMPONENTS)]:
            if self.process(name).stop(timeout=10):
                report(f"{name}: stopped")
        for pid in self._stray_pids():
            report(f"stopping stray process {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def leftovers(self) -> list[str]:
        found = [f"{name} still running" for name in COMPONENTS if self.process(name).is_running()]
        return found + [f"process {pid} of this cluster still running" for pid in self._stray_pids()]
