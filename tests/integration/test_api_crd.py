"""The generated CRD on the real API server: it installs, its names work, `kubectl explain`
explains, and `kubectl get` shows the printer columns."""

from __future__ import annotations

import json

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


def test_server_fills_split_and_slices_defaults(local_cluster, namespace: str) -> None:
    # `split: {}` and `slices: {}` get the CRD's defaults, the same as the Job config's (test_contracts_mapping).
    manifest = base_manifest("roles")
    manifest["spec"]["evaluation"].update(split={}, slices={"columns": ["region"]})
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    got = local_cluster.kubectl(
        "get", "om", "roles", "-n", namespace, "-o",
        "jsonpath={.spec.evaluation.split} {.spec.evaluation.slices}",
    ).stdout
    split, slices = (json.loads(part) for part in got.split(" ", 1))
    assert split == {"seed": 0, "tuningFraction": 0.3, "calibrationFraction": 0}
    assert slices == {"perClass": True, "columns": ["region"], "maxDrop": 0.05, "maxDropMode": "absolute", "minSize": 30}
    explained = local_cluster.kubectl("explain", "om.spec.evaluation.split.calibrationFraction").stdout
    assert "explicit leave" in explained


def test_worst_slice_is_kept_in_status_and_described(local_cluster, namespace: str) -> None:
    # The status schema keeps the fields (an unknown one would be pruned) and kubectl describe shows them.
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(base_manifest("sliced")))
    worst = "class=3: -8.1 pts on 88 rows (budget 5), over budget"
    patch = {"status": {"variants": [{"name": "int8", "gate": "Failed", "worstSlice": worst,
                                      "heldOutRows": 700, "tuningRows": 300}]}}
    local_cluster.kubectl("patch", "om", "sliced", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps(patch))
    stored = local_cluster.kubectl("get", "om", "sliced", "-n", namespace, "-o", "jsonpath={.status.variants[0]}").stdout
    assert json.loads(stored) == patch["status"]["variants"][0]
    described = local_cluster.kubectl("describe", "om", "sliced", "-n", namespace).stdout
    assert worst in described and "Held Out Rows" in described
