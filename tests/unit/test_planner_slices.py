"""The gate's worst slice and the data roles, from the artifact store to status and Events (issue 13).

The manifests are written to a real local store with the contracts' own writer and read back through the
controller's reader (checksums verified), as the operator does; only the cluster is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optimodel_contracts.artifacts import (
    ArtifactManifest,
    DataRoles,
    GateVerdict,
    Lineage,
    SliceResult,
    TensorSpec,
    write_artifact,
)
from optimodel_contracts.runrecord import RunRecord, VariantRecord
from optimodel_operator.api.spec import parse_spec
from optimodel_operator.api.status import VariantStatus
from optimodel_operator.controller import store as store_reader
from optimodel_operator.planner.loop import Observed
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.results import OVER_BUDGET, SliceFigures, describe_slice, measured_from_manifest
from optimodel_operator.planner.revision import effective_store, job_plans
from optimodel_operator.planner.view import PlannerConfig, ResourceView

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = PlannerConfig()


def _spec(store: Path, **evaluation: Any) -> dict[str, Any]:
    # One variant on one CPU pool: a single Job, so one run record says everything.
    return {
        "source": {"uri": "file:///data/m/model.onnx", "format": "onnx"},
        "evaluation": {"dataset": "file:///data/m/eval.parquet", "maxDrop": 0.01, **evaluation},
        "optimizations": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "nodePools": [{"name": "cpu", "variant": "int8"}],
        "artifacts": {"uri": f"file://{store}"},
    }


def _roles() -> DataRoles:
    return DataRoles(seed=0, method="sha256(row bytes) with seed", held_out_uri="file:///data/m/eval.parquet",
                     tuning_uri="file:///data/m/eval.parquet", held_out_rows=700, tuning_rows=300, calibration_rows=0,
                     calibration_source="none", training_source="none", evaluation_used_for_training=False,
                     decided_on={"gate_verdict": "held_out", "reported_metrics": "held_out"})


def _worst(passed: bool) -> SliceResult:
    drop = 0.041 if passed else 0.081
    return SliceResult(name="class=3", size=88, source_metric=0.9, variant_metric=0.9 - drop, drop=drop,
                       max_drop=0.05, passed=passed)


def _manifest(name: str, *, slice_passed: bool | None, roles: bool = True) -> ArtifactManifest:
    worst = None if slice_passed is None else _worst(slice_passed)
    passed = slice_passed is not False
    reason = "drop 0.004 <= 0.01" if passed else "slice class=3 dropped 0.081 > 0.05 (88 rows)"
    return ArtifactManifest(
        name=name,
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 8])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[None, 4])],
        task="classification",
        metrics={"variant": 0.896, "source": 0.9, "drop": 0.004,
                 "latency": {"1": {"p50_ms": 0.5, "p99_ms": 1.0}}, "source_latency": {"1": {"p50_ms": 1.0, "p99_ms": 2.0}}},
        gate=GateVerdict(passed=passed, reason=reason, deployable=passed, worst_slice=worst,
                         slices_judged=0 if worst is None else 4),
        lineage=Lineage(source_sha256="a" * 64, spec_hash="b" * 64, seed=0),
        data_roles=_roles() if roles else None,
    )


def _write_run(tmp_path: Path, spec: dict[str, Any], *, slice_passed: bool | None, roles: bool = True) -> Observed:
    """Write both artifacts and the run record where the plan expects them; read them back as the controller does."""
    parsed = parse_spec(spec)
    (plan,) = job_plans(parsed, "m", effective_store(parsed, None))
    store = spec["artifacts"]["uri"]
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not-really-onnx" * 64 + repr(slice_passed).encode())
    variant_uri = write_artifact(store, model, _manifest("int8", slice_passed=slice_passed, roles=roles))
    source_file = tmp_path / "source.onnx"
    source_file.write_bytes(b"the-source" * 64)
    source_uri = write_artifact(store, source_file, _manifest("source", slice_passed=None, roles=roles))
    record = RunRecord(
        name="m", spec_hash=plan.config_hash, metric="accuracy",
        source=VariantRecord(name="source", kind="source", manifest_uri=source_uri),
        variants=[VariantRecord(name="int8", kind="quantize", manifest_uri=variant_uri)],
        chosen={"cpu": "int8"},
    )
    path = Path(plan.run_record_uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record.to_json())
    run = store_reader.read_run(plan)
    assert run.found and run.error is None, run.error
    return Observed(runs={plan.job_name: run})


def _decide(spec: dict[str, Any], observed: Observed, status: dict[str, Any] | None = None) -> Decision:
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, status=status or {}, uid="uid-1")
    return reconcile(view, T0, CONFIG, observed)


def _variant(decision: Decision) -> dict[str, Any]:
    return next(v for v in decision.status["variants"] if v["name"] == "int8")


def test_a_slice_over_budget_is_in_status_and_an_event(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "store")
    decision = _decide(spec, _write_run(tmp_path, spec, slice_passed=False))
    variant = _variant(decision)
    assert variant["gate"] == "Failed"
    assert variant["worstSlice"] == f"class=3: -8.1 pts on 88 rows (budget 5), {OVER_BUDGET}"
    assert (variant["heldOutRows"], variant["tuningRows"]) == (700, 300)
    events = [(e.type, e.reason, e.message) for e in decision.events]
    sliced = [m for t, r, m in events if (t, r) == ("Warning", "SliceOverBudget")]
    assert sliced == [f"int8 refused on a slice of the held-out data: {variant['worstSlice']}"]
    # The verdict did not change on the next pass: no second Event.
    again = _decide(spec, _write_run(tmp_path, spec, slice_passed=False), decision.status)
    assert not [e for e in again.events if e.reason == "SliceOverBudget"]


def test_a_passing_worst_slice_is_shown_without_a_slice_event(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "store")
    decision = _decide(spec, _write_run(tmp_path, spec, slice_passed=True))
    variant = _variant(decision)
    assert variant["gate"] == "Passed"
    assert variant["worstSlice"] == "class=3: -4.1 pts on 88 rows (budget 5)"
    assert "SliceOverBudget" not in [e.reason for e in decision.events]


def test_relative_slice_budget_reads_in_percent(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "store", slices={"maxDropMode": "relative", "maxDrop": 0.05})
    variant = _variant(_decide(spec, _write_run(tmp_path, spec, slice_passed=False)))
    assert variant["worstSlice"] == f"class=3: -8.1% on 88 rows (budget 5%), {OVER_BUDGET}"


def test_manifests_written_before_slices_and_roles_leave_the_fields_unset(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "store")
    variant = _variant(_decide(spec, _write_run(tmp_path, spec, slice_passed=None, roles=False)))
    assert variant["gate"] == "Passed"
    assert not {"worstSlice", "heldOutRows", "tuningRows"} & set(variant)


def test_measured_from_a_manifest_dump() -> None:
    dumped = _manifest("int8", slice_passed=False).model_dump(mode="json")
    measured = measured_from_manifest("int8", "cpu", "file:///s/m.json", dumped, 1)
    assert measured.worst_slice == SliceFigures(name="class=3", size=88, drop=0.081, max_drop=0.05, passed=False)
    assert (measured.held_out_rows, measured.tuning_rows) == (700, 300)


@pytest.mark.parametrize(
    ("figures", "metric", "mode", "text"),
    [
        (SliceFigures("class=3", 88, 0.041, 0.05, True), "accuracy", "absolute", "class=3: -4.1 pts on 88 rows (budget 5)"),
        (SliceFigures("region=eu", 40, -0.012, 0.05, True), "f1", "absolute", "region=eu: +1.2 pts on 40 rows (budget 5)"),
        (SliceFigures("class=0", 31, 0.2, 0.1, False), "topK", "relative",
         f"class=0: -20.0% on 31 rows (budget 10%), {OVER_BUDGET}"),
        (SliceFigures("region=us", 50, 0.25, 0.2, False), "mae", "absolute",
         f"region=us: mae worse by 0.25 on 50 rows (budget 0.2), {OVER_BUDGET}"),
    ],
)
def test_describe_slice(figures: SliceFigures, metric: str, mode: str, text: str) -> None:
    assert describe_slice(figures, metric, mode) == text


def test_variant_status_round_trips_the_new_fields() -> None:
    wire = {"name": "int8", "gate": "Failed", "worstSlice": "class=3: -8.1 pts on 88 rows (budget 5), over budget",
            "heldOutRows": 700, "tuningRows": 300}
    assert VariantStatus.model_validate(wire).to_wire() == {**wire, "phase": "Pending"}
