"""The explicit table of what pydantic's JSON schema cannot say and Kubernetes needs.

Keyed by (model class name, wire field name); each entry is merged over the generated field schema
(after Optional is collapsed), replacing the keys it names. Edit here, never the generated YAML.
"""

from __future__ import annotations

from typing import Any

from optimodel_operator.api.common import QUANTITY_PATTERN

# A resource quantity as the core API publishes it: integer or string, the string in quantity grammar.
INT_OR_STRING_QUANTITY: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}


def _map_list(*keys: str) -> dict[str, Any]:
    # A list keyed by these fields: the API server refuses duplicates (naming the item) and
    # server-side apply merges items by key, so GitOps tools can own single entries.
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


FIELD_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("OptimizedModelSpec", "optimizations"): _map_list("name"),
    ("OptimizedModelSpec", "nodePools"): _map_list("name"),
    ("ModelSource", "inputs"): _map_list("name"),
    # A set: duplicate weights are refused by the API server; with isSorted() that makes the steps
    # strictly increasing.
    ("Rollout", "steps"): {"x-kubernetes-list-type": "set"},
    ("Rollout", "checks"): _map_list("name"),
    ("NodePool", "tolerations"): {"x-kubernetes-list-type": "atomic"},
    ("ResourceRequirements", "requests"): {"additionalProperties": INT_OR_STRING_QUANTITY},
    ("ResourceRequirements", "limits"): {"additionalProperties": INT_OR_STRING_QUANTITY},
    ("OptimizedModelStatus", "conditions"): _map_list("type"),
    ("OptimizedModelStatus", "variants"): _map_list("name"),
    ("RevisionRecord", "pools"): _map_list("pool"),
}

# JSON-schema keywords pydantic emits that a Kubernetes structural schema has no use for.
DROPPED_KEYWORDS = frozenset({"title", "propertyNames", "$schema", "examples"})
# Formats the API server understands; others pydantic may emit are dropped.
KEPT_FORMATS = frozenset({"date-time", "int32", "int64", "float", "double", "byte"})
