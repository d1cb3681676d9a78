"""The alerts and the dashboard, end to end: the operator installed with the chart (serving /metrics,
scraped through its pod annotations), real Jobs and model-server pods, the local cluster's Prometheus with
charts/optimodel/files/prometheus-rules.yaml loaded (`for:` capped at 5 s). Each alert is seen firing in
Prometheus' /api/v1/alerts after its condition is caused for real, and every dashboard panel's query returns
series while a model is served under traffic.

(a) the gate refusing every variant (an impossible size budget) fires OptimodelGateRefusedAllVariants;
(b) with revision 1 served under traffic, every panel's query of charts/optimodel/files/dashboards/
optimodel.json returns series; then inputs shifted far from the evaluation data fire OptimodelInputDrift;
(c) revision 2 as a canary without traffic holds (no data) and fires OptimodelRolloutStuck; traffic then
meets its injected latency, it is rolled back and OptimodelRolledBack fires.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from optimodel_localcluster import prometheus_rules
from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE
from optimodel_operator.examples import Published
from optimodel_operator.testing.cluster import until_status, wait_for
from optimodel_operator.testing.rollout import Traffic, digits_revision, evaluation_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "optimodel" / "files" / "dashboards" / "optimodel.json"
# The module's own store: revision 2's Jobs run once, (b) and (c) reuse revision 1's results by content.
STORE = "/var/lib/optimodel/store/tests/monitoring"
# Grafana's $__rate_interval is four scrape intervals at least; the local Prometheus scrapes every second.
RATE_INTERVAL = "10s"


@pytest.fixture(scope="module")
def prometheus(local_cluster: LocalCluster) -> str:
    """The local Prometheus, with optimodel's rule groups loaded (a cluster started before they existed gets
    them from an idempotent `up`, which writes the rule file and reloads Prometheus)."""
    url = local_cluster.prometheus_url
    wanted = _source_alerts()
    if not wanted <= _loaded_rules(url):
        local_cluster.up()
    loaded = _loaded_rules(url)
    assert wanted <= loaded, f"Prometheus loaded {loaded}, not {wanted}"
    return url


def _source_alerts() -> set[str]:
    """The alerts of the chart's rule file, which the local cluster's Prometheus loads (rules added since the
    cluster started included)."""
    return {r["alert"] for g in yaml.safe_load(prometheus_rules.RULES_SOURCE.read_text())["groups"] for r in g["rules"]}


def _loaded_rules(url: str) -> set[str]:
    return {r["name"] for g in httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
            for r in g["rules"]}


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _firing(url: str, alert: str, **labels: str) -> dict[str, Any] | None:
    for item in httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]:
        if item["labels"].get("alertname") == alert and item["state"] == "firing" \
                and labels.items() <= item["labels"].items():
            return item
    return None


def _wait_firing(url: str, alert: str, timeout: float, **labels: str) -> dict[str, Any]:
    return wait_for(lambda: _firing(url, alert, **labels), timeout, f"{alert} {labels} firing", interval=1)


def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _until(cluster: LocalCluster, namespace: str, name: str, accept: Any, what: str,
           timeout: float = 300) -> dict[str, Any]:
    return until_status(cluster.kubectl, namespace, name, accept, what, timeout,
                        operator=(OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT))


def _address(cluster: LocalCluster, namespace: str) -> str:
    service = json.loads(cluster.kubectl("get", "service", "digits", "-n", namespace, "-o", "json").stdout)
    return f"http://{service['spec']['clusterIP']}:80"


def _promoted(status: dict[str, Any]) -> bool:
    return status.get("rolloutPhase") == "Promoted"


def _panel_queries(namespace: str, model: str) -> list[tuple[str, str]]:
    """(panel title, query) of every panel target, with the dashboard's variables as Grafana would fill them
    for one model: namespace and model chosen, every pool (`.*`, the variables' All value)."""
    values = {"namespace": namespace, "model": model, "pool": ".*"}
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels") or [])
            for target in panel.get("targets") or []:
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                for name, value in values.items():
                    expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
                assert "$" not in expr, expr
                out.append((panel["title"], expr))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def test_the_gate_refusing_every_variant_fires_its_alert(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, prometheus: str
) -> None:
    manifest = digits_revision("strict", STORE, 1, "int8", published=operator_in_cluster)
    for optimization in manifest["spec"]["optimizations"]:
        optimization["gate"] = {"maxSizeMiB": 0.000001}  # no artifact is that small
    _apply(local_cluster, namespace, manifest)
    refused = _until(local_cluster, namespace, "strict", lambda s: s.get("phase") == "Failed"
                     and s.get("variants") and all(v["gate"] == "Failed" for v in s["variants"]), "every variant refused")
    alert = _wait_firing(prometheus, "OptimodelGateRefusedAllVariants", 60, namespace=namespace, model="strict")
    assert alert["labels"]["severity"] == "warning"
    assert f"{namespace}/strict: the gate refused every variant" == alert["annotations"]["summary"]
    assert f"All {len(refused['variants'])} variant(s)" in alert["annotations"]["description"]
    # The operator's series carry the model's namespace (honor_labels), not the operator pod's.
    phase = _query(prometheus, f'optimodel_model_phase{{namespace="{namespace}", model="strict", phase="Failed"}}')
    assert [float(s["value"][1]) for s in phase] == [1.0], phase
    assert phase[0]["metric"]["pod"].startswith(OPERATOR_DEPLOYMENT)


def test_every_dashboard_query_returns_series_then_input_drift_fires(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, prometheus: str
) -> None:
    _apply(local_cluster, namespace, digits_revision("digits", STORE, 1, "source", published=operator_in_cluster))
    _until(local_cluster, namespace, "digits", _promoted, "revision 1 promoted")
    queries = _panel_queries(namespace, "digits")
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)) as traffic:
        def empty() -> list[str]:
            return [f"{title}: {expr}" for title, expr in queries if not _query(prometheus, expr)]

        missing: list[str] = []

        def all_answer() -> bool:
            missing[:] = empty()
            return not missing

        try:
            wait_for(all_answer, 120, "every dashboard query to return series", interval=2)
        except AssertionError:
            raise AssertionError("panels without series:\n" + "\n".join(missing)) from None
        assert len(queries) >= 15
        # Latency per revision and pool: one series per (revision, pool), the served revision's on cpu.
        p99 = next(expr for title, expr in queries if title.startswith("Request latency"))
        served = {(s["metric"]["revision"], s["metric"]["pool"]) for s in _query(prometheus, p99)}
        assert any(pool == "cpu" for _, pool in served), served
        weight = _query(prometheus, f'optimodel_canary_weight{{namespace="{namespace}", model="digits"}}')
        assert [float(s["value"][1]) for s in weight] == [100.0]
        # Live inputs move far outside what the gate evaluated: the servers' PSI climbs over maxPSI (0.25).
        traffic.shift = 6.0
        alert = _wait_firing(prometheus, "OptimodelInputDrift", 120, namespace=namespace, model="digits", pool="cpu")
    assert float(alert["value"]) > 0.25
    assert alert["annotations"]["summary"].startswith(f"{namespace}/digits: inputs drifted (PSI ")


def test_a_held_canary_fires_rollout_stuck_and_its_rollback_fires_rolled_back(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, prometheus: str
) -> None:
    _apply(local_cluster, namespace, digits_revision("digits", STORE, 1, "source", published=operator_in_cluster))
    first = _until(local_cluster, namespace, "digits", _promoted, "revision 1 promoted")["stableRevision"]
    second = copy.deepcopy(digits_revision("digits", STORE, 2, "int8", published=operator_in_cluster))
    # Its servers answer 400 ms late (fault flags); no traffic yet, so the canary holds for lack of data.
    second["metadata"]["annotations"] = {"optimodel.io/inject-faults": "latency-ms=400"}
    _apply(local_cluster, namespace, second)
    canary = _until(local_cluster, namespace, "digits", lambda s: s.get("rolloutPhase") == "Canary"
                    and s.get("rolloutReason") == "AnalysisNoData", "revision 2 held without data", timeout=400)
    # Ten 2 s intervals on the first step, then `for: 5s`.
    stuck = _wait_firing(prometheus, "OptimodelRolloutStuck", 90, namespace=namespace, model="digits")
    assert _firing(prometheus, "OptimodelRolledBack", namespace=namespace, model="digits") is None
    assert stuck["annotations"]["summary"].startswith(f"{namespace}/digits: the canary has not moved for ")
    with Traffic(_address(local_cluster, namespace), "digits", evaluation_rows(operator_in_cluster)):
        back = _until(local_cluster, namespace, "digits", lambda s: s.get("rolloutPhase") == "RolledBack",
                      "revision 2 rolled back", timeout=120)
    assert back["stableRevision"] == first and back["rolloutRevision"] == canary["currentRevision"]
    rolled = _wait_firing(prometheus, "OptimodelRolledBack", 30, namespace=namespace, model="digits")
    assert rolled["annotations"]["summary"] == f"{namespace}/digits: a revision was rolled back"
    # No longer a canary: the stuck alert resolves (its series are gone).
    wait_for(lambda: _firing(prometheus, "OptimodelRolloutStuck", namespace=namespace, model="digits") is None,
             30, "OptimodelRolloutStuck resolved", interval=1)


def test_the_loaded_rules_evaluate_without_errors(prometheus: str) -> None:
    """After the cases above left their series, each rule evaluates cleanly (a vector-matching mistake, e.g. a
    group_left over duplicate series, shows as health `err` only against real series)."""
    def health() -> dict[str, tuple[str, str]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups if g["name"].startswith("optimodel.")
                 for r in g["rules"]}
        return rules if all(state != "unknown" for state, _ in rules.values()) else None

    rules = wait_for(health, 30, "every rule evaluated once", interval=1)
    assert set(rules) == _source_alerts() >= {"OptimodelRolledBack", "OptimodelRolloutStuck",
                                              "OptimodelGateRefusedAllVariants", "OptimodelInputDrift",
                                              "OptimodelServerWaitingForStore"}
    assert all(state == "ok" for state, _ in rules.values()), rules
