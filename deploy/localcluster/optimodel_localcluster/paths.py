"""Where the local cluster keeps things, the pinned versions and the fixed loopback ports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Keep in step with gobuild/go.mod (a unit test checks they agree).
KUBERNETES_VERSION = "v1.36.3"
# Keep in step with gobuild-coredns/go.mod (a unit test checks they agree).
COREDNS_VERSION = "v1.15.0"
# Helm v3 (gobuild-helm/go.mod pins the same version).
HELM_VERSION = "v3.22.0"
# kwok (simulated nodes and pod lifecycles, for the scale benchmark); gobuild-kwok/go.mod pins the same version.
KWOK_VERSION = "v0.8.0"


class LocalClusterError(RuntimeError):
    """Something the user must act on; the message says what."""


class GoBuildError(LocalClusterError):
    pass


def cache_root() -> Path:
    """Heavy, reusable things (compiled binaries, the virtualenv): `$OPTIMODEL_CACHE` or ~/.cache/optimodel."""
    return Path(os.environ.get("OPTIMODEL_CACHE", Path.home() / ".cache" / "optimodel"))


def default_state_dir() -> Path:
    """One cluster's state (etcd data, certificates, logs, pods): `$OPTIMODEL_CLUSTER_DIR` or under the cache."""
    return Path(os.environ.get("OPTIMODEL_CLUSTER_DIR", cache_root() / "dev-cluster"))


@dataclass(frozen=True)
class Ports:
    """Loopback ports; chosen away from the usual defaults so a real kubelet or etcd never collides."""

    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 20257
    scheduler: int = 20259
    prometheus: int = 19090
    kube_proxy_healthz: int = 20256
    kube_proxy_metrics: int = 20249
    coredns_health: int = 20180
    coredns_ready: int = 20181
    kwok: int = 20290  # kwok's own server (healthz, metrics); only a simulated cluster runs kwok


# A second, separate instance on the same host (the scale benchmark's simulated cluster, kwok.py): every
# loopback port moved by 100 so it never collides with the shared development cluster.
SIMULATED_PORTS = Ports(etcd_client=23890, etcd_peer=23900, apiserver=16543, controller_manager=20357,
                        scheduler=20359, prometheus=19190, kube_proxy_healthz=20356, kube_proxy_metrics=20349,
                        coredns_health=20280, coredns_ready=20281, kwok=20390)


@dataclass(frozen=True)
class StateLayout:
    """The folders inside one cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def kubeconfig_for(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"
