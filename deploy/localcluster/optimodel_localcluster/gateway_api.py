"""The Gateway API CRDs (standard channel) in the local cluster, taken from the Go module proxy.

`sigs.k8s.io/gateway-api` is fetched with `go mod download` (the same Go module cache and flags as the
control plane's build) and the manifests of its `config/crd/standard/` are copied once to
`~/.cache/optimodel/gateway-api/<version>/`, so later starts need neither `go` nor the network. `install`
applies them server-side (the HTTPRoute CRD, about 240 kB as JSON, is at the edge of client-side apply's
256 KiB annotation limit) and waits until every CRD among them is Established.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from . import go_modules
from .go_modules import proxy_only  # noqa: F401  (where callers found it first)
from .paths import LocalClusterError, cache_root

MODULE = "sigs.k8s.io/gateway-api"
# v1.7.0 and later need a newer Go than the toolchain the control plane is built with.
GATEWAY_API_VERSION = "v1.6.3"
CHANNEL_DIR = "config/crd/standard"
FIELD_MANAGER = "optimodel-localcluster"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
Report = Callable[[str], None]


def manifests_dir(version: str = GATEWAY_API_VERSION) -> Path:
    return cache_root() / "gateway-api" / version


def manifest_files(directory: Path) -> list[tuple[Path, list[str]]]:
    """The manifests to apply, each with the CRDs it defines; CRDs first (a ValidatingAdmissionPolicy on
    CRDs ships beside them), then by name."""
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")]
    planned = [(path, crd_names(path.read_text())) for path in files]
    return sorted(planned, key=lambda item: (not item[1], item[0].name))


# libyaml when PyYAML has it: the HTTPRoute CRD alone is 6,000 lines.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def crd_names(text: str) -> list[str]:
    """The names of the CustomResourceDefinitions in a (multi-document) manifest."""
    return [
        document["metadata"]["name"]
        for document in yaml.load_all(text, Loader=_Loader)
        if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition"
    ]


def _download(version: str) -> tuple[Path, dict]:
    return go_modules.download(MODULE, version, "the Gateway API CRDs")


def fetch(version: str = GATEWAY_API_VERSION, report: Report = lambda _: None) -> Path:
    """The folder holding the standard channel's manifests, fetched and copied on first use."""
    target = manifests_dir(version)
    if go_modules.is_cached(target):
        return target
    report(f"fetching {MODULE} {version} from the Go module proxy (first time only)")
    module_dir, info = _download(version)
    source = module_dir / CHANNEL_DIR
    planned = manifest_files(source) if source.is_dir() else []
    if not any(names for _, names in planned):
        raise LocalClusterError(f"{MODULE}@{version} has no CRD manifests under {CHANNEL_DIR}/")
    return go_modules.cache_copy(target, [path for path, _ in planned], info, CHANNEL_DIR)


def install(kubectl: Kubectl, version: str = GATEWAY_API_VERSION, report: Report = lambda _: None,
            timeout: float = 60) -> list[str]:
    """Apply the standard channel's CRDs (and their admission policy); returns the CRD names, all Established."""
    planned = manifest_files(fetch(version, report))
    report(f"Gateway API {version} CRDs (standard channel)")
    arguments = [argument for path, _ in planned for argument in ("-f", str(path))]
    # The local cluster owns these objects: it takes over fields another manager may have set.
    kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts", *arguments,
            timeout=timeout)
    names = [name for _, crds in planned for name in crds]
    kubectl("wait", "--for=condition=Established", f"--timeout={max(int(timeout), 1)}s",
            *(f"crd/{name}" for name in names), timeout=timeout + 10)
    return names
