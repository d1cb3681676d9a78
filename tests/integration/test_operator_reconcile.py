"""The operator against the real API server: invalid input the schema cannot catch becomes a
condition and a permanent error (no crash loop), a fixed spec is picked up, reconciling again
after a restart changes nothing, and a status edited behind its back is repaired on resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from optimodel_operator.testing.cluster import (
    condition,
    events_for,
    get_model,
    install_crd,
    running_operator,
    wait_for,
    wait_for_status,
)
from optimodel_operator.testing.manifests import base_manifest, to_yaml

pytestmark = pytest.mark.cluster


def _cycle(name: str) -> dict:
    manifest = base_manifest(name)
    optimizations = manifest["spec"]["optimizations"]
    optimizations[2] = {"name": "small", "from": "small-int8", "prune": {"amount": 0.2, "fineTuneEpochs": 0}}
    optimizations[3] = {"name": "small-int8", "from": "small", "prune": {"amount": 0.2, "fineTuneEpochs": 0}}
    return manifest


def _is(kind: str, status: str, reason: str | None = None):
    def accept(obj: dict) -> bool:
        found = condition(obj, kind) or {}
        return found.get("status") == status and (reason is None or found.get("reason") == reason)

    return accept


def test_invalid_then_fixed(local_cluster, namespace: str, tmp_path: Path) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    with running_operator(local_cluster.kubeconfig, [namespace], tmp_path / "operator.log") as operator:
        # Given a spec whose `from` chain is a cycle (valid for the schema, not for the operator)
        kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(_cycle("chain")))
        # Then it is refused by a condition naming the field, and the phase says Failed
        obj = wait_for_status(kubectl, namespace, "chain", _is("Accepted", "False", "InvalidSpec"), "InvalidSpec")
        assert obj["status"]["phase"] == "Failed"
        assert "spec.optimizations[2].from" in condition(obj, "Accepted")["message"]
        assert "cycle" in condition(obj, "Accepted")["message"]
        assert condition(obj, "Degraded")["status"] == "True" and condition(obj, "Stalled")["status"] == "True"
        assert ("Warning", "InvalidSpec") in [(e["type"], e["reason"]) for e in events_for(kubectl, namespace, "chain")]
        # And it is a permanent error: not retried, the object is left alone
        wait_for(lambda: "failed permanently" in operator.log(), 20, "the permanent error in the log")
        # The status is patched first, then kopf records the handler's permanent failure in its annotations:
        # read the object after both, then nothing more may be written (no retry).
        time.sleep(1)
        version = get_model(kubectl, namespace, "chain")["metadata"]["resourceVersion"]
        time.sleep(3)
        assert get_model(kubectl, namespace, "chain")["metadata"]["resourceVersion"] == version
        assert operator.alive()

        # When the spec is fixed
        kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(base_manifest("chain")))
        # Then the new generation is accepted
        obj = wait_for_status(kubectl, namespace, "chain", _is("Accepted", "True", "SpecAccepted"), "accepted")
        assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
        assert obj["status"]["phase"] in ("Pending", "Optimizing")  # its optimization Jobs are created
        assert condition(obj, "Degraded")["status"] == "False"
        reasons = [e["reason"] for e in events_for(kubectl, namespace, "chain")]
        assert "SpecAccepted" in reasons and "PhaseChanged" in reasons


def test_restart_changes_nothing_and_repairs_edited_status(local_cluster, namespace: str, tmp_path: Path) -> None:
    kubectl = local_cluster.kubectl
    install_crd(kubectl)
    log = tmp_path / "operator.log"
    with running_operator(local_cluster.kubeconfig, [namespace], log):
        # The base manifest's data lives in s3://, which this machine cannot read: its optimization Jobs
        # fail, and the resource settles in Failed, saying why.
        kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(base_manifest("steady")))
        def settled(obj: dict) -> bool:
            # Failed as soon as one Job failed; settled once every Job (one per provider) has, and says so.
            jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
            finished = bool(jobs) and all(
                any(c["type"] == "Failed" and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))
                for j in jobs)
            message = (condition(obj, "Optimized") or {}).get("message", "")
            return obj["status"].get("phase") == "Failed" and finished and all(
                j["metadata"]["name"] in message for j in jobs)

        obj = wait_for_status(kubectl, namespace, "steady", settled, "Failed with every Job failed", timeout=240)
    assert condition(obj, "Optimized")["status"] == "False"
    version = obj["metadata"]["resourceVersion"]
    events_before = len(events_for(kubectl, namespace, "steady"))

    # Reconciling again (resume after a restart) leaves the object untouched: no write, no event, no new Job.
    jobs_before = kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split()
    with running_operator(local_cluster.kubeconfig, [namespace], log) as operator:
        wait_for(lambda: log.read_text().count("Resuming is processed") >= 1, 30, "the resume handler to run")
        time.sleep(1)
        assert get_model(kubectl, namespace, "steady")["metadata"]["resourceVersion"] == version
        assert len(events_for(kubectl, namespace, "steady")) == events_before
        assert kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split() == jobs_before
        assert operator.alive()

    # A status edited behind the operator's back is put right when it next reconciles.
    patch = {"status": {"phase": "Succeeded", "stableRevision": "forged"}}
    kubectl("patch", "om", "steady", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    with running_operator(local_cluster.kubeconfig, [namespace], log):
        wait_for_status(kubectl, namespace, "steady", lambda o: o["status"].get("phase") == "Failed", "repaired phase")
    # A stable revision that no Deployment serves is not taken on trust.
    assert "stableRevision" not in get_model(kubectl, namespace, "steady")["status"]
