"""The rollout's analysis against the local cluster's real Prometheus, scraping real model-server pods.

One stable revision and five canaries of the same model (``mlp``) on the cpu pool, each a server
Deployment of its own: a good one (the same artifact), one with injected latency, one answering errors,
one whose inputs are shifted, one whose weights differ (other predictions on the same inputs). Every pod
gets the same requests on its pod IP; then the analysis plans, queries Prometheus through the provider and
measures. The good canary passes with sane values; each fault fails exactly the check it should; too few
requests is NoData; a Prometheus nobody listens on is Error.

Prometheus is the local cluster's (`local_cluster.prometheus_url`, on the pod bridge's host address); pods
reach the same server as monitoring/prometheus.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.analysis.answers import QueryResult
from optimodel_operator.analysis.assess import Verdict, assess
from optimodel_operator.analysis.measurement import CheckKind, MeasurementPhase, plan_analysis, run_analysis
from optimodel_operator.analysis.provider import PrometheusProvider
from optimodel_operator.analysis.queries import Scope, request_count
from optimodel_operator.api.rollout import Rollout
from optimodel_operator.testing.cluster import wait_for
from optimodel_server.sample_artifact import write_sample_artifact

pytestmark = [pytest.mark.cluster]

STORE_MOUNT = "/var/lib/optimodel/store"
PORT = 8080
FEATURES = 64
REPO = Path(__file__).resolve().parents[2]
# The pods run this checkout's server (the node agent runs the venv's python; the venv's editable install
# may point at another checkout).
SERVER_PYTHONPATH = ":".join(str(REPO / d) for d in ("model_server", "contracts"))
ROLLOUT = Rollout.model_validate({
    "slo": {"p99LatencyMs": 50, "maxErrorRate": 0.05},
    "drift": {"maxPSI": 0.2},
    "minSamples": 100,
    # A check of the user's own, its placeholders filled with the canary's scope.
    "checks": [{"name": "model-ready", "min": 1,
                "query": 'min(optimodel_model_ready{namespace="{{namespace}}", model="{{model}}", '
                         'revision="{{revision}}", pool="{{pool}}"})'}],
})
REQUESTS = 150
ROWS = 8

# revision -> (artifact, extra server flags)
CANARIES = {
    "good": ("a", []),
    "slow": ("a", ["--fault-latency-ms", "150"]),
    "errors": ("a", ["--fault-error-ratio", "0.5", "--fault-seed", "1"]),
    "shifted": ("a", ["--fault-input-shift", "3"]),
    "other": ("b", []),
}
STABLE = "stable"


def _server(revision: str, manifest_uri: str, store_dir: Path, flags: list[str]) -> dict:
    labels = {"app": "analysis-server", "revision": revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"mlp-{revision}"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT)}},
                "spec": {
                    "nodeSelector": {"optimodel.io/pool": "cpu"},
                    "containers": [{
                        "name": "server",
                        "image": "optimodel/server:dev",
                        "args": ["--manifest", manifest_uri, "--port", str(PORT), "--model-name", "mlp",
                                 "--revision", revision, "--pool", "cpu", "--drift-interval-s", "1",
                                 "--intra-op-threads", "1", *flags],
                        "env": [{"name": "PYTHONPATH", "value": SERVER_PYTHONPATH}],
                        "ports": [{"containerPort": PORT, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                           "periodSeconds": 1},
                        "volumeMounts": [{"name": "store", "mountPath": STORE_MOUNT, "readOnly": True}],
                    }],
                    "volumes": [{"name": "store", "hostPath": {"path": str(store_dir), "type": "Directory"}}],
                },
            },
        },
    }


def _pod_ips(cluster: LocalCluster, namespace: str) -> dict[str, str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=analysis-server",
                                      "-o", "json").stdout)["items"]
    return {p["metadata"]["labels"]["revision"]: p["status"]["podIP"] for p in pods
            if p["status"].get("podIP") and p["status"].get("phase") == "Running"}


def _traffic(pod_ip: str, requests: int) -> list[int]:
    codes = []
    with httpx.Client(base_url=f"http://{pod_ip}:{PORT}", timeout=30) as client:
        for seed in range(requests):
            data = np.random.default_rng(seed).standard_normal((ROWS, FEATURES)).astype(np.float32)
            body = {"inputs": [{"name": "features", "shape": [ROWS, FEATURES], "datatype": "FP32",
                                "data": data.ravel().tolist()}]}
            codes.append(client.post("/v2/models/mlp/infer", json=body).status_code)
    return codes


def _wait(what: str, check, timeout: float = 90, interval: float = 1.0):  # noqa: ANN001, ANN202
    return wait_for(check, timeout, what, interval)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_analysis_against_real_prometheus_and_servers(local_cluster: LocalCluster, namespace: str,
                                                      tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    uris = {"a": write_sample_artifact(str(store_dir), seed=0), "b": write_sample_artifact(str(store_dir), seed=3)}
    in_pod = {k: f"{STORE_MOUNT}/{Path(v).relative_to(store_dir)}" for k, v in uris.items()}
    revisions = {STABLE: ("a", []), **CANARIES}
    manifests = [_server(rev, in_pod[artifact], store_dir, flags) for rev, (artifact, flags) in revisions.items()]
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-",
                          input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    for revision in revisions:
        local_cluster.kubectl("rollout", "status", "-n", namespace, f"deployment/mlp-{revision}", "--timeout=180s",
                              timeout=200)
    ips = _wait("every pod's IP", lambda: (lambda found: found if set(found) == set(revisions) else None)(
        _pod_ips(local_cluster, namespace)))

    provider = PrometheusProvider(local_cluster.prometheus_url, timeout_s=5)
    assert provider.is_online()
    # A window wide enough to hold the whole burst even on a loaded machine (the slow canary alone takes
    # 150 x 150 ms): each revision's numbers are then over all of its requests.
    scopes = {rev: Scope(namespace, "mlp", rev, "cpu", window="3m") for rev in revisions}

    # Counters are created at zero at load: Prometheus must have scraped that zero before traffic starts, or
    # an increase() over the window would miss what came before its first sample.
    def scraped_at_zero() -> bool:
        answers = [provider.query(request_count(scope)) for scope in scopes.values()]
        return all(isinstance(a, QueryResult) and a.samples for a in answers)

    _wait("Prometheus to scrape every server", scraped_at_zero)
    started = time.monotonic()
    with ThreadPoolExecutor(len(ips)) as pool:
        codes = dict(zip(ips, pool.map(lambda rev: _traffic(ips[rev], REQUESTS), ips)))
    traffic_s = time.monotonic() - started
    assert set(codes["good"]) == {200} and 500 in codes["errors"]

    plans = {rev: plan_analysis(ROLLOUT, scopes[rev], stable_revision=STABLE) for rev in CANARIES}

    last: dict = {"traffic_s": traffic_s, "first": None}

    def settled() -> dict | None:
        # Scrapes every second, drift counters folded every second: wait until every canary's output bins
        # and request count hold the whole burst.
        results = {rev: {m.name: m for m in run_analysis(plan, provider.query)} for rev, plan in plans.items()}
        last["messages"] = {rev: [m.message for m in ms.values()] for rev, ms in results.items()}
        last["first"] = last["first"] or last["messages"]
        ready = all(r["request-count"].phase is MeasurementPhase.SUCCESSFUL
                    and r["prediction-drift"].phase is not MeasurementPhase.INCONCLUSIVE
                    and r["input-drift"].phase is not MeasurementPhase.INCONCLUSIVE for r in results.values())
        return results if ready else None

    time.sleep(4)
    try:
        results = _wait("every canary's measurements", settled, timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}: {json.dumps(last, indent=1)}") from None
    summary = {rev: {n: (m.phase.value, m.value) for n, m in ms.items()} for rev, ms in results.items()}

    good = results["good"]
    assert assess(list(good.values())).verdict is Verdict.PASS, summary
    assert 100 <= good["request-count"].value <= 2 * REQUESTS, summary
    assert 0 < good["p99-latency"].value < 50, summary
    assert good["error-rate"].value == 0, summary
    assert 0 <= good["input-drift"].value < 0.2, summary
    assert good["prediction-drift"].value < 0.05, summary  # the same model on the same inputs
    assert good["model-ready"].value == 1 and good["model-ready"].kind is CheckKind.USER, summary

    def failed(rev: str) -> set[str]:
        return set(assess(list(results[rev].values())).failed)

    assert failed("slow") == {"p99-latency"} and results["slow"]["p99-latency"].value >= 150, summary
    assert failed("errors") == {"error-rate"} and 0.3 < results["errors"]["error-rate"].value < 0.7, summary
    shifted = assess(list(results["shifted"].values()))
    assert "input-drift" in shifted.failed and shifted.input_drift_failed, summary
    assert not shifted.slo_failed, summary
    assert failed("other") == {"prediction-drift"}, summary
    assert assess(list(results["other"].values())).failed_kinds == {CheckKind.PREDICTION_DRIFT}

    # Too few requests for minSamples: every check Inconclusive, the verdict NoData (never Pass).
    strict = plan_analysis(Rollout.model_validate({**ROLLOUT.to_wire(), "minSamples": 100_000}), scopes["good"],
                           stable_revision=STABLE)
    measurements = run_analysis(strict, provider.query)
    assert {m.phase for m in measurements} == {MeasurementPhase.INCONCLUSIVE}
    assert assess(measurements).verdict is Verdict.NO_DATA

    # A revision nothing serves: no data, not a pass.
    ghost = run_analysis(plan_analysis(ROLLOUT, scopes["good"].with_revision("ghost"), STABLE), provider.query)
    assert assess(ghost).verdict is Verdict.NO_DATA and all(m.value is None for m in ghost)

    # Prometheus unreachable: Error, not a verdict on the canary.
    down = PrometheusProvider(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    assert not down.is_online()
    unreachable = run_analysis(plans["good"], down.query)
    assert {m.phase for m in unreachable} == {MeasurementPhase.ERROR}
    assert assess(unreachable).verdict is Verdict.ERROR
