"""Where a run's things go: the report next to the run's record in the store and at a path the CLI prints and
its --help names; no /tmp/optimodel-* folder left after any run (refused, crashed or finished); an unchanged
variant keeps its manifest on a rerun; the run JSON names its own URI. And the report reads right: labels of
nearby points do not overlap, a small model's size is not "0.00", an unset minAgreement is not "None", and a
pool where nothing passed gets a hint naming the budget and the variants that came closest."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs import errors
from optimodel_jobs.cli import execute
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.pipeline import cleanup, run
from optimodel_jobs.report import label_boxes, plot_figure, size_text, table_rows
from optimodel_jobs.zoo import build

FAST = {"batchSizes": [1], "iterations": 5, "warmup": 1, "rounds": 2, "measureMemory": False}


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build("digits-mlp-tiny")


def _config(mlp: Any, store: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "where",
        "source": {"uri": str(mlp.onnx), "format": "onnx"},
        "evaluation": {"dataset": str(mlp.evaluation), "metric": "accuracy"},
        # Three copies of the source's graph: the same accuracy at nearly the same latency, so their labels
        # land on one another unless they are moved apart.
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}, {"name": "copy-a"}, {"name": "copy-b"},
                     {"name": "copy-c"}],
        "latency": FAST,
        "store": str(store),
    }
    config.update(changes)
    return config


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder for this test alone, so that other processes' runs do not change the count."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("optimodel-*"))


def _cli(config: dict[str, Any], **overrides: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = execute(json.dumps(config), overrides, Console(file=out, width=400), json_output=True,
                   default_report="optimodel-report.html")
    return code, out.getvalue()


def test_the_report_lands_in_the_store_and_at_the_printed_path(
    mlp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    code, printed = _cli(_config(mlp, store))
    assert code == 0, printed
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    spec_hash = parse_config(_config(mlp, store)).spec_hash()[:16]
    in_store = store / "runs" / "where" / f"{spec_hash}.html"
    assert record["result_uri"] == f"{store}/runs/where/{spec_hash}.json"  # was None in the run JSON
    assert (store / "runs" / "where" / f"{spec_hash}.json").is_file()
    assert record["report"] == str(in_store) and in_store.is_file()
    local = tmp_path / "optimodel-report.html"
    assert local.is_file() and local.with_suffix(".png").is_file()
    assert f"report: {local}" in printed and f"report: {in_store}" in printed and f"result: {record['result_uri']}" in printed
    # The store's copy stands alone (the plot inside it): it is what a Job leaves, and what one downloads.
    assert "data:image/png;base64," in in_store.read_text()
    assert _leftovers(private_tmp) == []


def test_help_names_where_the_report_goes_and_what_the_exit_codes_mean() -> None:
    from optimodel_operator.cli import app as optimodel  # `optimodel optimize --help`, as a user runs it

    shown = CliRunner().invoke(optimodel, ["optimize", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    assert "./optimodel-report.html" in text and "<store>/runs/<name>/<spec-hash>.html" in text
    assert "nothing passed the gate" in text and "/tmp/optimodel-*" in text


def test_no_temporary_folder_survives_a_refused_a_crashed_or_a_finished_run(
    mlp: Any, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    refused = _config(mlp, store, evaluation={"dataset": str(tmp_path / "missing.npz"), "metric": "accuracy"})
    with pytest.raises(OptimizeError) as caught:
        run(parse_config(refused))
    assert caught.value.reason == errors.DATASET_UNREADABLE
    assert _leftovers(private_tmp) == []

    class Crash:
        """A step that dies of something that is no refusal (as a bug would)."""

        def start(self, step: str) -> None:
            if step == "latency":
                raise RuntimeError("crashed in the middle of the run")

        def finish(self, step: str, summary: str, seconds: float) -> None:
            pass

        def fail(self, step: str, message: str, seconds: float) -> None:
            pass

    with pytest.raises(RuntimeError):
        run(parse_config(_config(mlp, store)), Crash())
    assert _leftovers(private_tmp) == []

    result = run(parse_config(_config(mlp, store)))
    assert _leftovers(private_tmp) == [result.work_dir.name]  # it holds the files the result points at ...
    cleanup(result)
    assert _leftovers(private_tmp) == []  # ... until the caller is done (the CLI: on every exit)
    code, printed = _cli(_config(mlp, store, evaluation={"dataset": str(tmp_path / "missing.npz"), "metric": "accuracy"}))
    assert code == 2 and "DatasetUnreadable" in printed
    assert _leftovers(private_tmp) == []


def test_a_named_work_dir_is_kept(mlp: Any, tmp_path: Path) -> None:
    result = run(parse_config(_config(mlp, tmp_path / "store", workDir=str(tmp_path / "work"), variants=[])))
    cleanup(result)
    assert (tmp_path / "work" / "result.json").is_file()


def test_a_rerun_of_the_same_config_writes_no_new_manifest(mlp: Any, tmp_path: Path, private_tmp: Path) -> None:
    store = tmp_path / "store"
    first = run(parse_config(_config(mlp, store)))
    cleanup(first)
    manifests = sorted((store / "manifests").rglob("*.json"))
    assert len(manifests) == 5  # the source and four variants
    second = run(parse_config(_config(mlp, store)))
    cleanup(second)
    assert sorted((store / "manifests").rglob("*.json")) == manifests
    assert [v.manifest_uri for v in second.variants] == [v.manifest_uri for v in first.variants]
    assert second.source.manifest_uri == first.source.manifest_uri
    # An edited config is new lineage (the manifest records its spec hash): every manifest is new, none replaced.
    third = _config(mlp, store)
    third["variants"][1] = {"name": "copy-a", "gate": {"maxSizeMiB": 1e-6}}
    cleanup(run(parse_config(third)))
    added = sorted(set((store / "manifests").rglob("*.json")) - set(manifests))
    assert sorted(p.parent.name for p in added) == ["copy-a", "copy-b", "copy-c", "int8", "source"]
    assert set(manifests) <= set((store / "manifests").rglob("*.json"))


def test_labels_of_nearby_points_do_not_overlap(mlp: Any, tmp_path: Path, private_tmp: Path) -> None:
    result = run(parse_config(_config(mlp, tmp_path / "store")))
    try:
        boxes = label_boxes(plot_figure(result))
    finally:
        cleanup(result)
    assert len(boxes) == 5
    overlapping = [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert overlapping == []


def test_sizes_and_unset_settings_read_right(mlp: Any, tmp_path: Path, private_tmp: Path) -> None:
    assert [size_text(n) for n in (None, 812, 4300, 3 * 1024 * 1024)] == ["", "812 B", "4.2 KiB", "3.00 MiB"]
    result = run(parse_config(_config(mlp, tmp_path / "store", report=str(tmp_path / "report.html"))))
    cleanup(result)
    rows = table_rows(result)
    assert all(row["size"] and row["size"] != "0.00" for row in rows)
    page = (tmp_path / "report.html").read_text()
    assert "minAgreement -" in page and "None" not in page


def test_nothing_passed_the_gate_exits_0_with_a_hint(
    mlp: Any, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the CLI's report copy goes to the working directory
    tight = {"maxSizeMiB": 1e-6}  # no artifact is that small: every variant fails the gate
    config = _config(mlp, tmp_path / "store", variants=[{"name": "int8", "quantize": {"mode": "dynamic"}, "gate": tight},
                                                        {"name": "copy-a", "gate": tight}])
    code, printed = _cli(config)
    assert code == 0
    text = " ".join(printed.split())
    assert "hint: nothing passed the gate for pool(s) cpu; the budget is evaluation.maxDrop" in text
    assert "Closest: " in text and "int8 (drop" in text and "copy-a (drop" in text



def test_a_killed_command_leaves_no_temporary_folder(mlp: Any, tmp_path: Path) -> None:
    """`optimodel optimize` ended by SIGTERM (kill, a cancelled CI job) while it measures latency."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    config = _config(mlp, tmp_path / "store", latency={**FAST, "iterations": 100_000, "rounds": 20})  # minutes long
    command = [sys.executable, "-c", "from optimodel_operator.cli import app; app()", "optimize", json.dumps(config)]
    process = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "TMPDIR": str(folder)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("- latency") for line in lines):
            assert process.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        assert len(_leftovers(folder)) == 1  # the run's folder, while it runs
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert _leftovers(folder) == []
