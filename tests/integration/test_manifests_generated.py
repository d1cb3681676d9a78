"""Generated OptimizedModel manifests (hypothesis) against the real API server and the operator's decisions.

Each manifest is the base example with one field set to a generated value (of any JSON type), removed, or
an unknown field added, under a generated name (up to 253 characters). The API server either refuses it,
naming the field, or stores it; what it stores (with its defaults) goes through the operator's reconcile,
which must return a status whose conditions say where the model stands (an invalid spec: Accepted False
naming the field), never raise; and every child it would make has a name and labels the API accepts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.planner.reconcile import reconcile
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.cluster import install_crd
from optimodel_operator.testing.manifests import base_manifest

pytestmark = pytest.mark.cluster

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CONFIG = PlannerConfig(default_artifacts_uri="s3://store/default")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _leaf_paths(value, (*prefix, key))] or [prefix]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in _leaf_paths(value, (*prefix, index))] or [prefix]
    return [prefix]


SPEC_PATHS = sorted(set(_leaf_paths(base_manifest()["spec"])) | {p[:-1] for p in _leaf_paths(base_manifest()["spec"])
                                                               if len(p) > 1}, key=str)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(-1e6, 1e6, allow_nan=False),
    st.text(max_size=80), st.sampled_from(["", "-1", "0", "cpu", "int8", "s3://b/k", "file:///x", "1Gi", "10s"]),
    st.lists(st.integers(-5, 200), max_size=4), st.dictionaries(st.sampled_from(["a", "name", "uri"]), st.integers(), max_size=2),
)
NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    st.integers(64, 253).map(lambda n: ("m" + "x" * n)[:n]),  # past a label's 63 characters, up to the limit
)


def _same_kind(value: Any) -> st.SearchStrategy[Any]:
    """A value of the original's type near its range: most such manifests are valid, some are not."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-1, 2 * value + 2)
    if isinstance(value, float):
        return st.floats(0, 1, allow_nan=False)
    if isinstance(value, str):
        return st.one_of(st.just(value + "x"), st.just(value.upper()), st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True))
    return st.just(value)


@st.composite
def manifests(draw: st.DrawFn) -> tuple[dict[str, Any], tuple]:
    manifest = base_manifest(draw(NAMES))
    path = draw(st.sampled_from(SPEC_PATHS))
    action = draw(st.sampled_from(["set", "tweak", "tweak", "remove", "unknown"]))
    parent: Any = manifest["spec"]
    for key in path[:-1]:
        parent = parent[key]
    if action == "unknown":
        if not isinstance(parent, dict):  # a list's element: the field goes into the spec itself
            parent, path = manifest["spec"], ("x",)
        path = (*path[:-1], "notAField")
        parent["notAField"] = draw(VALUES)
    elif action == "remove":
        del parent[path[-1]]
    elif action == "tweak":
        parent[path[-1]] = draw(_same_kind(parent[path[-1]]))
    else:
        parent[path[-1]] = draw(VALUES)
    return manifest, path


SPEC_FIELDS = set(base_manifest()["spec"]) | {"revisionHistoryLimit"}


def _named_fields(message: str) -> set[str]:
    """The spec fields an API server message names (`spec.nodePools[0].replicas` -> nodePools)."""
    return set(re.findall(r"spec\.([A-Za-z]+)", message))


@pytest.fixture(scope="module")
def generated_ns(local_cluster: LocalCluster) -> Iterator[str]:
    install_crd(local_cluster.kubectl)
    name = f"t-generated-{uuid.uuid4().hex[:5]}"
    local_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        local_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


OUTCOMES: dict[str, int] = {"refused": 0, "accepted": 0, "invalid-for-the-operator": 0, "children": 0}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=manifests())
def test_each_manifest_is_refused_naming_the_field_or_handled_with_a_condition(
    local_cluster: LocalCluster, generated_ns: str, case: tuple[dict[str, Any], tuple]
) -> None:
    manifest, path = case
    result = local_cluster.kubectl("apply", "--dry-run=server", "-n", generated_ns, "-o", "json", "-f", "-",
                                   input=json.dumps(manifest), check=False)
    if result.returncode != 0:
        OUTCOMES["refused"] += 1
        # The changed field itself, or one whose rule refers to it (a pool naming a removed optimization).
        named = _named_fields(result.stderr)
        assert named and named <= SPEC_FIELDS | {"notAField"}, f"{path}: {result.stderr}"
        return
    OUTCOMES["accepted"] += 1
    stored = json.loads(result.stdout)
    view = ResourceView(name=stored["metadata"]["name"], namespace=generated_ns, generation=1, spec=stored["spec"],
                        status={}, uid="uid-1")
    decision = reconcile(view, NOW, CONFIG)
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    assert conditions["Ready"]["reason"] and conditions["Ready"]["status"] in ("True", "False", "Unknown")
    if decision.permanent_error:
        OUTCOMES["invalid-for-the-operator"] += 1
        assert conditions["Accepted"]["status"] == "False"
        assert "spec." in conditions["Accepted"]["message"], conditions["Accepted"]
    for child in (*decision.actions.create, *decision.actions.apply):
        OUTCOMES["children"] += 1
        name = child["metadata"]["name"]
        # Jobs' and Services' names become pod and DNS labels: 63 characters at most.
        limit = 63 if child["kind"] in ("Service", "Job") else 253
        assert len(name) <= limit and DNS_SUBDOMAIN.match(name), (child["kind"], name)
        assert all(len(v) <= 63 for v in (child["metadata"].get("labels") or {}).values()), child["metadata"]


def test_the_generated_cases_reached_both_sides() -> None:
    """Runs after the property (same module, in order): a generator that produced only refusals, or only
    acceptances, would test one side alone."""
    print(f"generated manifests: {OUTCOMES}")
    assert OUTCOMES["refused"] >= 5 and OUTCOMES["accepted"] >= 5 and OUTCOMES["children"] >= 5, OUTCOMES
