"""The OptimizedModel spec: what the user asks for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from optimodel_operator.api.common import ApiModel, CelRule, Name, Uri
from optimodel_operator.api.nodepools import AUTO_VARIANT, SOURCE_VARIANT, NodePools
from optimodel_operator.api.optimizations import Optimizations
from optimodel_operator.api.rollout import Rollout
from optimodel_operator.api.source import Evaluation, ModelSource


class SecretReference(ApiModel):
    """A Secret in the resource's namespace."""

    name: Name
    """Secret name."""


# The keys of a credentials Secret, under the names botocore (s3fs) reads from the environment. The
# first two are required: a Secret without them leaves the pods in CreateContainerConfigError.
S3_REQUIRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_KEYS = ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
ENDPOINT_URL_PATTERN = r"^https?://[^\s/]+(/[^\s]*)?$"
EndpointUrl = Annotated[str, StringConstraints(pattern=ENDPOINT_URL_PATTERN, min_length=8, max_length=2048)]


class ArtifactStore(ApiModel):
    """Where optimized artifacts and their manifests are written."""

    uri: Uri
    """Base location (absolute path, file://, s3:// or gs://); each artifact goes below it by content hash."""
    credentials: SecretReference | None = None
    """Secret with the S3 credentials the optimization Jobs and the model servers read the source and the
    datasets and read and write the store with: keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optionally
    AWS_SESSION_TOKEN, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL (an S3-compatible store's URL). The pods get
    them by reference (secretKeyRef); the operator never reads the Secret."""
    endpoint_url: EndpointUrl | None = None
    """URL of an S3-compatible store (e.g. http://s3.optimodel-storage.svc.cluster.local:8333); overrides
    the Secret's AWS_ENDPOINT_URL. Unset: the Secret's, else AWS S3."""


class OptimizedModelSpec(ApiModel):
    """A trained model to optimize, gate on accuracy and latency, and roll out under an SLO guard."""

    source: ModelSource
    """The trained model."""
    evaluation: Evaluation
    """How variants are judged against the source."""
    optimizations: Optimizations
    """Variants to build; names are unique (the list is keyed by name)."""
    node_pools: NodePools
    """Where the model is served; names are unique (the list is keyed by name)."""
    rollout: Rollout = Field(default_factory=Rollout)
    """Canary rollout and SLO guard of every new revision."""
    artifacts: ArtifactStore | None = None
    """Artifact store; the operator's default store when unset."""
    revision_history_limit: int = Field(5, ge=1, le=50)
    """Old revisions kept for rollback and listed in status.revisions."""

    def variant_names(self) -> list[str]:
        return [o.name for o in self.optimizations]

    cel_rules = (
        CelRule(
            rule="self.nodePools.all(p, p.variant in ['auto', 'source'] || self.optimizations.exists(o, o.name == p.variant))",
            message="every nodePools[].variant must name an optimizations[].name, 'auto' or 'source'",
            check=lambda s: all(
                p.variant in (AUTO_VARIANT, SOURCE_VARIANT) or p.variant in s.variant_names() for p in s.node_pools
            ),
            field_path=".nodePools",
        ),
        CelRule(
            rule="self.optimizations.all(o, !has(o.from) || self.optimizations.exists(p, p.name == o.from))",
            message="every optimizations[].from must name another optimizations[].name",
            check=lambda s: all(o.start_from is None or o.start_from in s.variant_names() for o in s.optimizations),
            field_path=".optimizations",
        ),
    )


def parse_spec(raw: Mapping[str, Any]) -> OptimizedModelSpec:
    """Validate a spec as read from the API server, as strictly as the CRD does (no "1" for 1).

    Goes through JSON so that strict mode still accepts enum values and integers for floats, as
    the API server does. Raises pydantic.ValidationError.
    """
    return OptimizedModelSpec.model_validate_json(json.dumps(raw), strict=True)
