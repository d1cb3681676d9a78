"""The rollout, end to end: the operator in a pod, real optimization Jobs, real model-server pods under
live traffic through kube-proxy, the local cluster's real Prometheus scraping them every second.

Revision 1 serves the source model; revision 2 (another accuracy budget: a new revision) serves int8.
(a) a good revision is promoted through every step, both revisions answering while it is a canary;
(b) injected latency rolls the canary back; (c) a canary whose predictions differ from the stable's
(its servers' answers biased to class 0) is rolled back on prediction drift; (d) inputs drifting after
promotion roll a static-int8 revision back to the float one; (e) Prometheus stopped mid-rollout holds the
canary, which resumes when Prometheus returns; (f) the operator pod killed mid-rollout resumes at the same
step; (g)+(h) without traffic nothing is promoted (held, saying why); then promote and abort by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE
from optimodel_operator.examples import Published
from optimodel_operator.testing.cluster import events_for, get_model, until_status, wait_for
from optimodel_operator.testing.rollout import FAST_ROLLOUT, Traffic, digits_revision, evaluation_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# One store for the module: revision 2's Jobs run once, later tests reuse their results by content.
STORE = "/var/lib/optimodel/store/tests/rollout"


def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _status(cluster: LocalCluster, namespace: str, name: str = "digits") -> dict[str, Any]:
    return (get_model(cluster.kubectl, namespace, name) or {}).get("status") or {}


def _until(cluster: LocalCluster, namespace: str, accept: Any, what: str, timeout: float = 240,
           name: str = "digits") -> dict[str, Any]:
    return until_status(cluster.kubectl, namespace, name, accept, what, timeout,
                        operator=(OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT))


def _promoted(revision: str | None = None) -> Any:
    return lambda s: s.get("rolloutPhase") == "Promoted" and (revision is None or s.get("stableRevision") == revision)


def _address(cluster: LocalCluster, namespace: str) -> str:
    service = json.loads(cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    return f"http://{service['spec']['clusterIP']}:80"


def _first_revision(cluster: LocalCluster, namespace: str, published: Published, variant: str = "source",
                    rollout: dict[str, Any] | None = None) -> str:
    _apply(cluster, namespace, digits_revision("digits", STORE, 1, variant, rollout=rollout, published=published))
    return _until(cluster, namespace, _promoted(), "revision 1 promoted")["stableRevision"]


def _second_revision(cluster: LocalCluster, namespace: str, published: Published, variant: str = "int8",
                     annotations: dict[str, str] | None = None, rollout: dict[str, Any] | None = None) -> None:
    manifest = digits_revision("digits", STORE, 2, variant, rollout=rollout, published=published)
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    _apply(cluster, namespace, manifest)


def _canary(status: dict[str, Any]) -> bool:
    return status.get("rolloutPhase") == "Canary"


def _reasons(cluster: LocalCluster, namespace: str) -> list[str]:
    return [e["reason"] for e in events_for(cluster.kubectl, namespace, "digits")]


def _replicas(cluster: LocalCluster, namespace: str) -> dict[str, int]:
    out = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-l", "optimodel.io/model=digits",
                                     "-o", "json").stdout)
    return {d["metadata"]["labels"]["optimodel.io/revision"]: d["spec"]["replicas"] for d in out["items"]}


def test_a_good_revision_is_promoted_through_every_step(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
        _second_revision(local_cluster, namespace, operator_in_cluster)
        canary = _until(local_cluster, namespace, _canary, "revision 2 a canary")
        second = canary["currentRevision"]
        assert canary["canaryWeight"] == 50 and canary["stableRevision"] == first
        assert _replicas(local_cluster, namespace) == {first: 1, second: 1}, "50% of 2 replicas each"
        split_from = time.time()
        try:
            done = _until(local_cluster, namespace, _promoted(second), "revision 2 promoted")
        except AssertionError as error:
            raise AssertionError(f"traffic: {traffic.revisions_since(0)}; {str(error)[:1500]}") from None
        answered = traffic.revisions_since(split_from)
        assert answered.get(first, 0) > 10 and answered.get(second, 0) > 10, f"both served the canary: {answered}"
        assert done["previousStableRevision"] == first
        assert done["lastAnalysis"]["verdict"] == "Pass"
        names = {m["name"] for m in done["lastAnalysis"]["measurements"]}
        assert {"request-count", "p99-latency", "error-rate"} <= names, names
        assert done["lastAnalysis"]["p99LatencyMs"] < 250
        # Every step was analysed and passed; the old revision is kept at 0 replicas for rollback.
        reasons = _reasons(local_cluster, namespace)
        assert reasons.count("CanaryStarted") == 1 and "CanaryProgressing" in reasons and "RolledBack" not in reasons, \
            reasons
        wait_for(lambda: _replicas(local_cluster, namespace) == {first: 0, second: 2}, 30, "the old revision at 0")
        settled = time.time() + 3
        time.sleep(6)
        assert set(traffic.revisions_since(settled)) == {second}
    local_cluster.kubectl("wait", "--for=condition=Ready", "om/digits", "-n", namespace, "--timeout=10s")
    row = local_cluster.kubectl("get", "om", "digits", "-n", namespace, "--no-headers").stdout
    assert "Succeeded" in row


def test_injected_latency_rolls_the_canary_back(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
        _second_revision(local_cluster, namespace, operator_in_cluster,
                         annotations={"optimodel.io/inject-faults": "latency-ms=400"})
        back = _until(local_cluster, namespace, lambda s: s.get("rolloutPhase") == "RolledBack", "rolled back")
        assert back["stableRevision"] == first and back["phase"] == "RolledBack"
        assert "p99-latency" in back["rolloutMessage"], back["rolloutMessage"]
        assert back["revisions"][0]["phase"] == "RolledBack"
        failed = [m for m in back["lastAnalysis"]["measurements"] if m["phase"] == "Failed"]
        assert [m["name"] for m in failed] == ["p99-latency"] and failed[0]["value"] > 250
        wait_for(lambda: _replicas(local_cluster, namespace).get(first) == 2, 30, "the stable revision at 2")
        time.sleep(4)
        since = time.time()
        time.sleep(4)
        answered = traffic.revisions_since(since)
        assert {k for k in answered if not k.startswith("status")} == {first}, f"all traffic on stable: {answered}"
        failed = sum(v for k, v in answered.items() if k.startswith("status"))
        assert failed <= 0.02 * sum(answered.values()), answered
    assert "RolledBack" in _reasons(local_cluster, namespace)
    ready = next(c for c in back["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_a_canary_whose_predictions_differ_is_rolled_back(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        # The canary's servers add 50 to class 0's score: other predictions from the same inputs (its inputs
        # do not drift, so only the comparison with the stable revision's predictions can tell).
        _second_revision(local_cluster, namespace, operator_in_cluster,
                         annotations={"optimodel.io/inject-faults": "output-bias=50"})
        back = _until(local_cluster, namespace, lambda s: s.get("rolloutPhase") == "RolledBack", "rolled back")
    assert back["stableRevision"] == first
    failed = {m["name"] for m in back["lastAnalysis"]["measurements"] if m["phase"] == "Failed"}
    assert failed == {"prediction-drift"}, back["lastAnalysis"]
    assert back["lastAnalysis"]["predictionPSI"] > 0.25


def test_input_drift_after_promotion_rolls_static_int8_back_to_the_float_revision(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster, variant="source")
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
        _second_revision(local_cluster, namespace, operator_in_cluster, variant="int8-static")
        second = _until(local_cluster, namespace, lambda s: s.get("currentRevision") != first
                        and _promoted(s.get("currentRevision"))(s), "revision 2 promoted", timeout=300)
        # Live inputs move far outside what the gate evaluated (and what int8 was calibrated on).
        traffic.shift = 6.0
        back = _until(local_cluster, namespace, lambda s: s.get("rolloutReason") == "InputDrift", "input drift")
    assert back["stableRevision"] == first, "back to the revision that serves the float model"
    assert "inputs drifted beyond the evaluated range" in back["rolloutMessage"]
    degraded = next(c for c in back["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InputDrift"
    assert back["lastAnalysis"]["psi"] > 0.25
    wait_for(lambda: _replicas(local_cluster, namespace).get(first) == 2, 60, "the float revision at 2")


def test_prometheus_stopped_mid_rollout_holds_the_canary_until_it_returns(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    _first_revision(local_cluster, namespace, operator_in_cluster)
    prometheus = local_cluster.process("prometheus")
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        _second_revision(local_cluster, namespace, operator_in_cluster)
        _until(local_cluster, namespace, _canary, "revision 2 a canary")
        prometheus.stop()
        try:
            held = _until(local_cluster, namespace, lambda s: s.get("rolloutReason") == "AnalysisError",
                          "holding on analysis errors", timeout=60)
            assert "Prometheus could not be asked" in held["rolloutMessage"]
            time.sleep(8)
            still = _status(local_cluster, namespace)
            assert still["rolloutPhase"] == "Canary" and still["canaryWeight"] == held["canaryWeight"]
            assert still["consecutiveErrors"] >= 3
        finally:
            local_cluster.up()  # starts what is not running: Prometheus, on its own data
        done = _until(local_cluster, namespace, _promoted(held["currentRevision"]), "promoted once it returned")
    assert done["lastAnalysis"]["verdict"] == "Pass"
    assert "RolledBack" not in _reasons(local_cluster, namespace)


@pytest.mark.parametrize("step", [0, 1, 2], ids=["first-step", "middle-step", "last-step"])
def test_the_operator_killed_mid_rollout_resumes_at_the_same_step(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, step: int
) -> None:
    slow = {**FAST_ROLLOUT, "steps": [25, 50, 100], "interval": "8s"}
    _first_revision(local_cluster, namespace, operator_in_cluster, rollout=slow)
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        _second_revision(local_cluster, namespace, operator_in_cluster, rollout=slow)
        at = _until(local_cluster, namespace, lambda s: _canary(s) and s.get("canaryStep") == step, f"step {step + 1}")
        local_cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, "-l",
                              f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}", "--wait=false")

        def resumed(s: dict[str, Any]) -> bool:
            # An analysis after the restart at this step or a later one; from the last step that may be the promotion.
            newer = s.get("lastAnalysisTime", "") > at.get("lastAnalysisTime", "")
            return newer and ((_canary(s) and s.get("canaryStep", 0) >= step) or _promoted(at["currentRevision"])(s))

        after = _until(local_cluster, namespace, resumed, "an analysis after the restart", timeout=120)
        # Never back to an earlier step or an earlier start: either promoted, or at this step or later, started then.
        assert _promoted(at["currentRevision"])(after) or (
            after["canaryStep"] >= step and after["stepStartTime"] >= at["stepStartTime"]), (at, after)
        done = _until(local_cluster, namespace, _promoted(at["currentRevision"]), "promoted after the restart")
    reasons = _reasons(local_cluster, namespace)
    assert reasons.count("CanaryStarted") == 1, "resumed, not started over"
    assert done["previousStableRevision"] == at["stableRevision"]


def test_no_traffic_never_promotes_then_promote_and_abort_by_hand(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    first = _first_revision(local_cluster, namespace, operator_in_cluster)
    _second_revision(local_cluster, namespace, operator_in_cluster)
    held = _until(local_cluster, namespace, lambda s: _canary(s) and s.get("rolloutReason") == "AnalysisNoData",
                  "the canary holding without data")
    time.sleep(10)  # five more analyses without a request
    still = _status(local_cluster, namespace)
    assert still["rolloutPhase"] == "Canary" and still["canaryWeight"] == held["canaryWeight"]
    assert still["consecutiveNoData"] >= 4
    assert "never promoted without data" in still["rolloutMessage"]
    assert still["lastAnalysis"]["verdict"] == "NoData"
    second = still["currentRevision"]
    env = {**os.environ, "KUBECONFIG": str(local_cluster.kubeconfig)}
    cli = [str(Path(sys.executable).parent / "optimodel")]
    subprocess.run([*cli, "promote", "digits", "-n", namespace], check=True, env=env, capture_output=True)
    promoted = _until(local_cluster, namespace, _promoted(second), "promoted by hand", timeout=60)
    assert promoted["rolloutReason"] == "ManuallyPromoted"
    subprocess.run([*cli, "abort", "digits", "-n", namespace], check=True, env=env, capture_output=True)
    aborted = _until(local_cluster, namespace, lambda s: s.get("rolloutPhase") == "Aborted", "aborted by hand", timeout=60)
    assert aborted["stableRevision"] == first
    wait_for(lambda: _replicas(local_cluster, namespace) == {first: 2, second: 0}, 60, "revision 1 serves again")
    assert {"ManuallyPromoted", "Aborted"} <= set(_reasons(local_cluster, namespace))


def test_gateway_api_routing_writes_the_weights_of_each_step_into_the_httproute(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published
) -> None:
    # No gateway implementation runs on the local cluster: this checks what the operator writes, not traffic.
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "digits"},
             "spec": {"parentRefs": [{"name": "public"}],
                      "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/digits"}}],
                                 "backendRefs": [{"name": "digits", "port": 80}]}]}}
    _apply(local_cluster, namespace, route)
    gateway = {**FAST_ROLLOUT, "steps": [30, 60, 100], "interval": "3s",
               "trafficRouting": {"gatewayAPI": {"httpRoute": "digits"}}}
    first = _first_revision(local_cluster, namespace, operator_in_cluster, rollout=gateway)

    def weights() -> dict[str, int]:
        got = json.loads(local_cluster.kubectl("get", "httproute", "digits", "-n", namespace, "-o", "json").stdout)
        (rule,) = got["spec"]["rules"]
        assert rule["matches"][0]["path"]["value"] == "/v2/models/digits", "the user's matches are kept"
        return {b["name"]: b.get("weight", 1) for b in rule["backendRefs"]}

    assert weights() == {"digits-stable": 100, "digits-canary": 0}
    seen: list[dict[str, int]] = []
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        _second_revision(local_cluster, namespace, operator_in_cluster, rollout=gateway)

        def promoted_watching() -> dict[str, Any] | None:
            now = weights()
            if not seen or seen[-1] != now:
                seen.append(now)
            status = _status(local_cluster, namespace)
            return status if status.get("rolloutPhase") == "Promoted" and status.get("stableRevision") != first else None

        done = wait_for(promoted_watching, 240, "revision 2 promoted through the route's weights", interval=0.3)
    assert {"digits-stable": 70, "digits-canary": 30} in seen and {"digits-stable": 40, "digits-canary": 60} in seen, seen
    assert seen[-1] == {"digits-stable": 100, "digits-canary": 0}
    stable = json.loads(local_cluster.kubectl("get", "service", "digits-stable", "-n", namespace, "-o", "json").stdout)
    assert stable["spec"]["selector"]["optimodel.io/revision"] == done["stableRevision"]
    assert _replicas(local_cluster, namespace)[done["stableRevision"]] == 2
