"""A user's own model code: ``source.factory: mymodels:build_mlp`` with mymodels.py next to the config.

The console script ``optimodel`` does not put the working directory on the import path (``python -m`` does), so
such a factory used to fail with ``FactoryNotFound ... No module named 'mymodels'`` even when run from the folder
holding mymodels.py. The module is now searched in ``source.codePath`` (a folder or a .py file, local or a store
URI), the config file's folder and the working directory, and the refusal names every folder it looked in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import yaml

from optimodel_contracts.jobconfig import load_config, parse_config
from optimodel_jobs import errors
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.pipeline import run

OPTIMODEL = Path(sys.executable).with_name("optimodel")

MODULE = """
import torch
from torch import nn


def build_mlp(features: int = 30, hidden: int = 16, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
"""


def _project(folder: Path, module: str = "mymodels", code_in: Path | None = None, **source: Any) -> Path:
    """A user's folder: <module>.py (or in ``code_in``), a state dict from it, evaluation data, config.yaml."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    code = code_in or folder
    code.mkdir(parents=True, exist_ok=True)
    (code / f"{module}.py").write_text(MODULE)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.save(net.state_dict(), folder / "mlp.pt")
    rng = np.random.default_rng(0)
    # 200 rows: minSamples (100) counts the held-out rows, about 70% of them (evaluation.split's default).
    np.savez(folder / "eval.npz", x=rng.normal(size=(200, 30)).astype(np.float32), label=rng.integers(0, 2, 200))
    config = {
        "name": "own-code",
        "source": {"uri": str(folder / "mlp.pt"), "format": "state_dict", "factory": f"{module}:build_mlp", **source},
        "evaluation": {"dataset": str(folder / "eval.npz"), "maxDrop": 1.0},
        "latency": {"batchSizes": [1], "iterations": 3, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(folder / "store"),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml"


def _optimize(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPTIMODEL_TERMINATION_LOG": str(cwd / "termination-log")}
    return subprocess.run(
        [str(OPTIMODEL), "optimize", str(config), "--work-dir", str(cwd / "work")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_factory_next_to_the_config_is_found_from_its_folder_and_from_elsewhere(tmp_path: Path) -> None:
    config = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, argument in ((tmp_path / "project", Path("config.yaml")), (elsewhere, config)):
        done = _optimize(argument, cwd)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FactoryNotFound" not in done.stdout + done.stderr
        assert "pool cpu -> " in done.stdout


def test_code_path_folder_relative_to_the_config(tmp_path: Path) -> None:
    config = _project(tmp_path / "project", module="netdefs_rel", code_in=tmp_path / "project" / "src", codePath="src")
    result = run(load_config(str(config)))
    assert result.source.metric is not None
    assert result.config.source.code_path == "src"


def test_code_path_python_file(tmp_path: Path) -> None:
    code = tmp_path / "elsewhere-code"
    config = _project(tmp_path / "project", module="netdefs_file", code_in=code, codePath=str(code / "netdefs_file.py"))
    result = run(load_config(str(config)))
    assert result.source.metric is not None


def test_code_path_in_a_store_is_fetched(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/own-code-store/code/netdefs_store.py", MODULE.encode())
    staging = tmp_path / "staging"
    config = _project(tmp_path / "project", module="netdefs_store", code_in=staging, codePath="memory://own-code-store/code")
    shutil.rmtree(staging)  # only the store holds the module now
    raw = yaml.safe_load(config.read_text())
    raw["workDir"] = str(tmp_path / "work")
    result = run(parse_config(raw))
    assert result.source.metric is not None
    assert (tmp_path / "work" / "code" / "netdefs_store.py").read_text() == MODULE


def test_missing_module_names_every_folder_it_looked_in(tmp_path: Path) -> None:
    config = _project(tmp_path / "project", module="mymodels_gone", codePath="lib")
    (tmp_path / "project" / "lib").mkdir()
    (tmp_path / "project" / "mymodels_gone.py").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _optimize(config, elsewhere)
    assert done.returncode == 2
    refusal = json.loads(done.stderr.strip().splitlines()[-1])
    assert refusal["reason"] == errors.FACTORY_NOT_FOUND
    message = refusal["message"]
    assert "no module named 'mymodels_gone'" in message
    assert f"{tmp_path / 'project' / 'lib'} (source.codePath lib)" in message
    assert f"{tmp_path / 'project'} (the config file's folder)" in message
    assert f"{elsewhere} (the working directory)" in message
    assert "set source.codePath" in message


def test_missing_code_path_is_refused_by_name(tmp_path: Path) -> None:
    config = _project(tmp_path / "project", module="netdefs_nopath", codePath="no-such-folder")
    with pytest.raises(OptimizeError) as caught:
        run(load_config(str(config)))
    assert caught.value.reason == errors.FACTORY_NOT_FOUND
    assert f"source.codePath no-such-folder does not exist (looked at {tmp_path / 'project' / 'no-such-folder'})" in caught.value.message


def test_a_missing_dependency_of_the_module_is_told_apart(tmp_path: Path) -> None:
    from optimodel_jobs.source import import_factory

    (tmp_path / "needs_dep.py").write_text("import not_installed_anywhere\n\ndef build():\n    return None\n")
    with pytest.raises(OptimizeError) as caught:
        import_factory("needs_dep:build", "source.factory", [(tmp_path, "the config file's folder")])
    assert caught.value.reason == errors.FACTORY_NOT_FOUND
    assert "needs_dep was found but imports 'not_installed_anywhere', which is not installed" in caught.value.message


def test_a_missing_function_lists_what_the_module_defines(tmp_path: Path) -> None:
    from optimodel_jobs.source import import_factory

    (tmp_path / "has_other.py").write_text(textwrap.dedent(MODULE))
    with pytest.raises(OptimizeError) as caught:
        import_factory("has_other:build_cnn", "source.factory", [(tmp_path, "the config file's folder")])
    assert "has no function 'build_cnn'; it defines build_mlp" in caught.value.message


def test_a_module_of_the_same_name_from_an_earlier_folder_is_not_reused(tmp_path: Path) -> None:
    from optimodel_jobs.source import import_factory

    first, second = tmp_path / "a", tmp_path / "b"
    for folder, width in ((first, 4), (second, 8)):
        folder.mkdir()
        (folder / "samename_models.py").write_text(f"def width():\n    return {width}\n")
    assert import_factory("samename_models:width", "source.factory", [(first, "one")])() == 4
    assert import_factory("samename_models:width", "source.factory", [(second, "two")])() == 8


def test_the_config_folder_is_not_part_of_the_spec_hash(tmp_path: Path) -> None:
    from optimodel_jobs.source import code_dirs

    config = _project(tmp_path / "project")
    first = load_config(str(config))
    assert first.config_dir == str(tmp_path / "project")
    assert first.spec_hash() == first.model_copy(update={"config_dir": str(tmp_path)}).spec_hash()
    assert [why for _, why in code_dirs(first.source, first.config_dir, tmp_path)] == [
        "the config file's folder", "the working directory",
    ]


def _job_for(source: dict[str, Any]) -> dict[str, Any]:
    from optimodel_operator.api.spec import parse_spec
    from optimodel_operator.builders.job import build_job
    from optimodel_operator.planner.revision import job_plans
    from optimodel_operator.planner.view import PlannerConfig, ResourceView
    from optimodel_operator.testing.manifests import base_manifest

    spec = base_manifest()["spec"]
    spec["source"] = source
    spec["nodePools"] = [{"name": "cpu", "variant": "auto"}]
    parsed = parse_spec(spec)
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, uid="uid-1")
    store = "s3://store/m"
    plan = next(iter(job_plans(parsed, "m", store)))
    return build_job(view, parsed, plan, "r1", store, PlannerConfig())["spec"]["template"]["spec"]


def test_the_operator_ships_code_path_to_the_job() -> None:
    source = {"uri": "s3://models/m/mlp.ts", "format": "torch", "inputs": [{"name": "x", "shape": [-1, 30]}],
              "factory": "mymodels:build_mlp"}
    on_node = _job_for({**source, "codePath": "file:///opt/user-code/mymodels.py"})
    config = json.loads(on_node["containers"][0]["args"][1])
    assert config["source"]["codePath"] == "file:///opt/user-code/mymodels.py"
    assert config["source"]["factory"] == "mymodels:build_mlp"
    mounts = {m["mountPath"]: m for m in on_node["containers"][0]["volumeMounts"]}
    assert mounts["/opt/user-code"]["readOnly"] is True
    in_store = _job_for({**source, "codePath": "s3://models/m/code/"})
    assert json.loads(in_store["containers"][0]["args"][1])["source"]["codePath"] == "s3://models/m/code/"
    assert all(m["mountPath"] != "/opt/user-code" for m in in_store["containers"][0]["volumeMounts"])


def test_code_path_without_a_factory_is_refused_by_the_api() -> None:
    from optimodel_operator.api.spec import parse_spec
    from optimodel_operator.testing.manifests import base_manifest

    spec = base_manifest()["spec"]
    spec["source"]["codePath"] = "s3://models/m/code/"
    with pytest.raises(Exception, match="source.codePath holds the module of source.factory"):
        parse_spec(spec)


def test_an_edited_factory_module_is_built_again_not_reused(tmp_path: Path) -> None:
    config = _project(tmp_path / "project")
    raw = yaml.safe_load(config.read_text())
    raw["variants"] = [{"name": "small", "distill": {"student": {"hidden": 8}, "epochs": 2}}]
    # A distilled student trains on training data; evaluation data never trains (issue 13).
    rng = np.random.default_rng(1)
    np.savez(config.parent / "train.npz", x=rng.normal(size=(120, 30)).astype(np.float32), label=rng.integers(0, 2, 120))
    raw["training"] = str(config.parent / "train.npz")
    config.write_text(yaml.safe_dump(raw))

    def reused() -> bool:
        done = _optimize(config, tmp_path / "project")
        assert done.returncode == 0, done.stdout + done.stderr
        record = json.loads(next((tmp_path / "project" / "store" / "runs" / "own-code").glob("*.json")).read_text())
        (small,) = record["variants"]
        assert small["error"] is None
        return bool(small["build"]["reused"])

    assert reused() is False
    assert reused() is True  # nothing changed
    module = tmp_path / "project" / "mymodels.py"
    module.write_text(module.read_text().replace("nn.ReLU()", "nn.Tanh()"))  # same weights, another model
    assert reused() is False
