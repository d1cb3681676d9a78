"""Judging a spec: the schema's checks again (for objects stored under an older CRD) plus the ones
the schema cannot express. A problem is a field path and a sentence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from optimodel_operator.api.common import CEL_RULE_ERROR
from optimodel_operator.api.optimizations import Optimization
from optimodel_operator.api.spec import OptimizedModelSpec, parse_spec
from optimodel_operator.planner.view import PlannerConfig

# Variants whose output is a float torch-trainable model; only these can be the base of another.
BASE_KINDS = ("prune", "distill")


@dataclass(frozen=True)
class SpecProblem:
    field: str  # e.g. spec.optimizations[1].from
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class SpecVerdict:
    spec: OptimizedModelSpec | None
    problems: tuple[SpecProblem, ...]

    @property
    def valid(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def field_path(loc: Sequence[int | str], root: str = "spec") -> str:
    """('optimizations', 1, 'from') → spec.optimizations[1].from"""
    out = root
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _schema_problems(error: ValidationError) -> list[SpecProblem]:
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        loc = list(item["loc"])
        if item["type"] == CEL_RULE_ERROR and item.get("ctx", {}).get("field"):
            loc.append(item["ctx"]["field"])  # name the field, as the CEL rule's fieldPath does
        problems.append(SpecProblem(field_path(loc), message))
    return problems


def _chain_problems(optimizations: Sequence[Optimization]) -> list[SpecProblem]:
    by_name = {o.name: (i, o) for i, o in enumerate(optimizations)}
    problems: list[SpecProblem] = []
    for index, variant in enumerate(optimizations):
        if variant.start_from is None or variant.start_from not in by_name:
            continue  # unknown names are the schema's business
        base = by_name[variant.start_from][1]
        if base.kind not in BASE_KINDS:
            problems.append(
                SpecProblem(
                    f"spec.optimizations[{index}].from",
                    f"variant {variant.name!r} starts from {base.name!r}, a {base.kind} variant; only prune and "
                    "distill variants can be the base of another (quantized and float16 models are final)",
                )
            )
        seen = [variant.name]
        current = variant
        while current.start_from is not None and current.start_from in by_name:
            current = by_name[current.start_from][1]
            if current.name in seen:
                cycle = " → ".join([*seen[seen.index(current.name):], current.name])
                problems.append(
                    SpecProblem(f"spec.optimizations[{index}].from", f"the from chain is a cycle: {cycle}")
                )
                break
            seen.append(current.name)
    return problems


def judge_spec(raw: Mapping[str, Any], config: PlannerConfig) -> SpecVerdict:
    """Parse and check a raw spec; every problem names its field."""
    try:
        spec = parse_spec(raw)
    except ValidationError as error:
        return SpecVerdict(None, tuple(_schema_problems(error)))
    problems = _chain_problems(spec.optimizations)
    if spec.artifacts is None and not config.default_artifacts_uri:
        problems.append(
            SpecProblem("spec.artifacts", "unset, and the operator has no default artifact store (--artifacts)")
        )
    return SpecVerdict(spec if not problems else None, tuple(problems))
