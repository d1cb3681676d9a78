"""A TorchScript source (the API's ``format: torch``) is pruned through an eager module rebuilt from it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from optimodel_contracts.artifacts import fetch_verified
from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs.models import build_cnn, build_mlp
from optimodel_jobs.pipeline import RunResult, run
from optimodel_jobs.prune import find_sequential_pairs, prune_structured
from optimodel_jobs.torchscript import RebuildError, rebuild_eager
from optimodel_jobs.zoo import build, resolve_factory


def _torchscript(module: nn.Module, example: torch.Tensor, how: str) -> Any:
    """Saved and loaded, as the Job gets it (torch.jit.load of the published archive)."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.trace(module, example) if how == "trace" else torch.jit.script(module)
        import io

        buffer = io.BytesIO()
        torch.jit.save(compiled, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer, map_location="cpu").eval()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) + x)


class Wrapped(nn.Module):
    """Not a Sequential, but its forward is a chain of its children; settings that are not the defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8, eps=1e-3), nn.GELU(approximate="tanh"),
            nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2), nn.Dropout(0.3),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.mark.parametrize("how", ["trace", "script"])
@pytest.mark.parametrize("factory", [lambda: (build_mlp(hidden=[32, 16]), torch.randn(6, 64)),
                                     lambda: (build_cnn(channels=[8, 16, 16]), torch.randn(6, 1, 16, 16)),
                                     lambda: (Wrapped(), torch.randn(6, 1, 16, 16))], ids=["mlp", "cnn", "wrapped"])
def test_rebuilt_module_equals_the_torchscript_one_and_can_be_pruned(how: str, factory: Any) -> None:
    torch.manual_seed(0)
    module, x = factory()
    module.eval()
    for layer in module.modules():  # non-trivial statistics, so a wrong eps or a missing buffer shows
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    scripted = _torchscript(module, x, how)
    rebuilt = rebuild_eager(scripted, [x])
    assert isinstance(rebuilt, nn.Sequential)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), scripted(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rebuilt(x), module(x), rtol=1e-4, atol=1e-5)
    assert all(p.requires_grad for p in rebuilt.parameters())  # fine-tuning trains it
    assert find_sequential_pairs(rebuilt), "the pruner understands the rebuilt structure"
    before = sum(p.numel() for p in rebuilt.parameters())
    prune_structured(rebuilt, 0.5, None, lambda: rebuilt(x))
    assert sum(p.numel() for p in rebuilt.parameters()) < before
    assert rebuilt(x).shape == module(x).shape


@pytest.mark.parametrize("how", ["trace", "script"])
def test_structure_that_cannot_be_rebuilt_is_refused_by_name(how: str) -> None:
    x = torch.randn(4, 8)
    with pytest.raises(RebuildError, match=r"model \(Residual\): its forward is not a plain chain.*aten::add"):
        rebuild_eager(_torchscript(Residual(), x, how), [x])
    with pytest.raises(RebuildError, match=r"model\.1 \(LayerNorm\): not a layer the rebuilder knows"):
        rebuild_eager(_torchscript(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), x, how), [x])


def _publish(tmp: Path, how: str, module: nn.Module | None = None) -> tuple[Any, Path]:
    """As operator/optimodel_operator/examples.py publishes the demo's model: the zoo's MLP as TorchScript."""
    model = build("digits-mlp-tiny")
    if module is None:
        module = resolve_factory(model.factory)(**model.kwargs)
        module.load_state_dict(torch.load(model.state_dict, map_location="cpu"))
    module.eval()
    example = torch.from_numpy(np.load(model.evaluation)[model.input_name][:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        archive = torch.jit.trace(module, example) if how == "trace" else torch.jit.script(module)
    path = tmp / "model.pt"
    archive.save(str(path))
    return model, path


def _run(model: Any, archive: Path, tmp: Path, variants: list[dict[str, Any]]) -> RunResult:
    # The demo's variant and gate (deploy/examples/digits.yaml), for the operator's cpu Job.
    return run(parse_config({
        "name": "digits",
        "source": {"format": "torch", "uri": f"file://{archive}", "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 64]}]},
        "evaluation": {"dataset": str(model.evaluation), "metric": "accuracy", "maxDrop": 0.02, "minSamples": 100},
        "variants": variants,
        "pools": [{"name": "cpu", "executionProvider": "cpu"}],
        "latency": {"batchSizes": [1], "iterations": 4, "warmup": 1, "rounds": 1, "measureMemory": False},
        "store": str(tmp / "store"),
        "workDir": str(tmp / "work"),
    }))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_mlp_is_pruned_and_passes_the_gate(tmp_path: Path, how: str) -> None:
    model, archive = _publish(tmp_path, how)
    # The demo's recipe with a faster fine-tune (lr, a Job-only knob): at the default lr the pruned MLP loses 2-3 of
    # the ~40 held-out rows of one digit, which the per-class slice check (5 points) refuses; this test is about
    # pruning a TorchScript source, the slice check has its own tests (test_optimizer_data_roles.py).
    pruned_spec = {"amount": 0.3, "fineTuneEpochs": 3, "lr": 0.002, "dataset": f"file://{model.train}"}
    result = _run(model, archive, tmp_path, [{"name": "pruned", "prune": pruned_spec},
                                             {"name": "pruned-int8", "from": "pruned", "quantize": {"mode": "dynamic"}}])
    pruned = result.variants[0]
    assert pruned.error is None, pruned.error
    assert pruned.gate is not None and pruned.gate.passed and pruned.gate.deployable, pruned.gate
    assert pruned.parameters is not None and result.source.parameters is not None
    assert pruned.parameters < result.source.parameters
    assert [b["kept"] for b in pruned.details["blocks"]] == [88, 48]  # hidden (128, 64), 30% off, multiples of 8
    assert pruned.details["fine_tune"]["epochs"] == 3
    assert result.variants[1].error is None  # a chain from the pruned (eager) module
    assert pruned.manifest_uri is not None
    manifest, local = fetch_verified(pruned.manifest_uri, tmp_path / "fetched")
    widths = sorted({d for init in onnx.load(str(local)).graph.initializer for d in init.dims if len(init.dims) == 2})
    assert 128 not in widths and 88 in widths  # the matrices themselves shrank
    assert manifest.gate.deployable


@pytest.mark.slow
def test_torchscript_that_cannot_be_rebuilt_fails_that_variant_with_the_reason(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))
    model, archive = _publish(tmp_path, "script", module)
    result = _run(model, archive, tmp_path, [{"name": "pruned", "prune": {"amount": 0.3, "fineTuneEpochs": 0, "dataset": f"file://{model.train}"}},
                                             {"name": "int8", "quantize": {"mode": "dynamic"}}])
    pruned, int8 = result.variants
    assert pruned.error is not None and pruned.error.reason == "VariantFailed"
    assert "cannot be rebuilt" in pruned.error.message and "model.1 (LayerNorm)" in pruned.error.message
    assert pruned.gate is not None and not pruned.gate.deployable
    assert int8.error is None  # the other variants go on
