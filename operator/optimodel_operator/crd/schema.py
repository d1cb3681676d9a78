"""pydantic JSON schema → Kubernetes structural OpenAPI v3 schema.

pydantic speaks JSON Schema 2020-12 ($defs/$ref, anyOf-with-null for Optional, numeric
exclusiveMinimum); the API server wants a structural schema (everything inline, a type at every
level, OpenAPI v3.0 exclusiveMinimum booleans, no additionalProperties: false). This module
translates, attaches the CEL rules declared on the models and the overrides table, and refuses
constructs it cannot translate instead of guessing.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from enum import Enum
from types import UnionType
from typing import Any

from pydantic import BaseModel

from optimodel_operator.api.common import CelRule, DescribedEnum, StatusModel
from optimodel_operator.crd.overrides import DROPPED_KEYWORDS, FIELD_OVERRIDES, KEPT_FORMATS


class SchemaTranslationError(ValueError):
    """The pydantic schema has a construct with no structural equivalent; add an override."""


def _walk_types(annotation: Any) -> Iterator[type]:
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            yield annotation
        return
    if origin in (typing.Union, UnionType) or origin is typing.Annotated or origin in (list, dict, tuple):
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            args = args[:1]
        for arg in args:
            yield from _walk_types(arg)


def collect_types(root: type[BaseModel]) -> dict[str, type]:
    """Every model and enum reachable from `root`, by class name (pydantic's $defs names)."""
    found: dict[str, type] = {}
    pending: list[type] = [root]
    while pending:
        cls = pending.pop()
        if cls.__name__ in found:
            if found[cls.__name__] is not cls:
                raise SchemaTranslationError(f"two API types are named {cls.__name__}; names must be unique")
            continue
        found[cls.__name__] = cls
        if issubclass(cls, BaseModel):
            for field in cls.model_fields.values():
                pending.extend(t for t in _walk_types(field.annotation) if issubclass(t, BaseModel | Enum))
    return found


def _clean_description(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _enum_description(enum: type[DescribedEnum]) -> str:
    return "Values: " + " ".join(f"`{m.value}`: {m.description}" for m in enum)


def _cel_validations(rules: tuple[CelRule, ...]) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        entry: dict[str, Any] = {"rule": rule.rule, "message": rule.message}
        if rule.field_path:
            entry["fieldPath"] = rule.field_path
        if rule.reason:
            entry["reason"] = rule.reason
        out.append(entry)
    return out


class _Translator:
    def __init__(self, root: type[BaseModel]) -> None:
        self.types = collect_types(root)
        raw = root.model_json_schema(by_alias=True, mode="validation")
        self.defs: dict[str, Any] = raw.pop("$defs", {})
        self.root_raw = raw
        self.root = root

    def translate(self) -> dict[str, Any]:
        return self._object(self.root_raw, self.root.__name__, in_status=issubclass(self.root, StatusModel))

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Inline a $ref (keeping sibling keys such as description); return the def name too."""
        if "allOf" in node and len(node["allOf"]) == 1:  # older pydantic wraps refs this way
            node = {**{k: v for k, v in node.items() if k != "allOf"}, **node["allOf"][0]}
        if "$ref" not in node:
            return node, None
        name = node["$ref"].rsplit("/", 1)[-1]
        target = dict(self.defs[name])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if "description" in siblings:
            target.pop("description", None)
        return {**target, **siblings}, name

    @staticmethod
    def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
        if "anyOf" not in node:
            return node
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            return node  # a real union: only an override can say what it is
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", ...) is None:
            rest.pop("default")
        return {**branches[0], **rest}

    def _node(self, node: dict[str, Any], path: str, in_status: bool) -> dict[str, Any]:
        node = self._collapse_optional(node)
        node, def_name = self._resolve(node)
        if def_name is not None and issubclass(self.types.get(def_name, object), BaseModel):
            return self._object(node, def_name, in_status, path)
        if "anyOf" in node or "oneOf" in node:
            raise SchemaTranslationError(f"{path}: a union has no structural schema; add an entry to FIELD_OVERRIDES")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DROPPED_KEYWORDS or (key == "additionalProperties" and value is False):
                continue
            if key == "default" and in_status:
                continue  # the operator writes status whole; server defaults would make it drift
            if key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            elif key == "format":
                if value in KEPT_FORMATS:
                    out["format"] = value
            elif key == "description":
                out["description"] = _clean_description(value)
            elif key == "items":
                out["items"] = self._node(value, f"{path}[]", in_status)
            elif key == "additionalProperties":
                out["additionalProperties"] = self._node(value, f"{path}{{}}", in_status)
            else:
                out[key] = value
        enum_cls = self.types.get(def_name or "")
        if enum_cls is not None and issubclass(enum_cls, DescribedEnum):
            lead = out.get("description") if "description" in node and node.get("description") != enum_cls.__doc__ else None
            out["description"] = " ".join(filter(None, [lead, _enum_description(enum_cls)]))
        return out

    def _object(self, node: dict[str, Any], model_name: str, in_status: bool, path: str = "") -> dict[str, Any]:
        model = self.types[model_name]
        assert issubclass(model, BaseModel)
        out: dict[str, Any] = {"type": "object"}
        description = node.get("description") or model.__doc__
        if description:
            out["description"] = _clean_description(description)
        if "default" in node and not in_status:
            out["default"] = node["default"]
        wire_names = {f.alias or name: name for name, f in model.model_fields.items()}
        properties: dict[str, Any] = {}
        for wire, raw in node.get("properties", {}).items():
            override = FIELD_OVERRIDES.get((model_name, wire), {})
            collapsed = self._collapse_optional(raw)
            stripped = {k: v for k, v in collapsed.items() if k not in override}
            field_schema = self._node(stripped, f"{path}.{wire}", in_status)
            field_schema.update(override)
            field = model.model_fields[wire_names[wire]]
            if not in_status and "default" not in field_schema and field.default_factory is not None:
                produced = field.default_factory()  # type: ignore[call-arg]
                # A nested object defaults to its fully defaulted form: the API server checks a
                # default against the CEL rules as it stands, before nested defaults would fill it.
                field_schema["default"] = (
                    produced.model_dump(by_alias=True, exclude_none=True, mode="json")
                    if isinstance(produced, BaseModel)
                    else produced
                )
            properties[wire] = field_schema
        out["properties"] = properties
        required = node.get("required")
        if required:
            out["required"] = list(required)
        rules = getattr(model, "cel_rules", ())
        if rules:
            out["x-kubernetes-validations"] = _cel_validations(rules)
        return out


_KEY_ORDER = (
    "type", "description", "default", "enum", "format", "pattern", "minLength", "maxLength",
    "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems",
    "minProperties", "maxProperties", "anyOf", "x-kubernetes-int-or-string", "items",
    "additionalProperties", "properties", "required", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations",
)


def canonical_order(node: Any) -> Any:
    """Same keys, a stable reading order (type and description first), so diffs stay small."""
    if isinstance(node, list):
        return [canonical_order(item) for item in node]
    if not isinstance(node, dict):
        return node
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    keys = sorted(node, key=lambda k: (rank.get(k, len(rank)), k))
    # Property names keep their declaration order; only schema keywords are reordered.
    if "type" in node or "anyOf" in node or "x-kubernetes-int-or-string" in node:
        return {k: (canonical_properties(node[k]) if k == "properties" else canonical_order(node[k])) for k in keys}
    return {k: canonical_order(v) for k, v in node.items()}


def canonical_properties(properties: dict[str, Any]) -> dict[str, Any]:
    return {name: canonical_order(schema) for name, schema in properties.items()}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of an API model, CEL rules and overrides included."""
    return canonical_order(_Translator(model).translate())
