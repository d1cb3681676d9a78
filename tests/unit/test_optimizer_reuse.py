"""Artifacts reused by content: an unchanged variant is never rebuilt, only evaluated and measured again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from optimodel_contracts.artifacts import read_manifest
from optimodel_contracts.jobconfig import parse_config
from optimodel_contracts.runrecord import find_run_record, read_build_record, read_run_record, run_record_uri
from optimodel_jobs.pipeline import Pipeline, run
from optimodel_jobs.zoo import build


def _config(tmp: Path, work: str, variants: list[dict[str, Any]], pools: list[dict[str, Any]] | None = None) -> Any:
    mlp = build("digits-mlp-tiny")
    return parse_config({
        "name": "reuse",
        "source": mlp.source_config(),
        "evaluation": {"dataset": str(mlp.evaluation), "maxDrop": 0.05},
        "calibration": {"dataset": str(mlp.calibration), "samples": 32},
        "variants": variants,
        "pools": pools or [{"name": "cpu"}],
        "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(tmp / "store"),
        "workDir": str(tmp / work),
    })


VARIANTS = [
    {"name": "int8", "quantize": {"mode": "dynamic"}},
    {"name": "int8s", "quantize": {"mode": "static", "calibration": {"samples": 32}}},
    {"name": "pruned", "prune": {"amount": 0.5, "fineTuneEpochs": 1}},
    {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}},
]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = Pipeline._build

    def counting(self: Pipeline, variant: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(variant.name)
        original(self, variant, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_build", counting)
    return calls


@pytest.mark.slow
def test_a_second_run_reuses_every_variant_and_an_edit_rebuilds_only_that_one(tmp_path: Path, built: list[str]) -> None:
    first = run(_config(tmp_path, "w1", VARIANTS))
    assert sorted(built) == sorted(v["name"] for v in VARIANTS)
    assert all(o.error is None for o in first.variants)

    # The same variants, measured for another execution provider's pool (the operator's second Job).
    built.clear()
    config = _config(tmp_path, "w2", VARIANTS, pools=[{"name": "gpu", "executionProvider": "cuda"}])
    second = run(config)
    assert built == [], "nothing is rebuilt"
    record = read_run_record(run_record_uri(config.store, config))
    assert find_run_record(config.store, config) == record
    for name in ("int8", "int8s", "pruned", "pruned-int8"):
        entry = record.variant(name)
        assert entry.reused and entry.build is not None and entry.gate is not None and entry.manifest_uri
        assert entry.latency, "a reused variant is still measured"
        manifest = read_manifest(entry.manifest_uri)
        assert manifest.details["build"]["reused"] is True
        original = first.variants[[o.name for o in first.variants].index(name)]
        assert original.details["build"]["key"] == entry.build.key
        saved = read_build_record(original.details["build"]["record_uri"])
        assert saved.key == entry.build.key and saved.sha256  # the build's own blob, content-addressed
    assert [o.metric for o in second.variants] == pytest.approx([o.metric for o in first.variants])

    # One variant's spec changes: only that one is built again; its chained child too (its parent changed).
    built.clear()
    edited = [dict(v) for v in VARIANTS]
    edited[2] = {"name": "pruned", "prune": {"amount": 0.25, "fineTuneEpochs": 1}}
    third = run(_config(tmp_path, "w3", edited))
    assert sorted(built) == ["pruned", "pruned-int8"]
    reused = {o.name for o in third.variants if o.details.get("build", {}).get("reused")}
    assert reused == {"int8", "int8s"}


@pytest.mark.slow
def test_a_damaged_build_blob_is_rebuilt_not_used(tmp_path: Path, built: list[str]) -> None:
    variants = [{"name": "int8", "quantize": {"mode": "dynamic"}}]
    first = run(_config(tmp_path, "w1", variants))
    saved = read_build_record(first.variants[0].details["build"]["record_uri"])
    blob = tmp_path / "store" / saved.blob
    blob.write_bytes(blob.read_bytes()[:-10])  # truncated
    built.clear()
    second = run(_config(tmp_path, "w2", variants, pools=[{"name": "cpu", "cpuLimit": 1}]))
    assert built == ["int8"] and second.variants[0].details["build"]["reused"] is False
