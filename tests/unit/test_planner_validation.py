"""Checks the CRD schema cannot express, judged by the planner: chains of `from`."""

from __future__ import annotations

from typing import Any

import pytest

from optimodel_operator.planner.validation import field_path, judge_spec
from optimodel_operator.planner.view import PlannerConfig
from optimodel_operator.testing.manifests import base_manifest


def _with(optimizations: list[dict[str, Any]]) -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["optimizations"] = optimizations
    spec["nodePools"] = [{"name": "cpu", "variant": "auto"}]
    return spec


P = {"prune": {"amount": 0.2, "fineTuneEpochs": 0}}
D = {"distill": {"student": {"layers": 1, "hidden": 8}, "dataset": "/d"}}
Q = {"quantize": {"mode": "dynamic"}}
C = {"convert": {}}


@pytest.mark.parametrize(
    ("optimizations", "problem_fields", "words"),
    [
        ([{"name": "a", **P}, {"name": "b", "from": "a", **Q}], [], ""),
        ([{"name": "a", **D}, {"name": "b", "from": "a", **P}, {"name": "c", "from": "b", **C}], [], ""),
        ([{"name": "a", "from": "b", **P}, {"name": "b", "from": "a", **P}], ["spec.optimizations[0].from", "spec.optimizations[1].from"], "cycle"),
        (
            [{"name": "a", "from": "c", **P}, {"name": "b", "from": "a", **D}, {"name": "c", "from": "b", **P}],
            ["spec.optimizations[0].from", "spec.optimizations[1].from", "spec.optimizations[2].from"],
            "a → c → b → a",
        ),
        ([{"name": "a", **Q}, {"name": "b", "from": "a", **P}], ["spec.optimizations[1].from"], "quantize variant"),
        ([{"name": "a", **C}, {"name": "b", "from": "a", **Q}], ["spec.optimizations[1].from"], "convert variant"),
    ],
)
def test_chains(optimizations: list[dict[str, Any]], problem_fields: list[str], words: str) -> None:
    verdict = judge_spec(_with(optimizations), PlannerConfig())
    assert sorted({p.field for p in verdict.problems}) == problem_fields
    assert words in verdict.summary()
    assert verdict.valid is (not problem_fields)
    assert (verdict.spec is None) is (not verdict.valid)


@pytest.mark.parametrize(
    ("loc", "expected"),
    [((), "spec"), (("source", "uri"), "spec.source.uri"), (("nodePools", 1, "gpus"), "spec.nodePools[1].gpus")],
)
def test_field_path(loc: tuple, expected: str) -> None:
    assert field_path(loc) == expected


def test_every_problem_names_a_spec_field() -> None:
    spec = base_manifest()["spec"]
    spec["rollout"]["steps"] = [50, 10]
    spec["nodePools"][0]["replicas"] = 0
    verdict = judge_spec(spec, PlannerConfig())
    assert {p.field for p in verdict.problems} == {"spec.rollout.steps", "spec.nodePools[0].replicas"}
