"""A revision whose servers stay unready says why (issue 14, item 1: artifact bytes corrupted after the gate).

The model server refuses an artifact whose bytes no longer match the manifest's sha256 and stays unready; the
operator asks such a server's readiness endpoint for its reason, and the planner writes it into the waiting
message, checking again every few seconds (nothing the watches see changes while pods stay unready)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from optimodel_contracts.artifacts import read_manifest, store_root_of
from optimodel_operator.controller.kube import _ready_reason_of
from optimodel_operator.planner.loop import UNREADY_RECHECK, DeploymentObservation, Observed
from optimodel_server.sample_artifact import write_sample_artifact

from test_planner_loop import all_done, by_kind, cond, run, spec_of  # noqa: I001 - the loop tests' fixtures


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_that_refused_its_corrupted_artifact_is_asked_why(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    blob = Path(store_root_of(uri)) / read_manifest(uri).blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the sha256 can tell
    blob.write_bytes(bytes(data))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "optimodel_server", "--manifest", uri, "--host", "127.0.0.1", "--port", str(port),
         "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    try:
        deadline, why = time.monotonic() + 60, None
        while why is None and time.monotonic() < deadline and server.poll() is None:
            why = _ready_reason_of("127.0.0.1", port, timeout=1.0)
            time.sleep(0.2)
        assert why is not None, "the refusing server's reason was never read"
        assert why.startswith("its server refused the artifact: ") and "sha256" in why.lower(), why
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_nothing_listening_tells_nothing() -> None:
    assert _ready_reason_of("127.0.0.1", _free_port(), timeout=0.5) is None


def test_the_waiting_message_carries_the_pods_reason_and_the_operator_looks_again() -> None:
    spec = spec_of()
    runs = all_done(spec)
    deploying = run(spec, Observed(runs=runs))
    why = "pod m-cpu-x: its server refused the artifact: sha256 mismatch"
    seen = {}
    for d in by_kind(deploying, "Deployment"):
        labels = d["metadata"]["labels"]
        pool = labels["optimodel.io/pool"]
        seen[d["metadata"]["name"]] = DeploymentObservation(
            d["metadata"]["name"], labels["optimodel.io/revision"], pool, d["spec"]["replicas"],
            0 if pool == "cpu" else d["spec"]["replicas"], True, unready_reason=why if pool == "cpu" else None)
    held = run(spec, Observed(runs=runs, deployments=seen, services=frozenset({"m", "m-cpu", "m-gpu"})),
               deploying.status)
    deployed = cond(held, "Deployed")
    assert deployed["status"] == "False" and why in deployed["message"], deployed
    assert held.status["phase"] == "Deploying"
    assert held.requeue_after == UNREADY_RECHECK == timedelta(seconds=10)


def test_a_reconcile_after_a_child_event_that_fails_is_retried_by_the_wakeups() -> None:
    """kopf does not retry event handlers, and a finished Job sends no second event: a reconcile that fails on
    an unreachable API server (here: a port nothing listens on) is scheduled again instead of dropped."""
    import logging

    from kubernetes import client

    from optimodel_operator.controller import handlers, kube
    from optimodel_operator.controller.wakeups import RETRY_AFTER_ERROR_S

    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{_free_port()}"
    configuration.retries = 0
    api = client.ApiClient(configuration)
    saved = handlers._clients
    handlers._clients = kube.Clients(client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api),
                                     client.CustomObjectsApi(api), None)  # type: ignore[arg-type]
    job = {"kind": "Job", "metadata": {"namespace": "ns", "name": "m-optimize-cpu-1",
                                       "ownerReferences": [{"kind": "OptimizedModel", "name": "m",
                                                            "apiVersion": "optimodel.io/v1alpha1"}]}}
    before = time.monotonic()
    try:
        queued = handlers._on_child(job, logging.getLogger("test"))  # type: ignore[arg-type]
        assert queued is not None
        queued.result(30)  # the reconcile runs on the operator's pool, not in kopf's handler
        due = handlers._wakeups.pending()
        assert ("ns", "m") in due, due
        assert before + RETRY_AFTER_ERROR_S <= due[("ns", "m")] <= time.monotonic() + RETRY_AFTER_ERROR_S
    finally:
        handlers._wakeups.cancel("ns", "m")
        handlers._clients = saved


def test_the_reason_of_a_revision_waiting_next_to_a_promoted_one_is_written_not_held() -> None:
    """The steady-state guard holds routine analysis records of a promoted revision in memory (controller/quiet.py);
    a message about a newer revision that is deploying (its servers refused the artifact) is no routine record."""
    from optimodel_operator.controller.quiet import routine

    waiting = "waiting for m-cpu-2 (0/1 available) before its canary begins; revision 1 serves meanwhile"
    said = waiting.replace("available)", "available: pod m-cpu-2-x: its server refused the artifact: sha256 ...)")
    before = {"rolloutPhase": "Promoted", "stableRevision": "1", "currentRevision": "2", "message": waiting,
              "conditions": [{"type": "Deployed", "status": "False", "reason": "Deploying", "message": waiting}]}
    patch = {"message": said, "lastAnalysisTime": "2026-12-01T13:00:02Z",
             "conditions": [{"type": "Deployed", "status": "False", "reason": "Deploying", "message": said}]}
    assert not routine(before, patch, True, [], [])
    # The same record with the promoted revision alone (nothing on its way) stays routine.
    alone = {**before, "currentRevision": "1"}
    assert routine(alone, {"lastAnalysisTime": "2026-12-01T13:00:02Z"}, True, [], [])
