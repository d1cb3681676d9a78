"""Hundreds of OptimizedModels on a hundred simulated nodes: time to all Ready, operator RSS and CPU, API requests.

What runs for real and what is simulated:
- real: etcd, kube-apiserver, kube-controller-manager and kube-scheduler (the pinned release, built here) in a
  cluster of their own (optimodel_localcluster.kwok.SimulatedCluster: its own state directory and ports, so
  the shared development cluster is not loaded); the operator, this checkout's code, as a local process
  (`optimodel operator run`) against that cluster; the optimization of the model: ONE real run of the
  optimizer (`python -m optimodel_jobs`, the Job's entrypoint, on this host) with exactly the config the
  operator computes for the model, writing its run record and verified manifests into a file store;
- simulated by kwok: the nodes (Ready, leases renewed) and the pods bound to them (Running and Ready at once;
  no model server process runs, no image is pulled).
Every model has the same name and spec, one per namespace, so each finds that one run record in the store
(content reuse, docs/operator.md: "the same spec applied again, in any namespace, starts no Job") and the
operator goes straight to a server Deployment per model on the simulated pool. The run checks that no Job
was created.

Figures:
- all_ready_s: from the end of the last `kubectl apply` (all models in one apply) until every model is Ready
  for its generation (polled every 0.5 s); also apply_s (the apply itself);
- operator_rss_mib (peak VmHWM of the operator process, from /proc) and operator CPU seconds (utime+stime)
  until all Ready and over the quiet window;
- API requests in steady state, from the API server's own counters (apiserver_request_total on /metrics),
  over a quiet window after everything is Ready (no change made): writes (POST, PUT, PATCH, APPLY, DELETE,
  DELETECOLLECTION) per model per minute, excluding only Node and Lease writes (kwok's simulated kubelets
  renewing node leases; the operator here holds no Lease: it runs without --leader-elect), which are listed
  apart; reads (GET, LIST) per model per minute, split into watches (verb WATCH: the long-lived watch requests,
  counted by the API server as each one ends) and every other read, and the other reads again restricted to
  the kinds the operator reads (OPERATOR_READ_RESOURCES; the control plane's own discovery and endpoint reads
  are not the operator's) of one object or one namespace, what a reconcile reads; cluster-wide lists of those
  kinds (kopf relisting, kube-apiserver's own Service repair loop) are counted apart; every (verb, resource)
  counted is printed.

Targets: 300 models on 100 nodes: all Ready within 60 s of the last apply, operator RSS <= 300 MiB,
steady_api_writes_per_model_per_min == 0, and reads only from watches: no GET or LIST of a kind the operator
reads in the window (steady_api_operator_nonwatch_reads_per_model_per_min == 0). Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
READ_VERBS = frozenset({"GET", "LIST"})
# Writes a simulated kubelet makes on its own (kwok renewing node leases and heartbeats): not the operator's.
SIMULATED_KUBELET_RESOURCES = frozenset({"leases", "nodes"})
# What the operator reads (controller/kube.py, kopf's watches): a GET or LIST of these in the steady window is a
# read outside the watch streams. Discovery (/api, /apis, /openapi), endpoints and endpointslices are read by
# the control plane itself (kube-controller-manager, kube-apiserver's endpoint reconciler), not by the operator.
OPERATOR_READ_RESOURCES = frozenset({"optimizedmodels", "jobs", "deployments", "services", "pods", "httproutes",
                                     "namespaces", "customresourcedefinitions"})
MODEL_NAME = "digits"
POOL = "sim"
STORE = "file:///var/lib/optimodel/store/scale"
Counter = dict[tuple[str, str, str], float]
ScopedCounter = dict[tuple[str, str, str, str], float]  # (verb, resource, subresource, scope)


# --- pure helpers (tests/unit/test_scale_benchmark.py) --------------------------------------------------------
def parse_request_counts(metrics_text: str) -> Counter:
    """apiserver_request_total summed by (verb, resource, subresource) from the API server's /metrics text."""
    counts: Counter = {}
    for (verb, resource, subresource, _), value in parse_scoped_request_counts(metrics_text).items():
        counts[(verb, resource, subresource)] = counts.get((verb, resource, subresource), 0.0) + value
    return counts


def parse_scoped_request_counts(metrics_text: str) -> ScopedCounter:
    """apiserver_request_total summed by (verb, resource, subresource, scope): scope is "resource" (one object),
    "namespace" or "cluster" (a list or watch of one namespace or of all)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: ScopedCounter = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            key = (sample.labels.get("verb", ""), sample.labels.get("resource", ""),
                   sample.labels.get("subresource", ""), sample.labels.get("scope", ""))
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def counter_delta(before: Counter, after: Counter) -> Counter:
    """What each counter grew by between two scrapes (a key missing before counts from 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value - before.get(key, 0.0) > 0}


def classify(delta: Counter) -> dict[str, float]:
    """Requests in a window by kind: operator-side writes, simulated kubelets' writes, reads, watches."""
    out = {"writes": 0.0, "simulated_kubelet_writes": 0.0, "reads": 0.0, "watches": 0.0}
    for (verb, resource, _), count in delta.items():
        if verb in WRITE_VERBS:
            out["simulated_kubelet_writes" if resource in SIMULATED_KUBELET_RESOURCES else "writes"] += count
        elif verb in READ_VERBS:
            out["reads"] += count
        elif verb == "WATCH":
            out["watches"] += count
    return out


def classify_reads(delta: ScopedCounter) -> dict[str, float]:
    """Reads in a window: watch requests; every other read; those other reads of the operator's kinds that name
    one object or one namespace (what a reconcile reads: a model, its children); and cluster-wide lists of the
    operator's kinds (a kopf relist, the watch cache's audit after one, and kube-apiserver's own repair loop,
    which lists every Service every few minutes: none of them per model)."""
    out = {"watch": 0.0, "nonwatch": 0.0, "operator_nonwatch": 0.0, "operator_cluster_lists": 0.0}
    for (verb, resource, _, scope), count in delta.items():
        if verb == "WATCH":
            out["watch"] += count
        elif verb in READ_VERBS:
            out["nonwatch"] += count
            if resource in OPERATOR_READ_RESOURCES:
                out["operator_cluster_lists" if scope == "cluster" else "operator_nonwatch"] += count
    return out


def per_model_per_min(count: float, models: int, seconds: float) -> float:
    if models <= 0 or seconds <= 0:
        raise ValueError("models and seconds must be positive")
    return count / models / (seconds / 60.0)


def model_manifest(namespace: str, interval: str, replicas: int = 1) -> dict[str, Any]:
    """The scale run's model: the zoo's digits MLP, one int8 variant, one pool on the simulated nodes only."""
    from optimodel_localcluster.kwok import POOL_LABEL, TOLERATION

    folder = "file:///var/lib/optimodel/models/digits-mlp-tiny"
    return {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": MODEL_NAME, "namespace": namespace},
        "spec": {
            "source": {"uri": f"{folder}/model.pt", "format": "torch",
                       "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 64]}]},
            "evaluation": {"dataset": f"{folder}/evaluation.npz", "metric": "accuracy", "maxDrop": 0.02,
                           "minSamples": 100, "benchmark": {"batchSize": 1, "iterations": 50, "warmup": 5}},
            "optimizations": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
            "nodePools": [{"name": POOL, "nodeSelector": {POOL_LABEL: POOL}, "tolerations": [TOLERATION],
                           "variant": "auto", "replicas": replicas}],
            "rollout": {"interval": interval},
            "artifacts": {"uri": STORE},
        },
    }


def ready_count(items: Iterable[Mapping[str, Any]]) -> int:
    """Models whose Ready condition is True for their current generation."""
    ready = 0
    for obj in items:
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"].get("generation"):
            continue
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            ready += 1
    return ready


# --- /proc ----------------------------------------------------------------------------------------------------
def proc_rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


# --- the run --------------------------------------------------------------------------------------------------
def log(text: str) -> None:
    print(f"[scale] {text}", flush=True)


def prepare_artifact(namespace_manifest: dict[str, Any]) -> tuple[float, bool]:
    """The one real optimization: the optimizer run on this host with the config the operator computes for the
    model. Skipped when its run record is already in the store (content reuse across benchmark runs too)."""
    from optimodel_contracts.runrecord import RunRecordError, read_run_record
    from optimodel_operator.api.spec import OptimizedModelSpec
    from optimodel_operator.planner.revision import job_plans

    spec = OptimizedModelSpec.model_validate(namespace_manifest["spec"])
    plans = job_plans(spec, MODEL_NAME, STORE)
    if len(plans) != 1:
        raise SystemExit(f"expected one optimization Job for the scale model, the planner makes {len(plans)}")
    plan = plans[0]
    try:
        read_run_record(plan.run_record_uri)
        return 0.0, True
    except RunRecordError:
        pass
    Path(STORE.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scale-optimize-") as work:
        config = Path(work) / "config.json"
        config.write_text(json.dumps(plan.config))
        result = subprocess.run([sys.executable, "-m", "optimodel_jobs", "--config", str(config), "--work-dir",
                                 str(Path(work) / "work")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"the optimizer failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    read_run_record(plan.run_record_uri)  # written, or this raises
    return time.monotonic() - started, False


def scrape(cluster: Any) -> str:
    with cluster._https() as client:  # the admin identity (system:masters) may read /metrics
        response = client.get(f"{cluster.apiserver_url}/metrics", timeout=30)
    response.raise_for_status()
    return response.text


def list_models(cluster: Any) -> list[dict[str, Any]]:
    # Straight from the API (no kubectl process per poll): the poller shares the 2 cores with the operator.
    with cluster._https() as client:
        response = client.get(f"{cluster.apiserver_url}/apis/optimodel.io/v1alpha1/optimizedmodels", timeout=60)
    response.raise_for_status()
    return response.json()["items"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--quiet-window", type=float, default=120.0,
                        help="Seconds of steady state over which API requests are counted.")
    parser.add_argument("--settle", type=float, default=None,
                        help="Seconds after all Ready before the window (default: one --interval and 15 s more, "
                             "so each model's first guard analysis, a real change, is over).")
    parser.add_argument("--controller-manager-qps", type=int, default=100,
                        help="kube-controller-manager's client rate (Kubernetes' default is 20/s; 0 keeps it).")
    parser.add_argument("--interval", default="1m",
                        help="rollout.interval of every model (the guard's period; 1m is the API's default).")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="Leave the simulated cluster running at the end.")
    parser.add_argument("--quick", action="store_true", help="20 models on 5 nodes, a 40 s window.")
    args = parser.parse_args()
    if args.quick:
        args.models, args.nodes, args.quiet_window = 20, 5, 40.0
    if args.settle is None:
        from optimodel_operator.api.common import parse_duration

        args.settle = parse_duration(args.interval).total_seconds() + 15
    if args.models < 1 or args.nodes < 1:
        raise SystemExit("--models and --nodes must be at least 1")

    from optimodel_localcluster.kwok import SimulatedCluster
    from optimodel_localcluster.paths import LocalClusterError
    from optimodel_operator.examples import publish
    from optimodel_operator.testing.cluster import OperatorProcess, install_crd

    cluster = SimulatedCluster(controller_manager_qps=args.controller_manager_qps or None)
    log(f"simulated cluster in {cluster.layout.root} (API server {cluster.apiserver_url})")
    # A clean slate: models of an earlier run would be resumed by the operator and counted.
    cluster.wipe()
    cluster.up(report=log)
    operator: OperatorProcess | None = None
    try:
        node_names = [f"kwok-{i:03d}" for i in range(args.nodes)]
        cluster.add_nodes(node_names, POOL)
        for attempt in range(10):  # a CRD just created has no status yet, which `kubectl wait` calls an error
            try:
                install_crd(cluster.kubectl)
                break
            except LocalClusterError:
                if attempt == 9:
                    raise
                time.sleep(1)
        published = publish()
        namespaces = [f"scale-{i:04d}" for i in range(args.models)]
        manifests = [model_manifest(ns, args.interval) for ns in namespaces]
        prepared_s, reused = prepare_artifact(manifests[0])
        log(f"artifact: {'found in the store (prepared by an earlier run)' if reused else f'optimized for real in {prepared_s:.1f}s'}"
            f" ({published.model})")
        cluster.kubectl("apply", "-f", "-", timeout=300, input=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]}))
        deadline = time.monotonic() + 120
        while True:  # pods need their namespace's default ServiceAccount
            accounts = json.loads(cluster.kubectl("get", "serviceaccounts", "-A", "--field-selector",
                                                  "metadata.name=default", "-o", "json").stdout)["items"]
            if {a["metadata"]["namespace"] for a in accounts} >= set(namespaces):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the namespaces' default ServiceAccounts did not appear within 120 s")
            time.sleep(1)
        nodes_ready = sum(
            1 for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or []))
        log(f"{nodes_ready}/{args.nodes} simulated nodes Ready; {args.models} namespaces")

        work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
        operator = OperatorProcess(cluster.kubeconfig, [], work / "operator.log",
                                   env={"OPTIMODEL_PROMETHEUS_URL": "", "OPTIMODEL_DEFAULT_ARTIFACTS": ""})
        operator.start()
        assert operator.process is not None
        pid = operator.process.pid
        cpu_start = proc_cpu_s(pid)
        counts_start = parse_request_counts(scrape(cluster))

        apply_started = time.monotonic()
        cluster.kubectl("apply", "-f", "-", timeout=600,
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
        applied = time.monotonic()
        log(f"{args.models} models applied in {applied - apply_started:.1f}s")
        ready = 0
        next_report = time.monotonic()
        while ready < args.models:
            if time.monotonic() - applied > args.timeout:
                raise SystemExit(f"only {ready}/{args.models} Ready after {args.timeout:.0f}s; operator log: "
                                 f"{operator.log_path}")
            if not operator.alive():
                raise SystemExit(f"the operator exited; its log: {operator.log_path}")
            items = list_models(cluster)
            ready = ready_count(items)
            if time.monotonic() >= next_report:  # where the models are: the operator's share vs the cluster's
                phases: dict[str, int] = {}
                for o in items:
                    phase = (o.get("status") or {}).get("phase") or "(none)"
                    phases[phase] = phases.get(phase, 0) + 1
                log(f"  +{time.monotonic() - applied:.0f}s: {ready} Ready; phases {json.dumps(phases, sort_keys=True)}")
                next_report = time.monotonic() + 5
            failed = [o["metadata"]["namespace"] for o in items if (o.get("status") or {}).get("phase") == "Failed"]
            if failed:
                raise SystemExit(f"{len(failed)} model(s) Failed, e.g. {failed[0]}: "
                                 f"{next(o for o in items if o['metadata']['namespace'] == failed[0])['status']}")
            if ready < args.models:
                time.sleep(0.5)
        all_ready_s = time.monotonic() - applied
        cpu_ready = proc_cpu_s(pid)
        rss_ready, _ = proc_rss_mib(pid)
        counts_ready = parse_request_counts(scrape(cluster))
        log(f"all {args.models} Ready {all_ready_s:.1f}s after the apply; operator RSS {rss_ready:.0f} MiB, "
            f"CPU {cpu_ready - cpu_start:.1f}s")
        jobs = len(json.loads(cluster.kubectl("get", "jobs", "-A", "-o", "json").stdout)["items"])
        deployments = json.loads(cluster.kubectl("get", "deployments", "-A", "-o", "json").stdout)["items"]
        pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
        on_nodes = {p["spec"].get("nodeName") for p in pods}
        log(f"{jobs} Job(s), {len(deployments)} Deployment(s), {len(pods)} pod(s) on {len(on_nodes)} simulated nodes")

        time.sleep(args.settle)
        text_before = scrape(cluster)
        counts_before = parse_request_counts(text_before)
        cpu_before = proc_cpu_s(pid)
        window_started = time.monotonic()
        time.sleep(args.quiet_window)
        text_after = scrape(cluster)
        counts_after = parse_request_counts(text_after)
        window = time.monotonic() - window_started
        cpu_after = proc_cpu_s(pid)
        rss_now, rss_peak = proc_rss_mib(pid)
        delta = counter_delta(counts_before, counts_after)
        kinds = classify(delta)
        scoped = counter_delta(parse_scoped_request_counts(text_before),  # type: ignore[arg-type]
                               parse_scoped_request_counts(text_after))  # type: ignore[arg-type]
        reads = classify_reads(scoped)  # type: ignore[arg-type]
        for (verb, resource, sub), count in sorted(delta.items()):
            if verb != "WATCH":
                log(f"  steady state: {verb} {resource}{'/' + sub if sub else ''}: {count:.0f}")
        ramp = classify(counter_delta(counts_start, counts_ready))
        writes_by = {f"{verb} {resource}{'/' + sub if sub else ''}": int(count)
                     for (verb, resource, sub), count in sorted(delta.items())
                     if verb in WRITE_VERBS and resource not in SIMULATED_KUBELET_RESOURCES}
        reads_by = {f"{verb} {resource}{'/' + sub if sub else ''} ({scope})": int(count)
                    for (verb, resource, sub, scope), count in sorted(scoped.items())  # type: ignore[misc]
                    if verb in READ_VERBS | {"WATCH"}}
    finally:
        if operator is not None:
            operator.stop()
        if not args.keep:
            cluster.wipe()

    result = {
        "models": args.models,
        "nodes": args.nodes,
        "all_ready_s": round(all_ready_s, 2),
        "apply_s": round(applied - apply_started, 2),
        "operator_rss_mib": round(rss_peak, 1),
        "operator_rss_now_mib": round(rss_now, 1),
        "operator_cpu_s_to_ready": round(cpu_ready - cpu_start, 2),
        "operator_cpu_percent_steady": round(100 * (cpu_after - cpu_before) / window, 2),
        "steady_window_s": round(window, 1),
        "steady_api_writes_per_model_per_min": round(per_model_per_min(kinds["writes"], args.models, window), 4),
        "steady_api_writes_by_request": writes_by,
        "steady_api_reads_per_model_per_min": round(per_model_per_min(kinds["reads"], args.models, window), 4),
        "steady_api_watch_requests_per_model_per_min": round(per_model_per_min(reads["watch"], args.models, window), 4),
        "steady_api_nonwatch_reads_per_model_per_min": round(per_model_per_min(reads["nonwatch"], args.models, window),
                                                             4),
        "steady_api_operator_nonwatch_reads_per_model_per_min": round(
            per_model_per_min(reads["operator_nonwatch"], args.models, window), 4),
        "steady_api_operator_kinds_cluster_lists": int(reads["operator_cluster_lists"]),
        "steady_api_reads_by_request": reads_by,
        "steady_simulated_kubelet_writes_per_min": round(kinds["simulated_kubelet_writes"] / (window / 60), 1),
        "ramp_api_writes": int(ramp["writes"]),
        "ramp_api_reads": int(ramp["reads"]),
        "jobs_created": jobs,
        "server_deployments": len(deployments),
        "pods": len(pods),
        "rollout_interval": args.interval,
        "settle_s": args.settle,
        "controller_manager_qps": args.controller_manager_qps or 20,
        "artifact_reused_from_earlier_run": reused,
        "artifact_prepare_s": round(prepared_s, 1),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "targets": {"all_ready_s": 60, "operator_rss_mib": 300, "steady_api_writes_per_model_per_min": 0,
                    "steady_api_operator_nonwatch_reads_per_model_per_min": 0,
                    "at": {"models": 300, "nodes": 100}},
    }
    result["reads_only_from_watches"] = reads["operator_nonwatch"] == 0
    result["targets_met"] = (result["all_ready_s"] <= 60 and result["operator_rss_mib"] <= 300
                             and result["steady_api_writes_per_model_per_min"] == 0 and jobs == 0
                             and result["reads_only_from_watches"])
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
