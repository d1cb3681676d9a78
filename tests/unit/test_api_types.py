"""The pydantic API types on their own: examples parse, defaults are what the CRD says, the wire
form round-trips, strictness matches the API server, and helpers behave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from optimodel_operator.api import (
    AUTO_VARIANT,
    Condition,
    ConditionStatus,
    ExecutionProvider,
    Metric,
    Optimization,
    OptimizedModel,
    OptimizedModelSpec,
    OptimizedModelStatus,
    Phase,
    Rollout,
    parse_duration,
    parse_spec,
)
from optimodel_operator.testing.manifests import base_manifest, load_examples


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_examples_parse(name: str) -> None:
    model = OptimizedModel.model_validate(load_examples()[name])
    assert model.spec.optimizations and model.spec.node_pools


def test_at_least_two_examples() -> None:
    assert len(load_examples()) >= 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m", timedelta(minutes=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h0m5s", timedelta(hours=2, seconds=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1 m", "1d", "m1", "-1s", "1.5s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_defaults_match_the_documented_ones() -> None:
    spec = parse_spec(base_manifest()["spec"])
    pool = spec.node_pools[0]
    assert spec.rollout.failure_limit == 2
    assert spec.rollout.no_data.value == "hold"
    assert Rollout().steps == [10, 25, 50, 100] and Rollout().interval_timedelta == timedelta(minutes=1)
    assert pool.execution_provider is ExecutionProvider.CPU and pool.gpus == 0
    assert spec.evaluation.benchmark.iterations == 200
    assert spec.revision_history_limit == 5
    minimal = dict(base_manifest()["spec"])
    minimal["nodePools"] = [{"name": "cpu"}]
    assert parse_spec(minimal).node_pools[0].variant == AUTO_VARIANT


def test_wire_round_trip_uses_camel_case_and_from() -> None:
    raw = base_manifest()["spec"]
    spec = parse_spec(raw)
    wire = spec.to_wire()
    assert wire["nodePools"][1]["executionProvider"] == "cuda"
    assert wire["optimizations"][3]["from"] == "small"
    assert wire["rollout"]["drift"]["maxPSI"] == 0.2
    assert parse_spec(wire) == spec


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("nodePools", 0, "replicas"), "2"),  # the API server refuses "2" for an integer
        (("evaluation", "maxDrop"), "0.01"),
        (("nodePools", 0, "gpus"), True),
        (("rollout", "steps"), ["10", "100"]),
    ],
)
def test_parsing_is_as_strict_as_the_api_server(path: tuple, value: object) -> None:
    raw = base_manifest()["spec"]
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ValidationError):
        parse_spec(raw)


def test_integers_accepted_for_numbers() -> None:
    raw = base_manifest()["spec"]
    raw["evaluation"]["maxDrop"] = 0
    assert parse_spec(raw).evaluation.max_drop == 0.0


@pytest.mark.parametrize(
    ("variant", "kind"),
    [
        ({"name": "a", "quantize": {"mode": "dynamic"}}, "quantize"),
        ({"name": "a", "convert": {}}, "convert"),
        ({"name": "a", "prune": {"amount": 0.5, "fineTuneEpochs": 0}}, "prune"),
        ({"name": "a", "distill": {"student": {"layers": 1, "hidden": 8}, "dataset": "/d"}}, "distill"),
    ],
)
def test_optimization_kind(variant: dict, kind: str) -> None:
    assert Optimization.model_validate(variant).kind == kind


@pytest.mark.parametrize(
    ("metric", "higher"), [("accuracy", True), ("topK", True), ("f1", True), ("mae", False), ("mse", False)]
)
def test_metric_direction(metric: str, higher: bool) -> None:
    assert Metric(metric).higher_is_better is higher


def test_status_round_trip_and_lenient_read() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = OptimizedModelStatus(
        observed_generation=3,
        phase=Phase.PENDING,
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.FALSE,
                reason="Pending",
                last_transition_time=now,
                observed_generation=3,
            )
        ],
        canary_weight=25,
    )
    wire = status.to_wire()
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert wire["canaryWeight"] == 25
    assert OptimizedModelStatus.model_validate({**wire, "fromAFutureVersion": 1}) == status


def test_spec_refuses_unknown_fields() -> None:
    raw = base_manifest()["spec"]
    raw["sorce"] = {}
    with pytest.raises(ValidationError, match="sorce"):
        OptimizedModelSpec.model_validate(raw)


def test_api_package_imports_neither_kopf_nor_kubernetes() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import optimodel_operator.api, optimodel_operator.planner.reconcile, "
        "optimodel_operator.crd.files; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_linter_contract_is_kept() -> None:
    # The contract in pyproject.toml ([tool.importlinter]) that keeps api/crd/planner free of kopf,
    # the Kubernetes client and HTTP libraries.
    import subprocess
    import sys
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(lint)], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "API types, CRD generation, planner and builders stay pure" in out.stdout


def test_split_and_slices_defaults_and_wire_names() -> None:
    # The contract's defaults (issue 13); test_contracts_mapping checks the Job config has the same ones.
    raw = base_manifest()["spec"]
    assert parse_spec(raw).evaluation.split is None and parse_spec(raw).evaluation.slices is None
    raw["evaluation"].update(tuningDataset="s3://data/m/tune.parquet", split={}, slices={"columns": ["region"]})
    spec = parse_spec(raw)
    split, slices = spec.evaluation.split, spec.evaluation.slices
    assert split is not None and (split.seed, split.tuning_fraction, split.calibration_fraction) == (0, 0.3, 0.0)
    assert slices is not None
    assert (slices.per_class, slices.columns, slices.max_drop, slices.max_drop_mode.value, slices.min_size) == (
        True, ["region"], 0.05, "absolute", 30)
    wire = spec.to_wire()["evaluation"]
    assert wire["tuningDataset"] == "s3://data/m/tune.parquet"
    assert set(wire["split"]) == {"seed", "tuningFraction", "calibrationFraction"}
    assert set(wire["slices"]) == {"perClass", "columns", "maxDrop", "maxDropMode", "minSize"}
    assert parse_spec(spec.to_wire()) == spec


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"split": {"tuningFraction": 0.5, "calibrationFraction": 0.5}}, "must be below 1"),
        ({"slices": {"columns": ["a", "a"]}}, "must not name a column twice"),
        ({"slices": {"maxDropMode": "relative", "maxDrop": 1.5}}, "slices.maxDrop must be at most 1"),
        ({"tuningDataset": "s3://data/m/eval.parquet"}, "must differ from evaluation.dataset"),
    ],
)
def test_split_and_slices_refusals_say_why(evaluation: dict, message: str) -> None:
    raw = base_manifest()["spec"]
    raw["evaluation"].update(evaluation)
    with pytest.raises(ValidationError, match=message):
        parse_spec(raw)
