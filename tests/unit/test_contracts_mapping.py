"""Every field of the OptimizedModel API either reaches the Job's config with the same meaning, or is in an
explicit list of fields the Job deliberately does not get. A field added to the API later fails
``test_every_api_field_is_mapped_or_dropped`` until it is mapped in optimodel_contracts.from_resource
(and a row added to MAPPED) or listed in DROPPED with the reason."""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from optimodel_contracts.errors import OptimizeError
from optimodel_contracts.from_resource import config_from_resource
from optimodel_contracts.jobconfig import OptimizeConfig
from optimodel_operator.api.spec import OptimizedModelSpec, parse_spec

# Not the Job's business (serving / rollout / bookkeeping of the operator), on purpose:
DROPPED_PREFIXES = (
    "rollout.",  # canary steps, interval, SLO, drift guard, failure limit, traffic routing: the rollout
)
DROPPED = {
    "nodePools[].replicas",  # how many serving pods
    "nodePools[].nodeSelector",  # where serving pods (and the operator's Job pod) run: pod placement
    "nodePools[].tolerations[].key",  # pod placement
    "nodePools[].tolerations[].operator",
    "nodePools[].tolerations[].value",
    "nodePools[].tolerations[].effect",
    "nodePools[].tolerations[].tolerationSeconds",
    "nodePools[].resources.requests",  # the pods' requests; the Job measures with the pool's CPU *limit*
    "nodePools[].gpus",  # GPUs per pod: the pod's resources; the provider is executionProvider
    "artifacts.credentials.name",  # a Secret the operator mounts as environment variables of the Job's pod
    "artifacts.endpointUrl",  # AWS_ENDPOINT_URL of the Job's pod: where the store is, not what the Job makes
    "revisionHistoryLimit",  # how many old revisions the operator keeps
}


def _opt(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(o for o in resource["spec"]["optimizations"] if kind in o)


def _variant(config: OptimizeConfig, name: str) -> Any:
    return next(v for v in config.variants if v.name == name)


def _gate(config: OptimizeConfig) -> Any:
    return _variant(config, "q").gate


# Fields with a single allowed value: the check cannot fail before the field is set.
SINGLE_VALUED = {"optimizations[].convert.dtype"}

# path -> (setter on the resource, check on the mapped config). Values differ from both sides' defaults.
Setter = Callable[[dict[str, Any]], None]
Check = Callable[[OptimizeConfig], bool]


def _set(path: str, value: Any) -> Setter:
    """Set ``value`` at a dotted path of the spec; ``x[]`` picks the list's first element, except
    ``optimizations[]`` which picks the optimization of the kind named next (quantize/convert/prune/distill)."""

    def apply(resource: dict[str, Any]) -> None:
        node: Any = resource["spec"]
        parts = path.split(".")
        for index, part in enumerate(parts[:-1]):
            if part.endswith("[]"):
                items = node[part[:-2]]
                following = parts[index + 1]
                node = next((o for o in items if following in o), items[0]) if part == "optimizations[]" else items[0]
            else:
                node = node.setdefault(part, {})
        node[parts[-1]] = value

    return apply


MAPPED: dict[str, tuple[Setter, Check]] = {
    "source.uri": (_set("source.uri", "s3://m/other.onnx"), lambda c: c.source.uri == "s3://m/other.onnx"),
    # The API's torch is TorchScript; so is the Job's.
    "source.format": (_set("source.format", "torch"), lambda c: c.source.format == "torch"),
    "source.inputs[].name": (_set("source.inputs[].name", "ids"), lambda c: c.source.input_names == ["ids"]),
    "source.inputs[].dtype": (_set("source.inputs[].dtype", "int64"), lambda c: c.source.inputs[0].dtype == "int64"),
    "source.inputs[].shape": (_set("source.inputs[].shape", [-1, 64]), lambda c: c.source.inputs[0].shape == [-1, 64]),
    "source.sha256": (_set("source.sha256", "b" * 64), lambda c: c.source.sha256 == "b" * 64),
    "source.factory": (_set("source.factory", "mymodels:build_mlp"), lambda c: c.source.factory == "mymodels:build_mlp"),
    "source.codePath": (lambda r: r["spec"]["source"].update(factory="mymodels:build_mlp", codePath="s3://m/code/"),
                        lambda c: c.source.code_path == "s3://m/code/" and c.source.factory == "mymodels:build_mlp"),
    "evaluation.dataset": (_set("evaluation.dataset", "s3://d/other.npz"), lambda c: c.evaluation.dataset.uri == "s3://d/other.npz"),
    "evaluation.metric": (_set("evaluation.metric", "f1"), lambda c: c.evaluation.metric == "f1"),
    "evaluation.topK": (lambda r: r["spec"]["evaluation"].update(metric="topK", topK=3),
                        lambda c: c.evaluation.metric == "topK" and c.evaluation.top_k == 3),
    "evaluation.higherIsBetter": (_set("evaluation.higherIsBetter", True), lambda c: c.evaluation.higher_is_better is True),
    "evaluation.maxDrop": (_set("evaluation.maxDrop", 0.07), lambda c: c.evaluation.max_drop == 0.07),
    "evaluation.maxDropMode": (_set("evaluation.maxDropMode", "relative"), lambda c: c.evaluation.max_drop_mode == "relative"),
    "evaluation.minSamples": (_set("evaluation.minSamples", 7), lambda c: c.evaluation.min_samples == 7),
    "evaluation.maxLatencyMs": (_set("evaluation.maxLatencyMs", 12.5), lambda c: c.evaluation.max_latency_ms == 12.5),
    "evaluation.minSpeedup": (_set("evaluation.minSpeedup", 1.7), lambda c: c.evaluation.min_speedup == 1.7),
    "evaluation.maxSizeMiB": (_set("evaluation.maxSizeMiB", 33.0), lambda c: c.evaluation.max_size_mib == 33.0),
    "evaluation.tuningDataset": (_set("evaluation.tuningDataset", "s3://d/tune.npz"),
                                 lambda c: c.evaluation.tuning_dataset is not None and c.evaluation.tuning_dataset.uri == "s3://d/tune.npz"),
    "evaluation.split.seed": (_set("evaluation.split.seed", 11), lambda c: c.evaluation.split.seed == 11),
    "evaluation.split.tuningFraction": (_set("evaluation.split.tuningFraction", 0.4),
                                        lambda c: c.evaluation.split.tuning_fraction == 0.4),
    "evaluation.split.calibrationFraction": (_set("evaluation.split.calibrationFraction", 0.2),
                                             lambda c: c.evaluation.split.calibration_fraction == 0.2),
    "evaluation.slices.perClass": (_set("evaluation.slices.perClass", False), lambda c: c.evaluation.slices.per_class is False),
    "evaluation.slices.columns": (_set("evaluation.slices.columns", ["region", "device"]),
                                  lambda c: c.evaluation.slices.columns == ["region", "device"]),
    "evaluation.slices.maxDrop": (_set("evaluation.slices.maxDrop", 0.08), lambda c: c.evaluation.slices.max_drop == 0.08),
    "evaluation.slices.maxDropMode": (_set("evaluation.slices.maxDropMode", "relative"),
                                      lambda c: c.evaluation.slices.max_drop_mode == "relative"),
    "evaluation.slices.minSize": (_set("evaluation.slices.minSize", 12), lambda c: c.evaluation.slices.min_size == 12),
    # The gate's latency is measured at the smallest of the Job's batch sizes: the API's batchSize.
    "evaluation.benchmark.batchSize": (_set("evaluation.benchmark.batchSize", 4), lambda c: c.latency.batch_sizes == [4]),
    "evaluation.benchmark.iterations": (_set("evaluation.benchmark.iterations", 77), lambda c: c.latency.iterations == 77),
    "evaluation.benchmark.warmup": (_set("evaluation.benchmark.warmup", 3), lambda c: c.latency.warmup == 3),
    "optimizations[].name": (_set("optimizations[].quantize", {"mode": "dynamic"}) if False else
                             (lambda r: _opt(r, "quantize").update(name="renamed")),
                             lambda c: any(v.name == "renamed" for v in c.variants)),
    "optimizations[].from": (lambda r: _opt(r, "convert").update({"from": "q"}), lambda c: _variant(c, "c").from_ == "q"),
    "optimizations[].quantize.mode": (lambda r: _opt(r, "quantize")["quantize"].update(mode="dynamic", calibration=None),
                                      lambda c: _variant(c, "q").quantize.mode == "dynamic"),
    "optimizations[].quantize.weightType": (_set("optimizations[].quantize.weightType", "uint8"),
                                            lambda c: _variant(c, "q").quantize.weight_type == "uint8"),
    # The API's unset perChannel lets the optimizer choose: the Job's "auto".
    "optimizations[].quantize.perChannel": (_set("optimizations[].quantize.perChannel", False),
                                            lambda c: _variant(c, "q").quantize.per_channel is False),
    "optimizations[].quantize.calibration.dataset": (_set("optimizations[].quantize.calibration.dataset", "s3://d/c2.npz"),
                                                     lambda c: _variant(c, "q").quantize.calibration.dataset.uri == "s3://d/c2.npz"),
    "optimizations[].quantize.calibration.method": (_set("optimizations[].quantize.calibration.method", "entropy"),
                                                    lambda c: _variant(c, "q").quantize.calibration.method == "entropy"),
    "optimizations[].quantize.calibration.samples": (_set("optimizations[].quantize.calibration.samples", 99),
                                                     lambda c: _variant(c, "q").quantize.calibration.samples == 99),
    "optimizations[].convert.dtype": (_set("optimizations[].convert.dtype", "float16"),
                                      lambda c: _variant(c, "c").convert.dtype == "float16"),
    "optimizations[].convert.keepIoTypes": (_set("optimizations[].convert.keepIoTypes", False),
                                            lambda c: _variant(c, "c").convert.keep_io_types is False),
    "optimizations[].prune.amount": (_set("optimizations[].prune.amount", 0.3), lambda c: _variant(c, "p").prune.amount == 0.3),
    "optimizations[].prune.headsAmount": (_set("optimizations[].prune.headsAmount", 0.25),
                                          lambda c: _variant(c, "p").prune.heads_amount == 0.25),
    # Recorded in the manifest; the Job prunes what the structure offers, ranked on data (docs/optimizer.md).
    "optimizations[].prune.granularity": (_set("optimizations[].prune.granularity", "filter"),
                                          lambda c: _variant(c, "p").prune.granularity == "filter"),
    "optimizations[].prune.norm": (_set("optimizations[].prune.norm", "l1"), lambda c: _variant(c, "p").prune.norm == "l1"),
    "optimizations[].prune.fineTuneEpochs": (_set("optimizations[].prune.fineTuneEpochs", 4),
                                             lambda c: _variant(c, "p").prune.fine_tune_epochs == 4),
    "optimizations[].prune.dataset": (_set("optimizations[].prune.dataset", "s3://d/t2.npz"),
                                      lambda c: _variant(c, "p").prune.dataset.uri == "s3://d/t2.npz"),
    # The student's size overrides the factory's keyword arguments of the same names.
    "optimizations[].distill.student.layers": (_set("optimizations[].distill.student.layers", 3),
                                               lambda c: _variant(c, "d").distill.student["layers"] == 3),
    "optimizations[].distill.student.hidden": (_set("optimizations[].distill.student.hidden", 96),
                                               lambda c: _variant(c, "d").distill.student["hidden"] == 96),
    "optimizations[].distill.dataset": (_set("optimizations[].distill.dataset", "s3://d/t3.npz"),
                                        lambda c: _variant(c, "d").distill.dataset.uri == "s3://d/t3.npz"),
    "optimizations[].distill.epochs": (_set("optimizations[].distill.epochs", 9), lambda c: _variant(c, "d").distill.epochs == 9),
    "optimizations[].distill.temperature": (_set("optimizations[].distill.temperature", 4.0),
                                            lambda c: _variant(c, "d").distill.temperature == 4.0),
    # Both: the weight of the soft (teacher) loss.
    "optimizations[].distill.alpha": (_set("optimizations[].distill.alpha", 0.8), lambda c: _variant(c, "d").distill.alpha == 0.8),
    "optimizations[].distill.learningRate": (_set("optimizations[].distill.learningRate", 0.02),
                                             lambda c: _variant(c, "d").distill.learning_rate == 0.02),
    "optimizations[].distill.batchSize": (_set("optimizations[].distill.batchSize", 16),
                                          lambda c: _variant(c, "d").distill.batch_size == 16),
    "optimizations[].gate.maxDrop": (lambda r: _opt(r, "quantize").update(gate={"maxDrop": 0.2}),
                                     lambda c: _gate(c) is not None and _gate(c).max_drop == 0.2),
    "optimizations[].gate.maxDropMode": (lambda r: _opt(r, "quantize").update(gate={"maxDropMode": "relative"}),
                                         lambda c: _gate(c) is not None and _gate(c).max_drop_mode == "relative"),
    "optimizations[].gate.maxLatencyMs": (lambda r: _opt(r, "quantize").update(gate={"maxLatencyMs": 3.0}),
                                          lambda c: _gate(c) is not None and _gate(c).max_latency_ms == 3.0),
    "optimizations[].gate.minSpeedup": (lambda r: _opt(r, "quantize").update(gate={"minSpeedup": 2.5}),
                                        lambda c: _gate(c) is not None and _gate(c).min_speedup == 2.5),
    "optimizations[].gate.maxSizeMiB": (lambda r: _opt(r, "quantize").update(gate={"maxSizeMiB": 4.0}),
                                        lambda c: _gate(c) is not None and _gate(c).max_size_mib == 4.0),
    "nodePools[].name": (_set("nodePools[].name", "edge"), lambda c: [p.name for p in c.pools] == ["edge"]),
    "nodePools[].variant": (_set("nodePools[].variant", "c"), lambda c: c.pools[0].variant == "c"),
    "nodePools[].objective": (_set("nodePools[].objective", "size"), lambda c: c.pools[0].objective == "size"),
    "nodePools[].executionProvider": (lambda r: r["spec"]["nodePools"][0].update(executionProvider="cuda", gpus=1),
                                      lambda c: c.pools[0].execution_provider == "cuda"),
    # Only the CPU limit matters to the Job (its threads when measuring); other limits are the pod's.
    "nodePools[].resources.limits": (_set("nodePools[].resources.limits", {"cpu": "1500m", "memory": "1Gi"}),
                                     lambda c: c.pools[0].cpu_limit == 1.5),
    "artifacts.uri": (_set("artifacts.uri", "s3://other-store"), lambda c: c.store == "s3://other-store"),
}


def _base() -> dict[str, Any]:
    return {
        "apiVersion": "optimodel.io/v1alpha1", "kind": "OptimizedModel", "metadata": {"name": "m"},
        "spec": {
            "source": {"uri": "s3://m/model.onnx", "format": "onnx", "inputs": [{"name": "x", "shape": [-1, 8]}]},
            "evaluation": {"dataset": "s3://d/eval.npz", "maxDrop": 0.01},
            "optimizations": [
                {"name": "q", "quantize": {"mode": "static", "calibration": {"dataset": "s3://d/c.npz"}}},
                {"name": "c", "convert": {}},
                {"name": "p", "prune": {"amount": 0.5, "dataset": "s3://d/t.npz"}},
                {"name": "d", "distill": {"student": {"layers": 1, "hidden": 8}, "dataset": "s3://d/t.npz"}},
            ],
            "nodePools": [{"name": "cpu"}],
            "artifacts": {"uri": "s3://store"},
        },
    }


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, field in model.model_fields.items():
        wire = field.alias or to_camel(name)
        path = f"{prefix}{wire}"
        nested = _model_in(field.annotation)
        if nested is None:
            paths.append(path)
        else:
            model_type, is_list = nested
            paths.extend(_leaves(model_type, f"{path}{'[]' if is_list else ''}."))
    return paths


def _model_in(annotation: Any, in_list: bool = False) -> tuple[type[BaseModel], bool] | None:
    """The pydantic model inside Optional / Annotated / list annotations (dicts are leaves)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, in_list
    origin = typing.get_origin(annotation)
    if origin in (dict,):
        return None
    is_list = in_list or origin is list
    for argument in typing.get_args(annotation):
        if argument is type(None) or isinstance(argument, (str, int, float)):
            continue
        found = _model_in(argument, is_list)
        if found is not None:
            return found
    return None


def _is_dropped(path: str) -> bool:
    return path in DROPPED or path.startswith(DROPPED_PREFIXES)


def test_every_api_field_is_mapped_or_dropped() -> None:
    leaves = _leaves(OptimizedModelSpec)
    assert len(leaves) > 40  # the walk found the nested models
    unaccounted = [p for p in leaves if p not in MAPPED and not _is_dropped(p)]
    assert not unaccounted, f"API fields neither mapped to the Job config nor listed as dropped: {unaccounted}"
    stale = sorted((set(MAPPED) | DROPPED) - set(leaves))
    assert not stale, f"rows for fields the API no longer has: {stale}"
    assert not set(MAPPED) & DROPPED


def test_the_base_resource_is_valid_for_the_api() -> None:
    parse_spec(_base()["spec"])


@pytest.mark.parametrize("path", sorted(MAPPED))
def test_a_mapped_field_reaches_the_job_config(path: str) -> None:
    setter, check = MAPPED[path]
    resource = copy.deepcopy(_base())
    before = config_from_resource(copy.deepcopy(resource))
    assert path in SINGLE_VALUED or not check(before), f"{path}: the base resource already satisfies the check; pick another value"
    setter(resource)
    parse_spec(resource["spec"])  # the changed resource is one the API accepts
    assert check(config_from_resource(resource)), f"{path} did not reach the Job config with its meaning"


@pytest.mark.parametrize("path", sorted(DROPPED))
def test_a_dropped_field_changes_nothing_the_job_gets(path: str) -> None:
    values: dict[str, Any] = {
        "nodePools[].replicas": 5, "nodePools[].nodeSelector": {"pool": "x"}, "nodePools[].gpus": 2,
        "nodePools[].resources.requests": {"cpu": "1"}, "revisionHistoryLimit": 9,
        "artifacts.credentials.name": "creds", "artifacts.endpointUrl": "http://s3.example:8333",
    }
    resource = _base()
    if path.startswith("nodePools[].tolerations[]"):
        resource["spec"]["nodePools"][0]["tolerations"] = [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]
    elif path in values:
        _set(path, values[path])(resource)
    else:
        # A field dropped on the way to the Job must be shown to change nothing: a new one needs a value here.
        raise AssertionError(f"{path}: no sample value; add one to `values` above")
    parse_spec(resource["spec"])
    assert config_from_resource(resource).spec_hash() == config_from_resource(_base()).spec_hash()


def test_api_defaults_mean_what_the_job_defaults_mean() -> None:
    """An omitted field (the API server fills CRD defaults, a hand-written resource may not) means the same."""
    spec = parse_spec(_base()["spec"])
    explicit = config_from_resource({"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}, name="m")
    implicit = config_from_resource(_base())
    assert explicit.model_dump() == implicit.model_dump()


def test_split_and_slices_defaults_are_the_jobs() -> None:
    """`split: {}` and `slices: {}` get the CRD's defaults from the API server; they must mean what leaving the
    objects out means to the Job (its SplitSpec / SliceSpec defaults), or one spec would judge two ways."""
    resource = _base()
    resource["spec"]["evaluation"].update(split={}, slices={})
    filled = parse_spec(resource["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert filled["evaluation"]["split"] == {"seed": 0, "tuningFraction": 0.3, "calibrationFraction": 0.0}
    assert filled["evaluation"]["slices"]["minSize"] == 30
    assert config_from_resource({"spec": filled}, name="m").model_dump() == config_from_resource(_base()).model_dump()


def test_pools_restrict_the_config() -> None:
    resource = _base()
    resource["spec"]["nodePools"] = [{"name": "cpu"}, {"name": "gpu", "executionProvider": "cuda", "gpus": 1, "variant": "c"}]
    config = config_from_resource(resource, pools=["gpu"])
    assert [(p.name, p.execution_provider, p.variant) for p in config.pools] == [("gpu", "cuda", "c")]
    assert [v.name for v in config.variants] == ["q", "c", "p", "d"]
    with pytest.raises(OptimizeError, match="not nodePools"):
        config_from_resource(resource, pools=["tpu"])

