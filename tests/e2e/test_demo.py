"""The README's first command does what it says: `optimodel demo` (what `make demo` runs) installs the
operator into the local cluster, optimizes the digits model, serves it on both pools and answers a
request through the model's Service; then rolls a second revision out under live traffic and rolls a
third, slowed down by injected latency, back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.testing.cluster import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, scale_operator

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_demo_ends_with_the_table_and_a_served_request(local_cluster: LocalCluster, namespace: str) -> None:
    try:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("optimodel")), "demo", "--namespace", namespace],
            capture_output=True, text=True, timeout=900,
        )
        out = result.stdout
        assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
        assert "optimizedmodel.optimodel.io/digits created" in out
        assert "what each pool serves" in out and "variants" in out
        assert "→ HTTP 200" in out and "predicted [" in out
        # Then a second revision rolled out under traffic and a third, with latency injected, rolled back.
        assert "7. a second revision" in out and "8. a third revision" in out
        resource = json.loads(local_cluster.kubectl("get", "om", "digits", "-n", namespace, "-o", "json").stdout)
        status = resource["status"]
        assert status["rolloutPhase"] == "RolledBack" and "p99-latency" in status["rolloutMessage"]
        phases = [r["phase"] for r in status["revisions"]]
        assert phases[:3] == ["RolledBack", "Stable", "Superseded"], phases
        assert status["stableRevision"] == status["revisions"][1]["name"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False", "the spec's revision was rolled back: not Ready, and it says why"
        # The operator that did it runs in the cluster, as a Deployment with its ServiceAccount.
        deployment = json.loads(local_cluster.kubectl("get", "deployment", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE,
                                                      "-o", "json").stdout)
        assert deployment["status"].get("availableReplicas") == 1
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "optimodel-operator"
        predicted = next(line for line in out.splitlines() if line.strip().startswith("predicted"))
        labels = next(line for line in out.splitlines() if line.strip().startswith("labels"))
        got = json.loads(predicted.split("predicted", 1)[1])
        want = json.loads(labels.split("labels", 1)[1])
        assert sum(a == b for a, b in zip(got, want, strict=True)) >= 6, (got, want)
    finally:
        # Tests own their operators: the demo's is stopped again (the session restores one a user had).
        scale_operator(local_cluster.kubectl, 0)
