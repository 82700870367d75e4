"""Graph passes for ATen-level graphs (``torch.export``): training-mode ops made to follow
``module.training``, and device constants made to follow the module's device.

``torch.export`` records a model in the mode it was in: dropout's ``train`` flag, BatchNorm's
``training`` flag and its batch counter, and attention's ``dropout_p`` become constants of the
graph. :func:`follow_mode` replaces each such op with a call to a small submodule that reads
its own ``training`` attribute, so that ``graph_module.train()`` / ``.eval()`` switch them as
they switch ``nn.Dropout`` and ``nn.BatchNorm2d``. Anything else the model does differently in
training (stochastic depth, say) stays as recorded: the splitter compares the traced blocks
with the model in eval mode and refuses a mismatch (:func:`scpl.tracing.cut.verify`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx
from torch import Tensor, nn

aten = torch.ops.aten
DROPOUTS = (aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
            aten.feature_alpha_dropout.default)


class Dropout(nn.Module):
    """One of ATen's dropout ops with rate ``p``, active in training mode only."""

    def __init__(self, op: Callable, p: float):
        super().__init__()
        self.op, self.p = op, p

    def forward(self, x: Tensor) -> Tensor:
        """``op(x, p, self.training)``."""
        return self.op(x, self.p, self.training)

    def extra_repr(self) -> str:
        """The rate, for ``print(model)``."""
        return f"p={self.p}"


class BatchNorm(nn.Module):
    """ATen's batch_norm with running statistics: batch statistics (and an update of the running
    ones) in training mode, the running statistics in eval mode."""

    def __init__(self, momentum: float, eps: float, cudnn: bool):
        super().__init__()
        self.momentum, self.eps, self.cudnn = momentum, eps, cudnn

    def forward(self, x: Tensor, weight: Any, bias: Any, mean: Tensor, var: Tensor) -> Tensor:
        """``aten.batch_norm`` with ``training=self.training``."""
        return aten.batch_norm.default(x, weight, bias, mean, var, self.training, self.momentum, self.eps,
                                       self.cudnn)


class CountBatch(nn.Module):
    """BatchNorm's ``num_batches_tracked += 1``, in training mode only."""

    _is_impure = True  # its effect is the update: dead-code elimination keeps it

    def forward(self, counter: Tensor) -> Tensor:
        """The counter, incremented in place when training."""
        return counter.add_(1) if self.training else counter


class Attention(nn.Module):
    """ATen's scaled dot-product attention with attention dropout ``p`` in training mode only."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """``scaled_dot_product_attention`` with ``dropout_p = p`` when training, else 0."""
        return aten.scaled_dot_product_attention.default(*args, dropout_p=self.p if self.training else 0.0,
                                                         **kwargs)


def _replace(gm: torch.fx.GraphModule, node: torch.fx.Node, module: nn.Module, args: tuple,
             kwargs: dict, count: list[int]) -> None:
    name = f"_scpl_mode_{count[0]}"
    count[0] += 1
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args, kwargs)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def follow_mode(gm: torch.fx.GraphModule) -> None:
    """Make ``gm``'s dropout, BatchNorm (and its batch counter) and attention dropout follow
    ``gm.training`` (see the module docstring); ``gm`` was recorded in training mode."""
    count = [0]
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in DROPOUTS and len(node.args) == 3:
            _replace(gm, node, Dropout(node.target, float(node.args[1])), (node.args[0],), {}, count)
        elif node.target is aten.batch_norm.default and node.args[3] is not None and node.args[5] is True:
            x, w, b, mean, var, _, momentum, eps, cudnn = node.args
            _replace(gm, node, BatchNorm(momentum, eps, cudnn), (x, w, b, mean, var), {}, count)
        elif (node.target is aten.add_.Tensor and node.args[1] == 1
              and str(node.args[0].target).endswith("num_batches_tracked")):
            _replace(gm, node, CountBatch(), (node.args[0],), {}, count)
        elif node.target is aten.scaled_dot_product_attention.default:
            args, kwargs = node.args[:4], dict(node.kwargs)  # dropout_p: the 5th argument
            p = node.args[4] if len(node.args) > 4 else kwargs.get("dropout_p", 0.0)
            kwargs.pop("dropout_p", None)
            if p:
                rest = dict(zip(("is_causal", "scale", "enable_gqa"), node.args[5:]))
                _replace(gm, node, Attention(float(p)), args, {**rest, **kwargs}, count)
    gm.graph.lint()
    gm.recompile()


def drop_assertions(gm: torch.fx.GraphModule) -> None:
    """Remove ``torch.export``'s metadata assertions (dtype, device of the example), which would
    refuse the blocks on another device."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is aten._assert_tensor_metadata.default:
            gm.graph.erase_node(node)
    gm.recompile()


def retarget(gm: torch.fx.GraphModule, device: torch.device) -> bool:
    """Replace every device constant in ``gm``'s graph (``arange(..., device=cpu)``,
    ``to(cpu)``) with ``device``; return whether anything changed (then ``gm`` is recompiled)."""
    def swap(value: Any) -> Any:
        if isinstance(value, torch.device) and value != device:
            return device
        return value

    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        args = tuple(swap(a) for a in node.args)
        kwargs = {k: swap(v) for k, v in node.kwargs.items()}
        if args != node.args or kwargs != node.kwargs:
            node.args, node.kwargs, changed = args, kwargs, True
    if changed:
        gm.recompile()
    return changed
