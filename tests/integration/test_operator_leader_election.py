"""Two operator replicas, one acting: `optimodel operator run --leader-elect` against the real control plane.

The first replica takes the Lease and runs kopf; the second stands by (no kopf, so it never acts) and
answers its liveness probe meanwhile; when the first one dies, the second takes the Lease over once it
expires and starts acting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.testing.cluster import wait_for

pytestmark = [pytest.mark.cluster]


def _start(cluster: LocalCluster, namespace: str, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "POD_NAME": name, "POD_NAMESPACE": namespace}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "optimodel_operator.cli", "operator", "run", "--leader-elect", "-n", namespace,
             "--liveness", f"http://127.0.0.1:{port}/healthz"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_one_replica_acts_the_other_stands_by_and_takes_over(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    first = _start(local_cluster, namespace, "first", 18391, logs["first"])
    second = None
    try:
        wait_for(lambda: b"Initial authentication has finished" in logs["first"].read_bytes(), 60, "the first acts")
        second = _start(local_cluster, namespace, "second", 18392, logs["second"])
        wait_for(lambda: b"stands by" in logs["second"].read_bytes(), 60, "the second stands by")
        assert httpx.get("http://127.0.0.1:18392/healthz", timeout=5).status_code == 200, "alive while standing by"
        time.sleep(6)  # a renewal period: still standing by, kopf never started
        assert b"Initial authentication" not in logs["second"].read_bytes()
        lease = json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n", namespace, "-o",
                                                 "json").stdout)
        assert lease["spec"]["holderIdentity"] == "first"
        os.killpg(first.pid, signal.SIGKILL)  # dies without releasing anything
        first.wait(10)
        wait_for(lambda: b"Initial authentication has finished" in logs["second"].read_bytes(), 60,
                 "the second takes over once the Lease expires")
        lease = json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n", namespace, "-o",
                                                 "json").stdout)
        assert lease["spec"]["holderIdentity"] == "second"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)


def test_a_leader_stopped_with_sigterm_hands_the_lease_over_at_once(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """A rolling update or a drained node stops the acting replica with SIGTERM: it gives the Lease up on its
    way out, so the standby acts within its polling period rather than after the Lease expires (15 s)."""
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    first = _start(local_cluster, namespace, "first", 18393, logs["first"])
    second = None
    try:
        wait_for(lambda: b"Initial authentication has finished" in logs["first"].read_bytes(), 60, "the first acts")
        second = _start(local_cluster, namespace, "second", 18394, logs["second"])
        wait_for(lambda: b"stands by" in logs["second"].read_bytes(), 60, "the second stands by")
        stopped = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(30)
        assert b"released Lease" in logs["first"].read_bytes()
        wait_for(lambda: b"Initial authentication has finished" in logs["second"].read_bytes(), 30,
                 "the second takes over")
        taken_after = time.monotonic() - stopped
        lease = json.loads(local_cluster.kubectl("get", "lease", "optimodel-operator", "-n", namespace, "-o",
                                                 "json").stdout)
        assert lease["spec"]["holderIdentity"] == "second"
        assert taken_after < 12, f"taken over {taken_after:.1f}s after SIGTERM: the Lease was not released"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
