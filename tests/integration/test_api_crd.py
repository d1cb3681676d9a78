"""The generated CRD on the real API server: it installs, its names work, `kubectl explain`
explains, and `kubectl get` shows the printer columns."""

from __future__ import annotations

import pytest

from optimodel_operator.testing.cluster import install_crd
from optimodel_operator.testing.manifests import base_manifest, to_yaml

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", autouse=True)
def crd(local_cluster) -> None:
    install_crd(local_cluster.kubectl)


def test_explain_rollout(local_cluster) -> None:
    out = local_cluster.kubectl("explain", "optimizedmodel.spec.rollout").stdout
    assert "Canary rollout and SLO guard" in out
    for field in ("steps", "interval", "slo", "drift", "failureLimit", "noData", "minSamples", "trafficRouting"):
        assert field in out, field
    steps = local_cluster.kubectl("explain", "om.spec.rollout.steps").stdout
    assert "strictly increasing" in steps


def test_explain_lists_enum_meanings(local_cluster) -> None:
    out = local_cluster.kubectl("explain", "optimizedmodels.status.phase").stdout
    assert "RollingOut" in out and "leaves" in out


def test_short_name_category_and_columns(local_cluster, namespace: str) -> None:
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(base_manifest("columns")))
    for resource in ("om", "optimizedmodels", "optimodel"):
        out = local_cluster.kubectl("get", resource, "-n", namespace).stdout
        assert "columns" in out, resource
    header = local_cluster.kubectl("get", "om", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "READY", "SERVING", "WEIGHT", "P99-MS", "AGE"]
    wide = local_cluster.kubectl("get", "om", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert "CANARY" in wide and "MESSAGE" in wide


def test_server_applies_defaults(local_cluster, namespace: str) -> None:
    manifest = base_manifest("defaults")
    del manifest["spec"]["rollout"]
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    rollout = local_cluster.kubectl(
        "get", "om", "defaults", "-n", namespace, "-o", "jsonpath={.spec.rollout.steps} {.spec.rollout.noData}"
    ).stdout
    assert rollout == "[10,25,50,100] hold"


def test_status_is_a_subresource(local_cluster, namespace: str) -> None:
    # A status written with the main resource is ignored; only the status subresource takes it.
    manifest = base_manifest("sub")
    manifest["status"] = {"phase": "Succeeded"}
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    got = local_cluster.kubectl("get", "om", "sub", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
    assert got == ""
