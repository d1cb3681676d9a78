"""Files taken from modules on the Go module proxy (CRD manifests that projects publish only in their Go
modules), copied once into the cache, so later starts need neither `go` nor the network.

`go mod download -json MODULE@VERSION` uses the same module cache and flags as the control plane's build,
with GOPROXY stripped of `direct` and `off`: a module comes from a module proxy, never from its VCS host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .paths import GoBuildError

PROVENANCE = ".fetched-from.json"


def proxy_only(goproxy: str) -> str:
    """GOPROXY without `direct` and `off`."""
    kept: list[str] = []
    for separator, entry in re.findall(r"([,|]?)([^,|]+)", goproxy):
        if entry.strip() in ("direct", "off", ""):
            continue
        kept.append((separator if kept else "") + entry.strip())
    return "".join(kept)


def go_and_proxy(what: str) -> tuple[str, str]:
    """The `go` command and the proxy-only GOPROXY to fetch `what` with."""
    go = shutil.which("go")
    if go is None:
        raise GoBuildError(f"`go` is not on PATH: {what} come(s) from the Go module proxy")
    configured = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, check=True).stdout.strip()
    goproxy = proxy_only(configured)
    if not goproxy:
        raise GoBuildError(f"GOPROXY ({configured!r}) names no module proxy to fetch {what} from")
    return go, goproxy


def download(module: str, version: str, what: str) -> tuple[Path, dict]:
    """`go mod download -json` of the module; its extracted directory in the module cache and the JSON."""
    go, goproxy = go_and_proxy(what)
    # The flags of build.py's `go build`; a scratch working directory, so no go.mod around is consulted.
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GOPROXY=goproxy, GOWORK="off")
    with tempfile.TemporaryDirectory(prefix="go-module-") as scratch:
        result = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=scratch, env=env,
                                capture_output=True, text=True, timeout=600)
    try:
        info = json.loads(result.stdout)
    except ValueError:
        info = {}
    if result.returncode != 0 or info.get("Error") or not info.get("Dir"):
        detail = info.get("Error") or result.stderr.strip() or result.stdout.strip()
        raise GoBuildError(f"go mod download {module}@{version} failed: {detail}")
    return Path(info["Dir"]), info


def is_cached(target: Path) -> bool:
    return (target / PROVENANCE).is_file()


def cache_copy(target: Path, files: Iterable[Path], info: dict, folder: str) -> Path:
    """Copy `files` (from `folder` of the module `info` describes) into `target`, with where they came from."""
    staging = target.with_name(f"{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, staging / path.name)
    provenance = {key: info.get(key) for key in ("Path", "Version", "Sum")} | {"dir": folder}
    (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    # Swapped in whole: an interrupted fetch never leaves a folder that looks complete.
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
