"""An eager ``nn.Module`` rebuilt from a TorchScript module of plain structure, so that it can be pruned
and fine-tuned (TorchScript modules cannot be resized in place, and their structure is not ``nn.Sequential``).

What is understood:
- containers (``nn.Sequential``, or any module whose forward graph is nothing but a chain of calls of
  its children, each called once, output of one the input of the next) -> one flat ``nn.Sequential``;
- layers: Linear, Conv2d, BatchNorm1d/2d, ReLU, ReLU6, GELU, LeakyReLU, Tanh, Sigmoid, SiLU, Identity,
  Dropout, Flatten, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d. Weights and buffers are copied; settings
  (stride, eps, ...) come from the module's constants (``torch.jit.script``) or from the constant
  arguments of the layer's operator in its graph (``torch.jit.trace``).

Nothing is trusted on structure alone: every rebuilt layer is run on the activation the TorchScript
layer receives on the sample inputs and must give the same output, and so must the whole model.
Anything else raises :class:`RebuildError` naming the module path and what was not understood.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

RTOL, ATOL = 1e-4, 1e-5


class RebuildError(ValueError):
    """The TorchScript module cannot be rebuilt as an equivalent eager module; the message says where and why."""


_NOT_CONSTANT = object()


def _constant(value: Any) -> Any:
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        items = [_constant(v) for v in node.inputs()]
        return _NOT_CONSTANT if any(i is _NOT_CONSTANT for i in items) else items
    return _NOT_CONSTANT


def _operator_args(leaf: Any, kinds: tuple[str, ...], path: str) -> list[Any]:
    """Constant arguments of the one operator of ``kinds`` at the top of the leaf's (inlined) graph."""
    found = [n for n in leaf.inlined_graph.nodes() if n.kind() in kinds]
    if len(found) != 1:
        raise RebuildError(f"{path} ({leaf.original_name}): expected one {'/'.join(kinds)} in its graph, found {len(found)}")
    return [_constant(v) for v in found[0].inputs()]


def _settings(leaf: Any, path: str, kinds: tuple[str, ...], wanted: dict[str, int]) -> dict[str, Any]:
    """``wanted``: setting name -> argument index in the operator. Module constants (scripted) first."""
    values: dict[str, Any] = {}
    args: list[Any] | None = None
    for name, index in wanted.items():
        if hasattr(leaf, name):
            values[name] = getattr(leaf, name)
            continue
        if args is None:
            args = _operator_args(leaf, kinds, path)
        value = args[index] if index < len(args) else _NOT_CONSTANT
        if value is _NOT_CONSTANT:
            raise RebuildError(f"{path} ({leaf.original_name}): its {name} is not a constant of its graph")
        values[name] = value
    return values


def _tensor(leaf: Any, name: str) -> Any:
    value = getattr(leaf, name, None)
    return None if value is None else value.detach().clone()


def _linear(leaf: Any, path: str) -> Any:
    import torch.nn as nn

    weight, bias = _tensor(leaf, "weight"), _tensor(leaf, "bias")
    if weight is None or weight.dim() != 2:
        raise RebuildError(f"{path} (Linear): no 2-D weight")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight)
    if bias is not None:
        layer.bias = nn.Parameter(bias)
    return layer


def _conv2d(leaf: Any, path: str) -> Any:
    import torch.nn as nn

    weight, bias = _tensor(leaf, "weight"), _tensor(leaf, "bias")
    if weight is None or weight.dim() != 4:
        raise RebuildError(f"{path} (Conv2d): no 4-D weight")
    if hasattr(leaf, "stride"):  # scripted: the module's constants
        settings = {k: getattr(leaf, k) for k in ("stride", "padding", "dilation", "groups", "padding_mode")}
    else:  # traced: the operator's constant arguments (a padding mode other than zeros shows up as a failed check)
        args = _operator_args(leaf, ("aten::_convolution", "aten::conv2d"), path)
        kind = "aten::_convolution" if len(args) > 7 else "aten::conv2d"
        index = {"stride": 3, "padding": 4, "dilation": 5, "groups": 8 if kind == "aten::_convolution" else 6}
        settings = {k: args[i] for k, i in index.items()}
        if kind == "aten::_convolution" and args[6] is not False:
            raise RebuildError(f"{path} (Conv2d): a transposed convolution")
        if any(v is _NOT_CONSTANT for v in settings.values()):
            raise RebuildError(f"{path} (Conv2d): its settings are not constants of its graph")
    groups = int(settings["groups"])
    layer = nn.Conv2d(
        weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=settings["stride"],
        padding=settings["padding"], dilation=settings["dilation"], groups=groups, bias=bias is not None,
        padding_mode=settings.get("padding_mode", "zeros"),
    )
    layer.weight = nn.Parameter(weight)
    if bias is not None:
        layer.bias = nn.Parameter(bias)
    return layer


def _batch_norm(kind: str) -> Callable[[Any, str], Any]:
    def build(leaf: Any, path: str) -> Any:
        import torch.nn as nn

        mean, var = _tensor(leaf, "running_mean"), _tensor(leaf, "running_var")
        weight, bias = _tensor(leaf, "weight"), _tensor(leaf, "bias")
        if mean is None or var is None:
            raise RebuildError(f"{path} ({kind}): no running statistics (track_running_stats=False)")
        settings = _settings(leaf, path, ("aten::batch_norm",), {"eps": 7, "momentum": 6})
        layer = getattr(nn, kind)(mean.shape[0], eps=float(settings["eps"]),
                                  momentum=settings["momentum"], affine=weight is not None)
        if weight is not None:
            layer.weight, layer.bias = nn.Parameter(weight), nn.Parameter(bias)
        layer.running_mean, layer.running_var = mean, var
        tracked = _tensor(leaf, "num_batches_tracked")
        if tracked is not None:
            layer.num_batches_tracked = tracked
        return layer

    return build


def _simple(kind: str) -> Callable[[Any, str], Any]:
    def build(leaf: Any, path: str) -> Any:
        import torch.nn as nn

        return getattr(nn, kind)()

    return build


def _with(kind: str, ops: tuple[str, ...], wanted: dict[str, int], convert: Callable[[dict[str, Any]], dict[str, Any]] = dict) -> Callable[[Any, str], Any]:
    def build(leaf: Any, path: str) -> Any:
        import torch.nn as nn

        return getattr(nn, kind)(**convert(_settings(leaf, path, ops, wanted)))

    return build


def _pool_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    # An empty stride means "the kernel size" in the operator's signature.
    if values.get("stride") in ([], ()):
        values["stride"] = None
    return values


LAYERS: dict[str, Callable[[Any, str], Any]] = {
    "Linear": _linear,
    "Conv2d": _conv2d,
    "BatchNorm1d": _batch_norm("BatchNorm1d"),
    "BatchNorm2d": _batch_norm("BatchNorm2d"),
    **{kind: _simple(kind) for kind in ("ReLU", "ReLU6", "Tanh", "Sigmoid", "SiLU", "Identity")},
    "GELU": _with("GELU", ("aten::gelu",), {"approximate": 1}),
    "LeakyReLU": _with("LeakyReLU", ("aten::leaky_relu",), {"negative_slope": 1}),
    "Dropout": _with("Dropout", ("aten::dropout",), {"p": 1}),
    "Flatten": _with("Flatten", ("aten::flatten",), {"start_dim": 1, "end_dim": 2}),
    "MaxPool2d": _with("MaxPool2d", ("aten::max_pool2d",),
                       {"kernel_size": 1, "stride": 2, "padding": 3, "dilation": 4, "ceil_mode": 5}, _pool_kwargs),
    "AvgPool2d": _with("AvgPool2d", ("aten::avg_pool2d",),
                       {"kernel_size": 1, "stride": 2, "padding": 3, "ceil_mode": 4, "count_include_pad": 5,
                        "divisor_override": 6}, _pool_kwargs),
    "AdaptiveAvgPool2d": _with("AdaptiveAvgPool2d", ("aten::adaptive_avg_pool2d",), {"output_size": 1}),
}


def _chain(module: Any, path: str) -> list[tuple[str, Any]]:
    """The children in call order when the forward graph is only a chain of child calls; else RebuildError."""
    graph = module.graph
    inputs = list(graph.inputs())
    if len(inputs) != 2:
        raise RebuildError(f"{path} ({module.original_name}): its forward takes {len(inputs) - 1} inputs; only one is understood")
    children = dict(module.named_children())
    attributes: dict[Any, str] = {}
    current = inputs[1]
    order: list[tuple[str, Any]] = []
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::Constant":
            continue  # computes nothing; a constant that is used shows up in the node that uses it
        if kind == "prim::GetAttr" and node.s("name") in children:
            attributes[node.output()] = node.s("name")
            continue
        if kind == "prim::CallMethod" and node.s("name") == "forward":
            args = list(node.inputs())
            if len(args) == 2 and args[0] in attributes and args[1] is current:
                name = attributes[args[0]]
                if name in dict(order):
                    raise RebuildError(f"{path} ({module.original_name}): child {name!r} is called twice")
                order.append((name, children[name]))
                current = node.output()
                continue
        raise RebuildError(
            f"{path} ({module.original_name}): its forward is not a plain chain of its children "
            f"(it uses {kind}{'' if kind != 'prim::CallMethod' else ' ' + node.s('name')})"
        )
    outputs = list(graph.outputs())
    if len(outputs) != 1 or outputs[0] is not current or not order:
        raise RebuildError(f"{path} ({module.original_name}): its output is not the last child's output")
    return order


def _close(a: Any, b: Any) -> bool:
    import torch

    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
        torch.allclose(a, b, rtol=RTOL, atol=ATOL)
    )


def _rebuild(module: Any, path: str, x: Any, flat: list[Any]) -> Any:
    """Append the eager layers of ``module`` to ``flat``, checking each on its real input; return the output."""
    kind = getattr(module, "original_name", type(module).__name__)
    if kind in LAYERS:
        try:
            layer = LAYERS[kind](module, path).eval()
        except RebuildError:
            raise
        except Exception as error:  # noqa: BLE001 - settings torch refuses
            raise RebuildError(f"{path} ({kind}): cannot be rebuilt: {error}") from None
        expected, got = module(x), layer(x)
        if not _close(expected, got):
            raise RebuildError(f"{path} ({kind}): the rebuilt layer does not give the TorchScript layer's outputs")
        flat.append(layer)
        return expected
    if not list(module.named_children()):
        raise RebuildError(f"{path} ({kind}): not a layer the rebuilder knows ({', '.join(sorted(LAYERS))})")
    for name, child in _chain(module, path):
        x = _rebuild(child, f"{path}.{name}", x, flat)
    return x


def rebuild_eager(module: Any, example_inputs: Sequence[Any]) -> Any:
    """An eager ``nn.Sequential`` equivalent to the TorchScript ``module`` on ``example_inputs`` (tensors,
    a batch of real samples), or :class:`RebuildError`."""
    import torch
    import torch.nn as nn

    if len(example_inputs) != 1:
        raise RebuildError(f"the model takes {len(example_inputs)} inputs; only single-input chains are understood")
    if isinstance(module, torch.jit.TopLevelTracedModule):
        # A trace made in this process cannot call its submodules; a saved and loaded one can.
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        buffer.seek(0)
        module = torch.jit.load(buffer, map_location="cpu")
    flat: list[Any] = []
    with torch.no_grad():
        module.eval()
        _rebuild(module, "model", example_inputs[0], flat)
        rebuilt = nn.Sequential(*flat).eval()
        expected, got = module(*example_inputs), rebuilt(*example_inputs)
    if not _close(expected, got):
        raise RebuildError("the rebuilt module does not give the TorchScript module's outputs on the sample inputs")
    for parameter in rebuilt.parameters():
        parameter.requires_grad_(True)
    return rebuilt


def is_torchscript(module: Any) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)
