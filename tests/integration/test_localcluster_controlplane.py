"""The control plane is the real thing: TLS, authentication, RBAC, and Prometheus scraping pods."""

from __future__ import annotations

import json
import ssl
import time

import httpx
import pytest
from prometheus_api_client import PrometheusConnect

from optimodel_localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_api_server_refuses_anonymous_and_enforces_rbac(local_cluster: LocalCluster) -> None:
    pki = local_cluster.layout.pki
    ca = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    anonymous = httpx.get(f"{local_cluster.apiserver_url}/api/v1/namespaces/default/pods", verify=ca)
    assert anonymous.status_code == 403
    plain = httpx.get(f"http://127.0.0.1:{local_cluster.ports.apiserver}/api", timeout=2)
    assert plain.status_code == 400 and "HTTPS" in plain.text, "plain HTTP is never served"
    with_client_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with_client_cert.load_cert_chain(str(pki / "prometheus.crt"), str(pki / "prometheus.key"))
    prometheus = httpx.Client(verify=with_client_cert)
    assert prometheus.get(f"{local_cluster.apiserver_url}/api/v1/pods").status_code == 200
    assert prometheus.get(f"{local_cluster.apiserver_url}/api/v1/secrets").status_code == 403
    denied = prometheus.post(f"{local_cluster.apiserver_url}/api/v1/namespaces/default/configmaps",
                             json={"metadata": {"name": "x"}})
    assert denied.status_code == 403
    version = json.loads(local_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"


def test_nodes_form_a_cpu_pool_and_a_tainted_gpu_pool(local_cluster: LocalCluster) -> None:
    nodes = json.loads(local_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    pools: dict[str, list[dict]] = {}
    for node in nodes:
        pools.setdefault(node["metadata"]["labels"].get("optimodel.io/pool", ""), []).append(node)
    assert pools["cpu"] and pools["gpu"]
    for node in pools["gpu"]:
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in node["spec"].get("taints", []))
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
    leases = json.loads(local_cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "json").stdout)
    assert {lease["metadata"]["name"] for lease in leases["items"]} >= {n["metadata"]["name"] for n in nodes}


METRICS_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: metrics-demo
  labels: {app: metrics-demo}
  annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9400"}
spec:
  containers:
  - name: exporter
    image: optimodel/runtime:dev
    command: [python, -c]
    args:
    - |
      import time
      from prometheus_client import Gauge, start_http_server
      Gauge("optimodel_probe_answer", "a value the test looks for").set(42)
      start_http_server(9400)
      time.sleep(3600)
    ports: [{containerPort: 9400}]
    readinessProbe:
      tcpSocket: {port: 9400}
      periodSeconds: 1
"""


def test_prometheus_scrapes_an_annotated_pod_and_answers_queries(local_cluster: LocalCluster, namespace: str) -> None:
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=METRICS_POD)
    local_cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/metrics-demo", "--timeout=90s")
    prometheus = PrometheusConnect(url=local_cluster.prometheus_url, disable_ssl=True)
    query = f'optimodel_probe_answer{{namespace="{namespace}", pod="metrics-demo"}}'
    deadline = time.monotonic() + 60
    result: list = []
    while time.monotonic() < deadline and not result:
        result = prometheus.custom_query(query)
        time.sleep(1)
    assert result, f"Prometheus never returned {query}"
    sample = result[0]
    assert float(sample["value"][1]) == 42.0
    assert sample["metric"]["app"] == "metrics-demo"
    assert sample["metric"]["node"].startswith(("cpu-", "gpu-"))


def test_up_repairs_a_half_dead_cluster(local_cluster: LocalCluster) -> None:
    scheduler = local_cluster.process("kube-scheduler")
    assert scheduler.stop()
    assert not local_cluster.is_up()
    steps: list[str] = []
    local_cluster.up(report=steps.append)
    assert "kube-scheduler: starting" in steps
    assert "kube-apiserver: already running" in steps
    assert local_cluster.is_up()
