"""Building a DecoupledModel's blocks: the method's settings checked, the model's parts wrapped
for ContSup, each part's head sized on the example flow it produces, the last block, and a
guard against one model's weights training in two DecoupledModels."""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from functools import partial
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import names
from .block import Block, run_layers
from .context import ContextSpec, InfoProTerm
from .context import decoder as context_decoder
from .context import wrap as context_wrap
from .errors import ConfigError
from .flow import Flow, call_with_flow, flow_to
from .heads import HeadFactory, Leading, final_linear, per_block
from .methods import Method
from .objectives import CrossEntropyLoss
from .optim import block_lr_scales, scale_lr

PRECISIONS: dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16}


class Chain(nn.Module):
    """Blocks' layers run as one module (the BP baseline): no stop-gradient between them."""

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, *flow: Any) -> Flow:
        """Run the parts in order on ``flow``, moving it onto each part's device."""
        out: Flow = flow[0] if len(flow) == 1 else flow
        for part in self.parts:
            param = next(part.parameters(), None)
            if param is not None:
                out = flow_to(out, param.device)
            out = call_with_flow(part, out)
        return out


def check_options(precision: str, clip_grad_norm: Optional[float], num_classes: int, last_block: str,
                   method: str) -> None:
    """ConfigError unless precision, clip_grad_norm, num_classes and last_block are valid for ``method``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ConfigError(f"clip_grad_norm must be a positive number, got {clip_grad_norm}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2 (a classifier needs at least two classes), "
                          f"got {num_classes!r}")
    if last_block not in names.LAST_BLOCK_NAMES:
        raise ConfigError(f"unknown last_block {last_block!r}; choose one of {list(names.LAST_BLOCK_NAMES)}")
    if last_block != "ce" and method == "bp":
        raise ConfigError("last_block='contrastive' trains the last block with a local objective; "
                          "BP has none")


def context_spec(contsup: Union[str, ContextSpec, None], method: str,
                 infopro: Optional[float] = None) -> Optional[ContextSpec]:
    """``contsup`` as a ContextSpec (a string names the mode), with InfoPro's reconstruction
    weight ``infopro`` (lambda_x; lambda_y = 1) if given (without ``contsup``: mode "R0", InfoPro
    itself), or None; ConfigError with method 'bp'."""
    context = ContextSpec(contsup) if isinstance(contsup, str) else contsup
    if infopro is not None:
        if method == "bp":
            raise ConfigError("the InfoPro term is a local loss of decoupled blocks; BP has none")
        context = dataclasses.replace(context or ContextSpec("R0"), infopro=(float(infopro), 1.0))
    if context is not None and method == "bp":
        raise ConfigError("ContSup adds context between decoupled blocks; it does not apply to method='bp'")
    return context


def ce_block(layers: nn.Module, index: int) -> Block:
    """A block trained with cross-entropy on its output logits (the last block; BP's only one)."""
    return Block(layers, CrossEntropyLoss(), nn.Flatten(), nn.Identity(), index=index)


def assemble(parts: list[nn.Module], devices: list[torch.device], heads: HeadFactory, example_input: Flow,
              context: Optional[ContextSpec], last_block: str) -> list[Block]:
    """Decoupled blocks from the model's parts: each part's head is sized on the example
    flow it produces; ContSup wraps the parts that receive context."""
    for part, dev in zip(parts, devices):
        part.to(dev)
    k, built = len(parts), []
    flow = flow_to(example_input, devices[0])
    for i in range(k - 1):
        if context is not None:
            parts[i] = context_wrap(parts[i], context, flow, first=i == 0, last=False).to(devices[i])
        with torch.no_grad():
            parts[i].eval()
            flow = run_layers(parts[i], flow_to(flow, devices[i]), i)
        head = heads(i, flow)
        block = Block(parts[i], head.objective, head.features, head.projector, head.classifier, index=i)
        if context is not None and context.infopro is not None:
            block.extra_loss = InfoProTerm(context_decoder(flow[0].shape[1], flow[1].shape), *context.infopro)
        built.append(block.to(devices[i]))
    if context is not None:
        parts[-1] = context_wrap(parts[-1], context, flow, first=False, last=True).to(devices[-1])
    if last_block == "contrastive":
        head = heads.contrastive_last(final_linear(parts[-1], heads.num_classes))
        last = Block(parts[-1], head.objective, head.features, head.projector, head.classifier, index=k - 1)
    else:
        last = ce_block(parts[-1], k - 1)
    built.append(last.to(devices[-1]))
    return built


_CLAIMED: dict[int, "weakref.ref[Tensor]"] = {}  # id -> parameter, of every DecoupledModel's parameters


def claim(model: Union[nn.Module, Sequence[nn.Module]]) -> None:
    """Warn when ``model``'s parameters already train in another DecoupledModel (they would be
    shared: both models would update the same weights)."""
    modules = list(model) if isinstance(model, (list, tuple)) else [model]
    params = [p for m in modules if isinstance(m, nn.Module) for p in m.parameters()]
    for key in [k for k, ref in _CLAIMED.items() if ref() is None]:
        del _CLAIMED[key]
    if any(_CLAIMED.get(id(p), lambda: None)() is p for p in params):
        warnings.warn("this model's parameters already belong to another DecoupledModel, so both would train "
                      "the same weights; give each DecoupledModel its own model (build a fresh one, or "
                      "copy.deepcopy)", RuntimeWarning, stacklevel=3)
    _CLAIMED.update((id(p), weakref.ref(p)) for p in params)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def build_blocks(spec: Method, parts: list[nn.Module], devices: Any, num_classes: int, heads: dict,
                 example_input: Flow, context: Optional[ContextSpec], last_block: str,
                 view: Optional[int]) -> list[Block]:
    """A model's blocks from its parts: placed on ``devices`` (one, or one per part), each with
    the method's head (built by :class:`~scpl.heads.HeadFactory` from ``heads``; ``view``: how
    many leading values of a traced model's flow a head reads, None for other models), or BP's
    one block."""
    places = [torch.device(d) for d in per_block(devices or "cpu", len(parts), "devices")]
    if not spec.objective:
        return [ce_block(Chain([p.to(d) for p, d in zip(parts, places)]), 0)]
    wrap = partial(Leading, stop=view or 1) if context is not None or view is not None else None
    factory = HeadFactory.for_method(spec, num_classes, max(len(parts) - 1, 1), **heads, wrap=wrap)
    return assemble(parts, places, factory, example_input, context, last_block)


def configure(blocks: list[Block], spec: Method, optimizer: Any, scheduler: Any, block_lr: Any,
              precision: str, clip_grad_norm: Optional[float], compile: bool) -> list[float]:
    """Give every block its optimizer (at its ``block_lr`` multiple of the rate; None: the
    method's rule, or "uniform" when ``optimizer`` is one per block), scheduler, precision and
    clipping, and compile it if asked; the multipliers."""
    k = len(blocks)
    if block_lr is None:  # one optimizer per block sets each block's rate as given
        block_lr = "uniform" if isinstance(optimizer, (list, tuple)) else spec.block_lr
    scales = block_lr_scales(block_lr, k)
    for block, opt, scale, sched in zip(blocks, per_block(optimizer or _adam, k, "optimizer"), scales,
                                        per_block(scheduler, k, "scheduler")):
        block.configure(scale_lr(opt, scale), sched, PRECISIONS[precision], clip_grad_norm)
        if compile:
            block.compile()
    return scales
