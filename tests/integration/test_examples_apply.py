"""Every manifest in deploy/examples/, applied with kubectl while the operator runs, reaches the
expected status: current observedGeneration, the conditions of an accepted resource, the printer
columns filled, and an Event saying it was accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimodel_operator.testing.cluster import (
    condition,
    events_for,
    install_crd,
    running_operator,
    wait_for_status,
)
from optimodel_operator.testing.manifests import examples_dir, load_examples

pytestmark = pytest.mark.cluster

# What each example reaches with this build of the operator (optimization is the next stage:
# until it exists every valid resource waits, Accepted, in Pending).
EXPECTED = {
    "minimal.yaml": {"phase": "Pending", "Accepted": "True", "Ready": "False", "variants": ["int8"]},
    "sentiment.yaml": {"phase": "Pending", "Accepted": "True", "Ready": "False", "variants": ["int8", "fp16", "small"]},
    "chained-torch.yaml": {
        "phase": "Pending",
        "Accepted": "True",
        "Ready": "False",
        "variants": ["pruned", "student", "student-int8"],
    },
}


def test_every_example_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(load_examples())
    assert len(EXPECTED) >= 2


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_example_reaches_expected_status(local_cluster, namespace: str, tmp_path: Path, filename: str) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    expected = EXPECTED[filename]
    name = load_examples()[filename]["metadata"]["name"]
    with running_operator(local_cluster.kubeconfig, [namespace], tmp_path / "operator.log") as operator:
        kubectl("apply", "-n", namespace, "-f", str(examples_dir() / filename))
        obj = wait_for_status(
            kubectl,
            namespace,
            name,
            lambda o: (condition(o, "Accepted") or {}).get("status") == expected["Accepted"],
            f"Accepted={expected['Accepted']}",
        )
        status = obj["status"]
        assert status["phase"] == expected["phase"], operator.log()
        assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
        assert condition(obj, "Ready")["status"] == expected["Ready"]
        for kind in ("Progressing", "Degraded", "Optimized", "Gated", "Deployed", "RolledOut"):
            assert condition(obj, kind)["observedGeneration"] == 1, kind
        assert [v["name"] for v in status["variants"]] == expected["variants"]
        # kubectl wait reads the same conditions
        kubectl("wait", "--for=condition=Accepted", f"om/{name}", "-n", namespace, "--timeout=10s")
        row = kubectl("get", "om", name, "-n", namespace, "--no-headers").stdout.split()
        assert row[:3] == [name, expected["phase"], expected["Ready"]]
        reasons = [(e["type"], e["reason"]) for e in events_for(kubectl, namespace, name)]
        assert ("Normal", "SpecAccepted") in reasons
        assert operator.alive()
