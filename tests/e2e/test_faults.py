"""Faults broken on purpose (issue 14, item 1), each ending with the last good revision serving and nothing lost.

The operator runs in a pod (the chart, as `optimodel demo` installs it), real optimization Jobs, real model-server
pods answering through kube-proxy. Covered here, beside what test_loop.py and test_rollout.py already prove
(docs/reliability.md has the whole table):
(g) a write racing another writer is applied, never refused with 409 (the operator's writes carry no
    resourceVersion precondition) and a create that finds its object already there is no error;
(a) the API server restarted while the Job runs, etcd and the API server again while the revision deploys: one
    Job, one revision, Ready, answering;
(b) the operator pod killed while deploying, and while rolling back: it resumes, the last good revision serves;
(c) artifact bytes corrupted in the store after the gate: the servers refuse them (sha256), the rollout holds,
    the status says why, the stable revision keeps answering;
(d) the artifact store (S3) stopped during a new revision: its Job fails saying why, the stable revision keeps
    answering; once the store is back the same revision completes (the operator reruns the failed Job);
(e) an optimization Job over its memory limit: OOMKilled, the status says OutOfMemory, nothing deployed, the
    stable revision keeps answering;
(f) an optimization Job's pod killed mid-run: the Job replaces it (backoffLimit), one Job, the revision completes.
a node of the pool lost (its heartbeats stop): its pods are evicted and come back on the pool's other node, the same
    revision answering.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from optimodel_localcluster import node_agent, seaweedfs
from optimodel_localcluster.cluster import LocalCluster
from optimodel_localcluster.node_agent.nodes import set_silenced
from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.controller import kube
from optimodel_operator.demo import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, post_when_routed
from optimodel_operator.examples import Published, load_example
from optimodel_operator.planner.loop import Actions
from optimodel_operator.testing.cluster import (
    condition,
    events_for,
    get_model,
    install_crd,
    operator_replicas,
    until_status,
    wait_for,
)
from optimodel_operator.testing.rollout import FAST_ROLLOUT, Traffic, digits_revision, evaluation_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# One store for the module: a revision's Jobs run once, later tests reuse their results by content.
STORE = Path("/var/lib/optimodel/store/tests/faults")
OPERATOR_PODS = f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}"


@pytest.fixture(scope="module", autouse=True)
def _fresh_store() -> Iterator[None]:
    """The module's store goes when it ends, so the next run's Jobs run again (the faults need running Jobs)."""
    shutil.rmtree(STORE, ignore_errors=True)
    yield
    shutil.rmtree(STORE, ignore_errors=True)


# --- helpers -------------------------------------------------------------------------------------------------
def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _status(cluster: LocalCluster, namespace: str, name: str = "digits") -> dict[str, Any]:
    return (get_model(cluster.kubectl, namespace, name) or {}).get("status") or {}


def _until(cluster: LocalCluster, namespace: str, accept: Callable[[dict[str, Any]], Any], what: str,
           timeout: float = 300, name: str = "digits", interval: float = 0.5) -> dict[str, Any]:
    return until_status(cluster.kubectl, namespace, name, accept, what, timeout,
                        operator=(OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT), interval=interval)


def _cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def _promoted(revision: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("rolloutPhase") == "Promoted" and (revision is None or s.get("stableRevision") == revision)


def _ready(status: dict[str, Any]) -> bool:
    return _cond(status, "Ready").get("status") == "True"


def _items(cluster: LocalCluster, kind: str, namespace: str, name: str = "digits") -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", namespace, "-l", f"optimodel.io/model={name}", "-o", "json").stdout
    return json.loads(out)["items"]


def _replicas(cluster: LocalCluster, namespace: str) -> dict[str, tuple[int, int]]:
    """(spec replicas, available replicas) of each revision's Deployment."""
    return {d["metadata"]["labels"]["optimodel.io/revision"]:
            (d["spec"]["replicas"], (d.get("status") or {}).get("availableReplicas") or 0)
            for d in _items(cluster, "deployments", namespace)}


def _address(cluster: LocalCluster, namespace: str) -> str:
    service = json.loads(cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    return f"http://{service['spec']['clusterIP']}:80"


def _answered_by(cluster: LocalCluster, namespace: str, published: Published, requests: int = 6) -> set[str]:
    """Which revisions answered `requests` requests through the model's Service (each must answer 200)."""
    rows = evaluation_rows(published)[:8]
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    seen = set()
    for _ in range(requests):
        answer = post_when_routed(f"{_address(cluster, namespace)}/v2/models/digits/infer", body)
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["model_version"])
    return seen


def _routed(cluster: LocalCluster, namespace: str) -> bool:
    """One request through the model's Service is answered (by any revision)."""
    try:
        return httpx.get(f"{_address(cluster, namespace)}/v2/health/ready", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _reasons(cluster: LocalCluster, namespace: str) -> list[str]:
    return [e["reason"] for e in events_for(cluster.kubectl, namespace, "digits")]


def _revision(published: Published, number: int, variant: str, **rollout: Any) -> dict[str, Any]:
    return digits_revision("digits", STORE, number, variant, rollout={**FAST_ROLLOUT, **rollout}, published=published)


def _first_revision(cluster: LocalCluster, namespace: str, published: Published) -> str:
    """Revision 1 (the source model) promoted and answering: the last good revision of the faults below."""
    _apply(cluster, namespace, _revision(published, 1, "source"))
    first = _until(cluster, namespace, _promoted(), "revision 1 promoted")["stableRevision"]
    wait_for(lambda: _replicas(cluster, namespace).get(first) == (2, 2), 60, "revision 1 at 2 available replicas")
    return first


def _operator_pods(cluster: LocalCluster) -> list[str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS, "-o",
                                      "json").stdout)["items"]
    return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))


def _kill_operator(cluster: LocalCluster) -> list[str]:
    """Delete the operator's pod (as a node drain or an eviction would); returns the pods it had."""
    before = _operator_pods(cluster)
    assert before, "an operator pod runs"
    cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS, "--wait=false")
    return before


def _restart(cluster: LocalCluster, component: str, down_s: float = 4) -> None:
    """Stop one control-plane process, leave it down a moment, and let `up` (as `optimodel dev up`) repair it."""
    assert cluster.process(component).stop(), f"{component} was running"
    time.sleep(down_s)
    cluster.up()
    assert cluster.process(component).is_running()


# --- (g) conflicting writes --------------------------------------------------------------------------------------
def test_writes_racing_another_writer_are_applied_and_never_refused_with_409(
    local_cluster: LocalCluster, namespace: str
) -> None:
    """Run before any operator of this module starts: the objects below are only the test's and the helpers'."""
    install_crd(local_cluster.kubectl)
    assert operator_replicas(local_cluster.kubectl) == 0, "no operator acts on the namespace during this test"
    manifest = copy.deepcopy(load_example("digits"))
    manifest["spec"]["artifacts"] = {"uri": f"file://{STORE}"}
    _apply(local_cluster, namespace, manifest)
    kube_config.load_kube_config(config_file=str(local_cluster.kubeconfig))  # as `operator run` with KUBECONFIG
    clients = kube.Clients.create()
    stale = kube.read_model(clients, namespace, "digits")
    assert stale is not None
    # Another writer changes the status after the operator read the object.
    local_cluster.kubectl("patch", "om", "digits", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"message": "written by another writer"}}))
    # A write that insists on the resourceVersion it read is refused: the race is real...
    body = {**stale, "status": {"phase": "Pending"}}
    with pytest.raises(ApiException) as refused:
        clients.custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "digits", body)
    assert refused.value.status == 409
    # ...and the operator's status patch, decided from the stale read, is applied all the same.
    kube.patch_status(clients, namespace, "digits", {"phase": "Pending", "observedGeneration": 1})
    stored = kube.read_model(clients, namespace, "digits")
    assert stored is not None and stored["status"]["phase"] == "Pending"
    assert stored["status"]["message"] == "written by another writer", "a merge patch keeps the other's field"

    # A child another writer changed since: server-side apply takes the operator's fields back (force).
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OptimizedModel", "name": "digits",
             "uid": stored["metadata"]["uid"], "controller": True}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "digits-race", "namespace": namespace, "ownerReferences": [owner],
                            "labels": {"optimodel.io/model": "digits", "race": "operator"}},
               "spec": {"selector": {"optimodel.io/model": "digits"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    assert kube.apply_actions(clients, namespace, Actions(apply=(service,))) == [("Created", "Service", "digits-race")]
    local_cluster.kubectl("label", "service", "digits-race", "-n", namespace, "race=other", "--overwrite")
    assert kube.apply_actions(clients, namespace, Actions(apply=(service,))) == [("Updated", "Service", "digits-race")]
    got = json.loads(local_cluster.kubectl("get", "service", "digits-race", "-n", namespace, "-o", "json").stdout)
    assert got["metadata"]["labels"]["race"] == "operator"
    # A create that finds its object already made (by an earlier reconcile) is no error and no change.
    job_like = {**service, "metadata": {**service["metadata"], "name": "digits-created-twice"}}
    assert kube.apply_actions(clients, namespace, Actions(create=(job_like,))) == [
        ("Created", "Service", "digits-created-twice")]
    assert kube.apply_actions(clients, namespace, Actions(create=(job_like,))) == []


# --- (a) API server and etcd restarted mid-reconcile ------------------------------------------------------------
def _started_at(pid: int) -> float:
    """A process's start, in seconds since the epoch (from /proc)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _node_agent_runs_this_checkout(cluster: LocalCluster) -> bool:
    """The node agent started after its code last changed: one started before the fix for containers started
    while the API server is unreachable ends the workers of the pods that start during the outage, for good."""
    pid = cluster.process("node-agent").pid()
    assert pid is not None, "the node agent runs"
    package = Path(node_agent.__file__).parent
    return _started_at(pid) > max(path.stat().st_mtime for path in package.glob("*.py"))


def test_api_server_and_etcd_restarted_mid_reconcile_lose_nothing(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    assert _node_agent_runs_this_checkout(local_cluster), (
        "the node agent is older than its code: restart it (`optimodel dev down && optimodel dev up`) before "
        "restarting the API server under it")
    # Revision 3's int8: results no earlier test of the module left, so its Job runs during the restarts.
    _apply(local_cluster, namespace, _revision(operator_in_cluster, 3, "int8"))
    running = wait_for(lambda: [j for j in _items(local_cluster, "jobs", namespace)
                                if (j.get("status") or {}).get("active")], 120, "the optimization Job running")
    (job,) = running
    revision = _until(local_cluster, namespace, lambda s: s.get("phase") == "Optimizing", "optimizing")["currentRevision"]
    assert not (job.get("status") or {}).get("succeeded")
    _restart(local_cluster, "kube-apiserver")  # the Job was running a moment ago; it may finish during the outage
    assert [j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace)] == [job["metadata"]["uid"]], \
        "the same Job, not a second"
    wait_for(lambda: _items(local_cluster, "deployments", namespace), 600, "the revision's Deployment", interval=0.3)
    deploying = _status(local_cluster, namespace)
    _restart(local_cluster, "etcd")  # while the revision deploys (its pods start)
    _restart(local_cluster, "kube-apiserver")
    assert not _ready(deploying), "the restarts began before the revision was Ready"

    done = _until(local_cluster, namespace, lambda s: _ready(s) and _promoted(revision)(s), "Ready after the restarts")
    jobs = _items(local_cluster, "jobs", namespace)
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]], "one Job per provider (cpu)"
    assert [r["name"] for r in done["revisions"]] == [revision] and done["currentRevision"] == revision
    assert done["phase"] == "Succeeded" and done["pools"][0]["variant"] == "int8"
    assert _replicas(local_cluster, namespace) == {revision: (2, 2)}
    # The endpoints controller and kube-proxy relist after the restarts (with client-go's back-off): the Service
    # routes to the new pods once they have caught up.
    ready_at = time.monotonic()
    try:
        wait_for(lambda: _routed(local_cluster, namespace), 180, "the Service routing to the ready pods", interval=1)
    except AssertionError:
        slices = local_cluster.kubectl("get", "endpointslices", "-n", namespace, "-o", "yaml").stdout
        raise AssertionError(f"not routed 180 s after Ready; EndpointSlices:\n{slices[-3000:]}") from None
    routed_s = time.monotonic() - ready_at
    assert _answered_by(local_cluster, namespace, operator_in_cluster) == {revision}, f"routed {routed_s:.0f} s after Ready"
    assert _reasons(local_cluster, namespace).count("JobCreated") == 1


# --- (b) the operator killed while deploying and while rolling back ------------------------------------------------
def test_operator_killed_while_deploying_resumes_and_serves(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    _apply(local_cluster, namespace, _revision(operator_in_cluster, 1, "source"))
    wait_for(lambda: _items(local_cluster, "deployments", namespace), 600, "the revision's Deployment", interval=0.3)
    deploying = _status(local_cluster, namespace)
    killed = _kill_operator(local_cluster)
    done = _until(local_cluster, namespace, lambda s: _ready(s) and _promoted()(s), "Ready after the restart")
    assert not set(_operator_pods(local_cluster)) & set(killed), "a new operator pod finished the revision"
    assert deploying.get("phase") in ("Optimizing", "Deploying"), deploying.get("phase")
    revision = done["currentRevision"]
    assert len(_items(local_cluster, "jobs", namespace)) == 1
    assert _replicas(local_cluster, namespace) == {revision: (2, 2)}, "one Deployment, not a second"
    assert [r["name"] for r in done["revisions"]] == [revision]
    assert _answered_by(local_cluster, namespace, operator_in_cluster) == {revision}


def test_operator_killed_while_rolling_back_ends_with_the_last_good_revision(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
        breach = _revision(operator_in_cluster, 2, "int8")
        breach["metadata"]["annotations"] = {"optimodel.io/inject-faults": "latency-ms=400"}
        _apply(local_cluster, namespace, breach)
        back = _until(local_cluster, namespace, lambda s: s.get("rolloutPhase") == "RolledBack", "rolling back",
                      timeout=400, interval=0.2)
        killed = _kill_operator(local_cluster)
        second = back["currentRevision"]
        wait_for(lambda: not set(_operator_pods(local_cluster)) & set(killed) and _operator_pods(local_cluster),
                 180, "a new operator pod")
        wait_for(lambda: _replicas(local_cluster, namespace) == {first: (2, 2), second: (0, 0)}, 120,
                 "revision 1 at 2 replicas, revision 2 at 0")
        # Reconciled by the new pod: an edit of nothing but an annotation makes it read everything again.
        local_cluster.kubectl("annotate", "om", "digits", "-n", namespace, "faults.test/poke=1", "--overwrite")
        time.sleep(6)
        after = _status(local_cluster, namespace)
        since = time.time()
        time.sleep(4)
        answered = traffic.revisions_since(since)
    assert after["rolloutPhase"] == "RolledBack" and after["stableRevision"] == first
    assert "p99-latency" in after["rolloutMessage"], after["rolloutMessage"]
    assert {r["name"]: r["phase"] for r in after["revisions"]} == {second: "RolledBack", first: "Stable"}
    assert set(answered) == {first}, f"every answer from the last good revision: {answered}"
    reasons = _reasons(local_cluster, namespace)
    # Once each: the new pod neither started the canary again nor rolled it back a second time (the Event of
    # the rollback may be the one the killed pod had no time to post).
    assert reasons.count("RolledBack") <= 1 and reasons.count("CanaryStarted") == 1, reasons
    assert _replicas(local_cluster, namespace) == {first: (2, 2), second: (0, 0)}


# --- (f) an optimization Job's pod killed --------------------------------------------------------------------------
def test_an_optimization_jobs_pod_killed_mid_run_is_replaced_and_the_revision_completes(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    manifest = _revision(operator_in_cluster, 1, "auto")
    manifest["spec"]["evaluation"]["maxDrop"] = 0.045  # a revision of its own: its Job must run

    def running() -> list[dict[str, Any]]:
        return [p for p in _items(local_cluster, "pods", namespace) if "optimodel.io/provider" in p["metadata"]["labels"]
                and (p.get("status") or {}).get("phase") == "Running"]

    _apply(local_cluster, namespace, manifest)
    (pod,) = wait_for(running, 120, "the optimization Job's pod running", interval=0.3)
    local_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    done = _until(local_cluster, namespace, lambda s: _ready(s) and _promoted()(s), "Ready after the pod was killed",
                  timeout=600)
    (job,) = _items(local_cluster, "jobs", namespace)
    counts = job.get("status") or {}
    assert (counts.get("failed"), counts.get("succeeded")) == (1, 1), counts
    assert _reasons(local_cluster, namespace).count("JobCreated") == 1, "the Job replaced its pod; no second Job"
    revision = done["currentRevision"]
    assert [r["name"] for r in done["revisions"]] == [revision]
    assert _answered_by(local_cluster, namespace, operator_in_cluster) == {revision}


# --- (c) artifact bytes corrupted after the gate -----------------------------------------------------------------
def _blobs_of(variant: str) -> list[Path]:
    """The blobs of the module store's manifests of `variant` (every revision's: builds are shared by content)."""
    found = set()
    for path in (STORE / "manifests").rglob("*.json"):
        manifest = json.loads(path.read_text())
        if manifest.get("name") == variant:
            found.add(STORE / manifest["blob"])
    return sorted(found)


def test_corrupted_artifact_bytes_are_refused_the_rollout_holds_and_says_why(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    second_manifest = _revision(operator_in_cluster, 2, "int8")
    # Revision 2's results in the store first (its Job runs elsewhere, or ran in an earlier test: reused): its
    # int8 passed the gate, and only then are its bytes changed.
    elsewhere = f"{namespace}-prep"
    local_cluster.kubectl("create", "namespace", elsewhere)
    try:
        local_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", elsewhere, "--timeout=60s")
        _apply(local_cluster, elsewhere, second_manifest)
        _until(local_cluster, elsewhere, lambda s: _cond(s, "Gated").get("status") == "True",
               "revision 2 optimized and gated", timeout=400)
    finally:
        local_cluster.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)
    blobs = _blobs_of("int8")
    assert blobs, "revision 2's int8 artifact is in the store"
    kept = {blob: blob.read_bytes() for blob in blobs}
    try:
        for blob, data in kept.items():
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes: only the sha256 tells
            blob.write_bytes(bytes(flipped))
        with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
            _apply(local_cluster, namespace, second_manifest)
            held = _until(local_cluster, namespace,
                          lambda s: "refused the artifact" in _cond(s, "Deployed").get("message", ""),
                          "the status saying why the new servers are not ready", timeout=400)
            second = held["currentRevision"]
            time.sleep(8)  # several analyses of the stable revision, and the pods stay refused
            still = _status(local_cluster, namespace)
            since = time.time()
            time.sleep(4)
            answered = traffic.revisions_since(since)
    finally:
        for blob, data in kept.items():
            blob.write_bytes(data)
    message = _cond(still, "Deployed")["message"]
    assert "refused the artifact" in message and "HashMismatch" in message, message
    assert still["phase"] == "Deploying" and still["currentRevision"] == second and still["stableRevision"] == first
    assert still["rolloutPhase"] == "Promoted", "no canary began: the stable revision stays promoted"
    assert _replicas(local_cluster, namespace)[first] == (2, 2)
    assert _replicas(local_cluster, namespace)[second][1] == 0, "no server of the corrupted artifact is ready"
    assert set(answered) == {first}, f"every answer from the last good revision: {answered}"
    assert {r["name"]: r["phase"] for r in still["revisions"]}[first] == "Stable"


# --- (d) the artifact store unreachable during a new revision ---------------------------------------------------
def _store_keys(cluster: LocalCluster) -> dict[str, str]:
    data = json.loads(cluster.kubectl("get", "secret", seaweedfs.USER_SECRET, "-n", seaweedfs.NAMESPACE, "-o",
                                      "json").stdout)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


@pytest.fixture
def bucket_folder(local_cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """A folder of the local S3 store's bucket for the test, and the namespace's Secret with the store's keys;
    the folder is removed afterwards."""
    keys = _store_keys(local_cluster)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-keys"}, "type": "Opaque",
              "stringData": keys}
    _apply(local_cluster, namespace, secret)
    folder = f"{seaweedfs.BUCKET}/faults/{namespace}"
    try:
        yield folder
    finally:
        bucket = s3fs.S3FileSystem(key=keys["AWS_ACCESS_KEY_ID"], secret=keys["AWS_SECRET_ACCESS_KEY"],
                                   endpoint_url=local_cluster.s3_endpoint, use_listings_cache=False)
        if bucket.exists(folder):
            bucket.rm(folder, recursive=True)


def test_store_unreachable_during_a_new_revision_keeps_the_last_good_serving_then_recovers(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, bucket_folder: str
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    second_manifest = _revision(operator_in_cluster, 2, "int8")
    store = f"s3://{bucket_folder}/store"
    second_manifest["spec"]["artifacts"] = {"uri": store, "credentials": {"name": "store-keys"}}
    weed = local_cluster.process("seaweedfs")
    try:
        assert weed.stop(), "the S3 store was running"
        _apply(local_cluster, namespace, second_manifest)
        failed = _until(local_cluster, namespace, lambda s: s.get("phase") == "Failed", "the new revision failed",
                        timeout=300)
        answered_meanwhile = _answered_by(local_cluster, namespace, operator_in_cluster)
    finally:
        local_cluster.up()
    optimized = _cond(failed, "Optimized")
    assert optimized["status"] == "False" and optimized["reason"] == "HostUnreachable", optimized
    assert store in optimized["message"], optimized["message"]
    # The operator says when it reruns the Job, and is not stalled meanwhile.
    assert "retry 1 of 3 at" in optimized["message"] and _cond(failed, "Stalled")["status"] == "False", failed
    retried_job = failed["optimizationRetry"]["job"]
    degraded = _cond(failed, "Degraded")
    assert degraded["status"] == "True" and f"revision {first} keeps serving" in degraded["message"], degraded
    assert failed["stableRevision"] == first and answered_meanwhile == {first}
    second = failed["currentRevision"]
    assert second not in _replicas(local_cluster, namespace), "nothing of the failed revision is deployed"

    # The store is back: the operator reruns the failed Job by itself, the same revision, without a spec change.
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        done = _until(local_cluster, namespace, _promoted(second), "the same revision promoted once the store is back",
                      timeout=600, interval=2)
    assert done["currentRevision"] == second and done["previousStableRevision"] == first
    assert [r["name"] for r in done["revisions"]] == [second, first]
    assert done["pools"][0]["artifact"].startswith(store), done["pools"][0]
    assert _answered_by(local_cluster, namespace, operator_in_cluster) == {second}
    events = events_for(local_cluster.kubectl, namespace, "digits")
    retried = [e["message"] for e in events if e["reason"] == "OptimizationRetried"]
    assert retried and all("HostUnreachable" in m and retried_job in m for m in retried), retried
    assert any("retry 1 of 3" in m for m in retried), retried
    created = [e for e in events if e["reason"] == "JobCreated" and retried_job in e["message"]]
    assert sum(e.get("count") or 1 for e in created) == 1 + len(retried), "created again under its own name"


# --- (e) an optimization Job out of memory -----------------------------------------------------------------------
def _set_job_memory(cluster: LocalCluster, value: str | None) -> None:
    """The operator's Job memory (OPTIMODEL_JOB_MEMORY, the chart's jobs.memory) set on its Deployment, or
    removed (None: the chart's value again); waits for the new pod."""
    setting = f"OPTIMODEL_JOB_MEMORY={value}" if value else "OPTIMODEL_JOB_MEMORY-"
    cluster.kubectl("set", "env", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE, setting)

    def only_the_new_pod_acts() -> bool:
        # `rollout status` is done while the old pod still terminates, and until it lets the Lease go it acts
        # (with the old setting: seen creating the Job with 4Gi). Wait until the new pod alone is left and leads.
        pods = json.loads(cluster.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS, "-o",
                                          "json").stdout)["items"]
        if len(pods) != 1:
            return False
        env = {e["name"]: e.get("value") for c in pods[0]["spec"]["containers"] for e in c.get("env") or []}
        lease = json.loads(cluster.kubectl("get", "lease", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE, "-o",
                                           "json").stdout)
        return env.get("OPTIMODEL_JOB_MEMORY") == value and \
            lease["spec"].get("holderIdentity") == pods[0]["metadata"]["name"]

    wait_for(only_the_new_pod_acts, 240, f"the operator acting with OPTIMODEL_JOB_MEMORY={value}", interval=1)


def test_job_out_of_memory_says_so_deploys_nothing_and_the_last_good_serves(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    # Revision 1 made a Job of its own unless an earlier test left its results in the module's store.
    before = {j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace)}
    _set_job_memory(local_cluster, "48Mi")  # far too little for Python with torch and ONNX Runtime
    try:
        hungry = _revision(operator_in_cluster, 1, "int8")
        hungry["spec"]["evaluation"]["maxDrop"] = 0.07  # a revision of its own: its Job must run
        _apply(local_cluster, namespace, hungry)
        failed = _until(local_cluster, namespace, lambda s: s.get("phase") == "Failed", "the Job out of memory",
                        timeout=400)
    finally:
        _set_job_memory(local_cluster, None)
    (job,) = [j for j in _items(local_cluster, "jobs", namespace) if j["metadata"]["uid"] not in before]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "48Mi"
    pods = [p for p in _items(local_cluster, "pods", namespace)
            if p["metadata"]["labels"].get("job-name") == job["metadata"]["name"]]
    terminated = [s["state"]["terminated"] for p in pods for s in p["status"].get("containerStatuses") or []
                  if (s.get("state") or {}).get("terminated")]
    assert terminated and all(t["reason"] == "OOMKilled" and t["exitCode"] == 137 for t in terminated), terminated
    optimized = _cond(failed, "Optimized")
    assert optimized["status"] == "False" and optimized["reason"] == "OutOfMemory", optimized
    assert "exceeded its memory limit" in optimized["message"]
    assert f"revision {first} keeps serving" in _cond(failed, "Degraded")["message"]
    assert set(_replicas(local_cluster, namespace)) == {first}, "nothing of the failed revision is deployed"
    assert failed["stableRevision"] == first
    assert _answered_by(local_cluster, namespace, operator_in_cluster) == {first}
    assert condition(get_model(local_cluster.kubectl, namespace, "digits"), "Stalled")["status"] == "True"



# --- a node of the pool lost ---------------------------------------------------------------------------------------
def _serving_nodes(cluster: LocalCluster, namespace: str) -> list[str]:
    """The node of each ready, not-deleted pod of the model, sorted."""
    nodes = []
    for pod in _items(cluster, "pods", namespace):
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])
        if ready and not pod["metadata"].get("deletionTimestamp") and "optimize" not in pod["metadata"]["name"]:
            nodes.append(pod["spec"]["nodeName"])
    return sorted(nodes)


def _node_ready(cluster: LocalCluster, node: str) -> str:
    conditions = json.loads(cluster.kubectl("get", "node", node, "-o", "json").stdout)["status"]["conditions"]
    return next(c["status"] for c in conditions if c["type"] == "Ready")


def test_a_node_of_the_pool_lost_its_pods_come_back_on_another_node_of_the_pool(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    manifest = _revision(operator_in_cluster, 1, "source")
    # The default toleration of an unreachable node is 300 s; a pool that wants its pods moved sooner says so.
    for pool in manifest["spec"]["nodePools"]:
        pool["tolerations"] = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 5}]
    _apply(local_cluster, namespace, manifest)
    first = _until(local_cluster, namespace, _promoted(), "revision 1 promoted")["stableRevision"]
    placed = wait_for(lambda: (lambda n: n if len(n) == 2 else None)(_serving_nodes(local_cluster, namespace)), 120,
                      "two ready server pods")
    lost = placed[0]
    (other,) = {"cpu-0", "cpu-1"} - {lost}
    # The module's store may already hold revision 1's results (earlier tests), so there may be no Job at all:
    # what matters is that the move makes none.
    jobs_before = [j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace)]
    state_dir = local_cluster.layout.root
    silenced_at = time.monotonic()
    set_silenced(state_dir, lost, True)
    try:
        # The controller-manager marks the node unreachable after its grace period (40 s) without a Lease renewal,
        # taints it, and evicts the pods whose toleration ran out; the ReplicaSet starts others where it can.
        wait_for(lambda: _node_ready(local_cluster, lost) == "Unknown", 120, f"node {lost} unreachable", interval=1)
        moved = wait_for(lambda: (lambda n: n if n == [other, other] else None)(_serving_nodes(local_cluster, namespace)),
                         180, f"both server pods ready on {other}", interval=1)
        moved_s = time.monotonic() - silenced_at
        assert moved == [other, other]
        done = _until(local_cluster, namespace, lambda s: _ready(s) and _promoted(first)(s), "Ready on the other node")
        assert [r["name"] for r in done["revisions"]] == [first], "no revision made or lost by the move"
        assert [j["metadata"]["uid"] for j in _items(local_cluster, "jobs", namespace)] == jobs_before, "no Job made by the move"
        wait_for(lambda: _routed(local_cluster, namespace), 60, "the Service routing to the moved pods", interval=1)
        assert _answered_by(local_cluster, namespace, operator_in_cluster) == {first}, f"moved in {moved_s:.0f} s"
    finally:
        set_silenced(state_dir, lost, False)
    wait_for(lambda: _node_ready(local_cluster, lost) == "True", 90, f"node {lost} back", interval=1)
