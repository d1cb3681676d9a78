"""Every manifest in deploy/examples/, applied with kubectl while the operator runs, reaches the status
it can reach on this machine: the examples whose files the local cluster has (the zoo's digits model, as
`optimodel demo` publishes it) reach Ready and serve; those that name object stores this machine cannot
reach (s3://, gs://) are accepted, then fail in their optimization Job with a condition saying why."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from optimodel_localcluster import seaweedfs
from optimodel_operator.examples import publish
from optimodel_operator.testing.cluster import (
    condition,
    events_for,
    install_crd,
    running_operator,
    wait_for_status,
)
from optimodel_operator.testing.manifests import examples_dir, load_examples

pytestmark = pytest.mark.cluster

# Refused by the Job's probes before any step: a bucket the local S3 store lacks ("does not exist"), or gs://,
# which the Job image reads with gcsfs and no pod here can reach.
UNREACHABLE_STORE = {"DatasetUnreadable", "SourceUnreadable", "HostUnreachable"}
EXPECTED = {
    "digits.yaml": {"phase": "Succeeded", "Ready": "True", "variants": ["int8", "fp16", "pruned"]},
    "minimal.yaml": {"phase": "Succeeded", "Ready": "True", "variants": ["int8"]},
    "sentiment.yaml": {"phase": "Failed", "Ready": "False", "variants": ["int8", "fp16", "small"],
                       "reasons": UNREACHABLE_STORE},
    "chained-torch.yaml": {"phase": "Failed", "Ready": "False", "variants": ["pruned", "student", "student-int8"],
                           "reasons": UNREACHABLE_STORE},
}


def test_every_example_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(load_examples())
    assert len(EXPECTED) >= 2


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_example_reaches_expected_status(local_cluster, namespace: str, tmp_path: Path, filename: str) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    publish()
    expected = EXPECTED[filename]
    name = load_examples()[filename]["metadata"]["name"]
    credentials = ((load_examples()[filename]["spec"].get("artifacts") or {}).get("credentials") or {}).get("name")
    if credentials:  # the user's store credentials: here the local cluster's S3 store, which has no such buckets
        local = json.loads(kubectl("get", "secret", seaweedfs.USER_SECRET, "-n", seaweedfs.NAMESPACE, "-o", "json").stdout)
        kubectl("create", "secret", "generic", credentials, "-n", namespace, *(
            f"--from-literal={key}={base64.b64decode(value).decode()}" for key, value in local["data"].items()))
    with running_operator(local_cluster.kubeconfig, [namespace], tmp_path / "operator.log") as operator:
        kubectl("apply", "-n", namespace, "-f", str(examples_dir() / filename))
        obj = wait_for_status(kubectl, namespace, name, lambda o: o["status"].get("phase") == expected["phase"],
                              f"phase {expected['phase']}", timeout=300)
        status = obj["status"]
        assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
        assert condition(obj, "Accepted")["status"] == "True"
        assert condition(obj, "Ready")["status"] == expected["Ready"], operator.log()[-3000:]
        for kind in ("Progressing", "Degraded", "Optimized", "Gated", "Deployed", "RolledOut"):
            assert condition(obj, kind)["observedGeneration"] == 1, kind
        assert [v["name"] for v in status["variants"]] == expected["variants"]
        row = kubectl("get", "om", name, "-n", namespace, "--no-headers").stdout.split()
        assert row[:3] == [name, expected["phase"], expected["Ready"]]
        reasons = [(e["type"], e["reason"]) for e in events_for(kubectl, namespace, name)]
        assert ("Normal", "SpecAccepted") in reasons
        if expected["Ready"] == "True":
            kubectl("wait", "--for=condition=Ready", f"om/{name}", "-n", namespace, "--timeout=10s")
            assert status["serving"] and all(p["availableReplicas"] == p["replicas"] for p in status["pools"])
        else:
            optimized = condition(obj, "Optimized")
            assert optimized["status"] == "False" and optimized["reason"] in expected["reasons"], optimized
            assert "s3://" in optimized["message"] or "gs://" in optimized["message"], "the message names what it could not read"
        assert operator.alive()
