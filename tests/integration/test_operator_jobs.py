"""The optimization Job's limits reach the status: a Job past its deadline (the operator's
OPTIMODEL_JOB_DEADLINE_SECONDS) leaves Optimized=False with reason DeadlineExceeded and nothing deployed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from optimodel_operator.examples import load_example, publish
from optimodel_operator.testing.cluster import condition, install_crd, running_operator, wait_for_status

pytestmark = pytest.mark.cluster


def test_job_past_its_deadline_is_reported_and_nothing_is_deployed(local_cluster, namespace: str, tmp_path: Path) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    publish()
    manifest = copy.deepcopy(load_example("minimal"))
    manifest["spec"]["artifacts"] = {"uri": f"file://{tmp_path / 'store'}"}  # nothing to reuse: the Job must run
    env = {"OPTIMODEL_JOB_DEADLINE_SECONDS": "2", "OPTIMODEL_JOB_BACKOFF_LIMIT": "0"}
    with running_operator(local_cluster.kubeconfig, [namespace], tmp_path / "operator.log", env) as operator:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        obj = wait_for_status(kubectl, namespace, "minimal", lambda o: o["status"].get("phase") == "Failed",
                              "Failed", timeout=120)
        optimized = condition(obj, "Optimized")
        assert optimized["status"] == "False" and optimized["reason"] == "DeadlineExceeded", optimized
        assert "activeDeadlineSeconds=2" in optimized["message"]
        (job,) = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
        assert job["spec"]["activeDeadlineSeconds"] == 2
        assert json.loads(kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"] == []
        assert operator.alive()


def test_a_job_waiting_on_a_missing_secret_says_so(local_cluster, namespace: str, tmp_path: Path) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    manifest = copy.deepcopy(load_example("minimal"))
    manifest["spec"]["artifacts"] = {"uri": f"file://{tmp_path / 'store'}", "credentials": {"name": "not-created"}}
    with running_operator(local_cluster.kubeconfig, [namespace], tmp_path / "operator.log"):
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        obj = wait_for_status(kubectl, namespace, "minimal",
                              lambda o: "CreateContainerConfigError" in (o["status"].get("message") or ""),
                              "the waiting reason in status", timeout=90)
        assert obj["status"]["phase"] == "Optimizing"
        assert "not-created" in condition(obj, "Optimized")["message"]
