"""The pure parts of benchmarks/server.py: the interleaved plan, the statistics over rounds, MLServer's
batch settings and the reading of Prometheus histograms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from optimodel_operator.testing.scripts import load_script


bench = load_script("benchmarks/server.py", "optimodel_server_benchmark")

SETTINGS = {
    "ours": (1, 4, 16, 64),
    "ours_no_batching": (1, 4, 16, 64),
    "minimal": (1, 16),
    "drift_off": (16,),
    "mlserver": (1, 4, 16, 64),
    "mlserver_adaptive": (1, 4, 16, 64),
}


def test_block_order_rotates_one_place_per_step() -> None:
    names = ["a", "b", "c"]
    assert bench.block_order(names, 0, 0) == ["a", "b", "c"]
    assert bench.block_order(names, 0, 1) == ["b", "c", "a"]
    assert bench.block_order(names, 1, 1) == ["c", "a", "b"]
    assert bench.block_order(names, 2, 1) == ["a", "b", "c"]
    assert bench.block_order([], 3, 2) == []


def test_plan_measures_every_setting_once_per_round_at_each_of_its_concurrencies() -> None:
    rounds = 4
    blocks = bench.plan(SETTINGS, [1, 4, 16, 64], rounds)
    counts = Counter((name, c) for _, c, name in blocks)
    assert counts == Counter({(name, c): rounds for name, levels in SETTINGS.items() for c in levels})
    # Rounds run one after another: all blocks of round r come before any of round r + 1.
    assert [r for r, _, _ in blocks] == sorted(r for r, _, _ in blocks)


def test_plan_interleaves_instead_of_running_one_server_after_another() -> None:
    blocks = bench.plan(SETTINGS, [1, 4, 16, 64], 3)
    names = [name for _, _, name in blocks]
    # The old benchmark ran each server's sweep as one block; here no server runs two blocks in a row
    # inside a concurrency, and the first server of a concurrency changes from one concurrency to the next.
    firsts = []
    for round_index in range(3):
        for c in (1, 4, 16, 64):
            order = [name for r, cc, name in blocks if r == round_index and cc == c]
            assert len(order) == len(set(order))
            firsts.append(order[0])
    assert len(set(firsts)) >= 4
    assert len(names) == len(blocks)


def test_plan_puts_each_server_in_every_position_over_enough_rounds() -> None:
    settings = {name: (16,) for name in ("a", "b", "c", "d")}
    blocks = bench.plan(settings, [16], 4)
    positions: dict[str, set[int]] = {name: set() for name in settings}
    for round_index in range(4):
        order = [name for r, _, name in blocks if r == round_index]
        for position, name in enumerate(order):
            positions[name].add(position)
    assert all(seen == {0, 1, 2, 3} for seen in positions.values())


def test_plan_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="rounds"):
        bench.plan(SETTINGS, [1, 4, 16, 64], 0)
    with pytest.raises(ValueError, match=r"\[32\]"):
        bench.plan({"a": (1, 32)}, [1, 16], 2)


def test_spread_is_the_median_and_the_range() -> None:
    assert bench.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "range": [1.0, 10.0], "n": 4}
    assert bench.spread([0.12345], 2) == {"median": 0.12, "range": [0.12, 0.12], "n": 1}
    with pytest.raises(ValueError):
        bench.spread([])


def test_paired_combines_figures_of_the_same_round() -> None:
    assert bench.paired([10.0, 20.0, 30.0], [5.0, 4.0, 3.0], lambda a, b: a / b) == [2.0, 5.0, 10.0]
    with pytest.raises(ValueError, match="rounds differ"):
        bench.paired([1.0], [1.0, 2.0], lambda a, b: a - b)


def test_point_summary_reports_medians_ranges_and_batch_means() -> None:
    runs = [
        {"p50_us": 1000.0, "p99_us": 3000.0, "throughput_rps": 100.0, "mean_batch": 2.0},
        {"p50_us": 2000.0, "p99_us": 9000.0, "throughput_rps": 300.0, "mean_batch": 4.0},
        {"p50_us": 1500.0, "p99_us": 4000.0, "throughput_rps": 200.0, "mean_batch": 3.0},
    ]
    summary = bench.point_summary(runs)
    assert summary["p50_ms"] == 1.5 and summary["p50_ms_range"] == [1.0, 2.0]
    assert summary["p99_ms"] == 4.0 and summary["p99_ms_range"] == [3.0, 9.0]
    assert summary["rps"] == 200 and summary["rps_range"] == [100, 300]
    assert summary["mean_batch_rows"] == 3.0


def test_mlserver_batching_settings_are_written_only_when_they_take_effect(tmp_path: Path) -> None:
    off = bench.mlserver_model_settings(tmp_path / "m.onnx", 0, 0.0)
    assert "max_batch_size" not in off and "max_batch_time" not in off
    on = bench.mlserver_model_settings(tmp_path / "m.onnx", 32, 1e-6)
    assert on["max_batch_size"] == 32 and on["max_batch_time"] == 1e-6
    assert on["parameters"]["uri"] == str(tmp_path / "m.onnx")
    # MLServer skips its batcher when max_batch_time is 0: that must not pass for "batching on".
    with pytest.raises(ValueError, match="max_batch_time"):
        bench.mlserver_model_settings(tmp_path / "m.onnx", 32, 0.0)
    with pytest.raises(ValueError, match="max_batch_size"):
        bench.mlserver_model_settings(tmp_path / "m.onnx", 1, 0.001)


def test_mlserver_wait_for_our_default_is_positive_and_below_a_millisecond() -> None:
    assert 0 < bench.MLSERVER_MIN_BATCH_TIME_S < 1e-3


def test_histogram_totals_sums_over_labels_and_tells_a_missing_histogram() -> None:
    text = "\n".join([
        "# HELP optimodel_batch_size Requests merged into one inference call.",
        "# TYPE optimodel_batch_size histogram",
        'optimodel_batch_size_bucket{model="a",le="1.0"} 3.0',
        'optimodel_batch_size_bucket{model="a",le="+Inf"} 4.0',
        'optimodel_batch_size_count{model="a"} 4.0',
        'optimodel_batch_size_sum{model="a"} 10.0',
        'optimodel_batch_size_bucket{model="b",le="+Inf"} 1.0',
        'optimodel_batch_size_count{model="b"} 1.0',
        'optimodel_batch_size_sum{model="b"} 5.0',
        "",
    ])
    families = list(text_string_to_metric_families(text))
    assert bench.histogram_totals(families, "optimodel_batch_size") == (15.0, 5.0)
    assert bench.histogram_totals(families, "optimodel_request_duration_seconds") is None
