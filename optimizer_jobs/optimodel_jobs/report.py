"""The run's report: an HTML page with a table of variants and a PNG accuracy-vs-latency plot
(all variants, the gate line, the variant chosen for each pool)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

    from optimodel_jobs.pipeline import RunResult, VariantOutcome


def size_text(size_bytes: int | None) -> str:
    """Pure: a size a person reads (``812 B``, ``4.2 KiB``, ``1.30 MiB``): a small model is not ``0.00`` MB."""
    if size_bytes is None:
        return ""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / 1024 / 1024:.2f} MiB"


def gate_threshold(result: RunResult) -> float | None:
    """The metric value a variant must reach (or not exceed, for lower-is-better metrics)."""
    source = result.source.metric
    if source is None:
        return None
    evaluation = result.config.evaluation
    higher = result.metric.higher_is_better if evaluation.higher_is_better is None else evaluation.higher_is_better
    allowed = evaluation.max_drop * (abs(source) if evaluation.max_drop_mode == "relative" else 1.0)
    return source - allowed if higher else source + allowed


def plot(result: RunResult, target: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = plot_figure(result)
    figure.savefig(target)
    plt.close(figure)
    return target


def plot_figure(result: RunResult) -> Figure:
    """The accuracy-vs-latency figure, its point labels moved apart so that none overlaps another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = min(result.config.latency.batch_sizes)
    figure, axes = plt.subplots(figsize=(10, 6), dpi=110)
    labels = []
    chosen = {name for name in result.chosen.values() if name}
    points: list[VariantOutcome] = [result.source, *result.variants]
    for outcome in points:
        if outcome.metric is None or batch not in outcome.latency:
            continue
        latency = outcome.latency[batch].p50_ms
        deployable = outcome.gate is None or outcome.gate.deployable
        marker = "*" if outcome.name in chosen else ("o" if deployable else "x")
        color = "tab:blue" if outcome.name == "source" else ("tab:green" if deployable else "tab:red")
        axes.scatter([latency], [outcome.metric], marker=marker, s=160 if marker == "*" else 60, color=color, zorder=3)
        label = outcome.name + (" (chosen: " + ", ".join(p for p, v in result.chosen.items() if v == outcome.name) + ")"
                                if outcome.name in chosen else "")
        labels.append(axes.annotate(label, (latency, outcome.metric), textcoords="offset points", xytext=(8, 4), fontsize=8,
                                    arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6}))
    threshold = gate_threshold(result)
    if threshold is not None:
        axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"gate ({result.metric.name} limit)")
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    axes.set_xscale("log")
    axes.set_ylabel(result.metric.name)
    axes.set_title(f"{result.config.name}: {result.metric.name} vs latency")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    _spread(figure, labels)
    return figure


def _spread(figure: Figure, labels: list[Annotation]) -> None:
    """Move each label up or down, by steps of its own height, until it overlaps no label placed before it:
    variants of one model often sit at nearly the same latency and accuracy (a line from each label leads
    back to its point)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    for label in sorted(labels, key=lambda a: (-a.xy[1], a.xy[0])):
        x, y = label.xyann
        step = _text_box(label, renderer).height * 72.0 / figure.dpi + 2.0  # pixels -> offset points
        for attempt in range(1, 60):
            if not any(_text_box(label, renderer).overlaps(other) for other in placed):
                break
            # 1 -> one step down, 2 -> one step up, 3 -> two steps down ...
            label.xyann = (x, y + (-1 if attempt % 2 else 1) * ((attempt + 1) // 2) * step)
        placed.append(_text_box(label, renderer))


def _text_box(label: Annotation, renderer: Any) -> Bbox:
    """Where the label's text is drawn; not Annotation.get_window_extent, which adds the line to its point."""
    from matplotlib.text import Text

    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def label_boxes(figure: Figure) -> list[tuple[str, Bbox]]:
    """The figure's point labels and where they are drawn (for checking that none overlaps another)."""
    from matplotlib.text import Annotation

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    return [(text.get_text(), _text_box(text, renderer))
            for axes in figure.axes for text in axes.texts if isinstance(text, Annotation)]


def speedup_text(outcome: VariantOutcome, source: VariantOutcome, batch: int) -> str:
    """Pure: the speed-up over the source timed in the same rounds, with its 90% interval when the rounds give
    one (``2.10x [1.95-2.30]``); what ``auto`` decides with (:mod:`optimodel_contracts.choice`)."""
    from optimodel_contracts.choice import Timing, speedup, timings

    if outcome is source:
        return "1.00x" if batch in source.latency else ""
    mine = {b: Timing(s.p50_ms, s.blocks_p50_ms) for b, s in outcome.latency.items()}
    theirs = timings(outcome.details.get("latency_source")) or {
        b: Timing(s.p50_ms, s.blocks_p50_ms) for b, s in source.latency.items()}
    found = speedup(mine, theirs, batch)
    if found is None:
        return ""
    return f"{found.estimate:.2f}x" + (f" [{found.low:.2f}-{found.high:.2f}]" if found.low is not None and found.high is not None else "")


def worst_slice_text(outcome: VariantOutcome) -> str:
    """Pure: ``class=3 -0.0410 on 88 rows (budget 0.05)``, or why there is none."""
    gate = outcome.gate
    if gate is None or outcome.name == "source":
        return ""
    if gate.worst_slice is None:
        return f"none judged ({gate.slices_too_small} too small)" if gate.slices_too_small else ""
    worst = gate.worst_slice
    small = f"; {gate.slices_too_small} too small" if gate.slices_too_small else ""
    return f"{worst.name} {-worst.drop:+.4f} on {worst.size} rows (budget {worst.max_drop}){small}"


def data_roles_html(result: RunResult) -> str:
    """Pure: which rows played which role, and which role decided what."""
    roles = result.data_roles
    if roles is None:
        return ""
    warning = (f"<p><b>{roles.calibration_rows} evaluation rows calibrate/train</b> here, as the spec allows "
               "(evaluation.split.calibrationFraction); they are neither tuning nor held-out rows.</p>"
               if roles.evaluation_used_for_training else "")
    decided = ", ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in roles.decided_on.items())
    return (
        "<h2>Data roles</h2><p>"
        f"Held-out rows (the gate's verdict and every figure above): {roles.held_out_rows}; tuning rows (the "
        f"fallback's rounds, auto's tie-break): {roles.tuning_rows} ({html.escape(roles.tuning_uri)}); split: "
        f"{html.escape(roles.method)}, seed {roles.seed}. Calibration: {html.escape(roles.calibration_source)} "
        f"({roles.calibration_rows} rows); training: {html.escape(roles.training_source)}. Decided on: {decided}.</p>"
        + warning
    )


def table_rows(result: RunResult) -> list[dict[str, Any]]:
    """Pure: one row per model for the terminal table and the HTML report."""
    batch = min(result.config.latency.batch_sizes)
    base = result.source.latency.get(batch)
    rows = []
    for outcome in [result.source, *result.variants]:
        stats = outcome.latency.get(batch)
        rows.append(
            {
                "variant": outcome.name,
                "kind": outcome.kind,
                "from": outcome.parent or "",
                "metric": "" if outcome.metric is None else f"{outcome.metric:.4f}",
                "drop": "" if outcome.drop is None else f"{outcome.drop:+.2%}",
                "agreement": "" if outcome.agreement is None else f"{outcome.agreement:.3f}",
                "p50_ms": "" if stats is None else f"{stats.p50_ms:.3f}",
                "p99_ms": "" if stats is None else f"{stats.p99_ms:.3f}",
                "speedup": "" if stats is None or base is None else speedup_text(outcome, result.source, batch),
                "size": size_text(outcome.size_bytes),
                "params": "" if outcome.parameters is None else f"{outcome.parameters:,}",
                "provider": outcome.provider.effective + (" (fallback)" if outcome.provider.fallback else ""),
                "gate": "source" if outcome.name == "source" else (
                    "error" if outcome.error else ("PASS" if outcome.gate and outcome.gate.passed else "FAIL")
                ),
                "worst slice": worst_slice_text(outcome),
                "reason": "" if outcome.gate is None else outcome.gate.reason,
            }
        )
    return rows


def write_report(result: RunResult, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    image = plot(result, target.with_suffix(".png"))
    rows = table_rows(result)
    columns = list(rows[0]) if rows else []
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr class='{}'>".format(html.escape(row["gate"].lower()))
        + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    pools = "".join(
        f"<li><b>{html.escape(pool)}</b>: {html.escape(variant or 'nothing passed the gate')}"
        f" <small>({html.escape(result.choice_reasons.get(pool, ''))})</small></li>"
        for pool, variant in result.chosen.items()
    )
    evaluation = result.config.evaluation
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>optimodel report: {html.escape(result.config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;font-size:13px}}tr.fail td,tr.error td{{background:#fdd}}tr.pass td{{background:#dfd}}</style></head>
<body><h1>{html.escape(result.config.name)}</h1>
<p>Gate: {html.escape(result.metric.name)}, maxDrop {evaluation.max_drop} ({evaluation.max_drop_mode}),
minAgreement {"-" if evaluation.min_agreement is None else evaluation.min_agreement}; each slice (per class:
{str(evaluation.slices.per_class).lower()}; columns: {html.escape(", ".join(evaluation.slices.columns) or "none")}) within
slices.maxDrop {evaluation.slices.max_drop} ({evaluation.slices.max_drop_mode}) when it has at least {evaluation.slices.min_size} held-out rows;
metric, drop and verdict on the held-out rows. Latency: p50/p99 at batch {min(result.config.latency.batch_sizes)},
variants measured interleaved; speedup is the median over the rounds of the source's block median over the
variant's in the same round, [its 90% interval]; <code>auto</code> serves a variant only when the interval is above 1.</p>
{data_roles_html(result)}
<h2>Chosen variant per pool</h2><ul>{pools}</ul>
<img src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}" alt="accuracy vs latency">
<h2>Variants</h2><table><tr>{header}</tr>{body}</table>
</body></html>
"""
    target.write_text(page)
    return target
