"""Pure decisions of the optimizer (providers, threads, int8 settings, ordering, pool choice, latency
statistics) and the structured pruner on the attention encoder."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from optimodel_contracts.artifacts import GateVerdict
from optimodel_contracts.jobconfig import QuantizeSpec, parse_config
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.latency import LatencyStats, summarize
from optimodel_jobs.models import build_cnn, build_encoder, build_mlp, parameter_count
from optimodel_jobs.onnx_export import export_module
from optimodel_jobs.pipeline import VariantOutcome, choose_for_pools, order_variants, pool_for
from optimodel_jobs.prune import find_sequential_pairs, keep_count, prune_structured
from optimodel_jobs.quantize import resolve_settings
from optimodel_jobs.runtime import choose_providers, threads_for

BASE = {"source": {"uri": "m.onnx"}, "evaluation": {"dataset": "e.npz"}}


def test_provider_fallback_is_recorded() -> None:
    gpu = choose_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and gpu.fallback is None
    cpu_only = choose_providers("tensorrt", ["CPUExecutionProvider"])
    assert cpu_only.effective == "CPUExecutionProvider"
    assert cpu_only.fallback is not None and "TensorrtExecutionProvider is not available" in cpu_only.fallback
    no_trt = choose_providers("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert no_trt.effective == "CUDAExecutionProvider" and no_trt.fallback is not None


@pytest.mark.parametrize(("limit", "threads"), [(0.5, 1), (1.0, 1), (1.9, 1), (2.0, 2), (4.5, 4)])
def test_threads_never_exceed_whole_cpus(limit: float, threads: int) -> None:
    assert threads_for(limit) == threads


def test_int8_settings_follow_the_cpu() -> None:
    dynamic = QuantizeSpec(mode="dynamic")
    static = QuantizeSpec(mode="static")
    no_vnni = resolve_settings(dynamic, has_vnni=False)
    assert no_vnni.reduce_range and no_vnni.per_channel and "saturation" in no_vnni.why
    vnni = resolve_settings(dynamic, has_vnni=True)
    assert not vnni.reduce_range and not vnni.per_channel
    assert resolve_settings(static, has_vnni=True).per_channel
    forced = resolve_settings(QuantizeSpec(mode="static", reduce_range=True, per_channel=False), has_vnni=True)
    assert forced.reduce_range and not forced.per_channel


def test_latency_statistics() -> None:
    stats = summarize(8, [0.001] * 98 + [0.010, 0.020])
    assert stats.p50_ms == pytest.approx(1.0)
    assert stats.p99_ms > 9.0
    assert stats.throughput_per_s == pytest.approx(8 * 1000 / stats.mean_ms)
    assert stats.samples == 100


def test_variant_order_and_cycles() -> None:
    config = parse_config({**BASE, "variants": [
        {"name": "c", "from": "b", "quantize": {}}, {"name": "b", "from": "a", "distill": {}}, {"name": "a", "prune": {}},
    ]})
    assert [v.name for v in order_variants(config.variants)] == ["a", "b", "c"]
    cyclic = parse_config({**BASE, "variants": [{"name": "a", "from": "b"}, {"name": "b", "from": "a"}]})
    with pytest.raises(OptimizeError, match="cycle"):
        order_variants(cyclic.variants)


def _outcome(name: str, provider: str, p50: float, deployable: bool) -> VariantOutcome:
    outcome = VariantOutcome(name=name, kind="x", parent=None, provider=choose_providers(provider, ["CPUExecutionProvider"]))
    outcome.gate = GateVerdict(passed=deployable, reason="", deployable=deployable)
    outcome.latency = {1: LatencyStats(1, p50, p50, p50, p50, 1000 / p50, 10)}
    return outcome


def test_pool_choice_prefers_fastest_deployable_and_respects_names() -> None:
    config = parse_config({**BASE, "variants": [{"name": n} for n in ("fast-bad", "ok", "fp16")],
                           "pools": [{"name": "cpu"}, {"name": "gpu", "executionProvider": "cuda"}, {"name": "pinned", "variant": "ok"}]})
    outcomes = [_outcome("fast-bad", "cpu", 0.5, False), _outcome("ok", "cpu", 1.0, True), _outcome("fp16", "cuda", 2.0, True)]
    source = _outcome("source", "cpu", 3.0, True)  # auto compares with the source: slower than every variant here
    assert choose_for_pools(config, outcomes, source) == {"cpu": "ok", "gpu": "fp16", "pinned": "ok"}
    nothing = [_outcome("fast-bad", "cpu", 0.5, False)]
    assert choose_for_pools(config, nothing, source)["cpu"] is None


def test_fp16_goes_to_a_gpu_pool_by_default() -> None:
    config = parse_config({**BASE, "variants": [{"name": "half", "convert": {}}, {"name": "q", "quantize": {}}],
                           "pools": [{"name": "cpu"}, {"name": "gpu", "executionProvider": "tensorrt"}]})
    assert pool_for(config, config.variants[0]).name == "gpu"
    assert pool_for(config, config.variants[1]).name == "cpu"


def test_keep_count_rounds_to_simd_widths() -> None:
    assert keep_count(1024, 0.5) == 512
    assert keep_count(2048, 0.6) == 816
    assert keep_count(16, 0.9) == 8
    assert keep_count(8, 0.5) == 4
    assert keep_count(3, 0.9) == 1


def test_sequential_pairs_found_for_mlp_and_cnn() -> None:
    assert len(find_sequential_pairs(build_mlp(hidden=(32, 16)))) == 2
    cnn_pairs = find_sequential_pairs(build_cnn(channels=(4, 8, 8)))
    assert len(cnn_pairs) == 3  # conv->conv, conv->conv, conv->(pool, flatten)->linear
    assert all(len(pair.norms) == 1 for pair in cnn_pairs)  # each carries its BatchNorm along


def test_encoder_heads_and_ffn_really_removed(tmp_path: object) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(vocab=50, seq_len=8, hidden=32, layers=2, heads=4, ffn=64, classes=3).eval()
    ids = torch.randint(0, 50, (16, 8))
    before = parameter_count(encoder)

    def run_batches() -> None:
        encoder(ids)

    details = prune_structured(encoder, ratio=0.5, heads_ratio=0.5, run_batches=run_batches)
    assert [layer.attention.heads for layer in encoder.layers] == [2, 2]
    assert encoder.layers[0].attention.query.weight.shape == (16, 32)
    assert encoder.layers[0].feed_forward.intermediate.weight.shape == (32, 32)
    assert parameter_count(encoder) < 0.75 * before
    assert {b["block"] for b in details["blocks"]} == {"attention", "feed_forward"}
    # The pruned module still runs and exports to a smaller ONNX graph that ONNX Runtime executes.
    path = export_module(encoder, {"input_ids": ids[:2].numpy()}, ["logits"], tmp_path / "pruned.onnx")  # type: ignore[operator]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input_ids": ids.numpy()})[0]
    np.testing.assert_allclose(out, encoder(ids).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_pruner_refuses_models_it_does_not_understand() -> None:
    class Opaque(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(ValueError, match="no structure the pruner understands"):
        prune_structured(Opaque(), 0.5, None, lambda: None)


def test_budgets_refuse_slow_or_big_variants() -> None:
    from optimodel_contracts.jobconfig import Budgets
    from optimodel_jobs.gate import apply_budgets

    ok = GateVerdict(passed=True, reason="accuracy fine", deployable=True)
    assert apply_budgets(ok, Budgets(), 5.0, 1.0, 10).passed
    slow = apply_budgets(ok, Budgets(max_latency_ms=4.0), 5.0, 1.0, 10)
    assert not slow.passed and not slow.deployable and "maxLatencyMs" in slow.reason
    not_faster = apply_budgets(ok, Budgets(min_speedup=1.2), 1.0, 1.1, 10)
    assert not not_faster.passed and "minSpeedup" in not_faster.reason
    big = apply_budgets(ok, Budgets.model_validate({"maxSizeMiB": 1}), 1.0, 2.0, 3 * 2**20)
    assert not big.passed and "maxSizeMiB" in big.reason
    already_failed = GateVerdict(passed=False, reason="accuracy", deployable=False)
    assert apply_budgets(already_failed, Budgets(max_latency_ms=100), 1.0, 2.0, 1) is already_failed


def test_per_variant_gate_override_and_top_k() -> None:
    from optimodel_jobs.gate import metric_for, with_override

    config = parse_config({**BASE, "evaluation": {"dataset": "e.npz", "maxDrop": 0.01, "maxDropMode": "relative"},
                           "variants": [{"name": "s", "distill": {}, "gate": {"maxDrop": 0.05, "maxDropMode": "absolute"}}]})
    merged = with_override(config.evaluation, config.variants[0].gate)
    assert (merged.max_drop, merged.max_drop_mode) == (0.05, "absolute")
    assert with_override(config.evaluation, None) is config.evaluation
    top2 = metric_for("topK", "classification", top_k=2)
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert top2.compute(scores, np.array([1, 0, 2]), scores) == pytest.approx(1 / 3)
    assert metric_for("f1", "classification").name == "f1_macro"
    with pytest.raises(OptimizeError, match="unknown metric"):
        metric_for("bleu", "classification")


def test_operator_resource_maps_to_a_job_config() -> None:
    from optimodel_contracts.from_resource import config_from_resource

    resource = {
        "apiVersion": "optimodel.io/v1alpha1", "kind": "OptimizedModel", "metadata": {"name": "sentiment"},
        "spec": {
            "source": {"uri": "s3://m/model.pt", "format": "torch", "inputs": [{"name": "ids", "dtype": "int64", "shape": [-1, 64]}],
                       "sha256": "a" * 64},
            "evaluation": {"dataset": "s3://d/eval.parquet", "metric": "mae", "maxDrop": 0.1, "minSamples": 50,
                           "maxSizeMiB": 20, "benchmark": {"batchSize": 4, "iterations": 50, "warmup": 5}},
            "optimizations": [
                {"name": "int8", "quantize": {"mode": "static", "calibration": {"dataset": "s3://d/c.npz", "method": "entropy", "samples": 64}}},
                {"name": "pruned", "prune": {"amount": 0.3, "fineTuneEpochs": 2, "dataset": "s3://d/train.npz"}},
                {"name": "small", "distill": {"student": {"layers": 2, "hidden": 64}, "dataset": "s3://d/train.npz", "alpha": 0.7},
                 "gate": {"maxDrop": 0.2}},
                {"name": "small-int8", "from": "small", "quantize": {"mode": "dynamic"}},
            ],
            "nodePools": [{"name": "cpu", "variant": "auto", "replicas": 3, "resources": {"limits": {"cpu": "1500m"}}},
                          {"name": "gpu", "variant": "source", "gpus": 1, "executionProvider": "tensorrt"}],
            "rollout": {"steps": [10, 100]},
            "artifacts": {"uri": "s3://artifacts"},
        },
    }
    config = config_from_resource(resource)
    assert config.name == "sentiment" and config.task == "regression" and config.store == "s3://artifacts"
    assert config.source.format == "torch" and config.source.input_names == ["ids"] and config.source.sha256 == "a" * 64
    assert config.evaluation.max_drop_mode == "absolute" and config.evaluation.min_samples == 50
    assert config.evaluation.max_size_mib == 20 and config.latency.batch_sizes == [4] and config.latency.iterations == 50
    int8, pruned, small, chained = config.variants
    assert int8.quantize and int8.quantize.calibration and int8.quantize.calibration.method == "entropy"
    assert pruned.prune and (pruned.prune.amount, pruned.prune.heads_amount, pruned.prune.fine_tune_epochs) == (0.3, None, 2)
    assert small.distill and small.distill.student == {"layers": 2, "hidden": 64}
    assert small.distill.alpha == pytest.approx(0.7) and small.gate and small.gate.max_drop == 0.2
    assert chained.from_ == "small"
    cpu, gpu = config.pools
    assert (cpu.variant, cpu.cpu_limit, gpu.execution_provider, gpu.variant) == (None, 1.5, "tensorrt", "source")
