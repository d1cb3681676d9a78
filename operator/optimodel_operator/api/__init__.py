"""The OptimizedModel API (optimodel.io/v1alpha1): pydantic types, the single source of the CRD.

Pure on purpose: imports neither kopf nor the Kubernetes client (an import-linter contract in
pyproject.toml keeps it so), so the optimization Jobs and the model server can use these types.
"""

from optimodel_operator.api.common import CelRule, parse_duration
from optimodel_operator.api.conditions import CONDITION_ORDER, STAGE_CONDITIONS, ConditionStatus, ConditionType, Reason
from optimodel_operator.api.meta import API_VERSION, CRD_NAME, GROUP, KIND, PLURAL, VERSION
from optimodel_operator.api.nodepools import AUTO_VARIANT, SOURCE_VARIANT, ExecutionProvider, NodePool
from optimodel_operator.api.optimizations import (
    Calibration,
    Convert,
    Distill,
    GateOverride,
    Optimization,
    Prune,
    Quantize,
    QuantizationMode,
)
from optimodel_operator.api.resource import ObjectMeta, OptimizedModel
from optimodel_operator.api.rollout import AnalysisCheck, Drift, NoDataPolicy, Rollout, Slo, TrafficRouting
from optimodel_operator.api.source import (
    DropMode,
    Evaluation,
    Metric,
    ModelFormat,
    ModelSource,
    Slices,
    Split,
    TensorSpec,
)
from optimodel_operator.api.spec import ArtifactStore, OptimizedModelSpec, parse_spec
from optimodel_operator.api.status import (
    AnalysisResult,
    Condition,
    OptimizedModelStatus,
    Phase,
    RevisionRecord,
    VariantStatus,
)

__all__ = [
    "API_VERSION", "AUTO_VARIANT", "CONDITION_ORDER", "CRD_NAME", "GROUP", "KIND", "PLURAL", "SOURCE_VARIANT",
    "STAGE_CONDITIONS", "VERSION", "AnalysisResult", "ArtifactStore", "Calibration", "CelRule", "Condition",
    "ConditionStatus", "ConditionType", "Convert", "Distill", "Drift", "DropMode", "Evaluation", "ExecutionProvider",
    "GateOverride", "Metric", "ModelFormat", "ModelSource", "NoDataPolicy", "NodePool", "ObjectMeta", "Optimization",
    "OptimizedModel", "OptimizedModelSpec", "OptimizedModelStatus", "Phase", "Prune", "Quantize", "QuantizationMode",
    "AnalysisCheck", "Reason", "RevisionRecord", "Rollout", "Slices", "Slo", "Split", "TensorSpec", "TrafficRouting", "VariantStatus", "parse_duration",
    "parse_spec",
]
