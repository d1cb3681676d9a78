"""benchmarks/scale.py's arithmetic: API request counters from the API server's /metrics text, the steady-state
split between the operator's side and the simulated kubelets, per model per minute, Ready counting, and the
model it applies (on the simulated pool only). The run itself needs a cluster: `benchmarks/scale.py --quick`."""

from __future__ import annotations


import pytest
from optimodel_operator.testing.scripts import load_script


scale = load_script("benchmarks/scale.py", "optimodel_scale_benchmark")

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 10
apiserver_request_total{code="201",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="optimodel.io",resource="optimizedmodels",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 40
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 3
# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 12
"""


def test_request_counts_are_summed_over_codes_and_only_from_the_request_counter() -> None:
    counts = scale.parse_request_counts(METRICS)
    assert counts[("APPLY", "deployments", "")] == 12  # 200 and 201 together; the histogram's _count not added
    assert counts[("PATCH", "optimizedmodels", "status")] == 5
    assert counts[("PUT", "leases", "")] == 40
    assert len(counts) == 5


def test_steady_state_counts_writes_apart_from_the_simulated_kubelets() -> None:
    before = scale.parse_request_counts(METRICS)
    after = dict(before)
    after[("PUT", "leases", "")] += 30  # kwok renewing node leases
    after[("LIST", "pods", "")] += 4
    after[("WATCH", "pods", "")] += 1
    quiet = scale.classify(scale.counter_delta(before, after))
    assert quiet == {"writes": 0, "simulated_kubelet_writes": 30, "reads": 4, "watches": 1}
    after[("PATCH", "optimizedmodels", "status")] += 6
    after[("POST", "events", "")] = 2  # a key new since the first scrape counts from zero
    noisy = scale.classify(scale.counter_delta(before, after))
    assert noisy["writes"] == 8
    assert scale.per_model_per_min(noisy["writes"], models=4, seconds=120) == 1.0


def test_per_model_per_min_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="positive"):
        scale.per_model_per_min(3, models=0, seconds=60)
    with pytest.raises(ValueError, match="positive"):
        scale.per_model_per_min(3, models=2, seconds=0)


def test_ready_means_the_ready_condition_for_the_current_generation() -> None:
    def model(generation: int, observed: int | None, ready: str | None) -> dict:
        status = {} if observed is None else {"observedGeneration": observed}
        if ready is not None:
            status["conditions"] = [{"type": "Ready", "status": ready}]
        return {"metadata": {"generation": generation}, "status": status}

    items = [model(1, 1, "True"), model(2, 1, "True"), model(1, 1, "False"), model(1, None, None), model(3, 3, "True")]
    assert scale.ready_count(items) == 2


def test_the_scale_model_lands_only_on_simulated_nodes() -> None:
    from optimodel_localcluster.kwok import POOL_LABEL, TAINT_KEY, node

    manifest = scale.model_manifest("scale-0007", "30s")
    assert manifest["metadata"] == {"name": scale.MODEL_NAME, "namespace": "scale-0007"}
    (pool,) = manifest["spec"]["nodePools"]
    assert pool["nodeSelector"] == {POOL_LABEL: scale.POOL}
    assert pool["tolerations"] == [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    simulated = node("kwok-000", scale.POOL)
    assert simulated["metadata"]["labels"][POOL_LABEL] == scale.POOL
    assert simulated["spec"]["taints"] == [{"key": TAINT_KEY, "value": "fake", "effect": "NoSchedule"}]
    # The shared cluster's pools are cpu and gpu: the scale pool is none of them, so no node agent runs these pods.
    assert scale.POOL not in ("cpu", "gpu")
    assert manifest["spec"]["rollout"]["interval"] == "30s"
    # Every model has the same name and spec, so all of them share one run record (content reuse).
    assert scale.model_manifest("scale-0000", "30s")["spec"] == manifest["spec"]


def test_the_api_servers_counter_is_read_from_a_real_metrics_text_shape() -> None:
    # A line as kube-apiserver v1.36 writes it, with a label order of its own.
    line = ('apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="events",'
            'scope="resource",subresource="",verb="POST",version="v1"} 3\n')
    assert scale.parse_request_counts("# TYPE apiserver_request_total counter\n" + line) == {("POST", "events", ""): 3}
