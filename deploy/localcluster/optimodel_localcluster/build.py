"""Compile the control plane from the Go module proxy, once per Kubernetes version, and cache it.

The Go module in `gobuild/` pins Kubernetes and etcd; `go build tool` compiles every binary it
lists. The result lives in `~/.cache/optimodel/k8s/<version>/bin/` with a stamp of the module's
hash, so a second `dev up` starts in seconds and a bumped pin rebuilds.

CoreDNS (the cluster DNS) is a module of its own in `gobuild-coredns/` (it needs a newer client-go than
the pinned Kubernetes release); it is built the same way into `~/.cache/optimodel/coredns/<version>/bin/`.
Helm v3 (the chart's tests, `optimodel demo`) likewise, from `gobuild-helm/` into
`~/.cache/optimodel/helm/<version>/bin/helm`. kwok (simulated nodes for the scale benchmark, kwok.py) from
`gobuild-kwok/` into `~/.cache/optimodel/kwok/<version>/bin/kwok`: built by `optimodel dev build` and on first
use of a simulated cluster, not by `dev up` (the shared cluster never runs it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from .paths import COREDNS_VERSION, HELM_VERSION, KUBERNETES_VERSION, KWOK_VERSION, GoBuildError, cache_root

GOBUILD_DIR = Path(__file__).with_name("gobuild")
COREDNS_GOBUILD_DIR = Path(__file__).with_name("gobuild-coredns")
HELM_GOBUILD_DIR = Path(__file__).with_name("gobuild-helm")
KWOK_GOBUILD_DIR = Path(__file__).with_name("gobuild-kwok")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
# `go build tool` names a binary after its package's last path element; etcd's main package is
# go.etcd.io/etcd/server/v3, so it comes out as "server".
_RENAMES = {"server": "etcd"}


def binaries_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / "k8s" / version / "bin"


def coredns_binaries_dir(version: str = COREDNS_VERSION) -> Path:
    return cache_root() / "coredns" / version / "bin"


def helm_binaries_dir(version: str = HELM_VERSION) -> Path:
    return cache_root() / "helm" / version / "bin"


def helm_binary() -> Path:
    return helm_binaries_dir() / "helm"


def kwok_binaries_dir(version: str = KWOK_VERSION) -> Path:
    return cache_root() / "kwok" / version / "bin"


def kwok_binary() -> Path:
    return kwok_binaries_dir() / "kwok"


def kwok_is_built() -> bool:
    return _is_built(kwok_binaries_dir(), KWOK_GOBUILD_DIR, ("kwok",))


def build_kwok(on_output: Callable[[str], None] | None = None) -> Path:
    """Build (or reuse) kwok's controller binary (sigs.k8s.io/kwok/cmd/kwok); returns its path."""
    if not kwok_is_built():
        _go_build(KWOK_GOBUILD_DIR, kwok_binaries_dir(), ["tool"], ("kwok",), "-s -w", on_output)
    return kwok_binary()


def _module_hash(module_dir: Path = GOBUILD_DIR) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        if (module_dir / name).exists():
            digest.update((module_dir / name).read_bytes())
    return digest.hexdigest()


def _stamp(bin_dir: Path) -> Path:
    return bin_dir / ".built-from"


def _is_built(bin_dir: Path, module_dir: Path, binaries: tuple[str, ...]) -> bool:
    stamp = _stamp(bin_dir)
    return (
        stamp.exists()
        and stamp.read_text().strip() == _module_hash(module_dir)
        and all((bin_dir / name).is_file() for name in binaries)
    )


def is_built(version: str = KUBERNETES_VERSION) -> bool:
    """Kubernetes, etcd, CoreDNS and Helm are all in the cache, built from the current pins."""
    return (
        _is_built(binaries_dir(version), GOBUILD_DIR, BINARIES)
        and _is_built(coredns_binaries_dir(), COREDNS_GOBUILD_DIR, ("coredns",))
        and _is_built(helm_binaries_dir(), HELM_GOBUILD_DIR, ("helm",))
    )


def _ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/component-base/version.gitTreeState": "clean",
        "k8s.io/client-go/pkg/version.gitVersion": version,
        "k8s.io/client-go/pkg/version.gitMajor": major,
        "k8s.io/client-go/pkg/version.gitMinor": minor,
    }
    return "-s -w " + " ".join(f"-X {key}={value}" for key, value in stamps.items())


def build(
    version: str = KUBERNETES_VERSION,
    on_output: Callable[[str], None] | None = None,
) -> Path:
    """Build (or reuse) the control-plane binaries, CoreDNS and Helm; returns the control plane's directory."""
    bin_dir = binaries_dir(version)
    if not _is_built(bin_dir, GOBUILD_DIR, BINARIES):
        _go_build(GOBUILD_DIR, bin_dir, ["tool"], BINARIES, _ldflags(version), on_output)
    coredns_dir = coredns_binaries_dir()
    if not _is_built(coredns_dir, COREDNS_GOBUILD_DIR, ("coredns",)):
        _go_build(COREDNS_GOBUILD_DIR, coredns_dir, ["-o", f"{coredns_dir.with_name('bin.partial')}/coredns", "."],
                  ("coredns",), "-s -w", on_output)
    helm_dir = helm_binaries_dir()
    if not _is_built(helm_dir, HELM_GOBUILD_DIR, ("helm",)):
        # The version stamp `helm version` prints (and that charts' kubeVersion checks see through it).
        ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
        _go_build(HELM_GOBUILD_DIR, helm_dir, ["tool"], ("helm",), ldflags, on_output)
    return bin_dir


def _go_build(
    module_dir: Path,
    bin_dir: Path,
    targets: list[str],
    binaries: tuple[str, ...],
    ldflags: str,
    on_output: Callable[[str], None] | None,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    go = shutil.which("go")
    if go is None:
        raise GoBuildError("`go` is not on PATH: the control plane is compiled from the Go module proxy")
    staging = bin_dir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", **(extra_env or {}))
    output = [] if "-o" in targets else ["-o", f"{staging}/"]
    # -v: one line per package compiled, so a caller can show how far a cold build (minutes) has come.
    command = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, *output, *targets]
    process = subprocess.Popen(
        command, cwd=module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if on_output:
            on_output(line.rstrip())
    if process.wait() != 0:
        raise GoBuildError(f"go build in {module_dir.name}/ failed:\n" + "\n".join(tail))
    for built, wanted in _RENAMES.items():
        if (staging / built).exists():
            (staging / built).rename(staging / wanted)
    missing = [name for name in binaries if not (staging / name).is_file()]
    if missing:
        raise GoBuildError(f"go build finished but did not produce: {', '.join(missing)}")
    _stamp(staging).write_text(_module_hash(module_dir) + "\n")
    # Swap in whole, so an interrupted build never leaves a half-filled bin/ that looks complete.
    shutil.rmtree(bin_dir, ignore_errors=True)
    staging.rename(bin_dir)
