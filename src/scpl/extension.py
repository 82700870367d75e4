"""Dynamic extension (DeInfoReg): append blocks to a trained model and train only those.

``extend(trained, [new_block, ...], example_input=...)`` returns a new :class:`DecoupledModel`
whose first blocks are the trained ones, frozen (they run forward in eval mode and are never
updated, in every executor), followed by the new blocks with their own heads, objectives and
optimizers. The old last block becomes an exit: its output (class logits) is its exit.

Side inputs: with ``side_inputs=n`` every batch's inputs are ``(x, s_1, ..., s_n)``. The old
blocks work on ``x`` and carry ``s_1..s_n`` along unchanged; the first new block is called with
the old final output *and* the side inputs, e.g. further tokens or extra features.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from .block import BlockList
from .errors import ConfigError
from .flow import Flow, call_with_flow, flow_to
from .heads import Leading
from .model import DecoupledModel


class Carry(nn.Module):
    """Runs ``inner`` on the leading part of the flow and passes the last ``n`` tensors along."""

    def __init__(self, inner: nn.Module, n: int):
        super().__init__()
        self.inner, self.n = inner, n

    def forward(self, *flow):
        """``inner``'s output on all but the last ``n`` tensors of ``flow``, followed by those ``n``."""
        main, side = flow[: -self.n], flow[-self.n :]
        out = call_with_flow(self.inner, main[0] if len(main) == 1 else tuple(main))
        return (*(out if isinstance(out, tuple) else (out,)), *side)


def extend(trained: DecoupledModel, new_layers: Sequence[nn.Module], *, example_input: Flow,
           side_inputs: int = 0, **options: Any) -> DecoupledModel:
    """The trained blocks, frozen, followed by ``new_layers`` (one block each), trained alone.

    ``options`` go to :class:`DecoupledModel` for the new blocks (``method``, ``optimizer``,
    ``block_lr``, ``exits``, ...); ``num_classes`` is the trained model's. ``block_lr`` counts
    from the first new block (under ``"ramp"`` it trains at 1x the rate, the next at 1.5x, ...),
    since the new blocks are the ones that learn. The last new layer outputs logits.
    The trained blocks are copied (without their optimizers: frozen blocks never step), so
    ``trained`` itself is left unchanged and can still be used; the copies cost their weights'
    memory once more.
    """
    if not new_layers:
        raise ConfigError("extend() needs at least one new block")
    if side_inputs and (isinstance(example_input, torch.Tensor) or len(example_input) <= side_inputs):
        raise ConfigError(f"with side_inputs={side_inputs} the inputs must be a tuple "
                          f"(x, {side_inputs} side tensors)")
    # ``trained`` stays as it was. One deepcopy keeps modules shared between blocks shared; the
    # frozen copies never step, so their optimizers and schedulers are not copied (memo -> None).
    memo: dict = {id(obj): None for b in trained.blocks for obj in (b.optimizer, b.scheduler)
                  if obj is not None}
    old = list(copy.deepcopy(trained.blocks, memo))
    for module in (m for block in old for m in block.modules()):
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()  # cuDNN wants a copied RNN's weights in one chunk again
    last = old[-1]
    last.classifier = nn.Identity()  # its output is already the class logits: that is its exit
    for block in old:
        block.mode = "frozen"
        if side_inputs:
            block.layers = Carry(block.layers, side_inputs)
            block.features = Leading(block.features, -side_inputs)
    flow = example_input
    with torch.no_grad():
        for block in old:
            block.eval()
            flow = block(flow_to(flow, block.device))
    new = DecoupledModel(list(new_layers), num_classes=trained.num_classes, example_input=flow, **options)
    new.blocks = BlockList(old + list(new.blocks))
    for i, block in enumerate(new.blocks):
        block.index = i
    return new
