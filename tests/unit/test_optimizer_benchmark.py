"""benchmarks/optimizer.py: its figures are like for like (issue 13, item 4).

The rows it scores are the rows the pipeline's verdict used and never the ones a choice looked at; students
learn from the source on the source's own training rows; a headline reports the variant the pipeline chose,
not the fastest by the benchmark's own timing; several seeds give a median and a spread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optimodel_operator.testing.scripts import load_script


bench = load_script("benchmarks/optimizer.py", "bench_optimizer")


def test_split_is_disjoint_whole_and_decided_by_the_seed(tmp_path: Path) -> None:
    source = tmp_path / "evaluation.npz"
    np.savez(source, x=np.arange(200, dtype=np.float32).reshape(100, 2), label=np.arange(100) % 4)
    tuning, held_out = bench.split_rows(source, 0, tmp_path / "s0")
    with np.load(tuning) as t, np.load(held_out) as h:
        tuning_rows, held_rows = set(t["x"][:, 0].tolist()), set(h["x"][:, 0].tolist())
        assert (t["x"][:, 0] // 2 % 4 == t["label"]).all(), "a row's label travelled with its features"
    assert not tuning_rows & held_rows
    assert tuning_rows | held_rows == set(range(0, 200, 2))
    assert len(tuning_rows) == 30 and len(held_rows) == 70
    again, _ = bench.split_rows(source, 0, tmp_path / "again")
    other, _ = bench.split_rows(source, 1, tmp_path / "s1")
    with np.load(again) as a, np.load(other) as o:
        assert set(a["x"][:, 0].tolist()) == tuning_rows
        assert set(o["x"][:, 0].tolist()) != tuning_rows


def test_worst_class_drop_is_per_class_in_points_and_skips_small_classes() -> None:
    labels = np.array([0] * 40 + [1] * 40 + [2] * 10)
    source = labels.copy()
    variant = labels.copy()
    variant[:4] = 1  # class 0: 36/40 right -> 10 points down
    variant[40:42] = 0  # class 1: 38/40 -> 5 points down
    variant[80:90] = 0  # class 2 collapses, but 10 rows are below the 30-row minimum
    drop, cls, rows = bench.worst_class_drop(source, variant, labels)
    assert (cls, rows) == (0, 40)
    assert drop == pytest.approx(0.10)
    drop_all, cls_all, _ = bench.worst_class_drop(source, variant, labels, min_rows=1)
    assert (cls_all, drop_all) == (2, pytest.approx(1.0))
    nothing = bench.worst_class_drop(source, variant, labels, min_rows=1000)
    assert nothing[1] is None and np.isnan(nothing[0])


def test_students_learn_from_the_source_on_its_own_training_rows() -> None:
    for model in ("mlp", "cnn", "bert"):
        for variant in bench.variants_for(model):
            for kind in ("distill", "prune"):
                spec = variant.get(kind)
                if spec is not None:
                    assert "teacher" not in spec, f"{model}/{variant['name']}: a teacher other than the source"
                    assert "dataset" not in spec, f"{model}/{variant['name']}: data other than the source's training rows"
    assert any("distill" in v for v in bench.variants_for("bert"))


def test_with_parents_keeps_chains_and_refuses_unknown_names() -> None:
    variants = bench.variants_for("bert")
    kept = [v["name"] for v in bench.with_parents(variants, {"distilled-int8", "pruned"})]
    assert kept == ["pruned", "distilled", "distilled-int8"]
    with pytest.raises(SystemExit, match="unknown nope"):
        bench.with_parents(variants, {"nope"})


def _figures(speedup: float, drop: float, passed: bool) -> dict[str, Any]:
    return {
        "bert_pruned_speedup": speedup, "bert_pruned_acc_drop_rel": drop, "bert_pruned_passed_gate": passed,
        "bert_pruned_variant": "pruned", "bert_pruned_worst_class_drop": 0.01,
    }


def test_seeds_combine_to_medians_with_the_spread_and_target_counts() -> None:
    per_seed = [_figures(1.58, 0.0149, False), _figures(1.52, 0.004, True), _figures(1.61, 0.0, True)]
    combined = bench.combine(per_seed, [0, 1, 2])
    assert combined["bert_pruned_speedup"] == pytest.approx(1.58)
    assert combined["bert_pruned_acc_drop_rel"] == pytest.approx(0.004)
    assert combined["spread"]["bert_pruned_speedup"] == [1.58, 1.52, 1.61]
    assert combined["bert_pruned_passed_gate"] is False  # passed on every seed, or not
    assert combined["bert_pruned_variant"] == "pruned"
    assert combined["targets_met"] == {"bert_pruned": "2/3 seeds"}
    single = bench.combine([_figures(1.49, 0.0, True)], [0])
    assert single["targets_met"] == {"bert_pruned": False}


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's code path on the unit tests' tiny MLP (seconds, not minutes)."""
    monkeypatch.setitem(bench.ZOO, "mlp", "digits-mlp-tiny")


def test_a_run_scores_the_held_out_rows_the_gate_judged_and_headlines_the_pipelines_pick(
    tiny_zoo: None, tmp_path: Path
) -> None:
    from optimodel_jobs.zoo import build

    result, rows = bench.bench_model("mlp", 3, tmp_path, threads=1, quick=True, wanted={"int8-dynamic", "int8-static"})
    config = result.config
    # The source's own training rows; the held-out file is the gate's dataset, the tuning file apart from it.
    assert config.training is not None and config.training.uri == str(build("digits-mlp-tiny").train)
    assert config.evaluation.tuning_dataset is not None
    with np.load(config.evaluation.dataset.uri) as held, np.load(config.evaluation.tuning_dataset.uri) as tuning:
        held_count = len(held["x"])
        held_rows = {row.tobytes() for row in held["x"]}
        assert not held_rows & {row.tobytes() for row in tuning["x"]}
    # The pipeline says so too: the benchmark's held-out file decided the verdict, the training data trained.
    roles = result.data_roles
    assert roles is not None
    assert (roles.held_out_uri, roles.held_out_rows) == (config.evaluation.dataset.uri, held_count)
    assert roles.decided_on["gate_verdict"] == "held_out" and roles.decided_on["auto_choice"] == "tuning"
    assert roles.training_source == "training dataset" and not roles.evaluation_used_for_training
    by_name = {r["variant"]: r for r in rows}
    assert set(by_name) == {"source", "handwritten", "int8-dynamic", "int8-static"}
    for variant in result.variants:
        # The benchmark's accuracy is the pipeline's recorded metric: the same held-out rows, the same code.
        assert variant.metric == pytest.approx(by_name[variant.name]["accuracy"], abs=1e-9)
        assert by_name[variant.name]["gate"] in ("PASS", "FAIL")
        assert not np.isnan(by_name[variant.name]["worst_class_drop"]) or by_name[variant.name]["worst_class_rows"] == 0
    assert by_name["source"]["acc_drop_rel"] == 0.0 and by_name["source"]["speedup_p50"] == 1.0

    figures = bench.headline_figures(rows, {"mlp": result})
    picked, _ = bench.pipeline_pick(result, ("int8-dynamic", "int8-static"))
    assert figures["mlp_int8_variant"] == picked
    assert figures["mlp_int8_speedup"] == round(by_name[picked]["speedup_p50"], 3)
    assert "mlp_int8_worst_class_drop" in figures
