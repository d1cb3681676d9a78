"""Helm against the local cluster: the binary built from the Go module proxy (build.py), with the cluster's
kubeconfig and Helm's own state (repository cache, config) under the cluster's folder, never the user's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .build import helm_binary
from .paths import LocalClusterError


class Helm:
    def __init__(self, kubeconfig: Path, state_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        binary = helm_binary()
        if not binary.is_file():
            raise LocalClusterError(f"helm is not built ({binary}): run `optimodel dev build`")
        env = dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            HELM_CACHE_HOME=str(self.state_dir / "cache"),
            HELM_CONFIG_HOME=str(self.state_dir / "config"),
            HELM_DATA_HOME=str(self.state_dir / "data"),
        )
        result = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise LocalClusterError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result
