"""The optimization Job: source -> variants -> gate -> latency -> drift profile -> artifacts -> report.

Each step is a function in its own module (file in, file out, a config object); this module only
orders them, keeps going when one variant fails (its reason is recorded), and reports progress.
"""

from __future__ import annotations

import copy
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from optimodel_jobs import errors, graphopt, probes
from optimodel_contracts.artifacts import (
    ArtifactManifest,
    DataRoles,
    DriftReference,
    GateVerdict,
    Lineage,
    TensorSpec,
    ArtifactIntegrityError,
    fetch_blob_verified,
    put_blob,
    put_bytes,
    write_artifact,
)
from optimodel_contracts.choice import Candidate, Timing, choose_auto, timings
from optimodel_contracts.jobconfig import (
    CalibrationSpec,
    DatasetSpec,
    EvaluationSpec,
    OptimizeConfig,
    PoolSpec,
    SourceSpec,
    VariantSpec,
)
from optimodel_contracts.runrecord import (
    BUILDS_PREFIX,
    BuildRecord,
    RunRecord,
    RunRecordError,
    build_record_uri,
    read_build_record,
)
from optimodel_jobs.datasets import (
    Dataset,
    RawTable,
    bind,
    example_inputs,
    feature_names,
    read_table,
    require_label,
    split_off_columns,
)
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.gate import (
    Metric,
    agreement,
    apply_budgets,
    decide,
    metric_drop,
    metric_for,
    score,
    slice_check,
    with_override,
)
from optimodel_jobs.splits import CALIBRATION, HELD_OUT, METHOD, TUNING, assign_roles, subset
from optimodel_jobs.reuse import write_artifact_once
from optimodel_jobs.latency import LatencyStats, batch_of, measure_interleaved, peak_memory_mb
from optimodel_jobs.runtime import ProviderChoice, choose_providers, cpu_limit_from_environment, predict, threads_for
from optimodel_jobs.source import Source, code_dirs, factory_digest, fetch, import_factory, load_source, load_torch_module


class Progress(Protocol):
    def start(self, step: str) -> None: ...
    def finish(self, step: str, summary: str, seconds: float) -> None: ...
    def fail(self, step: str, message: str, seconds: float) -> None: ...


class SilentProgress:
    def start(self, step: str) -> None:
        pass

    def finish(self, step: str, summary: str, seconds: float) -> None:
        pass

    def fail(self, step: str, message: str, seconds: float) -> None:
        pass


@dataclass
class VariantOutcome:
    name: str
    kind: str
    parent: str | None
    provider: ProviderChoice
    pool: str | None = None
    path: Path | None = None  # the artifact (graph optimizations baked in)
    raw_path: Path | None = None  # before baking: what a chained variant starts from
    module: Any | None = None  # the torch module, when the variant has one (chains of prune/distill)
    metric: float | None = None
    drop: float | None = None
    agreement: float | None = None
    gate: GateVerdict | None = None
    latency: dict[int, LatencyStats] = field(default_factory=dict)
    size_bytes: int | None = None
    parameters: int | None = None
    peak_memory_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: OptimizeError | None = None
    manifest_uri: str | None = None
    build_seconds: float = 0.0
    outputs: np.ndarray | None = None
    # On the tuning rows (what the fallback and auto's tie-break may look at); the fields above are held-out.
    tuning_gate: GateVerdict | None = None
    tuning_drop: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "from": self.parent,
            "pool": self.pool,
            "provider_requested": self.provider.requested,
            "provider_used": self.provider.effective,
            "provider_fallback": self.provider.fallback,
            "metric": self.metric,
            "drop": self.drop,
            "agreement": self.agreement,
            "gate": self.gate.model_dump() if self.gate else None,
            "latency": {str(b): s.as_dict() for b, s in self.latency.items()},
            "size_bytes": self.size_bytes,
            "parameters": self.parameters,
            "peak_memory_mb": None if self.peak_memory_mb is None else round(self.peak_memory_mb, 2),
            "details": self.details,
            "error": self.error.as_dict() if self.error else None,
            "manifest_uri": self.manifest_uri,
            "build_seconds": round(self.build_seconds, 2),
            "build": self.details.get("build"),
            "tuning_drop": self.tuning_drop,
        }


@dataclass
class RunResult:
    config: OptimizeConfig
    metric: Metric
    source: VariantOutcome
    variants: list[VariantOutcome]
    chosen: dict[str, str | None]
    work_dir: Path
    result_uri: str | None = None
    report_path: Path | None = None
    report_uri: str | None = None  # the report in the store, next to the run record
    choice_reasons: dict[str, str] = field(default_factory=dict)
    """Per pool, why it serves what ``chosen`` says (``auto``'s figures, or the name it asked for)."""
    data_roles: DataRoles | None = None
    """Which rows played which role, and which role decided what (the same in every manifest of the run)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "spec_hash": self.config.spec_hash(),
            "metric": self.metric.name,
            "source": self.source.summary(),
            "variants": [v.summary() for v in self.variants],
            "chosen": self.chosen,
            "choice_reasons": self.choice_reasons,
            "result_uri": self.result_uri,
            "report": self.report_uri or (str(self.report_path) if self.report_path else None),
            "data_roles": None if self.data_roles is None else self.data_roles.model_dump(mode="json"),
        }


def onnx_parameter_count(path: Path) -> int:
    """Elements in the model's initializers (weights), whatever their dtype."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(init.dims)) if init.dims else 1 for init in model.graph.initializer))


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    try:
        from importlib.metadata import version

        ours = version("optimodel")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        ours = "unknown"
    return {
        "optimodel": ours,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def order_variants(variants: list[VariantSpec]) -> list[VariantSpec]:
    """Parents before children; an unknown parent or a cycle is a config error."""
    by_name = {v.name: v for v in variants}
    ordered: list[VariantSpec] = []
    state: dict[str, str] = {}

    def visit(variant: VariantSpec, path: list[str]) -> None:
        if state.get(variant.name) == "done":
            return
        if state.get(variant.name) == "visiting":
            raise OptimizeError(errors.VARIANT_PARENT_UNKNOWN, f"variants form a cycle: {' -> '.join([*path, variant.name])}")
        state[variant.name] = "visiting"
        if variant.from_ is not None:
            if variant.from_ not in by_name:
                raise OptimizeError(
                    errors.VARIANT_PARENT_UNKNOWN,
                    f"variant {variant.name!r} starts from {variant.from_!r}, which is not a variant "
                    f"(known: {', '.join(by_name) or 'none'})",
                )
            visit(by_name[variant.from_], [*path, variant.name])
        state[variant.name] = "done"
        ordered.append(variant)

    for variant in variants:
        visit(variant, [])
    return ordered


def check_declared_inputs(spec: SourceSpec, actual: list[TensorSpec]) -> None:
    """Pure: the declared ``source.inputs`` (name, dtype, shape; -1/None dynamic) must agree with the model's."""
    by_name = {t.name: t for t in actual}
    for declared in spec.inputs or []:
        found = by_name.get(declared.name)
        if found is None:
            raise OptimizeError(errors.INPUT_MISMATCH, f"source.inputs names {declared.name!r}; the model's inputs are {sorted(by_name)}")
        if found.dtype != declared.dtype:
            raise OptimizeError(errors.SHAPE_MISMATCH, f"source.inputs {declared.name!r} is declared {declared.dtype}, the model takes {found.dtype}")
        want = [None if d is None or d < 0 else d for d in declared.shape]
        if len(want) != len(found.shape) or any(w is not None and f is not None and w != f for w, f in zip(want, found.shape, strict=False)):
            raise OptimizeError(
                errors.SHAPE_MISMATCH, f"source.inputs {declared.name!r} is declared {declared.shape}, the model takes {found.shape}"
            )


def job_provider(config: OptimizeConfig) -> str:
    """Pure: the execution provider this Job measures the source on. The operator's Jobs have pools of one
    provider; a local config with several prefers the CPU (every variant there is compared with it)."""
    providers = [p.execution_provider for p in config.pools]
    if not providers or "cpu" in providers:
        return "cpu"
    return providers[0]


def pool_for(config: OptimizeConfig, variant: VariantSpec) -> PoolSpec:
    """The pool a variant is meant for: named, else the pool that names it, else the first GPU pool for fp16
    (when the config has one), else the first CPU pool, else the first pool. Never a pool the config lacks."""
    pools = {p.name: p for p in config.pools}
    if variant.pool:
        return pools[variant.pool]
    named = [p for p in config.pools if p.variant == variant.name]
    if named:
        return named[0]
    if variant.convert is not None:
        gpu = [p for p in config.pools if p.execution_provider != "cpu"]
        if gpu:
            return gpu[0]
        # No GPU pool in this config (e.g. the cpu Job of the operator): measured where it would run, on the CPU.
    cpu = [p for p in config.pools if p.execution_provider == "cpu"]
    return cpu[0] if cpu else config.pools[0]


@dataclass(frozen=True)
class PoolPick:
    """What a pool serves and why: a variant, ``source``, or None when no variant passed the gate."""

    variant: str | None
    reason: str


def _recorded(latency: dict[int, LatencyStats]) -> dict[int, Timing]:
    # The figures as the manifests and the run record carry them (rounded): the operator decides from those, so
    # deciding here from the unrounded ones could tip a borderline interval the other way.
    return timings({str(batch): stats.as_dict() for batch, stats in latency.items()})


def _candidate(outcome: VariantOutcome, source: VariantOutcome | None) -> Candidate:
    # The source as measured in the same interleaved rounds as this variant (its provider group), else the
    # Job's own measurement of it.
    paired = timings(outcome.details.get("latency_source"))
    source_latency = paired or (_recorded(source.latency) if source is not None else {})
    # auto's tie-break ("then the more accurate") is a selection: it looks at the tuning rows, never the held-out ones.
    return Candidate(outcome.name, _recorded(outcome.latency), source_latency, outcome.size_bytes, outcome.tuning_drop)


def pool_choices(config: OptimizeConfig, outcomes: list[VariantOutcome], source: VariantOutcome | None = None) -> dict[str, PoolPick]:
    """Pure: per pool, the variant it names if that one is deployable; else ``auto`` among the deployable
    variants meant for a pool of that provider (:func:`optimodel_contracts.choice.choose_auto`: only a
    variant faster than the source beyond noise, by the pool's objective, else the source); None when no
    variant passed the gate."""
    picks: dict[str, PoolPick] = {}
    deployable = [o for o in outcomes if o.gate is not None and o.gate.deployable and o.latency]
    for pool in config.pools:
        if pool.variant == "source":
            picks[pool.name] = PoolPick("source", "the pool asks for the source model")
            continue
        named = [o for o in deployable if o.name == pool.variant]
        if named:
            picks[pool.name] = PoolPick(named[0].name, f"variant {pool.variant} as asked; it passed the gate")
            continue
        asked = f"variant {pool.variant} did not pass the gate, so " if pool.variant is not None else ""
        fitting = [o for o in deployable if o.provider.requested == pool.execution_provider] or (
            deployable if pool.execution_provider == "cpu" else []
        )
        fitting = [o for o in fitting if o.provider.requested == "cpu"] if pool.execution_provider == "cpu" else fitting
        choice = choose_auto([_candidate(o, source) for o in fitting], pool.objective,
                             source_size_bytes=None if source is None else source.size_bytes,
                             where=f"on {pool.execution_provider}")
        variant = choice.variant if fitting else None
        picks[pool.name] = PoolPick(variant, asked + choice.reason)
    return picks


def choose_for_pools(config: OptimizeConfig, outcomes: list[VariantOutcome], source: VariantOutcome | None = None) -> dict[str, str | None]:
    """Pure: the variant name of :func:`pool_choices` per pool."""
    return {pool: pick.variant for pool, pick in pool_choices(config, outcomes, source).items()}


@dataclass(frozen=True)
class Judged:
    outputs: np.ndarray
    metric: float
    agreement: float
    drop: float | None
    verdict: GateVerdict


@dataclass(frozen=True)
class Reference:
    """The source's outputs and metric on one set of rows (the tuning rows), to judge a candidate against."""

    data: Dataset
    outputs: np.ndarray
    metric: float


class Pipeline:
    def __init__(self, config: OptimizeConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or SilentProgress()
        # A folder of our own making is removed when the run ends, whatever the end (run(), cleanup());
        # a workDir the user named is theirs to keep.
        self.temporary = not config.work_dir
        self.work_dir = Path(config.work_dir) if config.work_dir else Path(tempfile.mkdtemp(prefix="optimodel-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.has_vnni: bool | None = None
        self._source_ref: VariantOutcome | None = None
        self._keys: dict[str, tuple[str, dict[str, Any]]] = {}  # variant -> (build key, its material)
        self._previous: dict[str, BuildRecord] = {}  # variant -> the build it reuses
        self._roles: DataRoles | None = None
        self._tuning_ref: Reference | None = None  # the source on the tuning rows

    @contextmanager
    def step(self, name: str, summary: Callable[[], str] | None = None) -> Iterator[None]:
        self.progress.start(name)
        started = time.perf_counter()
        try:
            yield
        except OptimizeError as error:
            self.progress.fail(name, str(error), time.perf_counter() - started)
            raise
        self.progress.finish(name, summary() if summary else "", time.perf_counter() - started)

    # ----------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        config = self.config
        metric = metric_for(config.evaluation.metric, config.task, config.evaluation.top_k)
        from optimodel_jobs.quantize import cpu_has_vnni

        self.has_vnni = cpu_has_vnni()
        with self.step("open inputs and store", lambda: f"{len(probes.targets(config))} locations"):
            probes.probe_all(config)  # seconds, not the whole pipeline, to learn that a URI or its keys are wrong
        with self.step("read datasets"):
            evaluation_spec = config.evaluation
            raw_full = read_table(evaluation_spec.dataset.uri)
            raw_eval, slice_values = split_off_columns(raw_full, evaluation_spec.slices.columns, "evaluation.slices.columns")
            if metric.needs_labels:
                require_label(raw_eval, evaluation_spec.dataset)  # before a torch export takes it for an input
            raw_tuning: RawTable | None = None
            tuning_slices: dict[str, np.ndarray] = {}
            if evaluation_spec.tuning_dataset is not None:
                raw_tuning = read_table(evaluation_spec.tuning_dataset.uri)
                # The tuning rows are judged by the same slices where they have the columns (a search aid only).
                present = [c for c in evaluation_spec.slices.columns if c in raw_tuning.arrays]
                raw_tuning, tuning_slices = split_off_columns(raw_tuning, present, "evaluation.slices.columns")
                if metric.needs_labels:
                    require_label(raw_tuning, evaluation_spec.tuning_dataset)
            calibration_spec = config.calibration or CalibrationSpec()
            raw_calibration = read_table(calibration_spec.dataset.uri) if calibration_spec.dataset else None
            raw_training = read_table(config.training.uri) if config.training else None

        source: Source | None = None

        def source_summary() -> str:
            assert source is not None
            shapes = ", ".join(f"{t.name}{t.shape}:{t.dtype}" for t in source.inputs)
            return f"{config.source.format} -> ONNX, inputs {shapes}"

        with self.step("load source", source_summary):
            example = self._example_inputs(raw_eval, config.evaluation.dataset)
            source = load_source(config.source, self.work_dir, example, config.config_dir, config.evaluation.dataset.uri)
            check_declared_inputs(config.source, source.inputs)
        with self.step("bind datasets", lambda: self._roles_summary()):
            whole = bind(raw_eval, evaluation_spec.dataset, source.inputs, need_labels=metric.needs_labels, slices=slice_values)
            # Each row's role from a hash of the row as bound (inputs, label, slice columns): the same rows get the
            # same roles whatever the file's format or order.
            roles = assign_roles(whole, evaluation_spec.split, tuning_given=evaluation_spec.tuning_dataset is not None)
            evaluation = subset(whole, roles == HELD_OUT, whole.uri)
            if len(evaluation) < evaluation_spec.min_samples:
                raise OptimizeError(
                    errors.DATASET_TOO_SMALL,
                    f"evaluation dataset {whole.uri} has {len(evaluation)} held-out samples (of {len(whole)}: "
                    f"{int((roles == TUNING).sum())} tuning, {int((roles == CALIBRATION).sum())} calibration, by "
                    f"evaluation.split); the gate needs at least minSamples={evaluation_spec.min_samples} held-out samples",
                )
            if raw_tuning is not None and evaluation_spec.tuning_dataset is not None:
                tuning = bind(raw_tuning, evaluation_spec.tuning_dataset, source.inputs, need_labels=metric.needs_labels,
                              slices=tuning_slices)
            else:
                tuning = subset(whole, roles == TUNING, whole.uri)
            if len(tuning) == 0:
                raise OptimizeError(
                    errors.DATASET_TOO_SMALL,
                    f"evaluation dataset {whole.uri}: no row fell to tuning (evaluation.split.tuningFraction "
                    f"{evaluation_spec.split.tuning_fraction} of {len(whole)} rows); raise it or give evaluation.tuningDataset",
                )
            from_evaluation = subset(whole, roles == CALIBRATION, whole.uri) if (roles == CALIBRATION).any() else None
            calibration_data, calibration_source = self._secondary(raw_calibration, calibration_spec.dataset, raw_training,
                                                                   source, from_evaluation)
            training_data, training_source = self._training(raw_training, raw_calibration, calibration_spec.dataset, source,
                                                            from_evaluation)
            self._require_data(calibration_data, training_data)
            self._roles = DataRoles(
                seed=evaluation_spec.split.seed if (roles != HELD_OUT).any() else None,
                method=METHOD if (roles != HELD_OUT).any() else "none: evaluation.tuningDataset tunes, evaluation.dataset is wholly held out",
                held_out_uri=f"{whole.uri}#held_out" if (roles != HELD_OUT).any() else whole.uri,
                tuning_uri=tuning.uri if evaluation_spec.tuning_dataset is not None else f"{whole.uri}#tuning",
                held_out_rows=len(evaluation),
                tuning_rows=len(tuning),
                calibration_rows=0 if calibration_data is None else len(calibration_data),
                calibration_source=calibration_source,
                training_source=training_source,
                evaluation_used_for_training=from_evaluation is not None and "evaluation" in (calibration_source + training_source),
                decided_on={"fallback": "tuning", "auto_choice": "tuning", "gate_verdict": "held_out",
                            "slices": "held_out", "reported_metrics": "held_out"},
            )
        threads_default = threads_for(config.latency.cpu_limit or cpu_limit_from_environment())

        provider = job_provider(config)
        source_pool = next((p.name for p in config.pools if p.execution_provider == provider), None)
        source_outcome = VariantOutcome(
            name="source", kind="fp32-source", parent=None, provider=choose_providers(provider), pool=source_pool,
            path=source.onnx_path, raw_path=source.onnx_path, module=source.module,
        )
        with self.step("evaluate source", lambda: f"{metric.name} = {source_outcome.metric:.4f} on {len(evaluation)} held-out samples"):
            # The source is served too (pools with variant: source, or auto when nothing passed): its artifact is
            # the ONNX export with the graph optimizations of this Job's provider baked in, as a variant's would be.
            level = graphopt.level_for(provider)
            source_outcome.path = graphopt.bake(source.onnx_path, self.work_dir / "source" / "model.onnx", level)
            source_outcome.details = {"graph_optimization": level, "source_format": config.source.format}
            source_outcome.outputs = predict(source_outcome.path, evaluation, threads_default)
            source_outcome.metric = score(metric, source_outcome.outputs, evaluation.labels, source_outcome.outputs, config.task)
            source_outcome.agreement = 1.0
            source_outcome.drop = 0.0
            source_outcome.tuning_drop = 0.0
            source_outcome.size_bytes = source_outcome.path.stat().st_size
            source_outcome.parameters = onnx_parameter_count(source_outcome.path)
            source_outcome.gate = GateVerdict(
                passed=True, deployable=True,
                reason="the source model itself (the gate's reference, not optimized): always deployable",
            )
            source_outcome.tuning_gate = source_outcome.gate
            tuning_outputs = predict(source_outcome.path, tuning, threads_default)
            self._tuning_ref = Reference(tuning, tuning_outputs,
                                         score(metric, tuning_outputs, tuning.labels, tuning_outputs, config.task))
        self._source_ref = source_outcome

        outcomes: dict[str, VariantOutcome] = {"source": source_outcome}
        ordered = order_variants(config.variants)
        with self.step("look up previous builds", lambda: f"{len(self._previous)} of {len(ordered)} variants built before"):
            self._plan_reuse(ordered, source)
        for variant in ordered:
            parent = outcomes[variant.from_ or "source"]
            pool = pool_for(config, variant)
            outcome = VariantOutcome(
                name=variant.name, kind=variant.kind, parent=variant.from_, provider=choose_providers(pool.execution_provider), pool=pool.name
            )
            outcomes[variant.name] = outcome
            started = time.perf_counter()
            self.progress.start(f"variant {variant.name} ({variant.kind})")
            try:
                if parent.path is None:
                    raise OptimizeError(errors.VARIANT_FAILED, f"its parent {parent.name!r} failed: {parent.error}")
                if not self._reuse(variant, outcome, pool):
                    self._build(variant, outcome, parent, pool, source, calibration_data, training_data, metric)
                    self._save_build(variant, outcome, time.perf_counter() - started)
                # On the tuning rows only: what a later choice (a chained fallback, auto's tie-break) may look at.
                self._tune(outcome, metric, threads_default, with_override(config.evaluation, variant.gate))
                outcome.build_seconds = time.perf_counter() - started
                assert outcome.tuning_gate is not None
                verdict = "pass" if outcome.tuning_gate.passed else "fail"
                self.progress.finish(
                    f"variant {variant.name} ({variant.kind})",
                    f"built; on the {len(tuning)} tuning rows it would {verdict}: {outcome.tuning_gate.reason}",
                    outcome.build_seconds,
                )
            except Exception as error:  # noqa: BLE001 - one failed variant must not sink the others
                self._failed(outcome, error, variant.name)
                outcome.build_seconds = time.perf_counter() - started
                self.progress.fail(f"variant {variant.name} ({variant.kind})", outcome.gate.reason if outcome.gate else "", outcome.build_seconds)

        # The gate's verdict: once per variant, on the held-out rows, after every variant (and every fallback
        # round) is settled; nothing built or chosen above has seen these rows.
        judged = [o for name, o in outcomes.items() if name != "source" and o.path is not None]
        variant_specs = {v.name: v for v in config.variants}
        with self.step("gate (held-out)", lambda: self._gate_summary(judged, len(evaluation))):
            for outcome in judged:
                try:
                    self._evaluate(outcome, metric, evaluation, source_outcome, threads_default,
                                   with_override(config.evaluation, variant_specs[outcome.name].gate))
                except Exception as error:  # noqa: BLE001 - one failed variant must not sink the others
                    self._failed(outcome, error, outcome.name)

        built = [o for name, o in outcomes.items() if name != "source" and o.path is not None]
        with self.step("latency", lambda: self._latency_summary(source_outcome, built)):
            self._measure_latency(source_outcome, built, evaluation)
        self._apply_budgets(built)
        if config.latency.measure_memory:
            with self.step("peak memory"):
                biggest = max(config.latency.batch_sizes)
                feed = batch_of(evaluation.inputs, biggest)
                for outcome in [source_outcome, *built]:
                    assert outcome.path is not None
                    outcome.peak_memory_mb = peak_memory_mb(
                        outcome.path, feed, outcome.provider.providers, threads_default, self.work_dir
                    )
        with self.step("drift reference"):
            references = {
                o.name: self._drift(evaluation, o.outputs if o.outputs is not None else source_outcome.outputs)
                for o in [source_outcome, *built]
            }
        variants = [o for name, o in outcomes.items() if name != "source"]
        picks = pool_choices(config, variants, source_outcome)
        result = RunResult(config, metric, source_outcome, variants, {p: pick.variant for p, pick in picks.items()},
                           self.work_dir, choice_reasons={p: pick.reason for p, pick in picks.items()}, data_roles=self._roles)
        with self.step("write artifacts", lambda: f"the source and {len(built)} variants in {config.store}"):
            self._write_artifacts(result, source, [source_outcome, *built], references)
        with self.step("report", lambda: f"{result.report_uri}" + (f" and {result.report_path}" if config.report else "")):
            self._write_report(result)
            self._write_result(result)
        return result

    def _write_report(self, result: RunResult) -> None:
        """The report lands next to the run record in the store (``runs/<name>/<spec-hash[:16]>.html``, the
        plot inside it), and at ``config.report`` when one is named (the CLI's ``--report``)."""
        from optimodel_jobs.report import write_report

        local = write_report(result, self.work_dir / "report" / "report.html")
        try:
            result.report_uri = put_bytes(self.config.store, f"{self._run_prefix()}.html", local.read_bytes())
        except Exception as error:  # noqa: BLE001 - store protocols raise their own errors
            raise OptimizeError(errors.STORE_WRITE_FAILED, f"writing the report to {self.config.store}: {error}") from None
        result.report_path = local
        if self.config.report:
            target = Path(self.config.report)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            shutil.copyfile(local.with_suffix(".png"), target.with_suffix(".png"))
            result.report_path = target

    def _run_prefix(self) -> str:
        return f"runs/{self.config.name}/{self.config.spec_hash()[:16]}"

    # ----------------------------------------------------------------------------------------------

    def _example_inputs(self, raw: RawTable, spec: DatasetSpec) -> dict[str, np.ndarray] | None:
        if self.config.source.format == "onnx":
            return None
        names = self.config.source.input_names or feature_names(raw, spec)
        return example_inputs(raw, spec, names, {i.name: i.dtype for i in self.config.source.inputs or []})

    def _secondary(
        self, raw: RawTable | None, spec: DatasetSpec | None, raw_training: RawTable | None, source: Source,
        from_evaluation: Dataset | None,
    ) -> tuple[Dataset | None, str]:
        """Calibration data and where it came from: the calibration dataset, else the training dataset, else the
        evaluation rows of ``evaluation.split.calibrationFraction`` (only when the spec allows it), else none."""
        if raw is not None and spec is not None:
            return bind(raw, spec, source.inputs, need_labels=False), "calibration dataset"
        if raw_training is not None and self.config.training is not None:
            return bind(raw_training, self.config.training, source.inputs, need_labels=False), "training dataset"
        if from_evaluation is not None:
            return from_evaluation, "evaluation split (calibrationFraction)"
        return None, "none"

    def _training(
        self, raw_training: RawTable | None, raw_calibration: RawTable | None, calibration_spec: DatasetSpec | None,
        source: Source, from_evaluation: Dataset | None,
    ) -> tuple[Dataset | None, str]:
        """Training data (pruning's importance pass and fine-tuning, distillation) and where it came from."""
        if raw_training is not None and self.config.training is not None:
            return bind(raw_training, self.config.training, source.inputs, need_labels=False), "training dataset"
        if raw_calibration is not None and calibration_spec is not None:
            return bind(raw_calibration, calibration_spec, source.inputs, need_labels=False), "calibration dataset"
        if from_evaluation is not None:
            return from_evaluation, "evaluation split (calibrationFraction)"
        return None, "none"

    def _require_data(self, calibration: Dataset | None, training: Dataset | None) -> None:
        """Refuse, before anything is built, a variant that needs data to calibrate or train on and has none:
        evaluation data is never used for that unless evaluation.split.calibrationFraction says so."""
        allow = "or evaluation.split.calibrationFraction > 0 to let that share of the evaluation rows do it (recorded)"
        for variant in self.config.variants:
            quantize = variant.quantize
            if quantize is not None and quantize.mode == "static" and calibration is None and not (
                quantize.calibration is not None and quantize.calibration.dataset is not None
            ):
                raise OptimizeError(
                    errors.CONFIG_INVALID,
                    f"variant {variant.name!r} (static int8) needs calibration data and the config gives none: set "
                    f"quantize.calibration.dataset, calibration.dataset or training, {allow}",
                )
            own = variant.prune.dataset if variant.prune is not None else variant.distill.dataset if variant.distill else None
            if (variant.prune is not None or variant.distill is not None) and own is None and training is None:
                field_name = "prune.dataset" if variant.prune is not None else "distill.dataset"
                raise OptimizeError(
                    errors.CONFIG_INVALID,
                    f"variant {variant.name!r} ({variant.kind}) needs training data and the config gives none: set "
                    f"{field_name}, training or calibration.dataset, {allow}",
                )

    def _roles_summary(self) -> str:
        roles = self._roles
        if roles is None:
            return ""
        text = f"{roles.held_out_rows} held-out, {roles.tuning_rows} tuning rows"
        if roles.evaluation_used_for_training:
            text += f", {roles.calibration_rows} evaluation rows calibrate/train (calibrationFraction)"
        return text

    @staticmethod
    def _gate_summary(judged: list[VariantOutcome], rows: int) -> str:
        passed = sum(1 for o in judged if o.gate is not None and o.gate.passed)
        return f"{passed} of {len(judged)} variants pass on {rows} held-out rows"

    def _failed(self, outcome: VariantOutcome, error: BaseException, name: str) -> None:
        problem = error if isinstance(error, OptimizeError) else OptimizeError(
            errors.VARIANT_FAILED, f"variant {name!r} failed: {type(error).__name__}: {error}"
        )
        outcome.error = problem
        outcome.path = None
        outcome.gate = GateVerdict(passed=False, reason=problem.message, deployable=False)

    # ----------------------------------------------------------------------------------------------
    # Reuse by content (optimodel_jobs/reuse.py)

    def _plan_reuse(self, ordered: list[VariantSpec], source: Source) -> None:
        """Build keys of every variant, and the previous builds to reuse. A prune/distill variant that
        must be built needs its parent's torch module, so that parent is built too, not reused."""
        from optimodel_jobs.reuse import ContentDigests, build_key, build_material, chain_of

        digests, versions = ContentDigests(), library_versions()
        for variant in ordered:
            try:
                material = build_material(self.config, variant, source_sha256=source.sha256, has_vnni=bool(self.has_vnni),
                                          versions=versions, digest=digests)
            except (OSError, ValueError):
                continue  # a dataset that cannot be read: the build itself will say so
            # The user's own factory code (source.factory, a chain's studentFactory) decides the module too.
            factories = [self.config.source.factory if self.config.source.format != "onnx" else None] + [
                step.distill.student_factory for step in chain_of(self.config, variant) if step.distill is not None
            ]
            if any(factories):
                folders = source.code_dirs or code_dirs(self.config.source, self.config.config_dir, self.work_dir)
                material["factory_code"] = {f: factory_digest(f, folders) for f in factories if f}
            key = build_key(material)
            self._keys[variant.name] = (key, material)
            try:
                self._previous[variant.name] = read_build_record(build_record_uri(self.config.store, key))
            except RunRecordError:
                pass
            except Exception:  # noqa: BLE001 - an unreachable store only costs the reuse
                pass
        by_name = {v.name: v for v in ordered}

        def needs_module(name: str) -> None:
            if name not in self._previous:
                return
            del self._previous[name]
            parent = by_name[name]
            if (parent.prune is not None or parent.distill is not None) and parent.from_:
                needs_module(parent.from_)

        for variant in ordered:
            if variant.name not in self._previous and (variant.prune or variant.distill) and variant.from_:
                needs_module(variant.from_)

    def _reuse(self, variant: VariantSpec, outcome: VariantOutcome, pool: PoolSpec) -> bool:
        """Fetch (verified) the model of a previous build with the same key; False when there is none."""
        record = self._previous.get(variant.name)
        if record is None:
            return False
        key, _ = self._keys[variant.name]
        work = self._variant_dir(variant.name)
        try:
            raw = fetch_blob_verified(self.config.store, record.blob, record.sha256, record.size_bytes, work / "reused",
                                      named_by=build_record_uri(self.config.store, key))
        except ArtifactIntegrityError:
            return False  # a damaged or missing blob: build again (and record the new build)
        level = graphopt.level_for(pool.execution_provider)
        outcome.raw_path, outcome.path = raw, graphopt.bake(raw, work / "model.onnx", level)
        outcome.details = {**record.details, "graph_optimization": level}
        outcome.details["build"] = {"key": key, "reused": True, "record_uri": build_record_uri(self.config.store, key),
                                    "build_seconds": record.build_seconds}
        return True

    def _save_build(self, variant: VariantSpec, outcome: VariantOutcome, seconds: float) -> None:
        """Record a fresh build under its key (blob first, then the record, each written atomically)."""
        if variant.name not in self._keys or outcome.raw_path is None:
            return
        key, material = self._keys[variant.name]
        info: dict[str, Any] = {"key": key, "reused": False, "build_seconds": round(seconds, 3)}
        try:
            blob, digest, size = put_blob(self.config.store, outcome.raw_path)
            details = {k: v for k, v in _jsonable(outcome.details).items() if k not in ("build", "graph_optimization")}
            record = BuildRecord(key=key, variant=variant.name, kind=variant.kind, blob=blob, sha256=digest, size_bytes=size,
                                 details=details, build_seconds=round(seconds, 3), material=_jsonable(material))
            info["record_uri"] = put_bytes(self.config.store, f"{BUILDS_PREFIX}/{key}.json", record.to_json())
        except Exception as error:  # noqa: BLE001 - failing to save a build only costs a later reuse
            info["save_error"] = f"{type(error).__name__}: {error}"
        outcome.details["build"] = info

    def _variant_dir(self, name: str) -> Path:
        path = self.work_dir / "variants" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _build(
        self, variant: VariantSpec, outcome: VariantOutcome, parent: VariantOutcome, pool: PoolSpec, source: Source,
        calibration: Dataset | None, training: Dataset | None, metric: Metric,
    ) -> None:
        """Build one variant. The held-out rows are not passed in: no build step calibrates, trains, prunes or
        judges on them (the fallback judges on the tuning rows, :meth:`_judge` with ``self._tuning_ref``)."""
        work = self._variant_dir(variant.name)
        level = graphopt.level_for(pool.execution_provider)
        assert parent.raw_path is not None
        start_from = parent.raw_path
        threads = threads_for(pool.cpu_limit or self.config.latency.cpu_limit or cpu_limit_from_environment())
        if variant.quantize is not None and variant.quantize.mode == "dynamic":
            from optimodel_jobs.quantize import quantize_dynamic

            raw = work / "dynamic.onnx"
            outcome.details = quantize_dynamic(start_from, raw, variant.quantize, bool(self.has_vnni))
            outcome.raw_path, outcome.path = raw, graphopt.bake(raw, work / "model.onnx", level)
        elif variant.quantize is not None:
            from optimodel_jobs.quantize import quantize_static_with_fallback

            calibration_spec = variant.quantize.calibration or self.config.calibration or CalibrationSpec()
            data = calibration
            if variant.quantize.calibration is not None and variant.quantize.calibration.dataset is not None:
                data = bind(read_table(variant.quantize.calibration.dataset.uri), variant.quantize.calibration.dataset,
                            source.inputs, need_labels=False)

            assert data is not None  # _require_data refused the config otherwise

            def judge(candidate: Path) -> tuple[bool, str, float]:
                # The fallback's search looks at the tuning rows only; the held-out verdict comes after every round.
                assert self._tuning_ref is not None
                found = self._judge(candidate, metric, self._tuning_ref, threads, with_override(self.config.evaluation, variant.gate))
                return found.verdict.passed, found.verdict.reason, found.metric

            parent_gate = parent.tuning_gate or parent.gate
            outcome_fb = quantize_static_with_fallback(
                start_from, work, variant.quantize, calibration_spec, data, bool(self.has_vnni), threads,
                finish=lambda qdq, out: graphopt.bake(qdq, out, level), judge=judge,
                parent_passed=parent_gate is None or parent_gate.passed,
            )
            outcome.details = outcome_fb.details
            outcome.details["fallback"]["judged_on"] = f"tuning rows ({len(self._tuning_ref.data) if self._tuning_ref else 0})"
            outcome.raw_path = work / f"qdq-{outcome_fb.details['fallback']['rounds']}.onnx"
            outcome.path = outcome_fb.path
        elif variant.convert is not None:
            from optimodel_jobs.fp16 import convert

            raw = work / "fp16.onnx"
            outcome.details = convert(start_from, raw, variant.convert)
            outcome.raw_path, outcome.path = raw, graphopt.bake(raw, work / "model.onnx", "basic")
        elif variant.prune is not None or variant.distill is not None:
            self._build_torch(variant, outcome, parent, source, training, work, level)
        else:
            outcome.raw_path = start_from
            outcome.path = graphopt.bake(start_from, work / "model.onnx", level)
            outcome.details = {"graph_optimization": level}
        outcome.details.setdefault("graph_optimization", level)

    def _build_torch(
        self, variant: VariantSpec, outcome: VariantOutcome, parent: VariantOutcome, source: Source,
        training: Dataset | None, work: Path, level: graphopt.Level,
    ) -> None:
        import torch

        from optimodel_jobs.distill import distill, teacher_outputs
        from optimodel_jobs.onnx_export import export_module
        from optimodel_jobs.prune import prune_structured

        if parent.module is None or not isinstance(parent.module, torch.nn.Module):
            raise OptimizeError(
                errors.TORCH_SOURCE_REQUIRED,
                f"variant {variant.name!r} ({variant.kind}) needs a torch module to start from; "
                f"{'the source is ' + self.config.source.format if parent.name == 'source' else parent.name + ' has none'}"
                " (give the source as format torch/state_dict/exported_program, or chain from a pruned/distilled variant)",
            )
        input_names = [t.name for t in source.inputs]
        own = (variant.prune.dataset if variant.prune is not None else variant.distill.dataset if variant.distill else None)
        if own is not None:
            training = bind(read_table(own.uri), own, source.inputs, need_labels=False)
        assert training is not None  # _require_data refused the config otherwise
        inputs = [training.inputs[n] for n in input_names]
        torch.manual_seed(self.config.seed)
        if variant.prune is not None:
            spec = variant.prune
            probe = [x[:512] for x in inputs]
            self._eager_module(parent, [x[:64] for x in probe])
            teacher = parent.module
            student = copy.deepcopy(parent.module)

            def run_batches() -> None:
                for start in range(0, len(probe[0]), 64):
                    student(*[torch.from_numpy(np.ascontiguousarray(x[start : start + 64])) for x in probe])

            try:
                details = prune_structured(student, spec.amount, spec.heads_amount or 0.0, run_batches)
            except ValueError as error:
                raise OptimizeError(errors.VARIANT_FAILED, f"cannot prune {parent.name}: {error}") from None
            # Recorded, not obeyed: the structure decides the unit, importance is measured on data.
            details["requested"] = {"granularity": spec.granularity, "norm": spec.norm,
                                    "note": "units follow the model's structure; importance = activation x outgoing weight norm"}
            if spec.fine_tune_epochs:
                targets = teacher_outputs(teacher, inputs)
                details["fine_tune"] = distill(
                    student, inputs, targets, task=self.config.task, epochs=spec.fine_tune_epochs, lr=spec.lr,
                    temperature=spec.temperature, seed=self.config.seed,
                )
        else:
            assert variant.distill is not None
            spec_d = variant.distill
            teacher = parent.module
            teacher_name = parent.name
            if spec_d.teacher is not None:
                suffix = {"state_dict": ".pt", "torch": ".ts", "exported_program": ".pt2", "onnx": ".onnx"}[spec_d.teacher.format]
                if spec_d.teacher.format == "onnx":
                    raise OptimizeError(errors.TORCH_SOURCE_REQUIRED, "distill.teacher must be a torch model")
                local = fetch(spec_d.teacher.uri, work / f"teacher{suffix}", "distill.teacher")
                teacher = load_torch_module(spec_d.teacher, local, code_dirs(spec_d.teacher, self.config.config_dir, work))
                if spec_d.teacher.format == "exported_program":
                    teacher = teacher.module()
                teacher_name = spec_d.teacher.uri
            factory_name = spec_d.student_factory or self.config.source.factory
            if factory_name is None:
                raise OptimizeError(
                    errors.CONFIG_INVALID,
                    f"variant {variant.name!r}: distill.studentFactory is needed when the source has no factory",
                )
            factory = import_factory(
                factory_name, "distill.studentFactory" if spec_d.student_factory else "source.factory",
                source.code_dirs or code_dirs(self.config.source, self.config.config_dir, work),
            )
            kwargs = {**(self.config.source.factory_kwargs if spec_d.student_factory is None else {}), **spec_d.student}
            try:
                student = factory(**kwargs)
            except TypeError as error:
                raise OptimizeError(errors.CONFIG_INVALID, f"variant {variant.name!r}: student {kwargs} refused: {error}") from None
            targets = teacher_outputs(teacher, inputs)
            details = {"teacher": teacher_name, "student": kwargs}
            details["training"] = distill(
                student, inputs, targets, task=self.config.task, epochs=spec_d.epochs, lr=spec_d.learning_rate,
                temperature=spec_d.temperature, batch_size=spec_d.batch_size, labels=training.labels,
                alpha=spec_d.alpha, seed=self.config.seed,
            )
        example = {n: training.inputs[n][:2] for n in input_names}  # the export traces with two training rows
        raw = export_module(student, example, [t.name for t in source.outputs], work / "exported.onnx")
        outcome.module = student
        outcome.raw_path, outcome.path = raw, graphopt.bake(raw, work / "model.onnx", level)
        outcome.details = details

    def _eager_module(self, parent: VariantOutcome, sample: list[np.ndarray]) -> None:
        """A TorchScript parent (the source given as ``format: torch``) cannot be pruned or fine-tuned in place:
        swap in an eager module rebuilt from it, checked to give the same outputs on ``sample``."""
        import torch

        from optimodel_jobs.torchscript import RebuildError, is_torchscript, rebuild_eager

        if not is_torchscript(parent.module):
            return
        try:
            parent.module = rebuild_eager(parent.module, [torch.from_numpy(np.ascontiguousarray(x)) for x in sample])
        except RebuildError as error:
            raise OptimizeError(
                errors.VARIANT_FAILED,
                f"cannot prune {parent.name}: the TorchScript model cannot be rebuilt as an eager module the pruner "
                f"understands: {error}",
            ) from None

    def _judge(self, path: Path, metric: Metric, reference: Reference, threads: int, spec: EvaluationSpec) -> Judged:
        """One model on one set of rows against the source on the same rows: metric, agreement, drop, slices, verdict."""
        data = reference.data
        outputs = predict(path, data, threads)
        finite = bool(np.all(np.isfinite(outputs)))
        task = self.config.task
        value = score(metric, outputs, data.labels, reference.outputs, task) if finite else float("nan")
        agreed = agreement(outputs, reference.outputs, task) if finite else 0.0
        higher = metric.higher_is_better if spec.higher_is_better is None else spec.higher_is_better
        drop = metric_drop(reference.metric, value, higher, spec.max_drop_mode) if finite else None
        slices = slice_check(spec.slices, metric, task, higher, outputs, reference.outputs, data.labels, data.slices) if finite else None
        verdict = decide(spec, metric, reference.metric, value, agreed, finite, slices)
        return Judged(outputs, value, agreed, drop, verdict)

    def _tune(self, outcome: VariantOutcome, metric: Metric, threads: int, spec: EvaluationSpec) -> None:
        """The variant on the tuning rows: recorded, and what chained fallbacks and auto's tie-break look at."""
        assert outcome.path is not None and self._tuning_ref is not None
        found = self._judge(outcome.path, metric, self._tuning_ref, threads, spec)
        outcome.tuning_gate, outcome.tuning_drop = found.verdict, found.drop
        outcome.details["tuning"] = {"rows": len(self._tuning_ref.data), "metric": found.metric, "drop": found.drop,
                                     "passed": found.verdict.passed}

    def _evaluate(
        self, outcome: VariantOutcome, metric: Metric, evaluation: Dataset, source_outcome: VariantOutcome, threads: int,
        spec: EvaluationSpec,
    ) -> None:
        """The gate's verdict on the held-out rows (``evaluation``): once per variant, after every choice."""
        assert outcome.path is not None and source_outcome.outputs is not None and source_outcome.metric is not None
        found = self._judge(outcome.path, metric, Reference(evaluation, source_outcome.outputs, source_outcome.metric), threads, spec)
        outcome.outputs = found.outputs
        outcome.metric = found.metric
        outcome.agreement = found.agreement
        outcome.drop = found.drop
        outcome.gate = found.verdict
        outcome.size_bytes = outcome.path.stat().st_size
        outcome.parameters = onnx_parameter_count(outcome.path)

    def _measure_latency(self, source_outcome: VariantOutcome, built: list[VariantOutcome], evaluation: Dataset) -> None:
        spec = self.config.latency
        groups: dict[tuple[str, ...], list[VariantOutcome]] = {}
        for outcome in built:
            groups.setdefault(tuple(outcome.provider.providers), []).append(outcome)
        own = tuple(source_outcome.provider.providers)  # the source is measured on this Job's provider
        groups.setdefault(own, [])
        pools = {p.name: p for p in self.config.pools}
        for providers, members in groups.items():
            pool = pools.get((members[0].pool if members else source_outcome.pool) or "")
            limit = (pool.cpu_limit if pool else None) or spec.cpu_limit or cpu_limit_from_environment()
            models = {"source": source_outcome.path, **{o.name: o.path for o in members}}
            measured = measure_interleaved(
                {k: v for k, v in models.items() if v is not None}, evaluation.inputs, spec.batch_sizes,
                list(providers), threads_for(limit), spec.iterations, spec.warmup, spec.rounds,
            )
            for outcome in members:
                outcome.latency = measured[outcome.name]
                outcome.details["latency_threads"] = threads_for(limit)
                outcome.details["latency_source"] = {str(b): s.as_dict() for b, s in measured["source"].items()}
            if providers == own:
                source_outcome.latency = measured["source"]

    def _apply_budgets(self, built: list[VariantOutcome]) -> None:
        """Latency, speed-up and size limits of the gate, now that they are measured."""
        batch = min(self.config.latency.batch_sizes)
        variants = {v.name: v for v in self.config.variants}
        assert self._source_ref is not None
        base = self._source_ref.latency.get(batch)
        for outcome in built:
            if outcome.gate is None:
                continue
            budgets = with_override(self.config.evaluation, variants[outcome.name].gate)
            stats = outcome.latency.get(batch)
            source_stats = outcome.details.get("latency_source", {}).get(str(batch))
            source_p50 = source_stats["p50_ms"] if source_stats else (base.p50_ms if base else None)
            speedup = None if stats is None or source_p50 is None else source_p50 / stats.p50_ms
            outcome.gate = apply_budgets(outcome.gate, budgets, stats.p99_ms if stats else None, speedup, outcome.size_bytes)

    def _latency_summary(self, source_outcome: VariantOutcome, built: list[VariantOutcome]) -> str:
        batch = min(self.config.latency.batch_sizes)
        if batch not in source_outcome.latency:
            return ""
        base = source_outcome.latency[batch].p50_ms
        parts = [f"source {base:.3f} ms"] + [
            f"{o.name} {base / o.latency[batch].p50_ms:.2f}x" for o in built if batch in o.latency
        ]
        return f"p50 @ batch {batch}: " + ", ".join(parts)

    def _drift(self, evaluation: Dataset, outputs: np.ndarray | None) -> DriftReference:
        from optimodel_jobs.drift import reference_profile

        assert outputs is not None
        return reference_profile(evaluation.inputs, outputs, self.config.task)

    def _write_artifacts(
        self, result: RunResult, source: Source, built: list[VariantOutcome], references: dict[str, DriftReference]
    ) -> None:
        import onnx

        versions = library_versions()
        spec_hash = self.config.spec_hash()
        for outcome in built:
            assert outcome.path is not None and outcome.gate is not None
            # Provenance travels inside the ONNX file too (metadata_props), not only in the manifest.
            model = onnx.load(str(outcome.path))
            for key, value in {
                "optimodel.variant": outcome.name, "optimodel.kind": outcome.kind,
                "optimodel.source_sha256": source.sha256, "optimodel.spec_hash": spec_hash,
                "optimodel.deployable": str(outcome.gate.deployable).lower(),
            }.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            final = outcome.path.with_name("artifact.onnx")
            onnx.save(model, str(final))
            outcome.path = final
            outcome.size_bytes = final.stat().st_size
            inputs, outputs = _tensor_specs(final)
            manifest = ArtifactManifest(
                name=outcome.name,
                inputs=inputs,
                outputs=outputs,
                task=self.config.task,
                metrics={
                    "metric": result.metric.name,
                    "source": result.source.metric,
                    "variant": outcome.metric,
                    "drop": outcome.drop,
                    "max_drop_mode": self.config.evaluation.max_drop_mode,
                    # metric/drop/agreement above are on the held-out rows; this one is what auto's tie-break saw.
                    "tuning_drop": outcome.tuning_drop,
                    "evaluated_on": "held_out",
                    "agreement": outcome.agreement,
                    "latency": {str(b): s.as_dict() for b, s in outcome.latency.items()},
                    # The source as timed in the same interleaved rounds as this variant: the pairs `auto` compares.
                    "source_latency": outcome.details.get("latency_source")
                    or {str(b): s.as_dict() for b, s in result.source.latency.items()},
                    "parameters": outcome.parameters,
                    "source_parameters": result.source.parameters,
                    "peak_memory_mb": outcome.peak_memory_mb,
                    "provider_used": outcome.provider.effective,
                    "provider_fallback": outcome.provider.fallback,
                },
                gate=outcome.gate,
                lineage=Lineage(
                    source_sha256=source.sha256, spec_hash=spec_hash, parent_variant=outcome.parent,
                    library_versions=versions, seed=self.config.seed,
                ),
                execution_provider=outcome.provider.providers[0] if outcome.provider.fallback is None
                else PROVIDER_NAMES[outcome.provider.requested],
                drift_reference=references.get(outcome.name),
                data_roles=result.data_roles,
                details={"kind": outcome.kind, "pool": outcome.pool, **_jsonable(outcome.details)},
            )
            try:
                # An unchanged variant (same model, gate and lineage) keeps the manifest it has (optimodel_jobs.reuse).
                outcome.manifest_uri = write_artifact_once(self.config.store, final, manifest)
            except Exception as error:  # noqa: BLE001 - store protocols raise their own errors
                raise OptimizeError(errors.STORE_WRITE_FAILED, f"writing {outcome.name} to {self.config.store}: {error}") from None

    def _write_result(self, result: RunResult) -> None:
        # Validated against the contract the operator reads (optimodel_contracts.runrecord.RunRecord).
        # The record names itself: its URI is known before it is written.
        result.result_uri = f"{self.config.store.rstrip('/')}/{self._run_prefix()}.json"
        payload = RunRecord.model_validate(_jsonable(result.as_dict())).to_json()
        (self.work_dir / "result.json").write_bytes(payload)
        try:
            put_bytes(self.config.store, f"{self._run_prefix()}.json", payload)
        except Exception as error:  # noqa: BLE001
            raise OptimizeError(errors.STORE_WRITE_FAILED, f"writing the run result to {self.config.store}: {error}") from None


PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from optimodel_jobs.source import tensor_specs

    return tensor_specs(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def run(config: OptimizeConfig, progress: Progress | None = None) -> RunResult:
    """Run the pipeline. A working folder it made is removed when the run fails (a refusal, a crash, Ctrl-C);
    after a success it holds the files ``result`` points at, and :func:`cleanup` removes it."""
    pipeline = Pipeline(config, progress)
    try:
        return pipeline.run()
    except BaseException:
        if pipeline.temporary:
            shutil.rmtree(pipeline.work_dir, ignore_errors=True)
        raise


def cleanup(result: RunResult) -> None:
    """Remove the run's working folder if the run made it (not a ``workDir`` the config named)."""
    if not result.config.work_dir:
        shutil.rmtree(result.work_dir, ignore_errors=True)
