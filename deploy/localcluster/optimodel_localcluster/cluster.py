"""The local cluster as one object: bring it up, say how it is, take it down without leftovers.

`up` is idempotent and level-triggered like the rest of optimodel: each component that is
already running (and healthy) is kept, anything missing is (re)started, so `up` over a
half-dead cluster repairs it. `down` stops every process that belongs to this state directory,
recorded or stray, and asks the node agent to remove pod networks and mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from . import components, gateway_api, seaweedfs
from .helm import Helm
from . import prometheus_operator_crds, prometheus_rules
from .build import binaries_dir, build, coredns_binaries_dir, is_built
from .components import ControlPlaneConfig
from .paths import KUBERNETES_VERSION, LocalClusterError, Ports, StateLayout, default_state_dir
from .node_agent import network
from .node_agent.config import NodeAgentConfig
from .pki import ensure_pki
from .processes import ManagedProcess

Report = Callable[[str], None]

# Start order; `down` goes the other way.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent",
              "kube-proxy", "coredns", "prometheus-discovery", "prometheus", "seaweedfs")
EXPECTED_POOLS = ("cpu", "gpu")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    detail: str


def _quiet(_: str) -> None:
    pass


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((components.LOOPBACK, port)) == 0


def _same_command(recorded: list[str], argv: list[str]) -> bool:
    """Same flags and the same program (`venv/bin/python` and `venv/bin/python3` are one interpreter)."""
    return (
        len(recorded) == len(argv)
        and os.path.realpath(recorded[0]) == os.path.realpath(argv[0])
        and recorded[1:] == argv[1:]
    )


class LocalCluster:
    def __init__(self, state_dir: Path | None = None, ports: Ports | None = None) -> None:
        self.layout = StateLayout(Path(state_dir) if state_dir else default_state_dir())
        self.ports = ports or Ports()
        self.config = ControlPlaneConfig(self.layout, self.ports, binaries_dir())

    # --- what a user or a test needs -------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    @property
    def apiserver_url(self) -> str:
        return self.config.apiserver_url

    @property
    def prometheus_url(self) -> str:
        return f"http://{components.BRIDGE_ADDRESS}:{self.ports.prometheus}"

    @property
    def s3_endpoint(self) -> str:
        """The S3 gateway as the host reaches it (pods: seaweedfs.IN_CLUSTER_ENDPOINT)."""
        return seaweedfs.host_endpoint(components.BRIDGE_ADDRESS)

    @property
    def helm(self) -> Helm:
        """Helm (built from the Go module proxy) against this cluster."""
        return Helm(self.kubeconfig, self.layout.root / "helm")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.config.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise LocalClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name, self.layout.run, self.layout.logs)

    # --- up --------------------------------------------------------------------------------
    def up(self, report: Report = _quiet, build_output: Report = _quiet, timeout: float = 180) -> None:
        if not is_built():
            report(f"building Kubernetes {KUBERNETES_VERSION}, etcd and CoreDNS from the Go module proxy (first time only)")
        build(on_output=build_output)
        if not seaweedfs.is_built():
            report(f"building SeaweedFS {seaweedfs.SEAWEEDFS_VERSION} (the S3 store) from the Go module proxy "
                   "(first time only)")
        weed = seaweedfs.build(on_output=build_output)
        # Fetched before the start deadline runs: the first time, it comes over the network.
        gateway_api.fetch(report=report)
        prometheus_operator_crds.fetch(report=report)
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            raise LocalClusterError(
                "Prometheus is not installed: run `deploy/bootstrap.sh` (it installs Debian's `prometheus`)"
            )
        if shutil.which("ip") is None:
            raise LocalClusterError("`ip` (iproute2) is missing: run `deploy/bootstrap.sh`")
        if shutil.which("nft") is None:
            raise LocalClusterError("`nft` (nftables, for kube-proxy) is missing: run `deploy/bootstrap.sh`")
        # The pod bridge first: the API server advertises its address, CoreDNS binds to it.
        agent_config = NodeAgentConfig()
        try:
            network.prepare_host(agent_config.bridge_name, agent_config.bridge_address, agent_config.pod_network,
                                 agent_config.service_network)
        except network.NetworkError as error:
            raise LocalClusterError(f"cannot prepare the pod network: {error}") from error
        report("certificates and kubeconfigs")
        self._write_credentials()
        prometheus_rules.write(prometheus_rules.rules_path(self.layout.root))
        (self.layout.root / "prometheus.yml").write_text(
            yaml.safe_dump(components.prometheus_config(self.config), sort_keys=False)
        )
        (self.layout.root / "Corefile").write_text(components.coredns_corefile(self.config))
        s3_writer, s3_reader = seaweedfs.ensure_identities(self.layout)
        deadline = time.monotonic() + timeout
        self._ensure("etcd", components.etcd_argv(self.config), self.ports.etcd_client, report, deadline)
        self._ensure("kube-apiserver", components.apiserver_argv(self.config), self.ports.apiserver, report, deadline)
        self.kubectl("apply", "-f", "-", input=components.PROMETHEUS_RBAC)
        self.kubectl("apply", "-f", "-", input=components.COREDNS_RBAC)
        self.kubectl("apply", "-f", "-", input=components.KUBE_DNS_SERVICE)
        self.kubectl("apply", "-f", "-", input=components.prometheus_service(self.config))
        seaweedfs.install(self.kubectl, components.BRIDGE_ADDRESS, s3_writer, s3_reader)
        gateway_api.install(self.kubectl, report=report, timeout=max(deadline - time.monotonic(), 30))
        prometheus_operator_crds.install(self.kubectl, report=report,
                                         timeout=max(deadline - time.monotonic(), 30))
        self._ensure("kube-controller-manager", components.controller_manager_argv(self.config),
                     self.ports.controller_manager, report, deadline)
        self._ensure("kube-scheduler", components.scheduler_argv(self.config), self.ports.scheduler,
                     report, deadline)
        self._ensure("node-agent", components.node_agent_argv(self.config), None, report, deadline)
        self._ensure("kube-proxy", components.kube_proxy_argv(self.config), self.ports.kube_proxy_healthz,
                     report, deadline)
        self._ensure("coredns", components.coredns_argv(self.config, str(coredns_binaries_dir() / "coredns")),
                     self.ports.coredns_ready, report, deadline)
        self._ensure("prometheus-discovery", components.prometheus_discovery_argv(self.config), None, report,
                     deadline)
        self._ensure("prometheus", components.prometheus_argv(self.config, prometheus),
                     self.ports.prometheus, report, deadline)
        # A Prometheus kept running reads the configuration and rules just written only when told to.
        reloaded = httpx.post(f"{self.prometheus_url}/-/reload", timeout=30)
        if reloaded.status_code != 200:
            raise LocalClusterError(f"Prometheus refused its configuration or rules: {reloaded.text.strip()}")
        self._ensure("seaweedfs", seaweedfs.argv(self.layout, str(weed), components.BRIDGE_ADDRESS),
                     seaweedfs.S3Ports().master, report, deadline)
        self._wait(lambda: seaweedfs.ensure_bucket(self.s3_endpoint, s3_writer), deadline,
                   f"the S3 bucket {seaweedfs.BUCKET}", "seaweedfs")
        report("waiting for the nodes to be Ready and the default ServiceAccount to exist")
        self._wait(lambda: self._nodes_ready() and self._default_service_account(), deadline,
                   "nodes Ready and default ServiceAccount", "node-agent")
        report("cluster ready")

    def _write_credentials(self) -> None:
        pki = ensure_pki(self.layout.pki, list(components.CERTIFICATES))
        for identity, cert_name in components.KUBECONFIG_IDENTITIES.items():
            path = self.layout.admin_kubeconfig if identity == "admin" else self.layout.kubeconfig_for(identity)
            components.write_kubeconfig(
                path,
                components.kubeconfig_document(
                    self.apiserver_url, pki.ca_cert, pki.cert(cert_name), pki.key(cert_name), identity
                ),
            )

    def _ensure(self, name: str, argv: list[str], port: int | None, report: Report, deadline: float) -> None:
        process = self.process(name)
        recorded = process.recorded_argv()
        if process.is_running() and recorded is not None and not _same_command(recorded, argv):
            # Started with other flags (an older checkout): the level-triggered repair is a restart.
            report(f"{name}: running with other flags, restarting")
            process.stop()
        elif process.is_running() and self._healthy(name):
            report(f"{name}: already running")
            return
        if process.is_running():
            # Running but not answering: a restart is the level-triggered repair.
            report(f"{name}: running but unhealthy, restarting")
            process.stop()
        if port is not None and _port_in_use(port):
            raise LocalClusterError(
                f"port {port} for {name} is taken by a process this cluster did not start "
                f"(see `ss -ltnp 'sport = :{port}'`). If it is a leftover of an earlier cluster, run "
                f"`optimodel dev down`; otherwise stop that process."
            )
        report(f"{name}: starting")
        env = dict(os.environ)
        # The node agent runs pod commands from this environment: our venv's tools come first.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        process.start(argv, env=env)
        self._wait(lambda: self._healthy(name), deadline, f"{name} to become healthy", name)

    def _wait(self, check: Callable[[], bool], deadline: float, what: str, component: str) -> None:
        while time.monotonic() < deadline:
            if check():
                return
            if not self.process(component).is_running():
                raise LocalClusterError(
                    f"{component} exited while waiting for {what}. Last lines of "
                    f"{self.process(component).log_file}:\n{self.process(component).log_tail()}"
                )
            time.sleep(0.5)
        raise LocalClusterError(
            f"timed out waiting for {what}. Last lines of {self.process(component).log_file}:\n"
            f"{self.process(component).log_tail()}"
        )

    # --- health ----------------------------------------------------------------------------
    def _https(self) -> httpx.Client:
        pki = self.layout.pki
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(verify=context, timeout=2.0)

    def _healthy(self, name: str) -> bool:
        try:
            if name == "etcd":
                return httpx.get(f"http://{components.LOOPBACK}:{self.ports.etcd_client}/health",
                                 timeout=2.0).json().get("health") == "true"
            if name == "kube-apiserver":
                with self._https() as client:
                    return client.get(f"{self.apiserver_url}/readyz").status_code == 200
            if name in ("kube-controller-manager", "kube-scheduler"):
                port = self.ports.controller_manager if name == "kube-controller-manager" else self.ports.scheduler
                # Their serving certificates are self-signed (--cert-dir); /healthz is open to anyone.
                return httpx.get(f"https://{components.LOOPBACK}:{port}/healthz", verify=False,
                                 timeout=2.0).status_code == 200
            if name == "prometheus":
                return httpx.get(f"{self.prometheus_url}/-/ready", timeout=2.0).status_code == 200
            if name == "kube-proxy":
                # 200 once the rules are programmed from the current Services and EndpointSlices.
                return httpx.get(f"http://{components.LOOPBACK}:{self.ports.kube_proxy_healthz}/healthz",
                                 timeout=2.0).status_code == 200
            if name == "coredns":
                # Ready once its kubernetes plugin has synced Services.
                return httpx.get(f"http://{components.LOOPBACK}:{self.ports.coredns_ready}/ready",
                                 timeout=2.0).status_code == 200
            if name == "node-agent":
                return self._nodes_registered()
            if name == "seaweedfs":
                return httpx.get(f"{self.s3_endpoint}/healthz", timeout=2.0).status_code == 200
            if name == "prometheus-discovery":
                return components.prometheus_targets_file(self.config).exists()
        except (httpx.HTTPError, ValueError, OSError):
            return False
        return False

    def _nodes(self) -> list[dict]:
        result = self.kubectl("get", "nodes", "-l", "optimodel.io/pool", "-o", "json", check=False, timeout=10)
        if result.returncode != 0:
            return []
        return json.loads(result.stdout).get("items", [])

    def _nodes_registered(self) -> bool:
        pools = {node["metadata"].get("labels", {}).get("optimodel.io/pool") for node in self._nodes()}
        return all(pool in pools for pool in EXPECTED_POOLS)

    def _nodes_ready(self) -> bool:
        nodes = self._nodes()
        ready_pools = {
            node["metadata"]["labels"]["optimodel.io/pool"]
            for node in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
            and not any(t["key"].startswith("node.kubernetes.io/") for t in node.get("spec", {}).get("taints", []))
        }
        return all(pool in ready_pools for pool in EXPECTED_POOLS)

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False,
                            timeout=10).returncode == 0

    # --- status ----------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        statuses = []
        for name in COMPONENTS:
            pid = self.process(name).pid()
            healthy = pid is not None and self._healthy(name)
            detail = "healthy" if healthy else ("not answering" if pid else "stopped")
            statuses.append(ComponentStatus(name, pid is not None, healthy, pid, detail))
        return statuses

    def is_up(self) -> bool:
        return all(s.healthy for s in self.status()) and self._nodes_ready()

    # --- down ------------------------------------------------------------------------------
    def down(self, report: Report = _quiet) -> None:
        # Processes started beside the cluster (the demo's operator, say) go first, while the API is up.
        extras = sorted(p.stem for p in self.layout.run.glob("*.pid") if p.stem not in COMPONENTS)
        for name in [*extras, *reversed(COMPONENTS)]:
            if self.process(name).stop(timeout=15 if name == "node-agent" else 10):
                report(f"{name}: stopped")
        # Whatever the node agent could not clean on its way out (it may have been killed).
        cleanup = subprocess.run(
            [sys.executable, "-m", "optimodel_localcluster.node_agent", "cleanup",
             "--state-dir", str(self.layout.root)],
            capture_output=True, text=True, timeout=120,
        )
        if cleanup.returncode != 0:
            report(f"node agent cleanup reported a problem: {cleanup.stderr.strip()[-500:]}")
        for pid in self._stray_pids():
            report(f"stopping stray process {pid}")
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def leftovers(self) -> list[str]:
        """What a `down` should have removed and did not: running components, strays, bound ports,
        kube-proxy's nftables rules, the pod bridge."""
        found = [f"{name} still running" for name in COMPONENTS if self.process(name).is_running()]
        found += [f"process {pid} of this cluster still running" for pid in self._stray_pids()]
        ports = [self.ports.etcd_client, self.ports.etcd_peer, self.ports.apiserver,
                 self.ports.controller_manager, self.ports.scheduler, self.ports.prometheus,
                 self.ports.kube_proxy_healthz, self.ports.kube_proxy_metrics, self.ports.coredns_health,
                 self.ports.coredns_ready, *seaweedfs.S3Ports().all()]
        found += [f"port {port} still bound" for port in ports if _port_in_use(port)]
        found += [f"nftables table {table} (Service routing) still present" for table in network.kube_proxy_rules()]
        bridge = NodeAgentConfig().bridge_name
        if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0:
            found.append(f"bridge {bridge} still present")
        return found

    def _stray_pids(self) -> list[int]:
        """Processes started for this state directory that no pid file records any more."""
        marker = str(self.layout.root).encode()
        me = os.getpid()
        strays = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and b"optimodel_localcluster.node_agent\0cleanup" not in cmdline:
                strays.append(int(proc.name))
        return strays

    def wipe(self) -> None:
        """Remove the whole state (etcd data, certificates, logs): the next `up` starts from nothing."""
        self.down()
        shutil.rmtree(self.layout.root, ignore_errors=True)
