"""Step: structured pruning in torch that really removes neurons, channels and attention heads.

The pruned module is smaller (its Linear/Conv weights have fewer rows and columns, attention has fewer
heads), so the exported ONNX graph is smaller and faster; nothing is merely zeroed.

What it understands, by structure rather than by class name:
- attention blocks: a module with ``query``/``key``/``value``/``out`` Linear layers and ``heads`` /
  ``head_dim`` attributes (our encoder's ``SelfAttention``) -> whole heads removed;
- feed-forward blocks: a module with ``intermediate`` and ``output`` Linear layers -> inner units removed;
- ``nn.Sequential`` chains: Linear -> (activation / dropout)* -> Linear, and Conv2d -> (BatchNorm2d /
  activation / pooling)* -> Conv2d or -> AdaptiveAvgPool2d(1) -> Flatten -> Linear -> the hidden
  neurons / channels between them removed. The model's final outputs are never touched.

Importance is measured on data: a unit's mean absolute activation times the norm of the weights that
carry it onward (for a head: the energy of its contribution to the attention output).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_PASSTHROUGH = ("ReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "LeakyReLU", "Dropout", "Identity")
_POOLS = ("MaxPool2d", "AvgPool2d")


@dataclass
class SequentialPair:
    producer: Any
    consumer: Any
    norms: list[Any] = field(default_factory=list)


def keep_count(total: int, ratio: float) -> int:
    """Units kept when ``ratio`` of ``total`` are removed; multiples of 8 from 16 up (SIMD widths)."""
    kept = total * (1.0 - ratio)
    if total >= 16:
        return int(min(total, max(8, 8 * round(kept / 8))))
    return int(max(1, round(kept)))


def find_sequential_pairs(module: Any) -> list[SequentialPair]:
    import torch.nn as nn

    pairs: list[SequentialPair] = []
    for sequential in (m for m in module.modules() if isinstance(m, nn.Sequential)):
        producer: Any = None
        norms: list[Any] = []
        flattened_ok = True
        for child in sequential:
            name = type(child).__name__
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                compatible = producer is not None and flattened_ok and (
                    (isinstance(child, nn.Conv2d) and isinstance(producer, nn.Conv2d) and child.groups == 1)
                    or (isinstance(child, nn.Linear) and isinstance(producer, (nn.Linear, nn.Conv2d)))
                )
                if compatible:
                    pairs.append(SequentialPair(producer, child, norms))
                producer, norms, flattened_ok = child, [], True
            elif isinstance(child, nn.BatchNorm2d | nn.BatchNorm1d):
                norms = [*norms, child]
            elif name in _PASSTHROUGH or name in _POOLS:
                continue
            elif isinstance(child, nn.AdaptiveAvgPool2d) and tuple(np.atleast_1d(child.output_size)) in ((1,), (1, 1)):
                continue
            elif isinstance(child, nn.Flatten):
                # Only a 1x1 spatial map flattens to exactly one feature per channel.
                flattened_ok = isinstance(producer, nn.Linear) or _previous_is_global_pool(sequential, child)
            else:
                producer, norms = None, []
    return pairs


def _previous_is_global_pool(sequential: Any, flatten: Any) -> bool:
    import torch.nn as nn

    children = list(sequential)
    index = children.index(flatten)
    return index > 0 and isinstance(children[index - 1], nn.AdaptiveAvgPool2d)


def _attention_blocks(module: Any) -> list[Any]:
    return [
        m for m in module.modules()
        if all(hasattr(m, a) for a in ("query", "key", "value", "out", "heads", "head_dim"))
    ]


def _feed_forward_blocks(module: Any) -> list[Any]:
    import torch.nn as nn

    return [
        m for m in module.modules()
        if isinstance(getattr(m, "intermediate", None), nn.Linear) and isinstance(getattr(m, "output", None), nn.Linear)
    ]


def _channel_mean_abs(activation: Any) -> Any:
    if activation.dim() == 4:  # N, C, H, W
        return activation.abs().mean(dim=(0, 2, 3))
    return activation.abs().reshape(-1, activation.shape[-1]).mean(dim=0)


def measure_importance(
    model: Any, run_batches: Callable[[], None], pairs: list[SequentialPair], attention: list[Any], ffn: list[Any]
) -> dict[int, Any]:
    """One pass over the data with hooks; returns importance per target (keyed by id of the block)."""
    import torch

    sums: dict[int, Any] = {}
    hooks = []

    def accumulate(key: int, value: Any) -> None:
        sums[key] = sums.get(key, 0) + value.detach()

    def consumer_hook(key: int) -> Callable[..., None]:
        return lambda _module, inputs: accumulate(key, _channel_mean_abs(inputs[0]))

    for pair in pairs:
        hooks.append(pair.consumer.register_forward_pre_hook(consumer_hook(id(pair))))
    for block in ffn:
        hooks.append(block.output.register_forward_pre_hook(consumer_hook(id(block))))

    def head_hook(block: Any) -> Callable[..., None]:
        def hook(_module: Any, inputs: tuple[Any, ...]) -> None:
            context = inputs[0].reshape(-1, block.heads, block.head_dim)  # tokens, heads, dim
            weight = block.out.weight.reshape(block.out.weight.shape[0], block.heads, block.head_dim)
            contribution = torch.einsum("thd,ohd->tho", context, weight)
            accumulate(id(block), contribution.pow(2).sum(dim=-1).mean(dim=0))

        return hook

    for block in attention:
        hooks.append(block.out.register_forward_pre_hook(head_hook(block)))
    try:
        with torch.no_grad():
            model.eval()
            run_batches()
    finally:
        for hook in hooks:
            hook.remove()
    importance: dict[int, Any] = {}
    for pair in pairs:
        weight = pair.consumer.weight
        outgoing = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
        importance[id(pair)] = sums[id(pair)] * outgoing
    for block in ffn:
        importance[id(block)] = sums[id(block)] * block.output.weight.norm(dim=0)
    for block in attention:
        importance[id(block)] = sums[id(block)]
    return importance


def _select(tensor: Any, index: Any, dim: int) -> Any:
    import torch.nn as nn

    return nn.Parameter(tensor.data.index_select(dim, index).clone())


def _prune_outputs(layer: Any, keep: Any) -> None:
    layer.weight = _select(layer.weight, keep, 0)
    if layer.bias is not None:
        layer.bias = _select(layer.bias, keep, 0)
    if hasattr(layer, "out_features"):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


def _prune_inputs(layer: Any, keep: Any) -> None:
    layer.weight = _select(layer.weight, keep, 1)
    if hasattr(layer, "in_features"):
        layer.in_features = len(keep)
    else:
        layer.in_channels = len(keep)


def _prune_norm(norm: Any, keep: Any) -> None:
    norm.weight = _select(norm.weight, keep, 0)
    norm.bias = _select(norm.bias, keep, 0)
    norm.running_mean = norm.running_mean.index_select(0, keep).clone()
    norm.running_var = norm.running_var.index_select(0, keep).clone()
    norm.num_features = len(keep)


def _top(scores: Any, count: int) -> Any:
    import torch

    return torch.sort(torch.topk(scores, count).indices).values


def prune_structured(
    model: Any, ratio: float, heads_ratio: float | None, run_batches: Callable[[], None]
) -> dict[str, Any]:
    """Prune ``model`` in place; returns what was removed, per block."""
    import torch

    pairs = find_sequential_pairs(model)
    attention = _attention_blocks(model)
    ffn = _feed_forward_blocks(model)
    if not (pairs or attention or ffn):
        raise ValueError(
            "the model has no structure the pruner understands (nn.Sequential Linear/Conv2d chains, "
            "attention blocks with query/key/value/out, or intermediate/output feed-forward blocks)"
        )
    importance = measure_importance(model, run_batches, pairs, attention, ffn)
    removed: list[dict[str, Any]] = []
    for pair in pairs:
        total = pair.producer.weight.shape[0]
        keep = _top(importance[id(pair)], keep_count(total, ratio))
        _prune_outputs(pair.producer, keep)
        for norm in pair.norms:
            _prune_norm(norm, keep)
        _prune_inputs(pair.consumer, keep)
        removed.append({"block": type(pair.producer).__name__, "units": total, "kept": len(keep)})
    for block in ffn:
        total = block.intermediate.weight.shape[0]
        keep = _top(importance[id(block)], keep_count(total, ratio))
        _prune_outputs(block.intermediate, keep)
        _prune_inputs(block.output, keep)
        removed.append({"block": "feed_forward", "units": total, "kept": len(keep)})
    head_ratio = ratio if heads_ratio is None else heads_ratio
    for block in attention:
        total = block.heads
        kept_heads = max(1, round(total * (1.0 - head_ratio)))
        heads = _top(importance[id(block)], kept_heads)
        index = torch.cat([torch.arange(h * block.head_dim, (h + 1) * block.head_dim) for h in heads.tolist()])
        for projection in (block.query, block.key, block.value):
            _prune_outputs(projection, index)
        _prune_inputs(block.out, index)
        block.heads = kept_heads
        removed.append({"block": "attention", "heads": total, "kept": kept_heads, "kept_heads": heads.tolist()})
    return {"ratio": ratio, "heads_ratio": head_ratio, "blocks": removed}
