"""The import-linter contracts of pyproject.toml hold: the server and the contracts stay free of the optimizer,
the contracts of torch/onnxruntime and the operator, the API types/planner of kopf and the Kubernetes client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The model server reads artifacts through the contracts" in done.stdout
    assert "The contracts are neutral" in done.stdout


def test_the_server_image_needs_no_optimizer() -> None:
    """Importing the server's artifact path loads the contracts, never optimodel_jobs (nor torch)."""
    probe = ("import sys, optimodel_server.loader, optimodel_server.drift, optimodel_contracts.jobconfig, "
             "optimodel_contracts.from_resource, optimodel_contracts.runrecord; "
             "bad = [m for m in ('optimodel_jobs', 'torch', 'optimodel_operator') if m in sys.modules]; "
             "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
