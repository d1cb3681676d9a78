"""The CustomResourceDefinition of OptimizedModel, assembled from the API types."""

from __future__ import annotations

from typing import Any

from optimodel_operator.api.meta import (
    CATEGORIES,
    CRD_NAME,
    GROUP,
    KIND,
    LIST_KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.api.status import OptimizedModelStatus
from optimodel_operator.crd.schema import structural_schema
from optimodel_operator.crd.structural import structural_violations

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the wanted revision serves all traffic.",
    },
    {
        "name": "Serving",
        "type": "string",
        "jsonPath": ".status.serving",
        "description": "What each pool serves: pool=variant.",
    },
    {
        "name": "Revision",
        "type": "string",
        "jsonPath": ".status.stableRevision",
        "description": "Stable revision: the one serving.",
        "priority": 1,
    },
    {
        "name": "Canary",
        "type": "string",
        "jsonPath": ".status.currentRevision",
        "description": "Revision being rolled out.",
        "priority": 1,
    },
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.canaryWeight",
        "description": "Canary traffic weight in percent.",
    },
    {
        "name": "P99-ms",
        "type": "number",
        "jsonPath": ".status.latencyP99Ms",
        "description": "Largest p99 latency over the served pools (the gate's measurement until live analysis).",
    },
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1, "description": "Summary."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

KIND_DESCRIPTION = (
    "OptimizedModel takes a trained model to optimized variants (int8, fp16, pruned, distilled), "
    "gates them on accuracy and latency against the source, and rolls the chosen ones out to node "
    "pools as a canary guarded by an SLO and a drift check."
)


class NotStructuralError(ValueError):
    pass


def openapi_schema() -> dict[str, Any]:
    spec = structural_schema(OptimizedModelSpec)
    status = structural_schema(OptimizedModelStatus)
    schema: dict[str, Any] = {
        "type": "object",
        "description": KIND_DESCRIPTION,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation: optimodel.io/v1alpha1.",
            },
            "kind": {"type": "string", "description": "OptimizedModel."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    problems = structural_violations(schema)
    if problems:
        raise NotStructuralError("generated schema is not structural:\n  " + "\n  ".join(problems))
    return schema


def custom_resource_definition() -> dict[str, Any]:
    """The whole CRD object, ready for kubectl apply."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "optimodel", "app.kubernetes.io/part-of": "optimodel"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }
