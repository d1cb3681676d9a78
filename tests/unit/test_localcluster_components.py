"""The local cluster's flags, identities and pins, checked without starting anything."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from optimodel_localcluster import components, prometheus_discovery
from optimodel_localcluster.build import GOBUILD_DIR, _ldflags
from optimodel_localcluster.components import ControlPlaneConfig
from optimodel_localcluster.paths import KUBERNETES_VERSION, Ports, StateLayout
from optimodel_localcluster.pki import ensure_pki
from optimodel_localcluster.processes import ManagedProcess, group_members


@pytest.fixture
def config(tmp_path: Path) -> ControlPlaneConfig:
    return ControlPlaneConfig(StateLayout(tmp_path), Ports(), tmp_path / "bin")


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv[1:] if arg.startswith("--") and "=" in arg)


def test_go_module_pins_the_same_kubernetes_release_as_the_code() -> None:
    go_mod = (GOBUILD_DIR / "go.mod").read_text()
    assert f"k8s.io/kubernetes {KUBERNETES_VERSION}" in go_mod
    staging = re.findall(r"(k8s\.io/[a-z-]+) => (k8s\.io/[a-z-]+) (v\S+)", go_mod)
    assert len(staging) >= 30, "the staging replace list is incomplete"
    minor_patch = KUBERNETES_VERSION.split(".", 1)[1]
    assert all(src == dst and version == f"v0.{minor_patch}" for src, dst, version in staging)
    assert (GOBUILD_DIR / "go.sum").stat().st_size > 0


def test_binaries_carry_the_release_version() -> None:
    assert f"k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}" in _ldflags(KUBERNETES_VERSION)


def test_apiserver_is_secured_like_a_real_one(config: ControlPlaneConfig) -> None:
    flags = _flags(components.apiserver_argv(config))
    assert flags["authorization-mode"] == "Node,RBAC"
    # Loopback for the host's kubeconfigs and the bridge address for pods (the `kubernetes` Service's endpoint).
    assert flags["bind-address"] == "0.0.0.0"
    assert flags["advertise-address"] == components.BRIDGE_ADDRESS == "10.244.0.1"
    assert flags["service-cluster-ip-range"] == components.SERVICE_CIDR
    for tls in ("tls-cert-file", "tls-private-key-file", "client-ca-file", "service-account-key-file",
                "service-account-signing-key-file", "kubelet-certificate-authority"):
        assert Path(flags[tls]).parent == config.layout.pki
    assert "insecure-port" not in flags


def test_apiserver_certificate_names_every_address_clients_use() -> None:
    apiserver = next(r for r in components.CERTIFICATES if r.name == "apiserver")
    assert {"127.0.0.1", "10.96.0.1", "10.244.0.1"} <= set(apiserver.ip_addresses)
    assert {"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(apiserver.dns_names)


def test_pki_reissues_a_certificate_that_lacks_a_requested_address(tmp_path: Path) -> None:
    from optimodel_localcluster.pki import CertificateRequest

    old = CertificateRequest("apiserver", "kube-apiserver", server=True, ip_addresses=("127.0.0.1",))
    pki = ensure_pki(tmp_path, [old])
    first = pki.cert("apiserver").read_bytes()
    assert ensure_pki(tmp_path, [old]).cert("apiserver").read_bytes() == first  # kept while it says the same
    new = CertificateRequest("apiserver", "kube-apiserver", server=True, ip_addresses=("127.0.0.1", "10.244.0.1"))
    cert = x509.load_pem_x509_certificate(ensure_pki(tmp_path, [new]).cert("apiserver").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.244.0.1"}


def test_kube_proxy_programs_nftables_with_its_own_identity(config: ControlPlaneConfig) -> None:
    argv = components.kube_proxy_argv(config)
    assert argv[0].endswith("/kube-proxy")
    flags = _flags(argv)
    assert flags["proxy-mode"] == "nftables"
    assert flags["kubeconfig"].endswith("kube-proxy.kubeconfig")
    assert flags["cluster-cidr"] == components.POD_CIDR
    assert flags["healthz-bind-address"] == f"127.0.0.1:{config.ports.kube_proxy_healthz}"
    # Host-wide conntrack settings are left alone.
    assert flags["conntrack-max-per-core"] == "0"
    assert flags["conntrack-tcp-timeout-established"] == "0"
    identity = next(r for r in components.CERTIFICATES if r.name == "kube-proxy")
    assert identity.common_name == "system:kube-proxy" and identity.client  # bound to system:node-proxier
    assert components.KUBECONFIG_IDENTITIES["kube-proxy"] == "kube-proxy"


def test_coredns_serves_the_cluster_domain_on_the_bridge_behind_kube_dns(config: ControlPlaneConfig) -> None:
    corefile = components.coredns_corefile(config)
    assert f"bind {components.BRIDGE_ADDRESS}" in corefile
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert f"kubeconfig {config.layout.kubeconfig_for('coredns')}" in corefile
    assert "forward . /etc/resolv.conf" in corefile
    assert f"ready 127.0.0.1:{config.ports.coredns_ready}" in corefile
    service, endpoints = yaml.safe_load_all(components.KUBE_DNS_SERVICE)
    assert service["spec"]["clusterIP"] == components.CLUSTER_DNS_IP == "10.96.0.10"
    assert "selector" not in service["spec"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert endpoints["endpoints"][0]["addresses"] == [components.BRIDGE_ADDRESS]
    assert {(p["protocol"], p["port"]) for p in endpoints["ports"]} == {("UDP", 53), ("TCP", 53)}
    rules = yaml.safe_load_all(components.COREDNS_RBAC).__next__()["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} == {"list", "watch"}


def test_coredns_module_pins_the_release_the_code_names() -> None:
    from optimodel_localcluster.build import COREDNS_GOBUILD_DIR
    from optimodel_localcluster.paths import COREDNS_VERSION

    assert f"github.com/coredns/coredns {COREDNS_VERSION}" in (COREDNS_GOBUILD_DIR / "go.mod").read_text()
    assert "k8s.io/kubernetes/cmd/kube-proxy" in (GOBUILD_DIR / "go.mod").read_text()


def test_controller_manager_signs_service_accounts_and_never_allocates_cidrs(config: ControlPlaneConfig) -> None:
    flags = _flags(components.controller_manager_argv(config))
    assert flags["service-account-private-key-file"].endswith("sa.key")
    assert flags["use-service-account-credentials"] == "true"
    assert flags["allocate-node-cidrs"] == "false"
    assert flags["kubeconfig"].endswith("controller-manager.kubeconfig")


def test_prometheus_listens_where_host_and_pods_reach_it(config: ControlPlaneConfig) -> None:
    argv = components.prometheus_argv(config, "prometheus")
    assert f"--web.listen-address=10.244.0.1:{config.ports.prometheus}" in argv
    documents = list(yaml.safe_load_all(components.prometheus_service(config)))
    service = next(d for d in documents if d["kind"] == "Service")
    endpoints = next(d for d in documents if d["kind"] == "EndpointSlice")
    assert (service["metadata"]["namespace"], service["metadata"]["name"]) == ("monitoring", "prometheus")
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "prometheus"
    assert endpoints["endpoints"][0]["addresses"] == ["10.244.0.1"]
    assert endpoints["ports"][0]["port"] == config.ports.prometheus
    assert service["spec"]["ports"][0]["name"] == endpoints["ports"][0]["name"]
    assert components.PROMETHEUS_IN_CLUSTER_URL.endswith(":9090")


def test_prometheus_reads_pods_from_the_discovery_file_and_may_only_read(config: ControlPlaneConfig) -> None:
    scrape = components.prometheus_config(config)["scrape_configs"][0]
    assert scrape["file_sd_configs"][0]["files"] == [str(components.prometheus_targets_file(config))]
    argv = components.prometheus_discovery_argv(config)
    assert argv[argv.index("--kubeconfig") + 1].endswith("prometheus.kubeconfig")
    rbac = list(yaml.safe_load_all(components.PROMETHEUS_RBAC))
    verbs = {verb for rule in rbac[0]["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}, "Prometheus must only read"
    assert not any("secrets" in rule.get("resources", []) for rule in rbac[0]["rules"])


def _pod(annotations: dict[str, str], phase: str = "Running", ip: str | None = "10.244.1.5") -> dict:
    return {
        "metadata": {"name": "srv-1", "namespace": "ml", "annotations": annotations,
                     "labels": {"app.kubernetes.io/name": "srv"}},
        "spec": {"nodeName": "cpu-0", "containers": [{"ports": [{"containerPort": 9000}]}]},
        "status": {"phase": phase, "podIP": ip},
    }


@pytest.mark.parametrize(
    ("pod", "target", "path"),
    [
        (_pod({"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}), "10.244.1.5:8080", "/metrics"),
        (_pod({"prometheus.io/scrape": "true", "prometheus.io/path": "/m"}), "10.244.1.5:9000", "/m"),
        (_pod({"prometheus.io/scrape": "false"}), None, None),
        (_pod({}), None, None),
        (_pod({"prometheus.io/scrape": "true"}, phase="Pending"), None, None),
        (_pod({"prometheus.io/scrape": "true"}, ip=None), None, None),
    ],
)
def test_discovery_follows_the_usual_annotations(pod: dict, target: str | None, path: str | None) -> None:
    group = prometheus_discovery.scrape_target(pod)
    if target is None:
        assert group is None
        return
    assert group is not None
    assert group["targets"] == [target]
    labels = group["labels"]
    assert labels["__metrics_path__"] == path
    assert (labels["namespace"], labels["pod"], labels["node"]) == ("ml", "srv-1", "cpu-0")
    assert labels["app_kubernetes_io_name"] == "srv"


def test_pki_issues_the_expected_identities_and_keeps_them_across_restarts(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki", list(components.CERTIFICATES))
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.cert("admin").read_bytes())
    assert admin.issuer == ca.subject
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    serving = x509.load_pem_x509_certificate(pki.cert("apiserver").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    prometheus = x509.load_pem_x509_certificate(pki.cert("prometheus").read_bytes())
    assert not prometheus.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME), "no admin group"
    assert (pki.ca_key.stat().st_mode & 0o077) == 0, "private keys are private"
    before = pki.cert("admin").read_bytes()
    ensure_pki(tmp_path / "pki", list(components.CERTIFICATES))
    assert pki.cert("admin").read_bytes() == before


def test_kubeconfig_names_files_so_renewed_certificates_apply(tmp_path: Path) -> None:
    doc = components.kubeconfig_document("https://127.0.0.1:16443", tmp_path / "ca.crt", tmp_path / "a.crt",
                                         tmp_path / "a.key", "admin")
    components.write_kubeconfig(tmp_path / "kubeconfig", doc)
    loaded = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    assert loaded["users"][0]["user"]["client-certificate"] == str(tmp_path / "a.crt")
    assert (tmp_path / "kubeconfig").stat().st_mode & 0o077 == 0


def test_managed_process_stops_its_whole_group_and_forgets_a_reused_pid(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")
    # A parent that starts a child: both must go when the component is stopped.
    pid = process.start([sys.executable, "-c",
                         "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
    time.sleep(0.5)
    assert len(group_members(pid)) == 2
    assert process.is_running()
    assert process.stop(timeout=5)
    assert not process.is_running()
    assert group_members(pid) == []
    assert process.stop() is False, "a second stop is harmless"
    # A pid file that names another process (same pid, other start time) is not ours.
    process.pid_file.write_text('{"pid": 1, "starttime": 999999999, "argv0": "x"}')
    assert process.pid() is None
