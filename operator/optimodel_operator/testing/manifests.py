"""A valid base manifest and the table of bad ones, each with the field its refusal must name.

The same table drives the unit tests (pydantic and the CEL rules evaluated locally) and the
integration test (kubectl apply against the real API server), so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]


def base_manifest(name: str = "base") -> Manifest:
    """A small valid OptimizedModel that exercises most fields."""
    return {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"uri": "s3://models/m/model.onnx", "format": "onnx"},
            "evaluation": {"dataset": "s3://data/m/eval.parquet", "metric": "accuracy", "maxDrop": 0.01},
            "optimizations": [
                {
                    "name": "int8",
                    "quantize": {
                        "mode": "static",
                        "calibration": {"dataset": "s3://data/m/calib.parquet", "samples": 128},
                    },
                },
                {"name": "fp16", "convert": {"dtype": "float16"}},
                {
                    "name": "small",
                    "distill": {"student": {"layers": 2, "hidden": 64}, "dataset": "s3://data/m/train.parquet"},
                },
                {"name": "small-int8", "from": "small", "quantize": {"mode": "dynamic"}},
            ],
            "nodePools": [
                {"name": "cpu", "variant": "int8", "nodeSelector": {"pool": "cpu"}, "replicas": 2},
                {
                    "name": "gpu",
                    "variant": "fp16",
                    "gpus": 1,
                    "executionProvider": "cuda",
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}},
                },
            ],
            "rollout": {
                "steps": [10, 50, 100],
                "interval": "30s",
                "slo": {"p99LatencyMs": 40, "maxErrorRate": 0.01},
                "drift": {"maxPSI": 0.2},
                "checks": [{
                    "name": "queue-depth",
                    "query": 'max(optimodel_queue_depth{namespace="{{namespace}}", revision="{{revision}}"})',
                    "max": 50,
                }],
            },
            "artifacts": {"uri": "s3://artifacts/m"},
        },
    }


@dataclass(frozen=True)
class BadCase:
    id: str
    change: Callable[[Manifest], None]
    field: str
    """The field path the API server's refusal must name (e.g. spec.rollout.steps)."""
    python_field: str | None = None
    """Where the operator's own (pydantic) check reports it, when that differs from the server."""


def _spec(m: Manifest) -> dict[str, Any]:
    return m["spec"]


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """Setter for a dotted path below spec; numeric parts index lists."""

    def change(m: Manifest) -> None:
        node: Any = _spec(m)
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _delete(path: str) -> Callable[[Manifest], None]:
    def change(m: Manifest) -> None:
        node: Any = _spec(m)
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[parts[-1]]

    return change


def _both(*changes: Callable[[Manifest], None]) -> Callable[[Manifest], None]:
    def change(m: Manifest) -> None:
        for c in changes:
            c(m)

    return change


def _torch_source(m: Manifest) -> None:
    _spec(m)["source"] = {"uri": "/models/m.pt", "format": "torch"}


BAD_CASES: tuple[BadCase, ...] = (
    BadCase("wrong-type-replicas", _set("nodePools.0.replicas", "four"), "spec.nodePools[0].replicas"),
    BadCase("wrong-type-max-drop", _set("evaluation.maxDrop", "small"), "spec.evaluation.maxDrop"),
    BadCase("wrong-type-steps", _set("rollout.steps", "10,50,100"), "spec.rollout.steps"),
    BadCase("unknown-variant-in-pool", _set("nodePools.0.variant", "int4"), "spec.nodePools"),
    BadCase("steps-not-increasing", _set("rollout.steps", [50, 25, 100]), "spec.rollout.steps"),
    BadCase("steps-above-100", _set("rollout.steps", [10, 150]), "spec.rollout.steps[1]"),
    BadCase("steps-duplicated", _set("rollout.steps", [10, 10, 100]), "spec.rollout.steps[1]", "spec.rollout.steps"),
    BadCase("negative-max-drop", _set("evaluation.maxDrop", -0.1), "spec.evaluation.maxDrop"),
    BadCase("missing-source", _delete("source"), "spec.source"),
    BadCase("missing-node-pools", _delete("nodePools"), "spec.nodePools"),
    BadCase("empty-optimizations", _set("optimizations", []), "spec.optimizations"),
    BadCase(
        "duplicate-variant-names",
        _set("optimizations.1", {"name": "int8", "convert": {"dtype": "float16"}}),
        "spec.optimizations[1]",
        "spec.optimizations",
    ),
    BadCase("bad-uri-scheme", _set("source.uri", "http://models.example/m.onnx"), "spec.source.uri"),
    BadCase("unknown-format", _set("source.format", "tflite"), "spec.source.format"),
    BadCase("typo-unknown-field", _set("rollout.stepz", [10, 100]), "spec.rollout.stepz"),
    BadCase(
        "two-kinds-in-one-variant",
        _set("optimizations.1", {"name": "fp16", "convert": {}, "quantize": {"mode": "dynamic"}}),
        "spec.optimizations[1]",
    ),
    BadCase("no-kind-in-variant", _set("optimizations.1", {"name": "fp16"}), "spec.optimizations[1]"),
    BadCase(
        "static-quantization-without-calibration",
        _delete("optimizations.0.quantize.calibration"),
        "spec.optimizations[0].quantize.calibration",
    ),
    BadCase(
        "dynamic-quantization-with-calibration",
        _set("optimizations.3.quantize.calibration", {"dataset": "s3://d/c.parquet"}),
        "spec.optimizations[3].quantize.calibration",
    ),
    BadCase("reserved-variant-name", _set("optimizations.1.name", "auto"), "spec.optimizations[1].name"),
    BadCase("variant-from-itself", _set("optimizations.3.from", "small-int8"), "spec.optimizations[3].from"),
    BadCase("variant-from-unknown", _set("optimizations.3.from", "tiny"), "spec.optimizations"),
    BadCase("cuda-without-gpus", _set("nodePools.1.gpus", 0), "spec.nodePools[1].gpus"),
    BadCase(
        "gpu-in-resources",
        _set("nodePools.1.resources", {"limits": {"nvidia.com/gpu": 1}}),
        "spec.nodePools[1].resources",
    ),
    BadCase("torch-without-inputs", _torch_source, "spec.source.inputs"),
    BadCase("top-k-without-k", _set("evaluation.metric", "topK"), "spec.evaluation.topK"),
    BadCase(
        "higher-is-better-contradicts-metric",
        _both(_set("evaluation.metric", "mae"), _set("evaluation.higherIsBetter", True)),
        "spec.evaluation.higherIsBetter",
    ),
    BadCase(
        "relative-max-drop-above-1",
        _both(_set("evaluation.maxDropMode", "relative"), _set("evaluation.maxDrop", 5)),
        "spec.evaluation.maxDrop",
    ),
    BadCase("interval-not-a-duration", _set("rollout.interval", "5 minutes"), "spec.rollout.interval"),
    BadCase("interval-below-1s", _set("rollout.interval", "500ms"), "spec.rollout.interval"),
    BadCase("prune-amount-above-1", _set("optimizations.2", {"name": "small", "prune": {"amount": 1.5, "fineTuneEpochs": 0}}), "spec.optimizations[2].prune.amount"),
    BadCase("fine-tune-without-data", _set("optimizations.2", {"name": "small", "prune": {"amount": 0.3}}), "spec.optimizations[2].prune.dataset"),
    BadCase("pool-name-not-dns", _set("nodePools.0.name", "CPU_Pool"), "spec.nodePools[0].name"),
    BadCase(
        "toleration-exists-with-value",
        _set("nodePools.1.tolerations.0.value", "yes"),
        "spec.nodePools[1].tolerations[0].value",
    ),
    BadCase("failure-limit-zero", _set("rollout.failureLimit", 0), "spec.rollout.failureLimit"),
    BadCase("bad-quantity", _set("nodePools.1.resources.requests.memory", "lots"), "spec.nodePools[1].resources.requests.memory"),
    BadCase("check-without-threshold", _set("rollout.checks.0", {"name": "mine", "query": "up"}), "spec.rollout.checks[0].max"),
    BadCase("check-min-above-max", _set("rollout.checks.0", {"name": "mine", "query": "up", "min": 2, "max": 1}),
            "spec.rollout.checks[0].min"),
    BadCase("check-builtin-name", _set("rollout.checks.0", {"name": "p99-latency", "query": "up", "max": 1}),
            "spec.rollout.checks[0].name"),
    BadCase("check-unknown-placeholder", _set("rollout.checks.0", {"name": "mine", "query": 'up{node="{{node}}"}', "max": 1}),
            "spec.rollout.checks[0].query"),
    BadCase("check-names-duplicated", _set("rollout.checks", [{"name": "mine", "query": "up", "max": 1},
                                                              {"name": "mine", "query": "up", "min": 1}]),
            "spec.rollout.checks[1]", "spec.rollout.checks"),
    # Data roles and slices (issue 13): each refused naming the field it is about.
    BadCase("split-leaves-nothing-held-out",
            _set("evaluation.split", {"tuningFraction": 0.7, "calibrationFraction": 0.3}),
            "spec.evaluation.split.calibrationFraction"),
    BadCase("split-tuning-fraction-zero", _set("evaluation.split", {"tuningFraction": 0}),
            "spec.evaluation.split.tuningFraction"),
    BadCase("split-tuning-fraction-one", _set("evaluation.split", {"tuningFraction": 1.0}),
            "spec.evaluation.split.tuningFraction"),
    BadCase("split-negative-seed", _set("evaluation.split", {"seed": -1}), "spec.evaluation.split.seed"),
    BadCase("tuning-dataset-is-the-held-out-one", _set("evaluation.tuningDataset", "s3://data/m/eval.parquet"),
            "spec.evaluation.tuningDataset"),
    BadCase("tuning-dataset-bad-scheme", _set("evaluation.tuningDataset", "http://data.example/tune.parquet"),
            "spec.evaluation.tuningDataset"),
    BadCase("slices-relative-drop-above-1", _set("evaluation.slices", {"maxDropMode": "relative", "maxDrop": 2}),
            "spec.evaluation.slices.maxDrop"),
    BadCase("slices-columns-duplicated", _set("evaluation.slices", {"columns": ["region", "region"]}),
            "spec.evaluation.slices.columns"),
    BadCase("slices-column-empty", _set("evaluation.slices", {"columns": [""]}), "spec.evaluation.slices.columns[0]"),
    BadCase("slices-min-size-zero", _set("evaluation.slices", {"minSize": 0}), "spec.evaluation.slices.minSize"),
    BadCase("slices-unknown-drop-mode", _set("evaluation.slices", {"maxDropMode": "percent"}),
            "spec.evaluation.slices.maxDropMode"),
)


def bad_manifest(case: BadCase, name: str | None = None) -> Manifest:
    manifest = base_manifest(name or case.id)
    case.change(manifest)
    return manifest


def examples_dir() -> Path:
    """deploy/examples of the repository this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[3] / "deploy" / "examples"


def load_examples() -> dict[str, Manifest]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(examples_dir().glob("*.yaml"))}


def to_yaml(manifest: Manifest) -> str:
    return yaml.safe_dump(copy.deepcopy(manifest), sort_keys=False)
