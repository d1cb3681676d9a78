"""What each control-plane component is started with: pure functions from the layout to argv.

Kept apart from process handling so the flags can be read (and tested) in one place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import prometheus_rules
from .paths import Ports, StateLayout
from .pki import CertificateRequest

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOOPBACK = "127.0.0.1"
# The host's address on the pod bridge (omc0): the pods' gateway, and where pods reach host-side
# components: the API server (the `kubernetes` Service's endpoint) and CoreDNS (behind `kube-dns`).
BRIDGE_ADDRESS = "10.244.0.1"
BRIDGE_NAME = "omc0"
# The first address of the service range: the `kubernetes` Service in `default`, as in every cluster.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# kube-system/kube-dns, the address every pod's resolv.conf names (kubeadm's choice: the 10th address).
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# kube-proxy runs once for the whole host (one pod network); it takes this node's name for
# "local endpoint" decisions (internal/externalTrafficPolicy: Local).
KUBE_PROXY_NODE = "cpu-0"

# Identities, kubeadm style: CN is the user, O the groups RBAC sees.
CERTIFICATES: tuple[CertificateRequest, ...] = (
    CertificateRequest(
        "apiserver", "kube-apiserver", server=True,
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"),
        ip_addresses=(LOOPBACK, KUBERNETES_SERVICE_IP, BRIDGE_ADDRESS),
    ),
    CertificateRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True),
    CertificateRequest("admin", "optimodel-admin", ("system:masters",), client=True),
    CertificateRequest("controller-manager", "system:kube-controller-manager", client=True),
    CertificateRequest("scheduler", "system:kube-scheduler", client=True),
    # The node agent registers nodes, leases and the status of every pod on them; it is given the
    # admin group rather than per-node identities because one process serves several nodes.
    CertificateRequest("node-agent", "optimodel:node-agent", ("system:masters",), client=True),
    CertificateRequest("prometheus", "optimodel:prometheus", client=True),
    # The built-in ClusterRoleBinding system:node-proxier grants this user what kube-proxy needs.
    CertificateRequest("kube-proxy", "system:kube-proxy", client=True),
    CertificateRequest("coredns", "optimodel:coredns", client=True),
    CertificateRequest("kubelet-serving", "optimodel-node-agent", server=True,
                       dns_names=("localhost",), ip_addresses=(LOOPBACK,)),
)

# Client identities that get a kubeconfig of their own.
KUBECONFIG_IDENTITIES = {
    "admin": "admin",
    "controller-manager": "controller-manager",
    "scheduler": "scheduler",
    "node-agent": "node-agent",
    "prometheus": "prometheus",
    "kube-proxy": "kube-proxy",
    "coredns": "coredns",
}


@dataclass(frozen=True)
class ControlPlaneConfig:
    layout: StateLayout
    ports: Ports
    bin_dir: Path

    @property
    def apiserver_url(self) -> str:
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


def kubeconfig_document(server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str) -> dict:
    """A kubeconfig that names files rather than embedding them, so renewed certificates apply at once."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "optimodel-local",
                      "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user,
                   "user": {"client-certificate": str(client_cert), "client-key": str(client_key)}}],
        "contexts": [{"name": "optimodel-local",
                      "context": {"cluster": "optimodel-local", "user": user, "namespace": "default"}}],
        "current-context": "optimodel-local",
    }


def write_kubeconfig(path: Path, document: dict) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


def etcd_argv(cfg: ControlPlaneConfig) -> list[str]:
    client = f"http://{LOOPBACK}:{cfg.ports.etcd_client}"
    peer = f"http://{LOOPBACK}:{cfg.ports.etcd_peer}"
    # Loopback only, no TLS: nothing but the API server on this machine talks to it.
    return [
        cfg.binary("etcd"),
        "--name=optimodel-local",
        f"--data-dir={cfg.layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=optimodel-local={peer}",
        "--listen-metrics-urls=",
        # A throwaway development store: fsync on every write costs seconds on shared disks.
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def apiserver_argv(cfg: ControlPlaneConfig) -> list[str]:
    pki = cfg.layout.pki
    return [
        cfg.binary("kube-apiserver"),
        f"--etcd-servers=http://{LOOPBACK}:{cfg.ports.etcd_client}",
        # Every address, as kubeadm's API server: 127.0.0.1 for the host's clients (kubeconfigs) and the
        # bridge address for pods, which reach it through the `kubernetes` Service (10.96.0.1:443),
        # whose endpoint is the advertised address.
        "--bind-address=0.0.0.0",
        f"--advertise-address={BRIDGE_ADDRESS}",
        f"--secure-port={cfg.ports.apiserver}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        "--anonymous-auth=true",  # only /healthz, /livez, /readyz, /version are open, as in kubeadm
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--allow-privileged=true",
        "--profiling=false",
        "--event-ttl=1h",
        f"--cert-dir={pki / 'apiserver-generated'}",
    ]


def _component_common(cfg: ControlPlaneConfig, identity: str, port: int) -> list[str]:
    kubeconfig = cfg.layout.kubeconfig_for(identity)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--cert-dir={cfg.layout.pki / (identity + '-generated')}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_argv(cfg: ControlPlaneConfig) -> list[str]:
    pki = cfg.layout.pki
    return [
        cfg.binary("kube-controller-manager"),
        *_component_common(cfg, "controller-manager", cfg.ports.controller_manager),
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--cluster-cidr={POD_CIDR}",
        # The node agent assigns each node's pod CIDR itself (as a kubelet with a static CIDR would).
        "--allocate-node-cidrs=false",
        "--controllers=*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        # Short enough that tests see dead nodes and finished Jobs quickly, long enough for a busy 2-core box.
        "--node-monitor-grace-period=40s",
        "--terminated-pod-gc-threshold=200",
    ]


def scheduler_argv(cfg: ControlPlaneConfig) -> list[str]:
    return [cfg.binary("kube-scheduler"), *_component_common(cfg, "scheduler", cfg.ports.scheduler)]


def node_agent_argv(cfg: ControlPlaneConfig) -> list[str]:
    return [
        sys.executable, "-m", "optimodel_localcluster.node_agent", "run",
        "--kubeconfig", str(cfg.layout.kubeconfig_for("node-agent")),
        "--state-dir", str(cfg.layout.root),
    ]


def kube_proxy_argv(cfg: ControlPlaneConfig) -> list[str]:
    """kube-proxy in nftables mode (Debian's `nft`): Service ClusterIPs (and NodePorts on the bridge
    address) routed for the host and every pod namespace. Host-wide conntrack sysctls are left as they are."""
    return [
        cfg.binary("kube-proxy"),
        f"--kubeconfig={cfg.layout.kubeconfig_for('kube-proxy')}",
        "--proxy-mode=nftables",
        f"--hostname-override={KUBE_PROXY_NODE}",
        f"--bind-address={BRIDGE_ADDRESS}",
        f"--cluster-cidr={POD_CIDR}",
        "--detect-local-mode=ClusterCIDR",
        f"--nodeport-addresses={BRIDGE_ADDRESS}/32",
        f"--healthz-bind-address={LOOPBACK}:{cfg.ports.kube_proxy_healthz}",
        f"--metrics-bind-address={LOOPBACK}:{cfg.ports.kube_proxy_metrics}",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--oom-score-adj=0",
        "--profiling=false",
    ]


def coredns_corefile(cfg: ControlPlaneConfig) -> str:
    """Cluster DNS as kubeadm configures CoreDNS, served on the bridge address (behind kube-dns' ClusterIP).

    Names outside cluster.local go to the host's own resolvers (CoreDNS runs on the host, so
    /etc/resolv.conf here is the host's)."""
    kubeconfig = cfg.layout.kubeconfig_for("coredns")
    return f"""\
.:53 {{
    bind {BRIDGE_ADDRESS}
    errors
    health {LOOPBACK}:{cfg.ports.coredns_health}
    ready {LOOPBACK}:{cfg.ports.coredns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} optimodel-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
    loadbalance
}}
"""


def coredns_argv(cfg: ControlPlaneConfig, coredns_binary: str) -> list[str]:
    return [coredns_binary, "-conf", str(cfg.layout.root / "Corefile")]


# kube-system/kube-dns: CoreDNS runs on the host, so the Service has no selector and its one
# EndpointSlice (kept by `up`) names the bridge address, as a Service for an external backend does.
KUBE_DNS_SERVICE = f"""\
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/name: CoreDNS, kubernetes.io/cluster-service: "true"}}
spec:
  clusterIP: {CLUSTER_DNS_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
  - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: optimodel-localcluster
addressType: IPv4
endpoints:
- addresses: ["{BRIDGE_ADDRESS}"]
  conditions: {{ready: true}}
ports:
- {{name: dns, port: 53, protocol: UDP}}
- {{name: dns-tcp, port: 53, protocol: TCP}}
"""

# monitoring/prometheus: the host's Prometheus as pods find it (prometheus.monitoring.svc:9090), the way a
# cluster's own Prometheus usually is; like kube-dns, a selector-less Service with one EndpointSlice.
PROMETHEUS_SERVICE_PORT = 9090
PROMETHEUS_IN_CLUSTER_URL = f"http://prometheus.monitoring.svc.cluster.local:{PROMETHEUS_SERVICE_PORT}"


def host_service(namespace: str, name: str, app: str, port_name: str, port: int, address: str,
                 target_port: int) -> str:
    """A process of this host as pods find it: its namespace, a selector-less Service and the EndpointSlice that
    names the host's address on the pod bridge (as kube-dns): Prometheus, the S3 store."""
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app.kubernetes.io/name: {app}, app.kubernetes.io/managed-by: optimodel-localcluster}}
spec:
  ports:
  - {{name: {port_name}, port: {port}, protocol: TCP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-host
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {name}
    endpointslice.kubernetes.io/managed-by: optimodel-localcluster
addressType: IPv4
endpoints:
- addresses: ["{address}"]
  conditions: {{ready: true}}
ports:
- {{name: {port_name}, port: {target_port}, protocol: TCP}}
"""


def prometheus_service(cfg: ControlPlaneConfig) -> str:
    return host_service("monitoring", "prometheus", "prometheus", "http", PROMETHEUS_SERVICE_PORT, BRIDGE_ADDRESS,
                        cfg.ports.prometheus)


# What CoreDNS' kubernetes plugin reads (kubeadm's system:coredns role), nothing more.
COREDNS_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "optimodel:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "optimodel:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "optimodel:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "optimodel:coredns"}
"""


def prometheus_targets_file(cfg: ControlPlaneConfig) -> Path:
    return cfg.layout.root / "prometheus-targets" / "pods.json"


def prometheus_discovery_argv(cfg: ControlPlaneConfig) -> list[str]:
    return [
        sys.executable, "-m", "optimodel_localcluster.prometheus_discovery",
        "--kubeconfig", str(cfg.layout.kubeconfig_for("prometheus")),
        "--output", str(prometheus_targets_file(cfg)),
    ]


def prometheus_config(cfg: ControlPlaneConfig, scrape_interval: str = "1s") -> dict:
    """Scrape every pod that asks for it with the usual `prometheus.io/*` annotations.

    Debian's build has no Kubernetes service discovery, so pods come from the file that
    `prometheus_discovery` keeps (see there); the labels are those kubernetes_sd relabelling gives.
    """
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        # optimodel's alerts (prometheus_rules: the chart's rule file, written by `up`).
        "rule_files": [str(prometheus_rules.rules_path(cfg.layout.root))],
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(prometheus_targets_file(cfg))], "refresh_interval": "5s"}],
                # The operator's series carry the model's `namespace`, which must win over its pod's
                # (as the chart's ServiceMonitor says with honorLabels); model servers export no such label.
                "honor_labels": True,
            }
        ],
    }


def prometheus_argv(cfg: ControlPlaneConfig, prometheus_binary: str) -> list[str]:
    return [
        prometheus_binary,
        f"--config.file={cfg.layout.root / 'prometheus.yml'}",
        f"--storage.tsdb.path={cfg.layout.prometheus_data}",
        # On the bridge address: the host reaches it there, and pods (the operator's rollout analysis)
        # through the monitoring/prometheus Service below.
        f"--web.listen-address={BRIDGE_ADDRESS}:{cfg.ports.prometheus}",
        "--storage.tsdb.retention.time=1d",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


# Least privilege for Prometheus: discover and scrape, nothing else.
PROMETHEUS_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "optimodel:prometheus"}
rules:
- apiGroups: [""]
  resources: [pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- nonResourceURLs: [/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "optimodel:prometheus"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "optimodel:prometheus"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "optimodel:prometheus"}
"""
