"""The CRD generated from the pydantic types: committed copies match, the schema is structural and
bounded, every field is explained, and the Kubernetes extras (printer columns, short name, status
subresource, list types, CEL fieldPaths) are where they should be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from optimodel_operator.crd.build import PRINTER_COLUMNS, custom_resource_definition, openapi_schema
from optimodel_operator.crd.files import CRD_PATHS, check, generate, render_crd
from optimodel_operator.crd.schema import SchemaTranslationError, structural_schema
from optimodel_operator.crd.structural import structural_violations

REPO = Path(__file__).resolve().parents[2]


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_committed_crd_files_match_the_types() -> None:
    drifts = check(REPO)
    assert drifts == [], "run `optimodel crd generate`:\n" + "\n".join(d.diff for d in drifts)


def test_generate_then_check_round_trip(tmp_path: Path) -> None:
    (tmp_path / "crds").mkdir()
    assert [d.path for d in check(tmp_path)] == list(CRD_PATHS)  # missing files are drift
    generate(tmp_path)
    assert check(tmp_path) == []
    assert (tmp_path / "charts/optimodel/Chart.yaml").exists()
    target = tmp_path / CRD_PATHS[1]
    target.write_text(target.read_text().replace("maxItems: 20", "maxItems: 21"))
    drifts = check(tmp_path)
    assert [d.path for d in drifts] == [CRD_PATHS[1]]
    assert "maxItems: 21" in drifts[0].diff


def test_rendering_is_deterministic_and_valid_yaml() -> None:
    first = render_crd()
    assert first == render_crd()
    assert yaml.safe_load(first) == custom_resource_definition()
    assert "&id" not in first  # no YAML anchors: plain for every tool


def test_schema_is_structural_and_bounded() -> None:
    assert structural_violations(openapi_schema()) == []


def test_names_scope_and_subresource() -> None:
    crd = custom_resource_definition()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "optimizedmodels.optimodel.io"
    assert spec["group"] == "optimodel.io" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "OptimizedModel",
        "listKind": "OptimizedModelList",
        "plural": "optimizedmodels",
        "singular": "optimizedmodel",
        "shortNames": ["om"],
        "categories": ["optimodel"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]


def test_printer_columns_cover_phase_serving_weight_p99_age() -> None:
    columns = {c["name"]: c for c in PRINTER_COLUMNS}
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Serving"]["jsonPath"] == ".status.serving"
    assert columns["Revision"]["jsonPath"] == ".status.stableRevision"
    assert columns["Weight"]["jsonPath"] == ".status.canaryWeight" and columns["Weight"]["type"] == "integer"
    assert columns["P99-ms"]["jsonPath"] == ".status.latencyP99Ms"
    assert columns["Age"]["type"] == "date"
    status_paths = {path for path, _ in _walk(openapi_schema()["properties"]["status"], ".status")}
    for column in PRINTER_COLUMNS:
        if column["jsonPath"].startswith(".status.") and "[" not in column["jsonPath"]:
            assert column["jsonPath"] in status_paths, column


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for path, node in _walk(openapi_schema())
        if path not in ("", ".metadata") and "description" not in node and not path.endswith(("[]", "{}"))
    ]
    assert missing == []


def test_every_cel_field_path_names_an_existing_field() -> None:
    checked = 0
    for path, node in _walk(openapi_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], rule
            field = rule.get("fieldPath")
            if field:
                assert field.lstrip(".") in node["properties"], (path, rule)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.optimizations", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        (".spec.nodePools", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        (".spec.rollout.steps", {"x-kubernetes-list-type": "set"}),
        (".status.conditions", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
        (".spec.nodePools[].resources.limits{}", {"x-kubernetes-int-or-string": True}),
        (".spec.rollout.steps[]", {"minimum": 1, "maximum": 100}),
        (".spec.evaluation.maxDrop", {"minimum": 0}),
        (".spec.rollout.noData", {"default": "hold", "enum": ["hold", "fail"]}),
        (".spec.rollout.trafficRouting.gatewayAPI.httpRoute", {"type": "string"}),
        (".spec.optimizations[].from", {"type": "string"}),
        (".spec.evaluation.maxSizeMiB", {"exclusiveMinimum": True, "minimum": 0}),
        (".spec.rollout.drift.maxPSI", {"default": 0.2}),
    ],
)
def test_schema_details(path: str, expected: dict[str, Any]) -> None:
    nodes = dict(_walk(openapi_schema()))
    assert expected.items() <= nodes[path].items()


def test_status_has_no_defaults() -> None:
    # Server-side defaults in status would make the stored status differ from the operator's
    # computed one, and every reconcile would patch again.
    assert [p for p, n in _walk(openapi_schema()["properties"]["status"]) if "default" in n] == []


class _Unionish(BaseModel):
    """A union the translator cannot express."""

    value: int | list[str]
    """Either."""


def test_union_without_override_is_refused() -> None:
    with pytest.raises(SchemaTranslationError, match="value"):
        structural_schema(_Unionish)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "description": "d", "properties": {"a": {"type": "string", "description": "x"}}}, "maxLength"),
        ({"type": "object", "description": "d", "properties": {"a": {"description": "x", "maxLength": 3}}}, "needs a type"),
        ({"type": "array", "description": "d", "items": {"type": "integer"}}, "maxItems"),
        ({"type": "object", "description": "d", "additionalProperties": False}, "additionalProperties: false"),
        ({"type": "object", "description": "d", "additionalProperties": {"type": "integer"}}, "maxProperties"),
        (
            {"type": "object", "description": "d", "properties": {"o": {"type": "object", "description": "o",
             "properties": {"a": {"type": "integer"}}}}},
            "no description",
        ),
        ({"type": "object", "description": "d", "properties": {"a": {"$ref": "#/x", "description": "x"}}}, "$ref"),
    ],
)
def test_structural_checker_catches(schema: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in structural_violations(schema)), structural_violations(schema)
