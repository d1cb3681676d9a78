"""The Prometheus Operator's CRDs that `optimodel dev up` installs, and optimodel's monitoring objects checked
against them by the real API server: the chart's ServiceMonitor, PodMonitor and PrometheusRule (rendered by
`helm template` with every monitoring value on) and the kustomize overlay's, applied server-side in a dry
run (validated and defaulted, nothing stored); a PrometheusRule the schema forbids is refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from optimodel_localcluster.cluster import LocalCluster
from optimodel_localcluster.prometheus_operator_crds import FILES, VERSION, manifests_dir

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
CRDS = ("servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com")


def _dry_run(cluster: LocalCluster, namespace: str, documents: list[dict]) -> subprocess.CompletedProcess[str]:
    text = "\n---\n".join(json.dumps(d) for d in documents)
    return cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=optimodel-test",
                           "-n", namespace, "-o", "json", "-f", "-", input=text, check=False)


def _returned(result: subprocess.CompletedProcess[str]) -> list[dict]:
    answer = json.loads(result.stdout)
    return answer.get("items", [answer])


def test_the_crds_are_established_and_come_from_the_pinned_module(local_cluster: LocalCluster) -> None:
    for name in CRDS:
        crd = json.loads(local_cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)
        assert crd["metadata"]["annotations"]["operator.prometheus.io/version"] == VERSION.removeprefix("v")
    provenance = json.loads((manifests_dir() / ".fetched-from.json").read_text())
    assert provenance["Version"] == VERSION and provenance["Sum"].startswith("h1:")
    assert sorted(p.name for p in manifests_dir().glob("*.yaml")) == sorted(FILES)


def test_the_charts_monitoring_objects_pass_the_real_schemas(local_cluster: LocalCluster, namespace: str) -> None:
    from optimodel_localcluster.build import helm_binary

    rendered = subprocess.run(
        [str(helm_binary()), "template", "demo", str(REPO / "charts" / "optimodel"), "--namespace", namespace,
         "--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.podMonitor.enabled=true",
         "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.prometheusRule.for.OptimodelInputDrift=10m",
         "--set", "monitoring.serviceMonitor.labels.release=kube-prometheus-stack"],
        capture_output=True, text=True, check=True).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in MONITORING_KINDS]
    assert {d["kind"] for d in documents} == MONITORING_KINDS
    result = _dry_run(local_cluster, namespace, documents)
    assert result.returncode == 0, result.stderr
    stored = {d["kind"]: d for d in _returned(result)}
    assert stored.keys() == MONITORING_KINDS
    # What the API server would store: the rules and endpoints as rendered (nothing pruned by the schema).
    rules = {r["alert"]: r for g in stored["PrometheusRule"]["spec"]["groups"] for r in g["rules"]}
    source = yaml.safe_load((REPO / "charts" / "optimodel" / "files" / "prometheus-rules.yaml").read_text())
    assert rules["OptimodelInputDrift"]["for"] == "10m"
    assert set(rules) == {r["alert"] for g in source["groups"] for r in g["rules"]} and len(rules) >= 5
    assert stored["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabels"] is True
    assert stored["PodMonitor"]["spec"]["namespaceSelector"] == {"any": True}


def test_the_kustomize_overlays_monitoring_objects_pass_the_real_schemas(
    local_cluster: LocalCluster, namespace: str
) -> None:
    built = local_cluster.kubectl("kustomize", str(REPO / "deploy" / "kustomize" / "overlays" / "monitoring")).stdout
    documents = [d for d in yaml.safe_load_all(built) if d and d["kind"] in MONITORING_KINDS]
    assert {d["kind"] for d in documents} == MONITORING_KINDS
    for document in documents:
        document["metadata"]["namespace"] = namespace  # validated in the test's namespace, not optimodel-system
    result = _dry_run(local_cluster, namespace, documents)
    assert result.returncode == 0, result.stderr
    assert {d["kind"] for d in _returned(result)} == MONITORING_KINDS


def test_a_rule_the_schema_forbids_is_refused(local_cluster: LocalCluster, namespace: str) -> None:
    # `for` must be a Prometheus duration: the CRD's pattern refuses "soon", naming the field.
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "bad"},
           "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "soon"}]}]}}
    result = _dry_run(local_cluster, namespace, [bad])
    assert result.returncode != 0
    assert "spec.groups[0].rules[0].for" in result.stderr, result.stderr
