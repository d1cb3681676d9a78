"""The whole OptimizedModel object, for code that builds or reads manifests (tests, examples, Jobs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from optimodel_operator.api.meta import API_VERSION, KIND
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.api.status import OptimizedModelStatus


class ObjectMeta(BaseModel):
    """The parts of metadata optimodel reads; the rest is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class OptimizedModel(BaseModel):
    """An OptimizedModel manifest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["optimodel.io/v1alpha1"] = API_VERSION
    kind: Literal["OptimizedModel"] = KIND
    metadata: ObjectMeta
    spec: OptimizedModelSpec
    status: OptimizedModelStatus | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Reference(BaseModel):
    """namespace/name of one OptimizedModel."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
