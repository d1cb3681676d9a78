"""The zoo model the demo, the end-to-end tests and the loop benchmark serve, published as a user would.

`publish` trains (once, cached) the zoo's digits MLP with our own code on scikit-learn's bundled digits,
and writes what a user brings to a node-local folder that every pod of the local cluster can mount:
the trained model as a TorchScript archive (the API's `torch` format) and as ONNX, and the
training, calibration and held-out evaluation sets as .npz files. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "deploy" / "examples"
PUBLISHED_ROOT = Path("/var/lib/optimodel/models")
DEFAULT_MODEL = "digits-mlp-tiny"


@dataclass(frozen=True)
class Published:
    folder: Path
    model: Path
    """TorchScript archive (the API's `torch` format)."""
    onnx: Path
    input_name: str
    features: int
    train: Path
    calibration: Path
    evaluation: Path


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, staging)
    os.replace(staging, target)


def publish(name: str = DEFAULT_MODEL, root: Path = PUBLISHED_ROOT, log: Any = None) -> Published:
    """Train (once) and publish the zoo model `name` under `root/name`; idempotent, same bytes each time."""
    import numpy as np
    import torch

    from optimodel_jobs.zoo import build, resolve_factory

    model = build(name, log=log)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    evaluation = np.load(model.evaluation)
    example = np.asarray(evaluation[model.input_name][:2])
    archive = folder / "model.pt"
    module = resolve_factory(model.factory)(**model.kwargs)
    module.load_state_dict(torch.load(model.state_dict, map_location="cpu"))
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch calls TorchScript deprecated; it is the API's format
        traced = torch.jit.trace(module, torch.from_numpy(example))
    staging = folder / ".model.pt.staging"
    traced.save(str(staging))
    # TorchScript archives are zips with timestamps: publish a new file only when the weights changed.
    digest = hashlib.sha256(model.state_dict.read_bytes()).hexdigest()
    stamp = folder / "model.pt.weights-sha256"
    if not archive.exists() or not stamp.exists() or stamp.read_text() != digest:
        os.replace(staging, archive)
        stamp.write_text(digest)
    else:
        staging.unlink()
    for split, path in (("train", model.train), ("calibration", model.calibration), ("evaluation", model.evaluation)):
        _copy_if_changed(path, folder / f"{split}.npz")
    _copy_if_changed(model.onnx, folder / "model.onnx")
    return Published(folder, archive, folder / "model.onnx", model.input_name, int(np.prod(example.shape[1:])), folder / "train.npz",
                     folder / "calibration.npz", folder / "evaluation.npz")


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
