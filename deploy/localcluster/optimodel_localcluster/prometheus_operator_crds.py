"""The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs in the local cluster, taken
from the Go module proxy, so that the chart's monitoring objects are checked by the real schemas.

No Prometheus Operator runs here (the local cluster's Prometheus is Debian's, configured by file): the CRDs
only let the API server validate and store those objects, as a cluster with the operator would.
`github.com/prometheus-operator/prometheus-operator` is fetched with `go mod download` (the flags of the
control plane's build) and the three manifests of its `example/prometheus-operator-crd/` are copied once
to `~/.cache/optimodel/prometheus-operator-crds/<version>/`, so later starts need neither `go` nor the
network. `install` applies them server-side and waits until they are Established.
"""

from __future__ import annotations

from pathlib import Path

from . import go_modules
from .gateway_api import FIELD_MANAGER, Kubectl, Report, crd_names
from .paths import LocalClusterError, cache_root

MODULE = "github.com/prometheus-operator/prometheus-operator"
# The newest version of the main module the Go module proxy serves here (v0.86 and later answer 403).
VERSION = "v0.85.0"
CRD_DIR = "example/prometheus-operator-crd"
# Only what optimodel ships objects of; the others (Prometheus, Alertmanager, ...) are 0.5-0.8 MB each.
FILES = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)


def manifests_dir(version: str = VERSION) -> Path:
    return cache_root() / "prometheus-operator-crds" / version


def _download(version: str) -> tuple[Path, dict]:
    return go_modules.download(MODULE, version, "the Prometheus Operator CRDs")


def fetch(version: str = VERSION, report: Report = lambda _: None) -> Path:
    """The folder holding the three CRD manifests, fetched and copied on first use."""
    target = manifests_dir(version)
    if go_modules.is_cached(target):
        return target
    report(f"fetching {MODULE} {version} from the Go module proxy (first time only)")
    module_dir, info = _download(version)
    sources = [module_dir / CRD_DIR / name for name in FILES]
    missing = [path.name for path in sources if not path.is_file() or not crd_names(path.read_text())]
    if missing:
        raise LocalClusterError(f"{MODULE}@{version} has no CRD in {CRD_DIR}/ for: {', '.join(missing)}")
    return go_modules.cache_copy(target, sources, info, CRD_DIR)


def install(kubectl: Kubectl, version: str = VERSION, report: Report = lambda _: None,
            timeout: float = 60) -> list[str]:
    """Apply the ServiceMonitor, PodMonitor and PrometheusRule CRDs; returns their names, all Established."""
    folder = fetch(version, report)
    report(f"Prometheus Operator {version} CRDs (ServiceMonitor, PodMonitor, PrometheusRule)")
    paths = [folder / name for name in FILES]
    # Server-side: the ServiceMonitor CRD's last-applied annotation would be close to client-side apply's limit.
    kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts",
            *(argument for path in paths for argument in ("-f", str(path))), timeout=timeout)
    names = [name for path in paths for name in crd_names(path.read_text())]
    kubectl("wait", "--for=condition=Established", f"--timeout={max(int(timeout), 1)}s",
            *(f"crd/{name}" for name in names), timeout=timeout + 10)
    return names
