#!/usr/bin/env python
"""Optimizer benchmark: every variant side by side with the fp32 source and the hand-written baseline.

For the MLP (digits), the CNN (digits as 1x32x32 images) and the BERT-like encoder (4 layers, hidden
256, sequence 64; a 6-layer teacher for distillation), all made and trained locally by
``optimodel_jobs.zoo`` (cached under ~/.cache/optimodel/models), this script:

1. runs the real optimization pipeline (``optimodel_jobs.pipeline.run``) with the variants below;
2. builds the baseline a user would write by hand: ONNX Runtime ``quantize_dynamic`` with its
   defaults on the source, no pre-processing;
3. measures source, baseline and every variant interleaved in one run (same process, same threads,
   rotating order, warm-up excluded) at batch 1 and 8, and evaluates the baseline's accuracy on the
   same held-out data the gate used;
4. prints a table and, last, ``RESULT {json}``.

Speedup = p50(fp32 source) / p50(variant) at batch 1; accuracy drop is relative to the source
(positive = worse). ``--quick`` uses fewer training epochs and timing iterations (< 10 minutes once
the zoo models are cached; building them the first time takes a few minutes more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs.datasets import bind, read_table
from optimodel_jobs.gate import METRICS, metric_drop
from optimodel_jobs.latency import measure_interleaved
from optimodel_jobs.pipeline import RunResult, run
from optimodel_jobs.quantize import cpu_has_vnni
from optimodel_jobs.runtime import cpu_limit_from_environment, predict, threads_for
from optimodel_jobs.zoo import build


def variants_for(model: str, quick: bool) -> list[dict[str, Any]]:
    epochs = (lambda full, fast: fast if quick else full)  # noqa: E731 - a tiny local helper
    if model == "mlp":
        return [
            {"name": "int8-dynamic", "quantize": {"mode": "dynamic"}},
            {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "minmax", "samples": 256}}},
            {"name": "pruned", "prune": {"amount": 0.5, "fineTuneEpochs": epochs(8, 4), "lr": 5e-4}},
            {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}},
        ]
    if model == "cnn":
        return [
            {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "percentile", "samples": 128}}},
            {"name": "int8-static-entropy", "quantize": {"mode": "static", "calibration": {"method": "entropy", "samples": 128}}},
            {"name": "pruned", "prune": {"amount": 0.4, "fineTuneEpochs": 8, "lr": 1e-3}},
            {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "static", "calibration": {"method": "percentile", "samples": 128}}},
        ]
    teacher = build("bert-teacher")
    return [
        {"name": "fp32-optimized"},
        {"name": "int8-dynamic", "quantize": {"mode": "dynamic"}},
        {"name": "int8-static", "quantize": {"mode": "static", "calibration": {"method": "minmax", "samples": 256}}},
        {"name": "pruned", "prune": {"amount": 0.5, "headsAmount": 0.5, "fineTuneEpochs": epochs(3, 2), "lr": 5e-4}},
        {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}},
        {
            "name": "distilled",
            "distill": {
                "student": {"layers": 2, "hidden": 128, "heads": 2, "ffn": 512},
                "teacher": teacher.source_config(),
                # Unlabeled transfer data: the teacher's own (larger) training inputs; labels unused.
                "dataset": str(teacher.train),
                "epochs": 12,
                "learningRate": 2e-3,
                "temperature": 2.0,
                "alpha": 1.0,  # the soft (teacher) loss only
                "batchSize": 32,
            },
            "gate": {"maxDrop": 0.02},  # the target for distillation: <= 2% relative
        },
        {"name": "distilled-int8", "from": "distilled", "quantize": {"mode": "dynamic"}, "gate": {"maxDrop": 0.02}},
    ]


ZOO = {"mlp": "digits-mlp", "cnn": "cnn", "bert": "bert"}


def pipeline_config(model: str, work: Path, quick: bool) -> dict[str, Any]:
    zoo = build(ZOO[model])
    return {
        "name": f"bench-{model}",
        "source": zoo.source_config(),
        "evaluation": {"dataset": str(zoo.evaluation), "metric": "accuracy", "maxDrop": 0.01, "maxDropMode": "relative"},
        "calibration": {"dataset": str(zoo.calibration), "samples": 256},
        "training": str(zoo.train),
        "variants": variants_for(model, quick),
        "latency": {"batchSizes": [1, 8], "iterations": 20, "warmup": 3, "rounds": 2, "measureMemory": not quick},
        "pools": [{"name": "cpu"}],
        "store": str(work / "store"),
        "workDir": str(work / model),
    }


def handwritten_baseline(source: Path, target: Path) -> Path:
    """What a user would write: quantize_dynamic with its defaults, no pre-processing."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(source), str(target))
    return target


def side_by_side(result: RunResult, handwritten: Path, iterations: int, threads: int) -> dict[str, dict[int, Any]]:
    models = {"source": result.source.path, "handwritten": handwritten}
    models.update({v.name: v.path for v in result.variants if v.path is not None})
    evaluation = bind(read_table(result.config.evaluation.dataset.uri), result.config.evaluation.dataset,
                      _inputs(result), need_labels=False)
    return measure_interleaved(
        {k: Path(v) for k, v in models.items() if v is not None}, evaluation.inputs, [1, 8],
        ["CPUExecutionProvider"], threads, iterations, warmup=10, rounds=max(10, iterations // 10),
    )


def _inputs(result: RunResult) -> Any:
    from optimodel_jobs.source import tensor_specs

    assert result.source.path is not None
    return tensor_specs(result.source.path)[0]


def handwritten_accuracy(result: RunResult, handwritten: Path, threads: int) -> float:
    spec = result.config.evaluation.dataset
    data = bind(read_table(spec.uri), spec, _inputs(result), need_labels=True)
    outputs = predict(handwritten, data, threads)
    return METRICS["accuracy"].compute(outputs, data.labels, outputs)


def rows_for(model: str, result: RunResult, timings: dict[str, dict[int, Any]], hand_acc: float) -> list[dict[str, Any]]:
    source_acc = result.source.metric or 0.0
    base = timings["source"]
    rows = []
    entries: list[tuple[str, str, float | None, bool | None, int | None]] = [
        ("source", "fp32-source", source_acc, None, result.source.size_bytes),
        ("handwritten", "quantize_dynamic defaults", hand_acc, None, Path(result.work_dir / "handwritten.onnx").stat().st_size),
    ]
    for variant in result.variants:
        entries.append((variant.name, variant.kind, variant.metric, variant.gate.passed if variant.gate else None, variant.size_bytes))
    for name, kind, accuracy, passed, size in entries:
        if name not in timings:
            rows.append({"model": model, "variant": name, "kind": kind, "error": True})
            continue
        t1, t8 = timings[name][1], timings[name][8]
        rows.append({
            "model": model,
            "variant": name,
            "kind": kind,
            "accuracy": accuracy,
            "acc_drop_rel": None if accuracy is None else metric_drop(source_acc, accuracy, True, "relative"),
            "gate": {None: "-", True: "PASS", False: "FAIL"}[passed],
            "p50_ms": t1.p50_ms,
            "p99_ms": t1.p99_ms,
            "speedup_p50": base[1].p50_ms / t1.p50_ms,
            "speedup_p99": base[1].p99_ms / t1.p99_ms,
            "speedup_p50_b8": base[8].p50_ms / t8.p50_ms,
            "throughput_b8": t8.throughput_per_s,
            "size_ratio": (size or 0) / (result.source.size_bytes or 1),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'model':5} {'variant':20} {'kind':26} {'acc':>7} {'drop%':>7} {'gate':>5} {'p50ms':>8} {'p99ms':>8} {'x p50':>6} {'x p99':>6} {'x b8':>6} {'size':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("error"):
            print(f"{r['model']:5} {r['variant']:20} {r['kind']:26} (failed to build)")
            continue
        drop = "" if r["acc_drop_rel"] is None else f"{100 * r['acc_drop_rel']:+.2f}"
        print(
            f"{r['model']:5} {r['variant']:20} {r['kind']:26} {r['accuracy']:7.4f} {drop:>7} {r['gate']:>5} "
            f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['speedup_p50']:6.2f} {r['speedup_p99']:6.2f} "
            f"{r['speedup_p50_b8']:6.2f} {r['size_ratio']:6.2f}"
        )


def pick(rows: list[dict[str, Any]], model: str, names: tuple[str, ...], gated: bool = True) -> dict[str, Any] | None:
    """The fastest of these variants that passed the gate (or, when none did, the fastest at all).
    By name, so that chains (e.g. distilled-int8) never count as plain int8."""
    candidates = [r for r in rows if r["model"] == model and not r.get("error") and r["variant"] in names]
    passing = [r for r in candidates if r["gate"] == "PASS"] if gated else candidates
    pool = passing or candidates
    return max(pool, key=lambda r: r["speedup_p50"], default=None)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and timing iterations (< 10 min)")
    parser.add_argument("--models", default="mlp,cnn,bert")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="optimodel-bench-"))
    threads = threads_for(cpu_limit_from_environment())
    iterations = 200 if args.quick else 600
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    zoo_started = time.perf_counter()
    for name in ("bert-teacher", *(ZOO[m] for m in models)):
        if name == "bert-teacher" and "bert" not in models:
            continue
        build(name, log=lambda message: print(f"[zoo] {message}", flush=True))
    zoo_seconds = time.perf_counter() - zoo_started
    print(f"[bench] zoo ready in {zoo_seconds:.0f}s; threads={threads}; VNNI={cpu_has_vnni()}; work={work}", flush=True)

    all_rows: list[dict[str, Any]] = []
    for model in models:
        model_started = time.perf_counter()
        result = run(parse_config(pipeline_config(model, work, args.quick)), _Progress(model))
        assert result.source.path is not None
        handwritten = handwritten_baseline(result.source.path, result.work_dir / "handwritten.onnx")
        hand_acc = handwritten_accuracy(result, handwritten, threads)
        timings = side_by_side(result, handwritten, iterations, threads)
        rows = rows_for(model, result, timings, hand_acc)
        for variant in result.variants:
            if variant.error:
                print(f"[bench] {model}/{variant.name} failed: {variant.error}", flush=True)
            elif variant.kind == "int8-static":
                print(f"[bench] {model}/{variant.name}: {variant.details.get('hardware')}; "
                      f"float nodes kept: {variant.details['fallback']['float_nodes']}", flush=True)
        all_rows += rows
        print(f"[bench] {model} done in {time.perf_counter() - model_started:.0f}s", flush=True)

    print()
    print_table(all_rows)
    print()
    results: dict[str, Any] = {}

    def put(prefix: str, row: dict[str, Any] | None) -> None:
        results[f"{prefix}_speedup"] = None if row is None else round(row["speedup_p50"], 3)
        results[f"{prefix}_acc_drop_rel"] = None if row is None else round(row["acc_drop_rel"], 5)
        results[f"{prefix}_variant"] = None if row is None else row["variant"]
        results[f"{prefix}_passed_gate"] = None if row is None else row["gate"] == "PASS"

    if "bert" in models:
        put("bert_int8", pick(all_rows, "bert", ("int8-dynamic", "int8-static")))
        put("bert_distilled", pick(all_rows, "bert", ("distilled",)))
        put("bert_pruned", pick(all_rows, "bert", ("pruned",)))
        hand = next(r for r in all_rows if r["model"] == "bert" and r["variant"] == "handwritten")
        no_worse = [
            r for r in all_rows
            if r["model"] == "bert" and r["gate"] == "PASS" and not r.get("error") and r["accuracy"] >= hand["accuracy"] - 1e-9
        ]
        best = max(no_worse, key=lambda r: r["speedup_p50"], default=None)
        results["best_vs_handwritten_speedup"] = None if best is None else round(hand["p50_ms"] / best["p50_ms"], 3)
        results["best_vs_handwritten_variant"] = None if best is None else best["variant"]
        results["handwritten_bert_speedup"] = round(hand["speedup_p50"], 3)
        results["handwritten_bert_acc_drop_rel"] = round(hand["acc_drop_rel"], 5)
    if "mlp" in models:
        put("mlp_int8", pick(all_rows, "mlp", ("int8-dynamic", "int8-static")))
    if "cnn" in models:
        put("cnn_static_int8", pick(all_rows, "cnn", ("int8-static", "int8-static-entropy")))
    results.update({
        "threads": threads,
        "cpu_vnni": cpu_has_vnni(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": args.quick,
        "zoo_seconds": round(zoo_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    })
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
