"""Where the model is served: node pools, each with its hardware, execution provider and variant."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from optimodel_operator.api.common import ApiModel, CelRule, DescribedEnum, Name, check_quantity, unique_by

GPU_RESOURCE = "nvidia.com/gpu"
AUTO_VARIANT = "auto"
SOURCE_VARIANT = "source"

LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]
# A resource quantity: an integer, or a string in the Kubernetes quantity grammar ("500m", "2Gi").
# The CRD publishes it as int-or-string (see crd/overrides.py).
Quantity = Annotated[int | Annotated[str, StringConstraints(max_length=64)], AfterValidator(check_quantity)]


class ExecutionProvider(DescribedEnum):
    CPU = "cpu", "onnxruntime's CPUExecutionProvider."
    CUDA = "cuda", "onnxruntime's CUDAExecutionProvider; needs gpus >= 1."
    TENSORRT = "tensorrt", "onnxruntime's TensorrtExecutionProvider; needs gpus >= 1."

    @property
    def needs_gpu(self) -> bool:
        return self is not ExecutionProvider.CPU


class Objective(DescribedEnum):
    LATENCY = "latency", "Lowest latency at the benchmark's batch size (batch 1 unless evaluation.benchmark says otherwise)."
    THROUGHPUT = "throughput", "Most samples per second at the largest batch size measured."
    SIZE = "size", "The smallest artifact that is not slower than the source."


class TolerationOperator(DescribedEnum):
    EQUAL = "Equal", "The taint's value must equal `value`."
    EXISTS = "Exists", "Any value of the taint's key; `value` must be empty."


class TaintEffect(DescribedEnum):
    NO_SCHEDULE = "NoSchedule", "Tolerate the NoSchedule effect."
    PREFER_NO_SCHEDULE = "PreferNoSchedule", "Tolerate the PreferNoSchedule effect."
    NO_EXECUTE = "NoExecute", "Tolerate the NoExecute effect."


class Toleration(ApiModel):
    """A pod toleration, as in the core API."""

    key: LabelKey | None = None
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Equal or Exists."""
    value: LabelValue | None = None
    """Taint value for operator Equal."""
    effect: TaintEffect | None = None
    """Effect to tolerate; empty tolerates all effects."""
    toleration_seconds: int | None = Field(None, ge=0, le=31_536_000)
    """For NoExecute: how long the pod stays bound after the taint appears."""

    cel_rules = (
        CelRule(
            rule="self.operator != 'Exists' || !has(self.value)",
            message="tolerations[].value must be empty when tolerations[].operator is Exists",
            check=lambda t: t.operator != TolerationOperator.EXISTS or t.value is None,
            field_path=".value",
            reason="FieldValueForbidden",
        ),
    )


class ResourceRequirements(ApiModel):
    """CPU and memory for each serving pod (GPUs go in `gpus`)."""

    requests: Annotated[dict[LabelKey, Quantity], Field(max_length=16)] | None = None
    """Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."""
    limits: Annotated[dict[LabelKey, Quantity], Field(max_length=16)] | None = None
    """Maximum resources, e.g. {cpu: "2", memory: 2Gi}."""


class NodePool(ApiModel):
    """A set of nodes that serve the model with one variant on one execution provider."""

    name: Name
    """Pool name, unique in the list; it names the serving Deployment."""
    variant: Name = AUTO_VARIANT
    """Variant served here: an optimizations[].name, `source`, or `auto`: among the variants that passed the
    gate on this pool's execution provider, the best by `objective` that is faster than the source beyond
    measurement noise (else the source serves, and status.pools[].message says why)."""
    objective: Objective = Objective.LATENCY
    """What `auto` optimizes: latency, throughput or size."""
    replicas: int = Field(1, ge=1, le=100)
    """Serving pods in this pool at full rollout."""
    node_selector: Annotated[dict[LabelKey, LabelValue], Field(max_length=32)] | None = None
    """Node labels the serving pods require, e.g. {pool: gpu}."""
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    """Taints the serving pods tolerate."""
    resources: ResourceRequirements | None = None
    """CPU and memory of each serving pod."""
    gpus: int = Field(0, ge=0, le=16)
    """GPUs per serving pod (requested as nvidia.com/gpu)."""
    execution_provider: ExecutionProvider = ExecutionProvider.CPU
    """onnxruntime execution provider used here, for serving and for the gate's benchmark."""

    cel_rules = (
        CelRule(
            rule="self.executionProvider == 'cpu' || self.gpus >= 1",
            message="nodePools[].gpus must be at least 1 when nodePools[].executionProvider is cuda or tensorrt",
            check=lambda p: not p.execution_provider.needs_gpu or p.gpus >= 1,
            field_path=".gpus",
        ),
        CelRule(
            rule="!has(self.resources) || ((!has(self.resources.limits) || !('nvidia.com/gpu' in self.resources.limits)) && (!has(self.resources.requests) || !('nvidia.com/gpu' in self.resources.requests)))",
            message="nodePools[].resources must not name nvidia.com/gpu; set nodePools[].gpus instead",
            check=lambda p: p.resources is None
            or all(GPU_RESOURCE not in (m or {}) for m in (p.resources.limits, p.resources.requests)),
            field_path=".resources",
            reason="FieldValueForbidden",
        ),
    )


NodePools = Annotated[list[NodePool], Field(min_length=1, max_length=8), AfterValidator(unique_by("name"))]
