"""``optimodel optimize``: run the optimization pipeline locally with progress, a table and a report.

Also the Job entrypoint (``python -m optimodel_jobs --config <json or path>``): the same run, and on a
refusal a one-line JSON ``{"reason", "message"}`` on stderr and in the pod's termination message,
so the operator can put the reason in the resource's status. Exit codes: 0 ran (whatever the gate
said: a pool where nothing passed is printed with a hint of what to try), 2 refused input or a failed step,
1 an unexpected crash. The working folder a run makes (``/tmp/optimodel-*``) is removed on every exit Python sees
(finished, refused, crashed, Ctrl-C, SIGTERM); SIGKILL leaves it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Optimize a model: int8 / fp16 / pruned / distilled variants, gated and measured.")

TERMINATION_LOG = "/dev/termination-log"


class RichProgress:
    """Progress for every step on a rich console (plain lines when not a terminal)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._status: Any = None

    def start(self, step: str) -> None:
        if self.console.is_terminal:
            self._status = self.console.status(f"[bold]{step}[/] ...")
            self._status.start()
        else:
            self.console.print(f"- {step} ...", highlight=False)

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def finish(self, step: str, summary: str, seconds: float) -> None:
        self._stop()
        tail = f": {summary}" if summary else ""
        self.console.print(f"[green]✓[/] {step} [dim]({seconds:.1f}s)[/]{tail}", highlight=False)

    def fail(self, step: str, message: str, seconds: float) -> None:
        self._stop()
        self.console.print(f"[red]✗[/] {step} [dim]({seconds:.1f}s)[/]: {message}", highlight=False)


def print_table(console: Any, result: Any) -> None:
    from rich.table import Table

    from optimodel_jobs.report import table_rows

    rows = table_rows(result)
    batch = min(result.config.latency.batch_sizes)
    table = Table(title=f"{result.config.name}: variants (latency at batch {batch})")
    columns = ["variant", "kind", "from", "metric", "drop", "agreement", "p50_ms", "p99_ms", "speedup", "size", "params", "provider", "gate"]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("variant", "kind", "from", "provider", "gate") else "left")
    for row in rows:
        style = {"PASS": "green", "FAIL": "red", "error": "red"}.get(row["gate"])
        table.add_row(*[row[c] for c in columns], style=style)
    console.print(table)
    roles = getattr(result, "data_roles", None)
    if roles is not None:
        console.print(f"metric, drop and gate on {roles.held_out_rows} held-out rows; the fallback and auto's tie-break "
                      f"on {roles.tuning_rows} tuning rows; calibration: {roles.calibration_source}", highlight=False)
        if roles.evaluation_used_for_training:
            console.print(f"[yellow]{roles.calibration_rows} evaluation rows calibrate/train (evaluation.split.calibrationFraction)[/]",
                          highlight=False)
    for row in rows:
        if row["worst slice"]:
            console.print(f"{row['variant']}: worst slice {row['worst slice']}", highlight=False)
        if row["gate"] in ("FAIL", "error"):
            console.print(f"[red]{row['variant']}[/]: {row['reason']}", highlight=False)
    for pool, variant in result.chosen.items():
        console.print(f"pool [bold]{pool}[/] -> {variant or '[red]nothing passed the gate[/]'}", highlight=False)
        if result.choice_reasons.get(pool):
            console.print(f"  [dim]{result.choice_reasons[pool]}[/]", highlight=False)


def report_refusal(reason: str, message: str, console: Any) -> None:
    """Tell a person (console) and the operator (stderr JSON + termination message)."""
    console.print(f"[red]optimize refused[/] ({reason}): {message}", highlight=False)
    payload = json.dumps({"reason": reason, "message": message})
    print(payload, file=sys.stderr)
    target = os.environ.get("OPTIMODEL_TERMINATION_LOG", TERMINATION_LOG)
    try:
        if Path(target).parent.is_dir() and (Path(target).exists() or target != TERMINATION_LOG):
            Path(target).write_text(payload[:4096])
    except OSError:
        pass


def print_hints(console: Any, result: Any) -> None:
    """For each pool that got nothing: the budget that refused the variants, which came closest, what to try."""
    evaluation = result.config.evaluation
    empty = [pool for pool, variant in result.chosen.items() if variant is None]
    if not empty:
        return
    judged = sorted((v for v in result.variants if v.drop is not None), key=lambda v: v.drop)
    closest = ", ".join(f"{v.name} (drop {v.drop:+.2%}: {v.gate.reason if v.gate else ''})" for v in judged[:3])
    budget = f"evaluation.maxDrop {evaluation.max_drop} ({evaluation.max_drop_mode})"
    if evaluation.min_agreement is not None:
        budget += f", evaluation.minAgreement {evaluation.min_agreement}"
    console.print(
        f"[yellow]hint[/]: nothing passed the gate for pool(s) {', '.join(empty)}; the budget is {budget}. "
        f"Closest: {closest or 'none was judged (every variant failed to build)'}. Try a larger maxDrop (or a "
        "per-variant gate), static int8 with calibration data (its fallback keeps sensitive nodes in float), "
        "fp16, or fine-tuning a pruned variant (prune.fineTuneEpochs). The run still exits 0: its artifacts "
        "and record are written.",
        highlight=False,
    )


def execute(
    config_text_or_path: str, overrides: dict[str, Any], console: Any, json_output: bool = False,
    default_report: str | None = None,
) -> int:
    """Run a config and tell the outcome; ``default_report`` is where the report's local copy goes when the
    config names none (the CLI: ./optimodel-report.html; the Job: none, the store's copy is the report)."""
    from optimodel_contracts.jobconfig import load_config, parse_config
    from optimodel_jobs.errors import OptimizeError

    started = time.perf_counter()
    try:
        config = load_config(config_text_or_path)
        if overrides or default_report:
            raw = config.model_dump(mode="json", by_alias=True)
            raw.update({k: v for k, v in overrides.items() if v is not None})
            if default_report and not raw.get("report"):
                raw["report"] = default_report
            config = parse_config(raw)
        from optimodel_jobs.pipeline import run

        result = run(config, RichProgress(console))
    except OptimizeError as error:
        report_refusal(error.reason, error.message, console)
        return 2
    from optimodel_jobs.pipeline import _jsonable, cleanup

    try:
        print_table(console, result)
        print_hints(console, result)
        console.print(f"result: {result.result_uri}\nreport: {result.report_uri}", highlight=False)
        if config.report:
            console.print(f"report: {Path(config.report).resolve()}", highlight=False)
        console.print(f"[dim]done in {time.perf_counter() - started:.0f}s[/]")
        if json_output:
            print(json.dumps(_jsonable(result.as_dict())))
    finally:
        cleanup(result)
    return 0


@app.callback(invoke_without_command=True)
def optimize(
    config: Annotated[str, typer.Argument(help="Config: a .json / .yaml file, or inline JSON.")],
    store: Annotated[str | None, typer.Option(help="Artifact store (any fsspec URI); overrides the config.")] = None,
    work_dir: Annotated[str | None, typer.Option(help="Working folder for intermediate files.")] = None,
    report: Annotated[str | None, typer.Option(help=(
        "Where to write a copy of the HTML report (the plot as a PNG next to it); default: the config's "
        "`report`, else ./optimodel-report.html. The report is also written next to the run's record in the "
        "store (<store>/runs/<name>/<spec-hash>.html); both are printed at the end."))] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON at the end.")] = False,
) -> None:
    """Build every variant of the config, gate it, measure it, write artifacts and a report.

    Before any step, every input (source, datasets) is opened and the store written to and cleaned (a probe file), so a wrong URI, missing credentials or an unreachable host fail at once.

    Exit codes: 0 the run finished (also when nothing passed the gate for a pool: a hint says what came closest and what to try), 2 refused input or a failed step (one line naming the reason), 1 a crash. Temporary folders (/tmp/optimodel-*) are removed when the command ends, by Ctrl-C or `kill` (SIGTERM) too; SIGKILL leaves them.
    """  # noqa: E501 - one line per paragraph: --help keeps a docstring's line breaks
    import signal

    from rich.console import Console

    # `kill` (SIGTERM) ends the command as Ctrl-C does, through the clean-up of the run's temporary folder.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console(width=None if sys.stdout.isatty() else 180)
    overrides = {"store": store, "workDir": work_dir, "report": report}
    raise typer.Exit(execute(config, overrides, console, json_output, default_report="optimodel-report.html"))
