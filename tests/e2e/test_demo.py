"""The README's first command does what it says: the `optimodel demo` that `make demo` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optimodel_localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_demo_applies_the_example_and_prints_the_operators_status(local_cluster: LocalCluster, namespace: str) -> None:
    operator = local_cluster.process("operator")
    was_running = operator.is_running()
    try:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("optimodel")), "demo", "--namespace", namespace],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "optimizedmodel.optimodel.io/minimal created" in result.stdout
        assert "Accepted" in result.stdout and "SpecAccepted" in result.stdout
        assert operator.is_running(), "the demo leaves the operator running for the user"
        resource = json.loads(local_cluster.kubectl("get", "optimizedmodel", "minimal", "-n", namespace,
                                                    "-o", "json").stdout)
        assert resource["status"]["observedGeneration"] == resource["metadata"]["generation"]
        accepted = next(c for c in resource["status"]["conditions"] if c["type"] == "Accepted")
        assert accepted["status"] == "True"
    finally:
        local_cluster.kubectl("delete", "optimizedmodel", "minimal", "-n", namespace, "--wait=false", check=False)
        if not was_running:
            # Other tests start operators of their own: never leave two running.
            operator.stop()
