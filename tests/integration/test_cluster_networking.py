"""Services, the API server and DNS as pods see them: kube-proxy, the `kubernetes` Service, CoreDNS.

An operator pod in this cluster uses the official client's in-cluster configuration (the projected
service-account token, the cluster CA, `KUBERNETES_SERVICE_HOST`), reaches the API server through the
`kubernetes` Service's ClusterIP and finds Services by name; a canary split relies on a Service spreading
connections over its endpoints. Each of those is checked here from inside pod network namespaces, and
from the host.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections import Counter
from pathlib import Path

import httpx
import pytest

from optimodel_localcluster.cluster import LocalCluster

from _cluster_helpers import Json, apply, get, wait_for

pytestmark = pytest.mark.cluster


def finished_pod_output(cluster: LocalCluster, namespace: str, pod: str, container: str | None = None,
                        timeout: float = 120) -> tuple[int, str]:
    """Wait for the pod's container to end; its exit code and what it printed (`kubectl logs`)."""

    def terminated() -> Json | None:
        status = get(cluster, namespace, "pod", pod).get("status", {})
        for item in status.get("containerStatuses") or []:
            if container in (None, item["name"]) and (item.get("state") or {}).get("terminated"):
                return item["state"]["terminated"]
        return None

    state = wait_for(f"pod {pod} to finish", terminated, timeout=timeout)
    args = ["logs", "-n", namespace, pod] + (["-c", container] if container else [])
    return int(state["exitCode"]), cluster.kubectl(*args).stdout


def result_line(output: str) -> Json:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the pod printed no RESULT line:\n{output}"
    return json.loads(lines[-1].removeprefix("RESULT "))


# --- the API server from a pod, with the pod's own ServiceAccount ---------------------------------------

IN_CLUSTER_CLIENT = r"""
import base64, json, os, time
from kubernetes import client, config

config.load_incluster_config()
api = client.CoreV1Api()
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
namespace = open(f"{sa}/namespace").read()
result = {
    "files": sorted(os.listdir(sa)),
    "host": os.environ.get("KUBERNETES_SERVICE_HOST"),
    "port": os.environ.get("KUBERNETES_SERVICE_PORT"),
    "server": client.Configuration.get_default_copy().host,
    "namespace": namespace,
    "pods": sorted(p.metadata.name for p in api.list_namespaced_pod(namespace).items),
}
try:
    api.list_namespaced_secret(namespace)
    result["secrets"] = "allowed"
except client.ApiException as error:
    result["secrets"] = error.status
payload = open(f"{sa}/token").read().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
result["aud"] = claims["aud"]
result["sub"] = claims["sub"]
result["bound_pod"] = claims["kubernetes.io"]["pod"]["name"]
result["lifetime"] = claims["exp"] - claims["iat"]

# kopf's in-cluster login names the API server https://kubernetes.default.svc: cluster DNS and the serving
# certificate's SANs are part of the path. Use what it returns to list pods, as kopf would.
import logging, ssl, urllib.request, kopf
info = kopf.login_with_service_account(logger=logging.getLogger("login"), settings=kopf.OperatorSettings())
result["kopf_server"] = info.server
request = urllib.request.Request(f"{info.server}/api/v1/namespaces/{info.default_namespace}/pods",
                                 headers={"Authorization": f"Bearer {info.token}"})
listing = json.load(urllib.request.urlopen(request, context=ssl.create_default_context(cafile=info.ca_path)))
result["kopf_pods"] = sorted(p["metadata"]["name"] for p in listing["items"])
print("RESULT " + json.dumps(result), flush=True)
"""

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: lister}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lister-reads-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: lister}]
"""


def test_a_pod_uses_the_api_with_its_service_account_rbac_through_the_kubernetes_service(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, RBAC)
    local_cluster.kubectl("wait", "--for=create", "configmap/kube-root-ca.crt", "-n", namespace, "--timeout=60s")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"serviceAccountName": "lister", "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "optimodel/operator",
                                 "command": ["python", "-c", IN_CLUSTER_CLIENT]}]},
    }
    apply(local_cluster, namespace, json.dumps(pod))
    code, output = finished_pod_output(local_cluster, namespace, "client")
    assert code == 0, output
    result = result_line(output)
    # What the ServiceAccount admission plugin projects, at the path every client reads.
    assert {"token", "ca.crt", "namespace"} <= set(result["files"])
    assert result["namespace"] == namespace
    assert (result["host"], result["port"]) == ("10.96.0.1", "443")
    assert result["server"] == "https://10.96.0.1:443"
    assert result["kopf_server"] == "https://kubernetes.default.svc"
    assert "client" in result["kopf_pods"]
    # The Role allows pods, so the pod sees itself; it lacks secrets, so the API server forbids them.
    assert "client" in result["pods"]
    assert result["secrets"] == 403
    assert result["sub"] == f"system:serviceaccount:{namespace}:lister"
    assert result["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    assert result["bound_pod"] == "client"
    assert result["lifetime"] >= 3600


# --- ClusterIPs from the host and from pods, spread over endpoints ---------------------------------------

BACKENDS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, serves: web}}
    spec:
      containers:
      - name: http
        image: python:3.11-slim
        command: [sh, -c, 'mkdir -p /tmp/site-$(POD) && echo $(POD) > /tmp/site-$(POD)/index.html && exec python -m http.server 8080 --directory /tmp/site-$(POD)']
        env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {serves: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

# A fourth backend (not the Deployment's: its ReplicaSet would adopt a pod with its labels and scale down) whose second container is a client of the same Service: some of its connections come
# back to its own pod (hairpin), the case that needs kube-proxy's masquerade on a shared bridge.
HAIRPIN_CLIENT = r"""
import json, os, time, urllib.request
me, seen, errors = os.environ["POD"], {}, []
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        name = urllib.request.urlopen("http://web/index.html", timeout=3).read().decode().strip()
        seen[name] = seen.get(name, 0) + 1
    except Exception as error:
        errors.append(repr(error)[:200])
        time.sleep(0.5)
        continue
    if me in seen and len(seen) >= 3 and sum(seen.values()) >= 40:
        break
print("RESULT " + json.dumps({"me": me, "seen": seen, "errors": errors[-5:],
                              "host": os.environ.get("WEB_SERVICE_HOST")}), flush=True)
"""


def test_cluster_ip_answers_from_the_host_and_pods_and_spreads_over_endpoints(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, BACKENDS)
    local_cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=120s")
    cluster_ip = get(local_cluster, namespace, "service", "web")["spec"]["clusterIP"]
    assert cluster_ip.startswith("10.96.")
    backends = sorted(p["metadata"]["name"] for p in get(local_cluster, namespace, "pods", "-l", "app=web")["items"])

    # From the host: every request a new connection; kube-proxy picks an endpoint per connection.
    def host_spread() -> Counter[str] | None:
        answers: Counter[str] = Counter()
        for _ in range(30):
            try:
                answers[httpx.get(f"http://{cluster_ip}/index.html", timeout=3).text.strip()] += 1
            except httpx.HTTPError:
                return None  # rules for a brand-new Service can take a moment
        return answers if set(answers) == set(backends) else None

    answers = wait_for("host requests to the ClusterIP to reach all 3 backends", host_spread, timeout=60)
    assert sum(answers.values()) == 30 and set(answers) == set(backends)

    client = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hairpin", "labels": {"serves": "web"}},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "http", "image": "python:3.11-slim",
             "command": ["sh", "-c", "mkdir -p /tmp/site-hairpin && echo hairpin > /tmp/site-hairpin/index.html"
                                     " && exec python -m http.server 8080 --directory /tmp/site-hairpin"],
             "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1}},
            {"name": "client", "image": "python:3.11-slim", "command": ["python", "-c", HAIRPIN_CLIENT],
             "env": [{"name": "POD", "value": "hairpin"}]},
        ]},
    }
    apply(local_cluster, namespace, json.dumps(client))
    code, output = finished_pod_output(local_cluster, namespace, "hairpin", container="client", timeout=180)
    assert code == 0, output
    result = result_line(output)
    assert result["host"] == cluster_ip  # the Service's link variable, from enableServiceLinks
    seen = result["seen"]
    # The short name resolved through cluster DNS; connections spread over the backends, itself included.
    assert "hairpin" in seen, result
    assert len(set(seen) & set(backends)) >= 2, result
    assert sum(seen.values()) >= 40, result


# --- DNS --------------------------------------------------------------------------------------------

RESOLVER = r"""
import json, socket
names = {}
for name in NAMES:
    try:
        names[name] = sorted({info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except OSError as error:
        names[name] = str(error)
print("RESULT " + json.dumps({"names": names, "resolv_conf": open("/etc/resolv.conf").read()}), flush=True)
"""


def test_services_resolve_by_name_from_a_pod_and_host_names_still_resolve(
    local_cluster: LocalCluster, namespace: str
) -> None:
    host_resolv_conf = Path("/etc/resolv.conf").read_text()
    outside = "proxy.golang.org"  # the host resolves it: the cluster was built from the Go module proxy
    outside_addresses = {info[4][0] for info in socket.getaddrinfo(outside, 80, socket.AF_INET)}
    assert outside_addresses
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "model-api"},
               "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 8000}]}}
    apply(local_cluster, namespace, json.dumps(service))
    cluster_ip = get(local_cluster, namespace, "service", "model-api")["spec"]["clusterIP"]
    names = ["model-api", f"model-api.{namespace}", f"model-api.{namespace}.svc.cluster.local",
             "kubernetes.default", "kube-dns.kube-system.svc.cluster.local", outside]
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "resolver"},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "python:3.11-slim",
             "command": ["python", "-c", f"NAMES = {names!r}\n{RESOLVER}"]}]},
    }
    apply(local_cluster, namespace, json.dumps(pod))
    code, output = finished_pod_output(local_cluster, namespace, "resolver")
    assert code == 0, output
    result = result_line(output)
    resolved = result["names"]
    assert resolved["model-api"] == [cluster_ip], resolved
    assert resolved[f"model-api.{namespace}"] == [cluster_ip], resolved
    assert resolved[f"model-api.{namespace}.svc.cluster.local"] == [cluster_ip], resolved
    assert resolved["kubernetes.default"] == ["10.96.0.1"], resolved
    assert resolved["kube-dns.kube-system.svc.cluster.local"] == ["10.96.0.10"], resolved
    assert set(resolved[outside]) == outside_addresses, resolved
    assert result["resolv_conf"].splitlines() == [
        "nameserver 10.96.0.10",
        f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]
    # The pod's file was mounted in its own mount namespace only.
    assert Path("/etc/resolv.conf").read_text() == host_resolv_conf


PROMETHEUS_CLIENT = """
import json, urllib.request
ready = urllib.request.urlopen(URL + "/-/ready", timeout=10).status
answer = json.load(urllib.request.urlopen(URL + "/api/v1/query?query=up", timeout=10))
print("RESULT " + json.dumps({"ready": ready, "status": answer["status"]}))
"""


def test_a_pod_queries_prometheus_by_its_service_name(local_cluster: LocalCluster, namespace: str) -> None:
    """What the operator's rollout analysis does from its pod (its ConfigMap names this URL)."""
    url = "http://prometheus.monitoring.svc.cluster.local:9090"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "prometheus-client"},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "python:3.11-slim", "command": ["python", "-c", f"URL = {url!r}\n{PROMETHEUS_CLIENT}"]}]},
    }
    apply(local_cluster, namespace, json.dumps(pod))
    code, output = finished_pod_output(local_cluster, namespace, "prometheus-client")
    assert code == 0, output
    assert result_line(output) == {"ready": 200, "status": "success"}
    assert httpx.get(f"{local_cluster.prometheus_url}/-/ready", timeout=5).status_code == 200, "and from the host"


def test_the_host_reaches_the_api_server_and_cluster_dns_through_their_cluster_ips(
    local_cluster: LocalCluster,
) -> None:
    # /version is open to anyone (as in kubeadm); the certificate must name the ClusterIP.
    context = ssl.create_default_context(cafile=str(local_cluster.layout.pki / "ca.crt"))
    version = httpx.get("https://10.96.0.1/version", verify=context, timeout=5).json()
    assert version["gitVersion"] == "v1.36.3"
    endpoints = json.loads(local_cluster.kubectl("get", "endpointslices", "-n", "default", "-l",
                                                 "kubernetes.io/service-name=kubernetes", "-o", "json").stdout)
    addresses = {a for s in endpoints["items"] for e in s["endpoints"] for a in e["addresses"]}
    assert addresses == {"10.244.0.1"}
    # A raw DNS query (A record of kubernetes.default.svc.cluster.local) to kube-dns' ClusterIP over UDP.
    query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             + b"".join(bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split("."))
             + b"\x00\x00\x01\x00\x01")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, ("10.96.0.10", 53))
        answer, _ = sock.recvfrom(512)
    assert answer[:2] == b"\x12\x34" and answer[3] & 0x0F == 0  # our id, NOERROR
    assert socket.inet_aton("10.96.0.1") in answer[len(query):]
