"""docs/tutorial.md, run as written: its ```python title=F / ```yaml title=F blocks become files F in an empty
folder, its ```bash blocks run there in order as one script, and what the text says comes out is checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, title, body) of every fenced block, in order."""
    found = []
    for language, info, body in FENCE.findall(TUTORIAL.read_text()):
        title = re.search(r"title=(\S+)", info)
        found.append((language, title.group(1) if title else None, body))
    return found


def test_every_code_block_is_a_file_or_a_command() -> None:
    kinds = [(language, title) for language, title, _ in blocks()]
    assert [t for lang, t in kinds if lang in ("python", "yaml")] == [
        "mymodels.py", "train.py", "config.yaml", "config-csv.yaml", "optimizedmodel.yaml", "check_manifest.py",
    ]
    assert all(lang in ("python", "yaml", "bash", "") for lang, _ in kinds)
    assert sum(lang == "bash" for lang, _ in kinds) == 5
    assert sum(lang == "" for lang, _ in kinds) == 2  # the two listings of printed lines and files (not run)


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for language, title, body in blocks():
        if language in ("python", "yaml"):
            assert title is not None
            (tmp_path / title).write_text(body)
        elif language == "bash":
            script.append(body)
    # The tutorial puts ~/.cache/optimodel/venv/bin on PATH; this interpreter's folder is that venv (or the one
    # the tests run in), so its `optimodel` and `python` are the ones under test either way.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    # "It prints a held-out accuracy of about 0.97."
    accuracy = float(re.search(r"held-out accuracy (\d\.\d+)", output).group(1))  # type: ignore[union-attr]
    assert 0.94 <= accuracy <= 1.0, output
    # Each optimize run probes its inputs first and ends with its table, the pool's choice and why, the record and
    # the report: in the store next to the record, and the local copy with its plot.
    assert output.count("✓ open inputs and store") == 2, output
    assert output.count("pool cpu -> ") == 2 and output.count("auto (latency): ") == 2, output
    store = tmp_path / "optimodel-store"
    for name in ("cancer-mlp", "cancer-mlp-csv"):
        results = re.findall(rf"^result: (\S+/runs/{name}/\w+)\.json$", output, flags=re.M)
        assert len(results) == 1, output
        assert f"report: {results[0]}.html" in output
        assert (tmp_path / f"{results[0]}.html").is_file()
    assert output.count(f"report: {tmp_path / 'optimodel-report.html'}") == 2, output
    assert (tmp_path / "optimodel-report.png").is_file()
    for folder in ("blobs/sha256", "manifests/int8", "builds"):
        assert any((store / folder).iterdir()), folder

    npz_run = json.loads(next((store / "runs" / "cancer-mlp").glob("*.json")).read_text())
    csv_run = json.loads(next((store / "runs" / "cancer-mlp-csv").glob("*.json")).read_text())
    assert npz_run["source"]["metric"] >= 0.94
    variants = {v["name"]: v for v in npz_run["variants"]}
    assert set(variants) == {"int8", "int8-static", "pruned", "small", "small-int8"}
    # "On this data every variant stays within maxDrop of the source."
    assert all(v["error"] is None and v["gate"]["passed"] for v in variants.values()), variants
    assert variants["small-int8"]["from"] == "small"
    # "the pruned MLP keeps a third of the weights, the distilled one ... a twelfth"
    assert variants["pruned"]["parameters"] <= npz_run["source"]["parameters"] / 2.5
    assert variants["small"]["parameters"] <= npz_run["source"]["parameters"] / 10
    # "The source's accuracy is the same as with eval.npz": the TorchScript file on the CSV.
    assert csv_run["source"]["metric"] == npz_run["source"]["metric"]

    # check_manifest.py: the manifest is valid and the Job gets factory + codePath and the five variants.
    assert '"factory": "mymodels:build_mlp"' in output
    assert '"codePath": "s3://my-models/cancer/mymodels.py"' in output
    assert "['int8', 'int8-static', 'pruned', 'small', 'small-int8']" in output
