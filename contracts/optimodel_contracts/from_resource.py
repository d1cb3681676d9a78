"""An ``OptimizedModel`` resource (or its ``spec``), as the operator's API defines it, -> an OptimizeConfig.

Pure and dictionary-based on purpose: the Job image does not import the operator's pydantic types,
and the operator can pass the resource it already has (``--resource``). Fields that only concern
serving or the rollout (replicas, nodeSelector, tolerations, rollout, ...) are not the Job's business
and are dropped here.
"""

from __future__ import annotations

from typing import Any

from optimodel_jobs.config import OptimizeConfig, parse_config


def _cpu_quantity(value: Any) -> float | None:
    """Kubernetes CPU quantity ("2", "1500m", 0.5) -> cores."""
    if value is None:
        return None
    text = str(value).strip()
    return float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _gate(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    return _without_none({
        "maxDrop": raw.get("maxDrop"),
        "dropType": raw.get("maxDropMode"),
        "maxLatencyMs": raw.get("maxLatencyMs"),
        "minSpeedup": raw.get("minSpeedup"),
        "maxSizeMiB": raw.get("maxSizeMiB"),
    })


def _optimization(raw: dict[str, Any]) -> dict[str, Any]:
    variant: dict[str, Any] = {"name": raw["name"]}
    if raw.get("from"):
        variant["from"] = raw["from"]
    if gate := _gate(raw.get("gate")):
        variant["gate"] = gate
    if quantize := raw.get("quantize"):
        mapped: dict[str, Any] = {"mode": quantize["mode"]}
        if quantize.get("perChannel") is not None:
            mapped["perChannel"] = quantize["perChannel"]
        if calibration := quantize.get("calibration"):
            mapped["calibration"] = _without_none({
                "dataset": calibration.get("dataset"), "method": calibration.get("method"), "samples": calibration.get("samples"),
            })
        variant["quantize"] = mapped
    if convert := raw.get("convert"):
        variant["convert"] = _without_none({"dtype": convert.get("dtype"), "keepIoTypes": convert.get("keepIoTypes")})
    if prune := raw.get("prune"):
        variant["prune"] = _without_none({
            "ratio": prune["amount"],
            # The API keeps heads unless headsAmount is set.
            "headsRatio": prune.get("headsAmount", 0.0),
            "fineTuneEpochs": prune.get("fineTuneEpochs", 1),
            "dataset": prune.get("dataset"),
            "granularity": prune.get("granularity"),
            "norm": prune.get("norm"),
        })
    if distill := raw.get("distill"):
        student = distill.get("student", {})
        variant["distill"] = _without_none({
            "student": {k: student[k] for k in ("layers", "hidden") if k in student},
            "dataset": distill.get("dataset"),
            "epochs": distill.get("epochs"),
            "temperature": distill.get("temperature"),
            # The API's alpha weighs the soft loss; ours weighs the hard-label loss.
            "alpha": None if distill.get("alpha") is None else 1.0 - float(distill["alpha"]),
            "lr": distill.get("learningRate"),
            "batchSize": distill.get("batchSize"),
        })
    return variant


def config_from_resource(resource: dict[str, Any], *, store: str | None = None, name: str | None = None,
                         work_dir: str | None = None) -> OptimizeConfig:
    """Map an OptimizedModel (whole object or just its spec) to the Job's config."""
    spec = resource.get("spec", resource)
    metadata = resource.get("metadata", {})
    source = spec["source"]
    evaluation = spec["evaluation"]
    benchmark = evaluation.get("benchmark", {})
    source_config = _without_none({
        "uri": source["uri"],
        "format": "torchscript" if source.get("format") == "torch" else source.get("format", "onnx"),
        "inputNames": [i["name"] for i in source["inputs"]] if source.get("inputs") else None,
        "sha256": source.get("sha256"),
    })
    pools = []
    for pool in spec.get("nodePools", []):
        limits = (pool.get("resources") or {}).get("limits") or {}
        pools.append(_without_none({
            "name": pool["name"],
            "provider": pool.get("executionProvider", "cpu"),
            "variant": pool.get("variant"),
            "cpuLimit": _cpu_quantity(limits.get("cpu")),
        }))
    metric = evaluation.get("metric", "accuracy")
    config: dict[str, Any] = {
        "name": name or metadata.get("name") or "model",
        # The API has no task field; its regression metrics say it.
        "task": "regression" if metric in ("mae", "mse") else "classification",
        "source": source_config,
        "evaluation": _without_none({
            "dataset": evaluation["dataset"],
            "metric": metric,
            "topK": evaluation.get("topK"),
            "maxDrop": evaluation.get("maxDrop"),
            "dropType": evaluation.get("maxDropMode", "absolute"),  # the API's default
            "higherIsBetter": evaluation.get("higherIsBetter"),
            "minSamples": evaluation.get("minSamples"),
            "maxLatencyMs": evaluation.get("maxLatencyMs"),
            "minSpeedup": evaluation.get("minSpeedup"),
            "maxSizeMiB": evaluation.get("maxSizeMiB"),
        }),
        "variants": [_optimization(o) for o in spec.get("optimizations", [])],
        "latency": _without_none({
            "batchSizes": [benchmark["batchSize"]] if "batchSize" in benchmark else None,
            "iterations": benchmark.get("iterations"),
            "warmup": benchmark.get("warmup"),
        }),
        "pools": pools or [{"name": "cpu"}],
    }
    store_uri = store or (spec.get("artifacts") or {}).get("uri")
    if store_uri:
        config["store"] = store_uri
    if work_dir:
        config["workDir"] = work_dir
    return parse_config(config)
