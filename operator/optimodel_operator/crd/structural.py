"""Checks a generated schema against Kubernetes' structural-schema rules, and our own bounds.

The API server enforces the structural rules at CRD creation; checking them here means a bad
translation fails `optimodel crd generate` and the unit tests, not a cluster test an hour later.
The bounds (every list has maxItems, every string maxLength, every map maxProperties) keep CEL
rules' estimated cost under the API server's budget.
"""

from __future__ import annotations

from typing import Any

_INT_OR_STRING_BRANCHES = [{"type": "integer"}, {"type": "string"}]
_ALLOWED_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_FORBIDDEN = {"$ref", "oneOf", "allOf", "not", "uniqueItems", "definitions", "$defs", "nullable", "propertyNames"}


def structural_violations(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every reason `schema` is not structural or not bounded; empty when it is fine."""
    problems: list[str] = []
    here = path or "<root>"
    for key in _FORBIDDEN & schema.keys():
        problems.append(f"{here}: uses {key}")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    if "anyOf" in schema and not (int_or_string and schema["anyOf"] == _INT_OR_STRING_BRANCHES):
        problems.append(f"{here}: anyOf is only allowed as the int-or-string pair")
    if not int_or_string and schema.get("x-kubernetes-preserve-unknown-fields") is not True:
        if schema.get("type") not in _ALLOWED_TYPES:
            problems.append(f"{here}: needs a type (got {schema.get('type')!r})")
    kind = schema.get("type")
    if schema.get("additionalProperties") is False:
        problems.append(f"{here}: additionalProperties: false is not allowed")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{here}: properties and additionalProperties are mutually exclusive")
    if kind == "array":
        if "items" not in schema:
            problems.append(f"{here}: array without items")
        if "maxItems" not in schema:
            problems.append(f"{here}: array without maxItems (unbounded CEL cost)")
    if kind == "string" and path not in (".apiVersion", ".kind") and not ({"maxLength", "enum"} & schema.keys()) and schema.get("format") != "date-time":
        problems.append(f"{here}: string without maxLength or enum (unbounded CEL cost)")
    if kind == "object" and "additionalProperties" in schema and "maxProperties" not in schema:
        problems.append(f"{here}: map without maxProperties (unbounded CEL cost)")
    if not path or kind == "object":
        if "description" not in schema and path not in ("", ".metadata"):
            problems.append(f"{here}: no description (kubectl explain would be empty)")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        item = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []) and "default" not in item.get("properties", {}).get(key, {}):
                problems.append(f"{here}: list-map key {key} must be required or defaulted")
    for name, sub in schema.get("properties", {}).items():
        if "description" not in sub and path not in ("",):
            problems.append(f"{here}.{name}: no description (kubectl explain would be empty)")
        problems.extend(structural_violations(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        problems.extend(structural_violations(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        problems.extend(structural_violations(schema["additionalProperties"], f"{path}{{}}"))
    return problems
