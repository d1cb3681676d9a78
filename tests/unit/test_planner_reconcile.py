"""The reconcile decision as a table: status computed whole, patched only on change, events from
the diff, permanent errors for invalid specs, and idempotence (reconciling twice changes nothing)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimodel_operator.api import ConditionStatus, ConditionType, Reason
from optimodel_operator.api.conditions import CONDITION_ORDER
from optimodel_operator.planner.conditions import ConditionState, derive_ready
from optimodel_operator.planner.diff import merge_patch
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

T0 = datetime(2026, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def view(spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1) -> ResourceView:
    return ResourceView(name="m", namespace="ns", generation=generation, spec=spec, status=status or {})


def cycle_spec() -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["optimizations"][2] = {"name": "small", "from": "small-int8", "prune": {"amount": 0.2, "fineTuneEpochs": 0}}
    spec["optimizations"][3] = {"name": "small-int8", "from": "small", "prune": {"amount": 0.2, "fineTuneEpochs": 0}}
    return spec


def conditions(decision: Decision) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in decision.status["conditions"]}


def apply(status: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """What the API server does with a merge patch."""
    out = copy.deepcopy(status)
    for key, value in (patch or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply(out[key], value)
        else:
            out[key] = value
    return out


def test_new_valid_resource_is_accepted_and_pending() -> None:
    decision = reconcile(view(base_manifest()["spec"]), T0)
    cond = conditions(decision)
    assert decision.status["phase"] == "Pending"
    assert decision.status["observedGeneration"] == 1
    assert decision.permanent_error is None
    assert cond["Accepted"]["status"] == "True" and cond["Accepted"]["reason"] == "SpecAccepted"
    assert cond["Ready"]["status"] == "False" and cond["Ready"]["reason"] == "AwaitingOptimization"
    assert cond["Progressing"]["status"] == "True"
    assert cond["Degraded"]["status"] == "False" and cond["Stalled"]["status"] == "False"
    for stage in ("Optimized", "Gated", "Deployed", "RolledOut"):
        assert cond[stage]["status"] == "Unknown"
    assert [c["type"] for c in decision.status["conditions"]] == [c.value for c in CONDITION_ORDER]
    assert all(c["observedGeneration"] == 1 for c in decision.status["conditions"])
    assert all(c["lastTransitionTime"] == "2026-05-01T12:00:00Z" for c in decision.status["conditions"])
    assert [v["name"] for v in decision.status["variants"]] == ["int8", "fp16", "small", "small-int8"]
    assert decision.status_patch == decision.status  # nothing stored yet: the whole status
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "SpecAccepted")]


def test_invalid_spec_is_a_permanent_error_with_conditions() -> None:
    decision = reconcile(view(cycle_spec()), T0)
    cond = conditions(decision)
    assert decision.status["phase"] == "Failed"
    assert decision.permanent_error and "cycle" in decision.permanent_error
    assert cond["Accepted"]["status"] == "False" and cond["Accepted"]["reason"] == "InvalidSpec"
    assert "spec.optimizations[2].from" in cond["Accepted"]["message"]
    assert cond["Ready"]["reason"] == "InvalidSpec"
    assert cond["Degraded"]["status"] == "True" and cond["Stalled"]["status"] == "True"
    assert cond["Progressing"]["status"] == "False"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]


@pytest.mark.parametrize("spec_factory", [lambda: base_manifest()["spec"], cycle_spec], ids=["valid", "invalid"])
def test_reconciling_twice_changes_nothing(spec_factory: Any) -> None:
    spec = spec_factory()
    first = reconcile(view(spec), T0)
    stored = apply({}, first.status_patch)
    second = reconcile(view(spec, stored), T1)  # later clock, same object
    assert second.status_patch is None
    assert second.events == ()
    assert second.status == stored
    assert second.permanent_error == first.permanent_error


def test_spec_change_updates_generation_but_keeps_transition_times() -> None:
    spec = base_manifest()["spec"]
    stored = apply({}, reconcile(view(spec), T0).status_patch)
    spec["nodePools"][0]["replicas"] = 3
    decision = reconcile(view(spec, stored, generation=2), T1)
    cond = conditions(decision)
    assert decision.status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in cond.values())
    # Statuses did not move, so neither did lastTransitionTime.
    assert all(c["lastTransitionTime"] == "2026-05-01T12:00:00Z" for c in cond.values())
    assert set(decision.status_patch or {}) == {"observedGeneration", "conditions"}
    assert [e.reason for e in decision.events] == ["SpecAccepted"]
    assert "generation 2" in decision.events[0].message


def test_fixing_an_invalid_spec_moves_phase_and_times() -> None:
    stored = apply({}, reconcile(view(cycle_spec()), T0).status_patch)
    decision = reconcile(view(base_manifest()["spec"], stored, generation=2), T1)
    cond = conditions(decision)
    assert decision.status["phase"] == "Pending" and decision.permanent_error is None
    assert cond["Accepted"]["lastTransitionTime"] == "2026-05-01T12:05:00Z"
    assert cond["Optimized"]["lastTransitionTime"] == "2026-05-01T12:00:00Z"  # Unknown both times
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "SpecAccepted"), ("Normal", "PhaseChanged")]
    assert "Failed → Pending" in decision.events[1].message


def test_breaking_a_valid_spec_emits_a_warning_phase_change() -> None:
    stored = apply({}, reconcile(view(base_manifest()["spec"]), T0).status_patch)
    decision = reconcile(view(cycle_spec(), stored, generation=2), T1)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec"), ("Warning", "PhaseChanged")]


def test_status_edited_by_someone_else_is_repaired() -> None:
    spec = base_manifest()["spec"]
    stored = apply({}, reconcile(view(spec), T0).status_patch)
    stored["phase"] = "Succeeded"
    stored["bogus"] = "x"
    decision = reconcile(view(spec, stored), T1)
    assert decision.status_patch == {"phase": "Pending", "bogus": None}


def test_a_canary_weight_without_a_canary_is_removed() -> None:
    # The rollout's fields follow its state; nothing rolls out before a revision serves.
    spec = base_manifest()["spec"]
    stored = apply({}, reconcile(view(spec), T0).status_patch)
    stored["canaryWeight"] = 25
    assert reconcile(view(spec, stored), T1).status_patch == {"canaryWeight": None}


def test_a_stable_revision_nothing_serves_is_not_taken_on_trust() -> None:
    spec = base_manifest()["spec"]
    stored = apply({}, reconcile(view(spec), T0).status_patch)
    stored["stableRevision"] = "forged"
    assert reconcile(view(spec, stored), T1).status_patch == {"stableRevision": None}


def test_unreadable_status_is_rewritten_whole() -> None:
    spec = base_manifest()["spec"]
    decision = reconcile(view(spec, {"conditions": "not a list", "phase": 7}), T0)
    assert decision.status_patch is not None
    assert decision.status_patch["phase"] == "Pending"
    assert isinstance(decision.status_patch["conditions"], list)


def test_missing_artifact_store_without_default_is_invalid() -> None:
    spec = base_manifest()["spec"]
    del spec["artifacts"]
    assert "spec.artifacts" in (reconcile(view(spec), T0).permanent_error or "")
    assert reconcile(view(spec), T0, PlannerConfig(default_artifacts_uri="/srv/artifacts")).permanent_error is None


_T, _F, _U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


@pytest.mark.parametrize(
    ("stages", "expected_status", "expected_reason"),
    [
        ((_T, _T, _T, _T, _T), _T, Reason.ALL_STAGES_READY),
        ((_T, _U, _U, _U, _U), _F, Reason.PENDING),
        ((_T, _T, _F, _U, _U), _F, Reason.GATE_FAILED),
        ((_F, _U, _U, _U, _U), _F, Reason.INVALID_SPEC),
    ],
)
def test_ready_is_derived_from_the_stages(
    stages: tuple[ConditionStatus, ...], expected_status: ConditionStatus, expected_reason: Reason
) -> None:
    kinds = (ConditionType.ACCEPTED, ConditionType.OPTIMIZED, ConditionType.GATED, ConditionType.DEPLOYED, ConditionType.ROLLED_OUT)
    reasons = {_T: Reason.ALL_STAGES_READY, _U: Reason.PENDING, _F: Reason.GATE_FAILED}
    states = {k: ConditionState(s, reasons[s], "m") for k, s in zip(kinds, stages, strict=True)}
    if stages[0] is _F:
        states[ConditionType.ACCEPTED] = ConditionState(_F, Reason.INVALID_SPEC, "bad")
    ready = derive_ready(states)
    assert (ready.status, ready.reason) == (expected_status, expected_reason)


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1}, {"a": 1.0}, {}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"m": {"x": 1, "y": 2}}, {"m": {"x": 1, "y": 3}}, {"m": {"y": 3}}),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, {"l": [1, 2, 3]}),
        ({}, {"m": {"x": 1}}, {"m": {"x": 1}}),
    ],
)
def test_merge_patch(old: dict, new: dict, patch: dict) -> None:
    assert merge_patch(old, new) == patch
    assert apply(old, patch) == new


_json_leaf = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans(), st.lists(st.integers(0, 3), max_size=3))
_json_obj = st.recursive(
    st.dictionaries(st.sampled_from("abcd"), _json_leaf, max_size=4),
    lambda inner: st.dictionaries(st.sampled_from("abcd"), st.one_of(_json_leaf, inner), max_size=4),
    max_leaves=12,
)


@given(old=_json_obj, new=_json_obj)
@settings(max_examples=200, deadline=None)
def test_merge_patch_always_reaches_new(old: dict, new: dict) -> None:
    patch = merge_patch(old, new)
    assert apply(old, patch) == new
    assert (patch == {}) is (old == new)
