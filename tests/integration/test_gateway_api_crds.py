"""The Gateway API CRDs (standard channel) that `optimodel dev up` installs, as the canary rollout will use them.

A canary split is an HTTPRoute whose two backendRefs (the stable and the canary Service) carry weights; the
rollout moves traffic by patching them. Here the real API server stores such a route, serves it back with
its weights, takes a patch of them and refuses a weight the CRD's schema forbids.
"""

from __future__ import annotations

import json

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_localcluster.gateway_api import GATEWAY_API_VERSION

from _cluster_helpers import Json, apply, get

pytestmark = pytest.mark.cluster

HTTPROUTES = "httproutes.gateway.networking.k8s.io"

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: stable}
spec: {ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: canary}
spec: {ports: [{port: 80, targetPort: 8080}]}
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{name: public-gateway}]
  rules:
  - backendRefs:
    - {name: stable, port: 80, weight: 90}
    - {name: canary, port: 80, weight: 10}
"""


def weights(route: Json) -> dict[str, int]:
    (rule,) = route["spec"]["rules"]
    return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}


def test_the_httproute_crd_is_established_and_serves_v1(local_cluster: LocalCluster) -> None:
    crd = json.loads(local_cluster.kubectl("get", "crd", HTTPROUTES, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True", conditions
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions["v1"]["served"] and versions["v1"]["storage"]
    annotations = crd["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/channel"] == "standard"
    assert annotations["gateway.networking.k8s.io/bundle-version"] == GATEWAY_API_VERSION
    # The other standard kinds a route hangs off come with it.
    for kind in ("gateways", "gatewayclasses", "referencegrants"):
        local_cluster.kubectl("get", "crd", f"{kind}.gateway.networking.k8s.io")


def test_an_httproute_keeps_its_backend_weights_and_takes_a_patch_of_them(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, SERVICES)
    apply(local_cluster, namespace, ROUTE)

    route = get(local_cluster, namespace, "httproute", "split")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"][0]["name"] == "public-gateway"
    assert weights(route) == {"stable": 90, "canary": 10}
    assert all(ref["port"] == 80 for ref in route["spec"]["rules"][0]["backendRefs"])

    even = [{"op": "replace", "path": f"/spec/rules/0/backendRefs/{index}/weight", "value": 50} for index in (0, 1)]
    local_cluster.kubectl("patch", "httproute", "split", "-n", namespace, "--type=json", "-p", json.dumps(even))
    assert weights(get(local_cluster, namespace, "httproute", "split")) == {"stable": 50, "canary": 50}

    # The CRD's schema is enforced: a weight outside 0..1000000 is refused and nothing changes.
    negative = [{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": -1}]
    refused = local_cluster.kubectl("patch", "httproute", "split", "-n", namespace, "--type=json",
                                    "-p", json.dumps(negative), check=False)
    assert refused.returncode != 0 and "weight" in refused.stderr, refused.stderr
    assert weights(get(local_cluster, namespace, "httproute", "split")) == {"stable": 50, "canary": 50}
