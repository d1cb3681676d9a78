"""The source model is an artifact too (pools may serve ``variant: source``), and every variant is measured
on the Job's provider when the config has no pool of the variant's preferred provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from optimodel_contracts.artifacts import fetch_verified, read_manifest
from optimodel_contracts.jobconfig import PoolSpec, parse_config
from optimodel_contracts.runrecord import read_run_record, run_record_uri
from optimodel_jobs.pipeline import job_provider, pool_for, run
from optimodel_jobs.zoo import build


def _config(tmp: Path, work: str, pools: list[dict[str, Any]]) -> Any:
    mlp = build("digits-mlp-tiny")
    return parse_config({
        "name": "src",
        "source": mlp.source_config(),
        "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.05},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}, {"name": "fp16", "convert": {"dtype": "float16"}}],
        "pools": pools,
        "latency": {"batchSizes": [1], "iterations": 4, "warmup": 1, "rounds": 1, "measureMemory": False},
        "store": str(tmp / "store"),
        "workDir": str(tmp / work),
    })


CPU_ONLY = [{"name": "cpu", "executionProvider": "cpu"}]
CUDA_ONLY = [{"name": "cuda", "executionProvider": "cuda"}]


def test_pool_for_never_invents_a_gpu_pool() -> None:
    config = _config(Path("/tmp"), "w", CPU_ONLY)
    fp16 = next(v for v in config.variants if v.name == "fp16")
    assert pool_for(config, fp16) == PoolSpec(name="cpu", execution_provider="cpu")
    mixed = _config(Path("/tmp"), "w", [*CPU_ONLY, {"name": "gpu", "executionProvider": "cuda"}])
    assert pool_for(mixed, fp16).name == "gpu"  # a cuda pool exists: fp16 is meant for it, as before
    assert pool_for(mixed, next(v for v in mixed.variants if v.name == "int8")).name == "cpu"
    assert job_provider(config) == "cpu" and job_provider(mixed) == "cpu"
    assert job_provider(_config(Path("/tmp"), "w", CUDA_ONLY)) == "cuda"


@pytest.mark.slow
def test_source_artifact_in_the_record_and_fp16_measured_on_cpu(tmp_path: Path) -> None:
    config = _config(tmp_path, "w1", CPU_ONLY)
    result = run(config)
    record = read_run_record(run_record_uri(config.store, config))
    assert record.source.manifest_uri and record.source.manifest_uri == result.source.manifest_uri
    manifest = read_manifest(record.source.manifest_uri)
    assert manifest.name == "source" and "/manifests/source/" in record.source.manifest_uri
    assert manifest.gate.passed and manifest.gate.deployable and "source model" in manifest.gate.reason
    assert record.source.gate is not None and record.source.gate.deployable
    metrics = manifest.metrics
    assert metrics["variant"] == metrics["source"] == pytest.approx(result.source.metric)
    assert metrics["drop"] == 0.0 and metrics["agreement"] == 1.0
    assert metrics["latency"]["1"]["p50_ms"] > 0
    assert metrics["provider_used"] == "CPUExecutionProvider" and metrics["provider_fallback"] is None
    assert manifest.execution_provider == "CPUExecutionProvider"
    assert manifest.drift_reference is not None and manifest.drift_reference.output.edges == [k + 0.5 for k in range(9)]
    assert manifest.details["graph_optimization"] == "extended" and manifest.details["kind"] == "fp32-source"
    assert manifest.lineage.parent_variant is None

    # The artifact is the source model: the same predictions as the zoo's own ONNX export.
    _, local = fetch_verified(record.source.manifest_uri, tmp_path / "fetched")
    data = np.load(build("digits-mlp-tiny").evaluation)["x"][:32]
    served = ort.InferenceSession(str(local), providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    reference = ort.InferenceSession(str(build("digits-mlp-tiny").onnx), providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    np.testing.assert_allclose(served, reference, rtol=1e-4, atol=1e-5)

    # fp16 in a cpu-only config: measured on the CPU pool, nobody asked for CUDA, no fallback recorded.
    fp16 = record.variant("fp16")
    assert fp16.pool == "cpu" and fp16.provider_requested == "cpu" and fp16.provider_fallback is None
    fp16_manifest = read_manifest(fp16.manifest_uri or "")
    assert fp16_manifest.execution_provider == "CPUExecutionProvider"
    assert fp16_manifest.metrics["provider_fallback"] is None and fp16_manifest.details["pool"] == "cpu"
    assert fp16.gate is not None and fp16.gate.passed

    # Reuse by content: a second run writes a new manifest but not the identical source blob again.
    blob = tmp_path / "store" / manifest.blob
    written = blob.stat().st_mtime_ns
    second = run(_config(tmp_path, "w2", CPU_ONLY))
    again = read_manifest(second.source.manifest_uri or "")
    assert again.sha256 == manifest.sha256 and again.blob == manifest.blob
    assert blob.stat().st_mtime_ns == written


@pytest.mark.slow
def test_cuda_job_writes_its_own_source_artifact(tmp_path: Path) -> None:
    config = _config(tmp_path, "w", CUDA_ONLY)
    result = run(config)
    record = read_run_record(run_record_uri(config.store, config))
    manifest = read_manifest(record.source.manifest_uri or "")
    assert manifest.details["graph_optimization"] == "basic"  # baked as a GPU pool's variants are
    assert manifest.details["pool"] == "cuda" and record.source.provider_requested == "cuda"
    assert manifest.execution_provider == "CUDAExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "not available" in (manifest.metrics["provider_fallback"] or "")
    assert result.source.latency and all(v.pool == "cuda" for v in result.variants)
