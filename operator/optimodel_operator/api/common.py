"""Building blocks shared by every API type: the base model, cross-field rules, constrained strings.

Cross-field rules are written twice on purpose, side by side: once in CEL, which the API server
evaluates at apply time (so a bad manifest is refused before it is stored), and once in Python,
which the operator evaluates (so a resource stored under an older CRD is still judged the same).
Unit tests evaluate both on the same table of cases and require them to agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

CEL_RULE_ERROR = "cel_rule"

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A model or data location fsspec can open: an absolute local path, or file://, s3://, gs://.
URI_PATTERN = r"^(/|file://|s3://|gs://)[^\s]+$"
# Go-style durations as Kubernetes writes them: 30s, 1m, 1h30m, 500ms.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
# The Kubernetes resource quantity grammar (the same pattern the core API publishes).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Uri = Annotated[str, StringConstraints(pattern=URI_PATTERN, min_length=2, max_length=2048)]
Name = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=40)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, min_length=2, max_length=32)]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Message = Annotated[str, StringConstraints(max_length=32768)]

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """`1h30m` → 90 minutes; raises ValueError for anything DURATION_PATTERN refuses."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 1m, 1h30m)")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))


class DescribedEnum(StrEnum):
    """A string enum whose every value carries a sentence; the CRD lists them in `kubectl explain`."""

    description: str

    def __new__(cls, value: str, description: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: CEL for the API server, the same rule in Python for the operator.

    `field_path` is relative to the object the rule sits on (`.gpus`), as Kubernetes wants it, so the
    API server's refusal names the offending field; `check` gets the validated pydantic object.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None  # FieldValueInvalid (default) | FieldValueRequired | FieldValueForbidden

    @property
    def field_name(self) -> str | None:
        return self.field_path.lstrip(".") if self.field_path else None


class ApiModel(BaseModel):
    """Base of every spec type: camelCase on the wire, unknown fields refused, CEL rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _enforce_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                # ctx carries the field so error reports can name it, as the API server does.
                raise PydanticCustomError(
                    CEL_RULE_ERROR, "{message}", {"message": rule.message, "field": rule.field_name or ""}
                )
        return self

    def to_wire(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(BaseModel):
    """Base of the status types: camelCase on the wire and lenient on read.

    The operator reads back status written by older operator versions; an unknown field there
    must not crash reconciliation, so status models ignore extras instead of refusing them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def unique_by(key: str) -> Callable[[list[Any]], list[Any]]:
    """After-validator for lists keyed like the CRD's list-map (x-kubernetes-list-map-keys)."""

    def check(items: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        for index, item in enumerate(items):
            value = getattr(item, key)
            if value in seen:
                raise ValueError(f"duplicate {key} {value!r} at index {index}; {key}s must be unique")
            seen.add(value)
        return items

    return check


def check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a resource quantity cannot be negative")
        return value
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"not a resource quantity: {value!r} (write e.g. 500m, 2, 1Gi)")
    return value
