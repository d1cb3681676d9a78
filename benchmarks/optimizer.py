#!/usr/bin/env python
"""Optimizer benchmark, like for like: every variant side by side with the fp32 source and the
hand-written baseline, judged on held-out rows that no choice looked at.

For the MLP (digits), the CNN (digits as 1x32x32 images) and the BERT-like encoder (4 layers, hidden
256, sequence 64), all made and trained locally by ``optimodel_jobs.zoo`` (cached under
~/.cache/optimodel/models), this script, once per ``--seeds`` value:

1. splits the zoo model's evaluation rows by the seed into a tuning part (30%) and a held-out part
   (70%), and gives them to the pipeline as ``evaluation.tuningDataset`` and ``evaluation.dataset``:
   searches and choices may look at the tuning rows, the verdict and every figure here come from the
   held-out rows only;
2. runs the real optimization pipeline (``optimodel_jobs.pipeline.run``, ``seed`` = the seed) with the
   variants below. Students and fine-tuning learn from the source model itself on the source's own
   training rows (the same rows and count the source was trained on), nothing larger and nothing more;
3. builds the baseline a user would write by hand: ONNX Runtime ``quantize_dynamic`` with its
   defaults on the source's plain ONNX export, no pre-processing;
4. evaluates source, baseline and every variant with the same code on the held-out rows (accuracy and
   the worst per-class drop against the source) and measures their latency interleaved in one run
   (same process, same threads, rotating order, warm-up excluded) at batch 1 and 8;
5. prints a table per seed and, last, ``RESULT {json}``.

Which variant a headline reports is decided by the pipeline, never by this script's own timings: the
``chosen_vs_handwritten`` figures are for the variant the pipeline's ``auto`` pool chose by itself
(``RunResult.chosen``); a per-kind key (e.g. ``bert_int8`` among int8-dynamic and int8-static) is the
pipeline's ``auto`` choice among that kind's variants, or the first one listed when it chose none. The
one best-of-N figure (the fastest of all variants by this script's timing) carries ``best_of_n`` in
its name and its N.

Speed-up = p50(fp32 source) / p50(variant) at batch 1; accuracy drop is relative to the source
(positive = worse); ``worst_class_drop`` is the largest drop of per-class accuracy against the source,
in absolute points (0.03 = 3 points), over classes with at least 30 held-out rows (the gate's default
minimum slice size). With several seeds each figure in RESULT is the median over seeds, ``spread``
lists every seed's value and ``targets_met`` says, per target, on how many seeds it was met.
``--quick`` times fewer iterations and skips memory (the recipes are the same as in the full run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimodel_contracts.jobconfig import DatasetSpec, parse_config
from optimodel_jobs.datasets import Dataset, bind, read_table
from optimodel_jobs.gate import METRICS, metric_drop
from optimodel_jobs.latency import measure_interleaved
from optimodel_jobs.pipeline import RunResult, pool_choices, run
from optimodel_jobs.quantize import cpu_has_vnni
from optimodel_jobs.runtime import cpu_limit_from_environment, predict, threads_for
from optimodel_jobs.zoo import build

TUNING_FRACTION = 0.3
MIN_CLASS_ROWS = 30  # the gate's default slices.minSize: smaller classes are too noisy to judge

# The targets this benchmark is held to, all on held-out rows: (minimum speed-up, maximum relative drop).
# chosen_vs_handwritten: the pipeline's own choice against the baseline's p50, and the choice passed its gate.
TARGETS: dict[str, tuple[float, float | None]] = {
    "bert_int8": (1.3, 0.01),
    "bert_distilled": (2.5, 0.02),
    "bert_pruned": (1.5, 0.01),
    "chosen_vs_handwritten": (1.5, None),
    "mlp_int8": (2.5, 0.01),
    "cnn_static_int8": (1.6, 0.01),
}

# Per-kind headlines: the candidates, in the order whose first is the fallback when ``auto`` picks none.
HEADLINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bert_int8": ("bert", ("int8-dynamic", "int8-static")),
    "bert_distilled": ("bert", ("distilled",)),
    "bert_pruned": ("bert", ("pruned",)),
    "mlp_int8": ("mlp", ("int8-dynamic", "int8-static")),
    "cnn_static_int8": ("cnn", ("int8-static", "int8-static-entropy")),
}


def variants_for(model: str) -> list[dict[str, Any]]:
    """The variants per model. The same recipes in --quick and full runs: a quick run checks the recipe
    that the full run reports, not an easier one."""
    if model == "mlp":
        return [
            {"name": "int8-dynamic", "quantize": {"mode": "dynamic"}},
            {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "minmax", "samples": 256}}},
            {"name": "pruned", "prune": {"amount": 0.5, "fineTuneEpochs": 8, "lr": 5e-4}},
            {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}},
        ]
    if model == "cnn":
        return [
            {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "percentile", "samples": 128}}},
            {"name": "int8-static-entropy", "quantize": {"mode": "static", "calibration": {"method": "entropy", "samples": 128}}},
            {"name": "pruned", "prune": {"amount": 0.4, "fineTuneEpochs": 8, "lr": 1e-3}},
            {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "static", "calibration": {"method": "percentile", "samples": 128}}},
        ]
    return [
        {"name": "fp32-optimized"},
        {"name": "int8-dynamic", "quantize": {"mode": "dynamic"}},
        {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "minmax", "samples": 256}}},
        {"name": "pruned", "prune": {"amount": 0.5, "headsAmount": 0.5, "fineTuneEpochs": 3, "lr": 5e-4}},
        {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}},
        {
            "name": "distilled",
            "distill": {
                # No teacher and no dataset: the teacher is the source itself and the data is the job's
                # training data, which is the source's own training set (zoo "bert": 6,000 rows).
                "student": {"layers": 2, "hidden": 128, "heads": 2, "ffn": 512},
                "epochs": 12,
                "learningRate": 2e-3,
                "temperature": 2.0,
                "alpha": 1.0,  # the soft (teacher) loss only: the student learns the source, not the labels
                "batchSize": 32,
            },
            "gate": {"maxDrop": 0.02},  # the target for distillation: <= 2% relative
        },
        {"name": "distilled-int8", "from": "distilled", "quantize": {"mode": "dynamic"}, "gate": {"maxDrop": 0.02}},
    ]


ZOO = {"mlp": "digits-mlp", "cnn": "cnn", "bert": "bert"}


def with_parents(variants: list[dict[str, Any]], wanted: set[str]) -> list[dict[str, Any]]:
    """The variants named in ``wanted`` and every variant a chain of theirs starts from, in config order."""
    by_name = {v["name"]: v for v in variants}
    unknown = sorted(wanted - set(by_name))
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(by_name)}")
    keep = set()
    for name in wanted:
        while name is not None and name not in keep:
            keep.add(name)
            name = by_name[name].get("from")
    return [v for v in variants if v["name"] in keep]


def split_rows(evaluation: Path, seed: int, directory: Path) -> tuple[Path, Path]:
    """Deterministically (by ``seed``) divide an evaluation ``.npz`` into tuning and held-out files."""
    with np.load(evaluation, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    count = len(next(iter(arrays.values())))
    order = np.random.default_rng(seed).permutation(count)
    cut = int(round(TUNING_FRACTION * count))
    parts = {"tuning": np.sort(order[:cut]), "held-out": np.sort(order[cut:])}
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, index in parts.items():
        paths[part] = directory / f"{part}.npz"
        np.savez(paths[part], **{key: value[index] for key, value in arrays.items()})
    return paths["tuning"], paths["held-out"]


def pipeline_config(
    model: str, work: Path, seed: int, tuning: Path, held_out: Path, wanted: set[str] | None, quick: bool
) -> dict[str, Any]:
    zoo = build(ZOO[model])
    variants = variants_for(model)
    return {
        "name": f"bench-{model}",
        "seed": seed,
        "source": zoo.source_config(),
        "evaluation": {
            "dataset": str(held_out),
            "tuningDataset": str(tuning),
            "metric": "accuracy",
            "maxDrop": 0.01,
            "maxDropMode": "relative",
        },
        "calibration": {"dataset": str(zoo.calibration), "samples": 256},
        # The source's own training rows: fine-tuning and distillation see exactly what the source saw.
        "training": str(zoo.train),
        "variants": variants if wanted is None else with_parents(variants, wanted),
        # Five rounds: the fewest with which ``auto`` judges "faster beyond noise" by its interval.
        "latency": {"batchSizes": [1, 8], "iterations": 40, "warmup": 3, "rounds": 5, "measureMemory": not quick},
        "pools": [{"name": "cpu"}],
        "store": str(work / "store"),
        "workDir": str(work / model),
    }


def handwritten_baseline(source: Path, target: Path) -> Path:
    """What a user would write: quantize_dynamic with its defaults, no pre-processing."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(source), str(target))
    return target


def _inputs(result: RunResult) -> Any:
    from optimodel_jobs.source import tensor_specs

    assert result.source.path is not None
    return tensor_specs(result.source.path)[0]


def load_rows(path: Path, result: RunResult) -> Dataset:
    return bind(read_table(str(path)), DatasetSpec(uri=str(path)), _inputs(result), need_labels=True)


def worst_class_drop(
    source_classes: np.ndarray, variant_classes: np.ndarray, labels: np.ndarray, min_rows: int = MIN_CLASS_ROWS
) -> tuple[float, int | None, int]:
    """(largest per-class accuracy drop against the source in absolute points, that class, its rows) over the
    classes with at least ``min_rows`` rows; (nan, None, 0) when no class has that many."""
    worst: tuple[float, int | None, int] = (float("nan"), None, 0)
    for cls in np.unique(labels):
        mask = labels == cls
        rows = int(mask.sum())
        if rows < min_rows:
            continue
        drop = float((source_classes[mask] == cls).mean() - (variant_classes[mask] == cls).mean())
        if worst[1] is None or drop > worst[0]:
            worst = (drop, int(cls), rows)
    return worst


@dataclass
class Scores:
    accuracy: float
    classes: np.ndarray = field(repr=False)


def score(model: Path, rows: Dataset, threads: int) -> Scores:
    outputs = predict(model, rows, threads)
    return Scores(METRICS["accuracy"].compute(outputs, rows.labels, outputs), np.argmax(outputs, axis=1))


def side_by_side(models: dict[str, Path], rows: Dataset, iterations: int, threads: int) -> dict[str, dict[int, Any]]:
    return measure_interleaved(
        models, rows.inputs, [1, 8], ["CPUExecutionProvider"], threads, iterations, warmup=10,
        rounds=max(10, iterations // 10),
    )


def rows_for(
    model: str, result: RunResult, timings: dict[str, dict[int, Any]], held: dict[str, Scores],
    tuned: dict[str, Scores], labels: np.ndarray, sizes: dict[str, int | None],
) -> list[dict[str, Any]]:
    source = held["source"]
    base = timings["source"]
    outcomes = {v.name: v for v in result.variants}
    rows = []
    for name in ["source", "handwritten", *outcomes]:
        outcome = outcomes.get(name)
        kind = {"source": "fp32-source", "handwritten": "quantize_dynamic defaults"}.get(name) or outcome.kind  # type: ignore[union-attr]
        if name not in timings or name not in held:
            rows.append({"model": model, "variant": name, "kind": kind, "error": True})
            continue
        passed = None if outcome is None or outcome.gate is None else outcome.gate.passed
        drop, cls, cls_rows = worst_class_drop(source.classes, held[name].classes, labels)
        t1, t8 = timings[name][1], timings[name][8]
        rows.append({
            "model": model,
            "variant": name,
            "kind": kind,
            "accuracy": held[name].accuracy,
            "acc_drop_rel": metric_drop(source.accuracy, held[name].accuracy, True, "relative"),
            # The same figure on the tuning rows: what a recipe may be chosen on.
            "tuning_acc_drop_rel": metric_drop(tuned["source"].accuracy, tuned[name].accuracy, True, "relative"),
            "pipeline_metric": None if outcome is None else outcome.metric,
            "worst_class_drop": drop,
            "worst_class": cls,
            "worst_class_rows": cls_rows,
            "gate": {None: "-", True: "PASS", False: "FAIL"}[passed],
            "p50_ms": t1.p50_ms,
            "p99_ms": t1.p99_ms,
            "speedup_p50": base[1].p50_ms / t1.p50_ms,
            "speedup_p99": base[1].p99_ms / t1.p99_ms,
            "speedup_p50_b8": base[8].p50_ms / t8.p50_ms,
            "throughput_b8": t8.throughput_per_s,
            "size_ratio": (sizes.get(name) or 0) / (sizes.get("source") or 1),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'model':5} {'variant':20} {'kind':26} {'acc':>7} {'drop%':>7} {'tune%':>7} {'cls pt':>6} {'gate':>5} "
              f"{'p50ms':>8} {'p99ms':>8} {'x p50':>6} {'x p99':>6} {'x b8':>6} {'size':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("error"):
            print(f"{r['model']:5} {r['variant']:20} {r['kind']:26} (failed to build)")
            continue
        worst = "" if np.isnan(r["worst_class_drop"]) else f"{100 * r['worst_class_drop']:+.1f}"
        print(
            f"{r['model']:5} {r['variant']:20} {r['kind']:26} {r['accuracy']:7.4f} {100 * r['acc_drop_rel']:+7.2f} "
            f"{100 * r['tuning_acc_drop_rel']:+7.2f} {worst:>6} {r['gate']:>5} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
            f"{r['speedup_p50']:6.2f} {r['speedup_p99']:6.2f} {r['speedup_p50_b8']:6.2f} {r['size_ratio']:6.2f}"
        )


def pipeline_pick(result: RunResult, names: tuple[str, ...]) -> tuple[str, str]:
    """The variant among ``names`` that the pipeline's ``auto`` rule picks from the pipeline's own figures
    (its latency record, its gate); ``names[0]`` when it picks none (none passed, or none faster than the
    source beyond noise). Returns (name, why)."""
    outcomes = [v for v in result.variants if v.name in names and v.error is None]
    pick = pool_choices(result.config, outcomes, result.source)[result.config.pools[0].name]
    if pick.variant in names:
        return pick.variant, pick.reason  # type: ignore[return-value]
    return names[0], f"the pipeline picked none of {', '.join(names)} ({pick.reason}); reported: the first listed"


def row_of(rows: list[dict[str, Any]], model: str, name: str) -> dict[str, Any] | None:
    found = [r for r in rows if r["model"] == model and r["variant"] == name and not r.get("error")]
    return found[0] if found else None


def headline_figures(rows: list[dict[str, Any]], results: dict[str, RunResult]) -> dict[str, Any]:
    """This seed's RESULT keys (all on held-out rows)."""
    figures: dict[str, Any] = {}

    def put(prefix: str, row: dict[str, Any] | None, why: str | None = None) -> None:
        figures[f"{prefix}_speedup"] = None if row is None else round(row["speedup_p50"], 3)
        figures[f"{prefix}_acc_drop_rel"] = None if row is None else round(row["acc_drop_rel"], 5)
        figures[f"{prefix}_worst_class_drop"] = None if row is None or np.isnan(row["worst_class_drop"]) else round(row["worst_class_drop"], 4)
        figures[f"{prefix}_variant"] = None if row is None else row["variant"]
        figures[f"{prefix}_passed_gate"] = None if row is None else row["gate"] == "PASS"

    for prefix, (model, names) in HEADLINES.items():
        if model in results:
            name, _ = pipeline_pick(results[model], names)
            put(prefix, row_of(rows, model, name))
    if "bert" in results:
        hand = row_of(rows, "bert", "handwritten")
        assert hand is not None
        chosen_name = results["bert"].chosen.get(results["bert"].config.pools[0].name)
        chosen = None if chosen_name is None else row_of(rows, "bert", chosen_name)
        figures["chosen_vs_handwritten_speedup"] = None if chosen is None else round(hand["p50_ms"] / chosen["p50_ms"], 3)
        figures["chosen_vs_handwritten_acc_drop_rel"] = (
            None if chosen is None else round(metric_drop(hand["accuracy"], chosen["accuracy"], True, "relative"), 5)
        )
        figures["chosen_variant"] = chosen_name
        figures["chosen_acc_drop_rel"] = None if chosen is None else round(chosen["acc_drop_rel"], 5)
        figures["chosen_worst_class_drop"] = (
            None if chosen is None or np.isnan(chosen["worst_class_drop"]) else round(chosen["worst_class_drop"], 4)
        )
        figures["chosen_passed_gate"] = None if chosen is None else chosen["gate"] in ("PASS", "-")
        # Best of N: the fastest (by this script's own timing) of the N variants that passed their gate and are
        # no less accurate than the baseline on the held-out rows. Picked on the figures it reports: optimistic.
        pool = [r for r in rows if r["model"] == "bert" and r["kind"] not in ("fp32-source", "quantize_dynamic defaults")
                and not r.get("error")]
        no_worse = [r for r in pool if r["gate"] == "PASS" and r["accuracy"] >= hand["accuracy"] - 1e-9]
        best = max(no_worse, key=lambda r: r["speedup_p50"], default=None)
        figures["best_of_n_vs_handwritten_speedup"] = None if best is None else round(hand["p50_ms"] / best["p50_ms"], 3)
        figures["best_of_n_vs_handwritten_variant"] = None if best is None else best["variant"]
        figures["best_of_n_vs_handwritten_n"] = len(pool)
        figures["handwritten_bert_speedup"] = round(hand["speedup_p50"], 3)
        figures["handwritten_bert_acc_drop_rel"] = round(hand["acc_drop_rel"], 5)
        figures["handwritten_bert_worst_class_drop"] = None if np.isnan(hand["worst_class_drop"]) else round(hand["worst_class_drop"], 4)
    return figures


def targets_met(figures: dict[str, Any]) -> dict[str, bool]:
    met = {}
    for prefix, (speedup, max_drop) in TARGETS.items():
        value = figures.get(f"{prefix}_speedup")
        named = figures.get("chosen_variant" if prefix == "chosen_vs_handwritten" else f"{prefix}_variant")
        if named is None and value is None:
            continue  # not in this run (--models / --variants left it out)
        drop = figures.get("chosen_acc_drop_rel" if prefix == "chosen_vs_handwritten" else f"{prefix}_acc_drop_rel")
        passed = figures.get("chosen_passed_gate" if prefix == "chosen_vs_handwritten" else f"{prefix}_passed_gate")
        met[prefix] = bool(
            value is not None and value >= speedup and passed
            and (max_drop is None or (drop is not None and drop <= max_drop))
        )
    return met


def combine(per_seed: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One RESULT from several seeds: numbers -> median (``spread`` keeps each seed's), passed_gate -> on
    every seed, names -> the name, or the list when seeds disagree; ``targets_met`` counts seeds."""
    if len(per_seed) == 1:
        out = dict(per_seed[0])
        out["targets_met"] = {k: v for k, v in targets_met(per_seed[0]).items()}
        return out
    out: dict[str, Any] = {}
    spread: dict[str, list[Any]] = {}
    for key in per_seed[0]:
        values = [figures.get(key) for figures in per_seed]
        if all(isinstance(v, bool) for v in values):
            out[key] = all(values)
            spread[key] = values
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = values[0] if len(set(values)) == 1 else round(statistics.median(values), 5)
            spread[key] = values
        else:
            out[key] = values[0] if all(v == values[0] for v in values) else values
    out["spread"] = spread
    met = [targets_met(figures) for figures in per_seed]
    out["targets_met"] = {k: f"{sum(m[k] for m in met)}/{len(seeds)} seeds" for k in met[0]}
    return out


def cpu_line() -> str:
    """The CPU's model and the instruction-set flags int8 speed depends on (figures differ by machine)."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    relevant = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}; {os.cpu_count()} CPUs visible; flags: {' '.join(relevant) or 'none of avx2/avx512/vnni/amx'}"


class _Progress:
    """One line per finished pipeline step, so a long run shows where it is."""

    def __init__(self, model: str) -> None:
        self.model = model

    def start(self, step: str) -> None:
        pass

    def finish(self, step: str, summary: str, seconds: float) -> None:
        print(f"[{self.model}] {step} ({seconds:.1f}s) {summary}", flush=True)

    def fail(self, step: str, message: str, seconds: float) -> None:
        print(f"[{self.model}] {step} FAILED ({seconds:.1f}s): {message}", flush=True)


def prepare_model(model: str, seed: int, work: Path, wanted: set[str] | None) -> None:
    """Build every variant into ``work``'s store without the timing: training is the slow part and needs
    no quiet machine. A later run with the same ``--work-dir`` (same code, data and seed, so the same build
    keys) reuses these builds (``optimodel_jobs.reuse``) and only evaluates and times them."""
    zoo = build(ZOO[model])
    tuning, held_out = split_rows(zoo.evaluation, seed, work / "splits" / model)
    config = pipeline_config(model, work, seed, tuning, held_out, wanted, True)
    config["latency"] = {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False}
    run(parse_config(config), _Progress(f"{model} seed {seed} (prepare)"))


def bench_model(
    model: str, seed: int, work: Path, threads: int, quick: bool, wanted: set[str] | None
) -> tuple[RunResult, list[dict[str, Any]]]:
    zoo = build(ZOO[model])
    tuning, held_out = split_rows(zoo.evaluation, seed, work / "splits" / model)
    result = run(parse_config(pipeline_config(model, work, seed, tuning, held_out, wanted, quick)), _Progress(f"{model} seed {seed}"))
    reused = [v.name for v in result.variants if (v.details.get("build") or {}).get("reused")]
    print(f"[bench] {model} seed {seed}: variants reused from a previous build: {', '.join(reused) or 'none'}", flush=True)
    assert result.source.path is not None
    # From the plain export (what a user has), not the artifact with our graph optimizations baked in.
    assert result.source.raw_path is not None
    handwritten = handwritten_baseline(Path(result.source.raw_path), result.work_dir / "handwritten.onnx")
    models = {"source": Path(result.source.path), "handwritten": handwritten}
    models.update({v.name: Path(v.path) for v in result.variants if v.path is not None and v.error is None})
    held_rows, tuning_rows = load_rows(held_out, result), load_rows(tuning, result)
    held = {name: score(path, held_rows, threads) for name, path in models.items()}
    tuned = {name: score(path, tuning_rows, threads) for name, path in models.items()}
    for variant in result.variants:
        if variant.error:
            print(f"[bench] {model}/{variant.name} failed: {variant.error}", flush=True)
            continue
        if variant.metric is not None and abs(variant.metric - held[variant.name].accuracy) > 1e-6:
            # The pipeline's recorded metric is its held-out figure; the same rows scored here must agree.
            print(f"[bench] WARNING {model}/{variant.name}: pipeline metric {variant.metric:.4f} != held-out "
                  f"accuracy {held[variant.name].accuracy:.4f} measured here", flush=True)
        if variant.kind == "int8-static":
            print(f"[bench] {model}/{variant.name}: {variant.details.get('hardware')}; "
                  f"float nodes kept: {variant.details['fallback']['float_nodes']}", flush=True)
    timings = side_by_side(models, held_rows, 200 if quick else 600, threads)
    sizes: dict[str, int | None] = {"source": result.source.size_bytes, "handwritten": handwritten.stat().st_size}
    sizes.update({v.name: v.size_bytes for v in result.variants})
    rows = rows_for(model, result, timings, held, tuned, np.asarray(held_rows.labels), sizes)
    print(f"[bench] {model} seed {seed}: {len(held_rows)} held-out rows, {len(tuning_rows)} tuning rows; "
          f"auto chose {result.chosen}: {result.choice_reasons}", flush=True)
    return result, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timing iterations, no memory (< 10 min per seed)")
    parser.add_argument("--models", default="mlp,cnn,bert")
    parser.add_argument("--seeds", default="0", help="comma-separated; each seed splits the rows and seeds the training")
    parser.add_argument("--variants", default=None,
                        help="only these variants (and the ones they chain from); the chosen/best-of-N figures are then among these")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--prepare", action="store_true",
                        help="only build the variants into --work-dir (no timing; run it outside any benchmark lock), "
                             "so that the timed run with the same --work-dir reuses them")
    args = parser.parse_args()
    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="optimodel-bench-"))
    threads = threads_for(cpu_limit_from_environment())
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = None if args.variants is None else {v.strip() for v in args.variants.split(",") if v.strip()}
    zoo_started = time.perf_counter()
    for model in models:
        build(ZOO[model], log=lambda message: print(f"[zoo] {message}", flush=True))
    zoo_seconds = time.perf_counter() - zoo_started
    print(f"[bench] zoo ready in {zoo_seconds:.0f}s; threads={threads}; VNNI={cpu_has_vnni()}; work={work}", flush=True)
    print(f"[bench] cpu: {cpu_line()}", flush=True)

    if args.prepare:
        if args.work_dir is None:
            raise SystemExit("--prepare needs --work-dir (the timed run reuses what it builds there)")
        for seed in seeds:
            for model in models:
                wanted_here = None if wanted is None else wanted & {v["name"] for v in variants_for(model)}
                prepare_model(model, seed, work / f"seed-{seed}", wanted_here)
        print(f"[bench] prepared in {time.perf_counter() - started:.0f}s: {work}", flush=True)
        return 0

    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        all_rows: list[dict[str, Any]] = []
        results: dict[str, RunResult] = {}
        for model in models:
            model_started = time.perf_counter()
            wanted_here = None if wanted is None else wanted & {v["name"] for v in variants_for(model)}
            results[model], rows = bench_model(model, seed, work / f"seed-{seed}", threads, args.quick, wanted_here)
            all_rows += rows
            print(f"[bench] {model} seed {seed} done in {time.perf_counter() - model_started:.0f}s", flush=True)
        print()
        print(f"seed {seed} (accuracy and drops on held-out rows; tune% = the drop on the tuning rows; "
              "cls pt = worst per-class drop in points)")
        print_table(all_rows)
        print()
        figures = headline_figures(all_rows, results)
        print(f"SEED {seed} " + json.dumps(figures), flush=True)
        per_seed.append(figures)

    summary = combine(per_seed, seeds)
    summary.update({
        "seeds": seeds,
        "variants_filtered": wanted is not None,
        "held_out_fraction": round(1 - TUNING_FRACTION, 2),
        "threads": threads,
        "cpu_vnni": cpu_has_vnni(),
        "cpu": cpu_line(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": args.quick,
        "zoo_seconds": round(zoo_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    })
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
