"""Step: knowledge distillation (a small student learns the teacher's soft labels at a temperature),
also used to fine-tune a pruned model against its unpruned self.

Only inputs are needed (the calibration or an unlabeled training set); labels, when present and
``alpha`` < 1, add a hard-label term weighted ``1 - alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def teacher_outputs(teacher: Any, inputs: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """The teacher's outputs over the data, computed once (the teacher is the expensive model)."""
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])) for x in inputs]
            outputs.append(_first(teacher(*batch)).float().numpy())
    return np.concatenate(outputs)


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


def distill(
    student: Any,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    task: str,
    epochs: int,
    lr: float,
    temperature: float,
    batch_size: int = 64,
    labels: np.ndarray | None = None,
    alpha: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``student`` in place on the teacher's ``targets``; returns the last epoch's mean loss.

    ``alpha`` weighs the soft (teacher) loss and ``1 - alpha`` the hard-label loss (classification with
    ``labels`` only; without labels the soft loss alone is used), as the API's ``distill.alpha`` says."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual name

    torch.manual_seed(seed)
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    soft = torch.from_numpy(targets.astype(np.float32))
    hard = None if labels is None or alpha >= 1 else torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    count = len(soft)
    steps = max(1, epochs * ((count + batch_size - 1) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    student.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        total, batches = 0.0, 0
        for index in torch.randperm(count, generator=generator).split(batch_size):
            output = _first(student(*[t[index] for t in tensors]))
            if task == "classification":
                # Hinton et al.: KL between softened distributions, scaled by T^2 to keep gradient size.
                loss = F.kl_div(
                    F.log_softmax(output / temperature, dim=-1),
                    F.softmax(soft[index] / temperature, dim=-1),
                    reduction="batchmean",
                ) * temperature**2
                if hard is not None:
                    loss = alpha * loss + (1 - alpha) * F.cross_entropy(output, hard[index])
            else:
                loss = F.mse_loss(output, soft[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            batches += 1
        epoch_loss = total / max(1, batches)
    student.eval()
    return {"epochs": epochs, "temperature": temperature, "alpha": alpha, "hard_labels": hard is not None,
            "final_loss": round(epoch_loss, 6), "samples": count}
