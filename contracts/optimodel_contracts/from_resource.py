"""An ``OptimizedModel`` resource (or its ``spec``), as the operator's API defines it, -> an OptimizeConfig.

The one mapping between the API and the Job. The Job config takes the API's names and meanings as its
own (see :mod:`optimodel_contracts.jobconfig`), so most fields pass through unchanged; what is left here
is structure: ``evaluation.benchmark`` -> ``latency``, ``nodePools[].resources.limits.cpu`` -> the pool's
``cpuLimit`` in cores, ``artifacts.uri`` -> ``store``, the task from the metric (``mae``/``mse`` are
regression), ``metadata.name`` -> ``name``. Fields that only concern serving or the rollout (replicas,
nodeSelector, tolerations, gpus, rollout, revisionHistoryLimit, the store's credentials) are not the
Job's business and are dropped here; ``tests/unit/test_contracts_mapping.py`` walks every API field and
fails for one that is neither mapped nor listed as dropped.

Pure and dictionary-based on purpose: the contracts do not import the operator's pydantic types, and the
operator can pass the resource it already has (``python -m optimodel_jobs --resource``).
"""

from __future__ import annotations

from typing import Any

from optimodel_contracts import errors
from optimodel_contracts.errors import OptimizeError
from optimodel_contracts.jobconfig import OptimizeConfig, parse_config

# Keys passed through as they are (same name, same meaning, same default in the Job config).
_EVALUATION_KEYS = ("dataset", "tuningDataset", "metric", "topK", "higherIsBetter", "maxDrop", "maxDropMode",
                    "minSamples", "maxLatencyMs", "minSpeedup", "maxSizeMiB")
# evaluation.split and evaluation.slices: the same names and defaults in the Job config (SplitSpec, SliceSpec).
_SPLIT_KEYS = ("seed", "tuningFraction", "calibrationFraction")
_SLICE_KEYS = ("perClass", "columns", "maxDrop", "maxDropMode", "minSize")
_GATE_KEYS = ("maxDrop", "maxDropMode", "maxLatencyMs", "minSpeedup", "maxSizeMiB")
_QUANTIZE_KEYS = ("mode", "weightType", "perChannel", "calibration")
_CONVERT_KEYS = ("dtype", "keepIoTypes")
_PRUNE_KEYS = ("amount", "headsAmount", "granularity", "norm", "fineTuneEpochs", "dataset")
_DISTILL_KEYS = ("student", "dataset", "epochs", "temperature", "alpha", "learningRate", "batchSize")
_SOURCE_KEYS = ("uri", "format", "inputs", "sha256", "factory", "codePath")


def _cpu_quantity(value: Any) -> float | None:
    """Kubernetes CPU quantity ("2", "1500m", 0.5) -> cores."""
    if value is None:
        return None
    text = str(value).strip()
    return float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)


def _pick(raw: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: raw[k] for k in keys if raw is not None and raw.get(k) is not None}


def _optimization(raw: dict[str, Any]) -> dict[str, Any]:
    variant: dict[str, Any] = {"name": raw["name"]}
    if raw.get("from"):
        variant["from"] = raw["from"]
    if gate := _pick(raw.get("gate"), _GATE_KEYS):
        variant["gate"] = gate
    for kind, keys in (("quantize", _QUANTIZE_KEYS), ("convert", _CONVERT_KEYS), ("prune", _PRUNE_KEYS),
                       ("distill", _DISTILL_KEYS)):
        if raw.get(kind) is not None:
            variant[kind] = _pick(raw[kind], keys)
    return variant


def _evaluation(raw: dict[str, Any]) -> dict[str, Any]:
    evaluation = _pick(raw, _EVALUATION_KEYS)
    for key, keys in (("split", _SPLIT_KEYS), ("slices", _SLICE_KEYS)):
        if raw.get(key) is not None:
            evaluation[key] = _pick(raw[key], keys)
    return evaluation


def config_from_resource(resource: dict[str, Any], *, store: str | None = None, name: str | None = None,
                         work_dir: str | None = None, pools: list[str] | None = None) -> OptimizeConfig:
    """Map an OptimizedModel (whole object or just its spec) to the Job's config.

    ``store`` overrides ``spec.artifacts.uri``; ``name`` overrides ``metadata.name``. ``pools`` restricts
    the config to those node pools (the operator runs one Job per execution provider, on that provider's
    nodes, with that provider's pools); unknown names are refused. Raises OptimizeError (ConfigInvalid).
    """
    spec = resource.get("spec", resource)
    metadata = resource.get("metadata") or {}
    try:
        source = spec["source"]
        evaluation = spec["evaluation"]
    except KeyError as error:
        raise OptimizeError(errors.CONFIG_INVALID, f"the OptimizedModel spec has no {error.args[0]!r}") from None
    node_pools = spec.get("nodePools") or []
    if pools is not None:
        known = [p["name"] for p in node_pools]
        unknown = sorted(set(pools) - set(known))
        if unknown or not pools:
            raise OptimizeError(errors.CONFIG_INVALID, f"pools {unknown or pools} are not nodePools of the resource (known: {known})")
        node_pools = [p for p in node_pools if p["name"] in pools]
    mapped_pools = []
    for pool in node_pools:
        limits = (pool.get("resources") or {}).get("limits") or {}
        mapped = {"name": pool["name"], "executionProvider": pool.get("executionProvider", "cpu")}
        if pool.get("variant") is not None:
            mapped["variant"] = pool["variant"]
        if pool.get("objective") is not None:
            mapped["objective"] = pool["objective"]
        if (cpu := _cpu_quantity(limits.get("cpu"))) is not None:
            mapped["cpuLimit"] = cpu
        mapped_pools.append(mapped)
    metric = evaluation.get("metric", "accuracy")
    benchmark = evaluation.get("benchmark") or {}
    # The API measures one batch size (default 1), which is the gate's; the Job's own default adds 8.
    latency = {"batchSizes": [benchmark.get("batchSize") or 1], **_pick(benchmark, ("iterations", "warmup"))}
    config: dict[str, Any] = {
        "name": name or metadata.get("name") or "model",
        # The API has no task field; its regression metrics say it.
        "task": "regression" if metric in ("mae", "mse") else "classification",
        "source": _pick(source, _SOURCE_KEYS),
        "evaluation": _evaluation(evaluation),
        "variants": [_optimization(o) for o in spec.get("optimizations") or []],
        "latency": latency,
        "pools": mapped_pools or [{"name": "cpu"}],
    }
    store_uri = store or (spec.get("artifacts") or {}).get("uri")
    if store_uri:
        config["store"] = store_uri
    if work_dir:
        config["workDir"] = work_dir
    return parse_config(config)
