"""Models for tests, benchmarks and demos, trained locally by our own code and cached.

``build("bert")`` trains (once) and returns a :class:`ZooModel`: a torch state dict plus the factory
that makes its module, its ONNX export, and train / calibration / evaluation datasets as ``.npz``.
Everything lives under ``$OPTIMODEL_CACHE/models`` (default ``~/.cache/optimodel/models``), keyed by a
hash of the recipe, so a changed recipe is rebuilt and an unchanged one never is. A file lock keeps
two test processes from training the same model at once.

Data: (a) scikit-learn's bundled digits (shipped inside the package, nothing downloaded) as 64
features for the MLP and (b) as 1x32x32 images for the CNN; (c) a synthetic sequence task for the
encoders: four classes, each with its own keyword tokens; the label is the class whose keywords occur
most often, where a keyword right after the NOT token does not count (so order matters, not only the
bag of words).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ZOO_VERSION = 4
SEQ_NOT_TOKEN = 1
NEGATION_RATE = 0.1
SEQ_KEYWORDS_PER_CLASS = 16
SEQ_FIRST_BACKGROUND = 2 + 4 * SEQ_KEYWORDS_PER_CLASS


@dataclass(frozen=True)
class Recipe:
    factory: str
    kwargs: dict[str, Any]
    data: str
    epochs: int
    lr: float
    batch_size: int = 64
    train_samples: int | None = None


RECIPES: dict[str, Recipe] = {
    "digits-mlp": Recipe("optimodel_jobs.models:build_mlp", {"hidden": [2048, 2048, 2048]}, "digits", 25, 5e-4),
    "digits-mlp-tiny": Recipe("optimodel_jobs.models:build_mlp", {"hidden": [128, 64]}, "digits", 60, 3e-3),
    "cnn": Recipe("optimodel_jobs.models:build_cnn", {"channels": [32, 64, 128, 128]}, "digits-image32", 12, 2e-3),
    "cnn-tiny": Recipe("optimodel_jobs.models:build_cnn", {"channels": [8, 16, 16]}, "digits-image16", 25, 5e-3),
    "bert": Recipe(
        "optimodel_jobs.models:build_encoder",
        {"hidden": 256, "layers": 4, "heads": 4, "ffn": 1024, "seq_len": 64},
        "sequences",
        3,
        1e-3,
        batch_size=32,
        train_samples=6000,
    ),
    "bert-teacher": Recipe(
        "optimodel_jobs.models:build_encoder",
        {"hidden": 256, "layers": 6, "heads": 4, "ffn": 1024, "seq_len": 64},
        "sequences",
        4,
        1e-3,
        batch_size=32,
        # A teacher is only worth its cost when it knows more: more data and epochs than the source.
        train_samples=10000,
    ),
    "bert-tiny": Recipe(
        "optimodel_jobs.models:build_encoder",
        {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "seq_len": 64},
        "sequences",
        4,
        2e-3,
        batch_size=32,
        train_samples=3000,
    ),
}


@dataclass
class ZooModel:
    name: str
    directory: Path
    factory: str
    kwargs: dict[str, Any]
    input_name: str
    state_dict: Path
    onnx: Path
    train: Path
    calibration: Path
    evaluation: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def source_config(self) -> dict[str, Any]:
        """A ``source`` section of an optimize config for this model (torch factory + state dict)."""
        return {"format": "state_dict", "uri": str(self.state_dict), "factory": self.factory, "factoryKwargs": self.kwargs}


def cache_root() -> Path:
    return Path(os.environ.get("OPTIMODEL_CACHE", Path.home() / ".cache" / "optimodel"))


def resolve_factory(reference: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"factory {reference!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module_name), attribute)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    train_end, calib_end = int(0.6 * n), int(0.7 * n)
    return order[:train_end], order[train_end:calib_end], order[calib_end:]


def _digits(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    if kind == "digits":
        return (digits.data / 16.0).astype(np.float32), labels
    size = int(kind.removeprefix("digits-image"))
    images = digits.images / 16.0
    scale = size // 8
    images = np.kron(images, np.ones((1, scale, scale)))  # nearest-neighbour upsampling to size x size
    return images[:, None].astype(np.float32), labels


def synthetic_sequences(
    count: int, seq_len: int = 64, vocab: int = 1000, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The keyword-counting task with negation described in the module docstring."""
    rng = np.random.default_rng(seed)
    ids = np.empty((count, seq_len), dtype=np.int64)
    labels = np.empty(count, dtype=np.int64)
    slots = np.arange(1, seq_len, 2)  # a keyword sits on an odd slot; its NOT, if any, just before it
    row = 0
    while row < count:
        tokens = rng.integers(SEQ_FIRST_BACKGROUND, vocab, seq_len)
        occurrences = rng.integers(0, 6, classes)
        negated = rng.binomial(occurrences, NEGATION_RATE)
        effective = occurrences - negated
        if (effective == effective.max()).sum() > 1:
            continue  # ties have no label
        positions = rng.choice(slots, size=int(occurrences.sum()), replace=False)
        cursor = 0
        for cls in range(classes):
            for occurrence in range(occurrences[cls]):
                slot = positions[cursor]
                cursor += 1
                tokens[slot] = 2 + cls * SEQ_KEYWORDS_PER_CLASS + rng.integers(SEQ_KEYWORDS_PER_CLASS)
                if occurrence < negated[cls]:
                    tokens[slot - 1] = SEQ_NOT_TOKEN
        # Stray NOTs before background tokens, so that NOT alone carries no label information.
        for slot in rng.choice(slots, size=3, replace=False):
            if tokens[slot] >= SEQ_FIRST_BACKGROUND:
                tokens[slot - 1] = SEQ_NOT_TOKEN
        ids[row], labels[row] = tokens, int(np.argmax(effective))
        row += 1
    return ids, labels


def _datasets(recipe: Recipe, input_name: str) -> dict[str, dict[str, np.ndarray]]:
    if recipe.data == "sequences":
        seq_len = int(recipe.kwargs.get("seq_len", 64))
        splits = {
            "train": synthetic_sequences(recipe.train_samples or 4000, seq_len, seed=1),
            "calibration": synthetic_sequences(512, seq_len, seed=2),
            "evaluation": synthetic_sequences(1000, seq_len, seed=3),
        }
        return {name: {input_name: x, "label": y} for name, (x, y) in splits.items()}
    features, labels = _digits(recipe.data)
    train, calib, evaluation = _split(len(labels), seed=0)
    return {
        name: {input_name: features[index], "label": labels[index]}
        for name, index in (("train", train), ("calibration", calib), ("evaluation", evaluation))
    }


# ---------------------------------------------------------------------------------------------------
# Training and caching
# ---------------------------------------------------------------------------------------------------


def train_classifier(
    model: Any, inputs: np.ndarray, labels: np.ndarray, epochs: int, lr: float, batch_size: int, seed: int = 0
) -> None:
    """Plain supervised training with AdamW and a cosine schedule (short runs need the decay)."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(inputs)
    y = torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def _accuracy(model: Any, inputs: np.ndarray, labels: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in torch.from_numpy(inputs).split(256)])
    return float((logits.argmax(dim=1).numpy() == labels).mean())


def _recipe_key(name: str, recipe: Recipe) -> str:
    text = json.dumps({"name": name, "recipe": recipe.__dict__, "version": ZOO_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _load_built(name: str, recipe: Recipe, directory: Path) -> ZooModel:
    meta = json.loads((directory / "meta.json").read_text())
    return ZooModel(
        name=name,
        directory=directory,
        factory=recipe.factory,
        kwargs=dict(recipe.kwargs),
        input_name=meta["input_name"],
        state_dict=directory / "model.pt",
        onnx=directory / "model.onnx",
        train=directory / "train.npz",
        calibration=directory / "calibration.npz",
        evaluation=directory / "evaluation.npz",
        meta=meta,
    )


def build(name: str, log: Callable[[str], None] | None = None) -> ZooModel:
    """Train (once) and return the zoo model ``name``; later calls read the cache."""
    if name not in RECIPES:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    models_dir = cache_root() / "models"
    directory = models_dir / f"{name}-{_recipe_key(name, recipe)}"
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "meta.json").exists():
            return _load_built(name, recipe, directory)
        _train_and_save(name, recipe, directory, log or (lambda _message: None))
        return _load_built(name, recipe, directory)


def _train_and_save(name: str, recipe: Recipe, directory: Path, log: Callable[[str], None]) -> None:
    import torch

    from optimodel_jobs.onnx_export import export_module

    input_name = "input_ids" if recipe.data == "sequences" else "x"
    splits = _datasets(recipe, input_name)
    torch.manual_seed(0)
    model = resolve_factory(recipe.factory)(**recipe.kwargs)
    started = time.perf_counter()
    log(f"training zoo model {name} ({recipe.epochs} epochs)")
    train = splits["train"]
    train_classifier(model, train[input_name], train["label"], recipe.epochs, recipe.lr, recipe.batch_size)
    accuracy = _accuracy(model, splits["evaluation"][input_name], splits["evaluation"]["label"])
    log(f"zoo model {name}: eval accuracy {accuracy:.4f} after {time.perf_counter() - started:.0f}s")

    staging = directory.with_name(directory.name + f".staging-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    for split, arrays in splits.items():
        np.savez(staging / f"{split}.npz", **arrays)
    torch.save(model.state_dict(), staging / "model.pt")
    export_module(model, {input_name: train[input_name][:2]}, ["logits"], staging / "model.onnx")
    meta = {
        "name": name,
        "factory": recipe.factory,
        "kwargs": recipe.kwargs,
        "input_name": input_name,
        "torch_eval_accuracy": accuracy,
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    os.replace(staging, directory)  # the cache entry appears whole or not at all


def main() -> None:
    """``python -m optimodel_jobs.zoo [names...]``: build zoo models ahead of time."""
    import sys

    names = sys.argv[1:] or list(RECIPES)
    for name in names:
        model = build(name, log=print)
        print(f"{name}: {model.directory} accuracy={model.meta['torch_eval_accuracy']:.4f}")


if __name__ == "__main__":
    main()
