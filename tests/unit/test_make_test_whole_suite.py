"""`make test` (what `.ci/run` runs) is the whole suite whatever the environment says, and its counts line
says how many tests were deselected and how many each tier had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NARROWING = {
    "PYTEST_ARGS": "tests/unit -m 'not slow'",
    "PYTEST_ADDOPTS": "-m 'not cluster'",
    "PYTEST_PLUGINS": "no_such_plugin",
}


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Outside any enclosing make (this test runs under `make test` itself), with its own TMPDIR so the
    # results file of the run that contains it is left alone.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
           and not k.startswith("PYTEST_")}
    return {**env, "TMPDIR": str(tmp_path), **extra}


def test_the_recipe_runs_every_tier_whatever_the_environment_says(tmp_path: Path) -> None:
    # The recipe as written, with a stand-in interpreter that records how pytest is started and exits
    # green; the counts line runs on the real one. Bootstrap (packages, cluster binaries) is not remade.
    record = tmp_path / "pytest-call.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then\n'
        f'  exec {sys.executable} -c "import json, os, sys; json.dump({{\'argv\': sys.argv[1:], '
        f"'env': sorted(k for k in os.environ if k.startswith('PYTEST_'))}}, open('{record}', 'w'))\" \"$@\"\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    (bin_dir / "python").chmod(0o755)
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", "bootstrap", "test", f"VENV_BIN={bin_dir}"],
        cwd=ROOT, env=_clean_env(tmp_path, **NARROWING), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    call = json.loads(record.read_text())
    assert call["argv"] == [
        "-m", "pytest", f"--whole-suite={tmp_path}/optimodel-pytest-selection.json",
        f"--junitxml={tmp_path}/optimodel-pytest-results.xml", "tests",
    ]
    assert call["env"] == []  # PYTEST_ADDOPTS and PYTEST_PLUGINS never reach pytest
    assert "PYTEST_ARGS is ignored" in done.stderr
    assert "PYTEST_ADDOPTS is ignored" in done.stderr and "PYTEST_PLUGINS is ignored" in done.stderr


def _collect(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    selection = tmp_path / "selection.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--whole-suite={selection}", "--collect-only", "-q",
         "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    return done, json.loads(selection.read_text())


def test_the_whole_suite_selects_every_tier_and_deselects_nothing(tmp_path: Path) -> None:
    done, selection = _collect(tmp_path, "tests")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tiers = selection["tiers"]
    assert isinstance(tiers, dict) and set(tiers) == {"unit", "integration", "e2e"}
    assert all(count > 0 for count in tiers.values()), tiers
    assert selection["deselected"] == 0


def test_a_missing_tier_or_a_deselected_test_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    done, selection = _collect(tmp_path, "tests/unit/test_make_test_whole_suite.py", "-k", "not recipe")
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "the integration tier has no selected test" in out
    assert "the e2e tier has no selected test" in out
    assert "1 tests deselected, e.g. tests/unit/test_make_test_whole_suite.py::" in out
    assert selection["deselected"] == 1
    assert selection["tiers"] == {"unit": selection["tiers"]["unit"], "integration": 0, "e2e": 0}  # type: ignore[index]
    assert selection["tiers"]["unit"] >= 3  # type: ignore[index]


def test_counts_line_includes_deselected_and_tiers(tmp_path: Path) -> None:
    results, selection = tmp_path / "results.xml", tmp_path / "selection.json"
    results.write_text('<testsuites><testsuite tests="10" failures="1" errors="1" skipped="2"/></testsuites>')
    selection.write_text(json.dumps({"tiers": {"unit": 7, "integration": 2, "e2e": 1}, "deselected": 3}))
    line = subprocess.run([sys.executable, "tests/counts_line.py", str(results), str(selection)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert line == "tests: 6 passed, 2 failed, 2 skipped, 3 deselected (selected: unit 7, integration 2, e2e 1)"


def test_ci_runs_make_test_without_make_flags_from_the_environment(tmp_path: Path) -> None:
    # A stand-in `make` first on PATH records how .ci/run calls it: MAKEFLAGS=-n would print the suite instead of
    # running it, MAKEFILES would read another makefile first.
    record = tmp_path / "make-call.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': sorted(k for k in os.environ if 'MAKE' in k "
        f"or k.endswith('MFLAGS'))}}, open({str(record)!r}, 'w'))\n"
    )
    (bin_dir / "make").chmod(0o755)
    env = _clean_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", MAKEFLAGS="-n", MFLAGS="-n",
                     GNUMAKEFLAGS="-i", MAKEFILES="/dev/null", MAKELEVEL="3")
    subprocess.run(["bash", str(ROOT / ".ci" / "run")], cwd=tmp_path, env=env, check=True, timeout=60)
    call = json.loads(record.read_text())
    assert call == {"argv": ["test"], "cwd": str(ROOT), "env": []}
