"""The generated CRD judged locally, before any cluster: an emulation of what the API server does
with it (prune-or-refuse unknown fields, defaults, OpenAPI checks, list types, CEL rules through
cel-python), run over the example manifests and the shared table of bad manifests.

The real proof is tests/integration/test_api_bad_manifests.py against kube-apiserver; this one
catches a wrong CEL rule or fieldPath in a second, and checks the CEL and the Python rules agree.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import celpy
import pytest
from celpy import celtypes

from optimodel_operator.crd.build import openapi_schema
from optimodel_operator.planner.validation import judge_spec
from optimodel_operator.planner.view import PlannerConfig
from optimodel_operator.testing.manifests import BAD_CASES, BadCase, bad_manifest, base_manifest, load_examples

Error = tuple[str, str]  # (field path as the API server writes it, message)
_CEL = celpy.Environment()


def _is_sorted(items: Any) -> celtypes.BoolType:
    # The Kubernetes list library's isSorted(), which cel-python lacks.
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in zip(values, values[1:], strict=False)))


@cache
def _program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule), functions={"isSorted": _is_sorted})


def _to_cel(value: Any, schema: dict[str, Any]) -> Any:
    # Typed as the API server types it: `number` is always a double in CEL, even when written as 1.
    kind = schema.get("type")
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer" and not isinstance(value, bool) and isinstance(value, int):
        return celtypes.IntType(value)
    if kind == "array":
        return celtypes.ListType([_to_cel(v, schema.get("items", {})) for v in value])
    if kind == "object" and isinstance(value, dict):
        if "properties" in schema:
            props = schema["properties"]
            return celtypes.MapType(
                {celtypes.StringType(k): _to_cel(v, props.get(k, {})) for k, v in value.items()}
            )
        inner = schema.get("additionalProperties", {})
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, inner) for k, v in value.items()})
    return celpy.json_to_cel(value)


def _default(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _default(value[name], sub)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = _default(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and "items" in schema:
        return [_default(item, schema["items"]) for item in value]
    return value


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def _validate(value: Any, schema: dict[str, Any], path: str) -> list[Error]:
    errors: list[Error] = []
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [(path, "must be an integer or a string")]
        if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((path, f"should match '{schema['pattern']}'"))
        return errors
    kind = schema["type"]
    if not isinstance(value, _TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [(path, f"must be of type {kind}")]
    if "enum" in schema and value not in schema["enum"]:
        errors.append((path, f"Unsupported value: {value!r}"))
    if kind in ("integer", "number"):
        if "minimum" in schema:
            low = schema["minimum"]
            if value < low or (schema.get("exclusiveMinimum") and value == low):
                errors.append((path, f"should be greater than {low}"))
        if "maximum" in schema:
            high = schema["maximum"]
            if value > high or (schema.get("exclusiveMaximum") and value == high):
                errors.append((path, f"should be less than {high}"))
    if kind == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            errors.append((path, "length out of range"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((path, f"should match '{schema['pattern']}'"))
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 30):
            errors.append((path, "item count out of range"))
        for i, item in enumerate(value):
            errors.extend(_validate(item, schema["items"], f"{path}[{i}]"))
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: list[Any] = []
        for i, item in enumerate(value):
            identity = item if list_type == "set" else tuple(item.get(k) for k in keys) if list_type == "map" else None
            if identity is not None and identity in seen:
                errors.append((f"{path}[{i}]", f"Duplicate value: {identity!r}"))
            seen.append(identity)
    if kind == "object":
        props = schema.get("properties")
        if props is not None:
            for name in schema.get("required", []):
                if name not in value:
                    errors.append((f"{path}.{name}", "Required value"))
            for name, item in value.items():
                if name not in props:
                    errors.append((f"{path}.{name}", "unknown field"))
                else:
                    errors.extend(_validate(item, props[name], f"{path}.{name}"))
        elif isinstance(schema.get("additionalProperties"), dict):
            if len(value) > schema.get("maxProperties", 1 << 30):
                errors.append((path, "too many properties"))
            for key, item in value.items():
                errors.extend(_validate(item, schema["additionalProperties"], f"{path}.{key}"))
    if errors:
        return errors  # as the API server, CEL runs only on values that passed the schema
    for rule in schema.get("x-kubernetes-validations", []):
        result = _program(rule["rule"]).evaluate({"self": _to_cel(value, schema)})
        if result is not True and not (isinstance(result, celtypes.BoolType) and bool(result)):
            errors.append((path + rule.get("fieldPath", ""), rule["message"]))
    return errors


def api_server_errors(manifest: dict[str, Any]) -> list[Error]:
    """What the API server would refuse `manifest` for, according to the generated schema."""
    schema = openapi_schema()["properties"]["spec"]
    spec = _default(copy.deepcopy(manifest.get("spec", {})), schema)
    if "spec" not in manifest:
        return [("spec", "Required value")]
    return _validate(spec, schema, "spec")


def test_base_manifest_passes() -> None:
    assert api_server_errors(base_manifest()) == []


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_examples_pass(name: str) -> None:
    assert api_server_errors(load_examples()[name]) == []


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_bad_manifest_refused_naming_the_field(case: BadCase) -> None:
    errors = api_server_errors(bad_manifest(case))
    assert errors, f"{case.id} was accepted"
    assert any(path.startswith(case.field) for path, _ in errors), errors


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_python_rules_agree_with_the_schema(case: BadCase) -> None:
    # The operator's own check refuses the same manifests, naming the same field.
    verdict = judge_spec(bad_manifest(case)["spec"], PlannerConfig())
    assert not verdict.valid
    expected = case.python_field or case.field
    assert any(problem.field.startswith(expected) for problem in verdict.problems), verdict.problems


def test_enough_distinct_bad_cases() -> None:
    assert len({c.id for c in BAD_CASES}) == len(BAD_CASES) >= 15


@pytest.mark.parametrize(
    ("steps", "accepted"),
    [([10, 25, 50, 100], True), ([100], True), ([1, 2], True), ([25, 10], False), ([10, 10], False), ([0, 10], False)],
)
def test_steps_rule(steps: list[int], accepted: bool) -> None:
    manifest = base_manifest()
    manifest["spec"]["rollout"]["steps"] = steps
    assert (api_server_errors(manifest) == []) is accepted
    assert judge_spec(manifest["spec"], PlannerConfig()).valid is accepted


@pytest.mark.parametrize(
    ("variant", "accepted"), [("auto", True), ("source", True), ("small-int8", True), ("int4", False)]
)
def test_pool_variant_rule(variant: str, accepted: bool) -> None:
    manifest = base_manifest()
    manifest["spec"]["nodePools"][0]["variant"] = variant
    assert (api_server_errors(manifest) == []) is accepted
    assert judge_spec(manifest["spec"], PlannerConfig()).valid is accepted


def test_defaults_applied_before_cel() -> None:
    # With rollout left out, the server's default must itself pass the rollout rules.
    manifest = base_manifest()
    del manifest["spec"]["rollout"]
    assert api_server_errors(manifest) == []
    schema = openapi_schema()["properties"]["spec"]
    defaulted = _default(copy.deepcopy(manifest["spec"]), schema)
    assert defaulted["rollout"]["steps"] == [10, 25, 50, 100]
    assert defaulted["rollout"]["noData"] == "hold"


@pytest.mark.parametrize(
    ("split", "accepted"),
    [
        ({}, True),  # the defaults (0.3 tuning, 0 calibration) leave 70% held out
        ({"tuningFraction": 0.7, "calibrationFraction": 0.29}, True),
        ({"tuningFraction": 0.7, "calibrationFraction": 0.3}, False),  # nothing left held out
        ({"tuningFraction": 0.99}, True),
        ({"calibrationFraction": 0.7}, False),  # with the default 0.3 tuning: the default counts
        ({"seed": 2_147_483_647}, True),
    ],
)
def test_split_rule(split: dict[str, Any], accepted: bool) -> None:
    manifest = base_manifest()
    manifest["spec"]["evaluation"]["split"] = split
    assert (api_server_errors(manifest) == []) is accepted
    assert judge_spec(manifest["spec"], PlannerConfig()).valid is accepted


@pytest.mark.parametrize(
    ("evaluation", "accepted"),
    [
        ({"slices": {"maxDropMode": "relative", "maxDrop": 1.0}}, True),
        ({"slices": {"maxDropMode": "relative", "maxDrop": 1.01}}, False),
        ({"slices": {"maxDrop": 3}}, True),  # absolute: in the metric's units (e.g. an mae)
        ({"slices": {"columns": ["region", "device"]}}, True),
        ({"slices": {"columns": ["region", "device", "region"]}}, False),
        ({"tuningDataset": "s3://data/m/tune.parquet"}, True),
        ({"tuningDataset": "s3://data/m/eval.parquet"}, False),  # the held-out data itself
    ],
)
def test_slices_and_tuning_dataset_rules(evaluation: dict[str, Any], accepted: bool) -> None:
    manifest = base_manifest()
    manifest["spec"]["evaluation"].update(evaluation)
    assert (api_server_errors(manifest) == []) is accepted
    assert judge_spec(manifest["spec"], PlannerConfig()).valid is accepted


def test_split_and_slices_stay_unset_unless_given() -> None:
    # No CRD default for the objects themselves: absent, the Job config's own defaults apply (one source).
    schema = openapi_schema()["properties"]["spec"]
    defaulted = _default(copy.deepcopy(base_manifest()["spec"]), schema)
    assert "split" not in defaulted["evaluation"] and "slices" not in defaulted["evaluation"]
