"""How a new revision reaches all traffic: canary steps, each analysed against the SLO and for drift."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import re

from pydantic import AfterValidator, Field, StringConstraints

from optimodel_operator.api.common import ApiModel, CelRule, DescribedEnum, Duration, Name, parse_duration, unique_by

CanaryWeight = Annotated[int, Field(ge=1, le=100)]


class NoDataPolicy(DescribedEnum):
    HOLD = "hold", "Hold the current step and say so in status; never promote blind, never roll back for it."
    FAIL = "fail", (
        "Count an analysis without data (no series, too few samples) as a failed one; Prometheus errors still hold."
    )


class Slo(ApiModel):
    """Service level objectives the canary must meet at every step."""

    p99_latency_ms: float | None = Field(None, gt=0, le=600_000)
    """Largest tolerated 99th percentile request latency, in milliseconds."""
    max_error_rate: float | None = Field(None, ge=0, le=1)
    """Largest tolerated share of failed requests (0.01 = 1%)."""


class Drift(ApiModel):
    """Input drift guard: the population stability index of live inputs against the evaluation data."""

    max_psi: float = Field(0.2, gt=0, le=100, alias="maxPSI")
    """Largest tolerated PSI; 0.1 is commonly read as a small shift, 0.25 as a large one."""
    bins: int = Field(10, ge=2, le=100)
    """Histogram bins per input feature."""


class GatewayApiRouting(ApiModel):
    """Split traffic with the weights of a Gateway API HTTPRoute."""

    http_route: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
    """Name of the HTTPRoute in the resource's namespace whose backendRefs weights the operator sets."""


class TrafficRouting(ApiModel):
    """How the canary's share of traffic is applied; unset means by replica ratio."""

    gateway_api: GatewayApiRouting | None = Field(None, alias="gatewayAPI")
    """Use a Gateway API HTTPRoute's backend weights instead of the replica ratio."""


# The analysis's own checks (optimodel_operator.analysis): a user check may not take their names.
BUILTIN_CHECK_NAMES = ("request-count", "p99-latency", "error-rate", "input-drift", "prediction-drift")
QUERY_PLACEHOLDERS = ("namespace", "model", "revision", "pool", "window")
# Every "{{" in a user query starts a known placeholder (the same regex in CEL and in Python).
QUERY_TEMPLATE_PATTERN = r"^([^{]|[{][^{]|[{][{](" + "|".join(QUERY_PLACEHOLDERS) + r")[}][}])*[{]?$"


class AnalysisCheck(ApiModel):
    """A PromQL query of your own, judged at every analysis next to the built-in checks."""

    name: Name
    """Name of the check in status and events (not one of the built-in checks' names)."""
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """PromQL answering one number (or a vector: every series must pass). Placeholders, replaced before
    the query runs: {{namespace}}, {{model}}, {{revision}}, {{pool}} (the canary's, for use inside quoted
    label matchers) and {{window}} (the analysis window, e.g. 30s)."""
    max: float | None = None
    """Largest passing value."""
    min: float | None = None
    """Smallest passing value."""

    cel_rules = (
        CelRule(
            rule="has(self.max) || has(self.min)",
            message="a check needs max, min or both",
            check=lambda c: c.max is not None or c.min is not None,
            field_path=".max",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="!has(self.max) || !has(self.min) || self.min <= self.max",
            message="a check's min must not exceed its max",
            check=lambda c: c.max is None or c.min is None or c.min <= c.max,
            field_path=".min",
        ),
        CelRule(
            rule="!(self.name in " + "[" + ", ".join(f"'{n}'" for n in BUILTIN_CHECK_NAMES) + "])",
            message="a check's name must not be a built-in check's: " + ", ".join(BUILTIN_CHECK_NAMES),
            check=lambda c: c.name not in BUILTIN_CHECK_NAMES,
            field_path=".name",
        ),
        CelRule(
            rule=f"self.query.matches('{QUERY_TEMPLATE_PATTERN}')",
            message="a check's query may use only the placeholders "
            + ", ".join("{{" + p + "}}" for p in QUERY_PLACEHOLDERS),
            check=lambda c: re.fullmatch(QUERY_TEMPLATE_PATTERN, c.query) is not None,
            field_path=".query",
        ),
    )


class Rollout(ApiModel):
    """The canary rollout of a new revision and the guard kept on it afterwards."""

    steps: Annotated[list[CanaryWeight], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: [10, 25, 50, 100]
    )
    """Canary traffic weights in percent, strictly increasing, each at most 100; after the last step
    passes, the revision is promoted to all traffic."""
    interval: Duration = "1m"
    """How long each step is held before it is analysed (e.g. 30s, 1m, 1h30m); at least 1s."""
    slo: Slo | None = None
    """Latency and error objectives checked at every analysis."""
    drift: Drift | None = None
    """Input drift guard checked at every analysis."""
    failure_limit: int = Field(2, ge=1, le=100)
    """Failed analyses of one revision that trigger a rollback to the stable revision."""
    no_data: NoDataPolicy = NoDataPolicy.HOLD
    """What an analysis without data means."""
    min_samples: int = Field(100, ge=1, le=1_000_000_000)
    """Requests an analysis window needs before it judges; fewer counts as no data."""
    traffic_routing: TrafficRouting | None = None
    """How traffic is split; replica ratio when unset."""
    checks: Annotated[list[AnalysisCheck], Field(max_length=16), AfterValidator(unique_by("name"))] | None = None
    """PromQL checks of your own, each with a threshold, judged with the built-in ones at every analysis."""

    @property
    def interval_timedelta(self) -> timedelta:
        return parse_duration(self.interval)

    cel_rules = (
        CelRule(
            rule="self.steps.isSorted()",
            message="rollout.steps must be strictly increasing",
            check=lambda r: all(a < b for a, b in zip(r.steps, r.steps[1:], strict=False)),
            field_path=".steps",
        ),
        CelRule(
            rule="duration(self.interval) >= duration('1s')",
            message="rollout.interval must be at least 1s",
            check=lambda r: r.interval_timedelta >= timedelta(seconds=1),
            field_path=".interval",
        ),
    )
