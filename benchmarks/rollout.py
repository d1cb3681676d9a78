"""Seconds from the onset of an injected breach to all traffic on the stable revision and the resource
reporting the rollback, on the local cluster, beside the floor and beside Flagger's defaults.

1. the local cluster up (Prometheus scraping every `scrape_interval_s`), the CRD, the zoo's digits MLP
   published, the operator running as a pod; live traffic (independent senders, a new connection per
   request) through the model's Service all along;
2. revision 1 (the source model) promoted; revision 2 (int8) applied with `rollout.interval` 2 s,
   failureLimit 1, p99 SLO 250 ms, steps 20..100 (one of two replicas each until the last), its servers
   started with runtime fault control (annotation optimodel.io/inject-faults: control=true);
3. each breach run: once the canary has passed an analysis, 400 ms of latency is switched on in every
   canary server at one instant (PUT /v2/faults on each pod) = onset. Measured: until status says
   RolledBack (`status_s`), until the last answer from the canary (`traffic_s`); a run's figure is the
   later of the two. Then `optimodel retry` brings up a fresh canary (new pods, no fault) for the next run;
4. each good run: a fresh canary with no fault must be promoted; a rollback there is a false rollback.
   Then `optimodel abort` puts revision 1 back and the next run retries revision 2.

The floor is what the design cannot beat: one scrape interval (the breach reaches Prometheus) + one
analysis interval (the next analysis) + one reconcile (measured: the operator's analysis + apply).
Flagger's figure is its documented default behaviour (interval x threshold, 1m x 5 in its canary examples),
printed for comparison, not measured here.

Targets: rollback_s_median <= 10 at a 1 s scrape and a 2 s interval; false_rollbacks == 0.
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop import cpu_flags  # noqa: E402 - the benchmarks' shared CPU report

from optimodel_localcluster.cluster import LocalCluster  # noqa: E402
from optimodel_operator.demo import install_operator  # noqa: E402
from optimodel_operator.examples import publish  # noqa: E402
from optimodel_operator.testing.cluster import install_crd, operator_replicas, scale_operator  # noqa: E402
from optimodel_operator.testing.rollout import FAST_ROLLOUT, Traffic, digits_revision, evaluation_rows  # noqa: E402

STORE = Path("/var/lib/optimodel/store/bench-rollout")
SCRAPE_INTERVAL_S = 1.0  # the local cluster's Prometheus (optimodel_localcluster.components.prometheus_config)
ANALYSIS_INTERVAL_S = 2.0
FLAGGER_DEFAULT_S = 60 * 5  # analysis.interval 1m x threshold 5, as in Flagger's canary examples
LATENCY_MS = 400
ROLLOUT = {**FAST_ROLLOUT, "steps": [20, 40, 60, 80, 100], "interval": f"{ANALYSIS_INTERVAL_S:g}s"}


def status(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "om", "digits", "-n", namespace, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    obj = json.loads(out.stdout)
    got = obj.get("status") or {}
    return got if got.get("observedGeneration") == obj["metadata"]["generation"] else {}


def wait(cluster: LocalCluster, namespace: str, accept: Any, what: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = status(cluster, namespace)
        if got and accept(got):
            return got
        time.sleep(0.1)
    raise SystemExit(f"{what} not reached in {timeout:.0f}s; status: {json.dumps(status(cluster, namespace))[:2000]}")


def canary_pods(cluster: LocalCluster, namespace: str, revision: str) -> list[str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"optimodel.io/revision={revision}",
                                      "-o", "json").stdout)["items"]
    return [p["status"]["podIP"] for p in pods if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]


def command(cluster: LocalCluster, word: str, namespace: str) -> None:
    cli = str(Path(sys.executable).parent / "optimodel")
    subprocess.run([cli, word, "digits", "-n", namespace], check=True, capture_output=True,
                   env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})


def breach_run(cluster: LocalCluster, namespace: str, traffic: Traffic, revision: str) -> dict[str, float]:
    wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "Canary"
         and (s.get("lastAnalysis") or {}).get("revision") == revision
         and (s.get("lastAnalysis") or {}).get("verdict") == "Pass"
         and (s.get("lastAnalysis") or {}).get("time", "") >= s.get("stepStartTime", "~"),
         "a canary that passed an analysis")
    pods = canary_pods(cluster, namespace, revision)
    onset = time.time()
    for ip in pods:
        httpx.put(f"http://{ip}:8080/v2/faults", json={"latencyMs": LATENCY_MS}, timeout=5).raise_for_status()
    back = wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "RolledBack", "the rollback", timeout=120)
    status_s = time.time() - onset
    if "p99-latency" not in (back.get("rolloutMessage") or ""):
        raise SystemExit(f"rolled back for another reason: {back.get('rolloutMessage')}")
    time.sleep(3)  # answers in flight from the canary arrive before its last one is read
    last = max((a.time for a in list(traffic.answers) if a.revision == revision and a.time >= onset), default=onset)
    return {"status_s": status_s, "traffic_s": last - onset, "rollback_s": max(status_s, last - onset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Breach runs.")
    parser.add_argument("--good-runs", type=int, default=3, help="Runs without a breach (false rollbacks).")
    args = parser.parse_args()

    cluster = LocalCluster()
    cluster.up(report=lambda step: print(f"[bench] {step}", flush=True))
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    install_crd(cluster.kubectl)
    published = publish()
    replicas_before = operator_replicas(cluster.kubectl)
    install_operator(cluster, report=lambda _: None)
    print(f"[bench] cpu: {json.dumps(cpu_flags())}; python {platform.python_version()}", flush=True)
    namespace = f"bench-rollout-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
    runs: list[dict[str, float]] = []
    false_rollbacks = 0
    reconcile_s: list[float] = []
    try:
        apply = lambda m: cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(m))  # noqa: E731
        apply(digits_revision("digits", STORE, 1, "source", rollout=ROLLOUT, published=published))
        first = wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "Promoted", "revision 1")["stableRevision"]
        service = json.loads(cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
        traffic = Traffic(f"http://{service['spec']['clusterIP']}:80", "digits", evaluation_rows(published)).start()
        second = digits_revision("digits", STORE, 2, "int8", rollout=ROLLOUT, published=published)
        second["metadata"]["annotations"] = {"optimodel.io/inject-faults": "control=true"}
        apply(second)
        revision = wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "Canary", "revision 2 canary",
                        timeout=600)["currentRevision"]
        for run in range(args.runs):
            if run:
                command(cluster, "retry", namespace)
            got = breach_run(cluster, namespace, traffic, revision)
            runs.append(got)
            print(f"[bench] breach run {run + 1}: rolled back {got['rollback_s']:.2f}s after the onset "
                  f"(status {got['status_s']:.2f}s, last canary answer {got['traffic_s']:.2f}s)", flush=True)
        for run in range(args.good_runs):
            command(cluster, "retry", namespace)
            wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "Canary", "the retried canary")
            done = wait(cluster, namespace, lambda s: s.get("rolloutPhase") in ("Promoted", "RolledBack"), "end")
            promoted = done.get("rolloutPhase") == "Promoted"
            false_rollbacks += 0 if promoted else 1
            print(f"[bench] good run {run + 1}: {'promoted' if promoted else 'ROLLED BACK: ' + done.get('rolloutMessage', '')}",
                  flush=True)
            if promoted:
                command(cluster, "abort", namespace)
                wait(cluster, namespace, lambda s: s.get("rolloutPhase") == "Aborted", "aborted")
        logs = cluster.kubectl("logs", "-n", "optimodel-system", "deploy/optimodel-operator", "--tail=4000",
                               check=False).stdout
        for line in logs.splitlines():
            if "after an analysis, reconciled in" in line:
                try:
                    reconcile_s.append(float(line.rsplit("reconciled in", 1)[1].strip().split()[0].rstrip("s")))
                except ValueError:
                    pass
        traffic.stop()
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        scale_operator(cluster.kubectl, replicas_before)

    reconcile = statistics.median(reconcile_s) if reconcile_s else 0.5
    floor = SCRAPE_INTERVAL_S + ANALYSIS_INTERVAL_S + reconcile
    samples = [r["rollback_s"] for r in runs]
    result = {
        "rollback_s_median": round(statistics.median(samples), 2),
        "rollback_s_max": round(max(samples), 2),
        "rollback_samples_s": [round(s, 2) for s in samples],
        "status_samples_s": [round(r["status_s"], 2) for r in runs],
        "traffic_samples_s": [round(r["traffic_s"], 2) for r in runs],
        "floor_s": round(floor, 2),
        "reconcile_s_median": round(reconcile, 3),
        "scrape_interval_s": SCRAPE_INTERVAL_S,
        "analysis_interval_s": ANALYSIS_INTERVAL_S,
        "false_rollbacks": false_rollbacks,
        "good_runs": args.good_runs,
        "flagger_default_s": FLAGGER_DEFAULT_S,
        "targets": {"rollback_s_median": 10, "false_rollbacks": 0},
        "cpu_vnni": cpu_flags()["vnni"],
        "cores": os.cpu_count(),
    }
    result["targets_met"] = result["rollback_s_median"] <= 10 and false_rollbacks == 0
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
