"""Optimizers and learning-rate schedules of the papers' recipes, built by name, and the
per-block learning-rate rules of the decoupled methods.

``build_optimizer`` gives Adam, AdamW, SGD (optionally Nesterov) or LARS (You et al., 2017,
"Large Batch Training of Convolutional Networks"), which DeInfoReg's vision recipe uses and
torch does not ship. ``build_scheduler`` gives a per-epoch schedule: constant, or cosine
from ``lr`` to ``min_lr`` after an optional linear warm-up.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import names
from .errors import ConfigError
from .methods import is_multiplier

OPTIMIZERS = names.OPTIMIZER_NAMES
SCHEDULES = names.SCHEDULE_NAMES
BLOCK_LR = names.BLOCK_LR_NAMES


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    For each parameter tensor w with gradient g (weight decay wd added first, g += wd * w):
    the local rate is ``trust * ||w|| / ||g||`` (1 where either norm is 0), the update
    direction ``u = local_rate * g`` feeds a momentum buffer ``b = momentum * b + u`` and
    ``w -= lr * b``. Parameter groups with ``lars=False`` (biases and normalisation weights,
    as in the DeInfoReg recipe) skip both weight decay and adaptation.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001):
        if lr <= 0:
            raise ConfigError(f"LARS needs lr > 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One LARS update of every parameter with a gradient; return ``closure()``'s loss, if given."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else g
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * ratio
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _lars_groups(params: Sequence[Tensor]) -> list[dict]:
    """Biases and normalisation weights (1-D tensors) are excluded from decay and adaptation."""
    return [{"params": [p for p in params if p.dim() > 1]},
            {"params": [p for p in params if p.dim() <= 1], "lars": False, "weight_decay": 0.0}]


def build_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``params``."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "lars":
        return LARS(_lars_groups(params), lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int = 0,
                    min_lr: float = 0.0,
                    restarts: Sequence[int] = ()) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """A per-epoch schedule: ``"constant"`` or ``"cosine"`` from each group's lr towards ``min_lr``,
    after ``warmup_epochs`` of linear warm-up (lr * (e+1)/warmup in epoch e). Epoch e of the cosine
    part trains at ``min_lr + (lr - min_lr) * (1 + cos(pi * e / span)) / 2`` with span = epochs -
    warmup, so its first epoch is at lr and ``min_lr`` is reached when the last epoch has ended.
    Every group anneals to the same ``min_lr``: per-block multipliers (``block_lr``) scale the peak
    rate, not the floor.
    ``"constant"`` without warm-up is None (no scheduler).

    ``restarts`` (epochs r_1 < r_2 < ... < epochs) end the schedule early and start it again, as in
    SGDR (Loshchilov & Hutter, ICLR 2017): the first cycle is the schedule above over r_1 epochs,
    each later cycle a cosine from lr to ``min_lr`` over the epochs up to the next restart, without
    warm-up. ``scpl train --resume --epochs N`` on a finished run adds one (see scpl.runner.state).
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}")
    bounds = [*restarts, epochs]
    if any(b <= a for a, b in zip([0, *bounds], bounds)):
        raise ConfigError(f"restarts {list(restarts)} must increase and lie inside (0, epochs={epochs})")
    first = bounds[0]
    if warmup_epochs < 0 or (warmup_epochs > 0 and warmup_epochs >= first):
        raise ConfigError(f"warmup_epochs ({warmup_epochs}) must be in [0, epochs={first})")
    base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    if name == "constant" and warmup_epochs == 0:
        return None
    if min_lr < 0:
        raise ConfigError(f"min_lr must be >= 0, got {min_lr}")
    if name == "cosine" and any(min_lr > b for b in base):
        raise ConfigError(f"min_lr ({min_lr}) is above this optimizer's lr {min(base)}: the cosine schedule "
                          "anneals down to min_lr (block_lr multiplies each block's lr, and a multiplier "
                          "below 1 lowers it): lower min_lr")

    def factor(i: int):
        def f(epoch: int) -> float:
            start, end, warmup = 0, first, warmup_epochs
            for a, b in zip(bounds, bounds[1:]):
                if epoch >= a:
                    start, end, warmup = a, b, 0
            e = epoch - start
            if e < warmup:
                return (e + 1) / warmup
            if name == "constant":
                return 1.0
            span = max(end - start - warmup, 1)
            t = min(e - warmup, span) / span
            floor = min_lr / base[i] if base[i] > 0 else 0.0
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])


def block_lr_scales(rule: Union[str, Sequence[float]], k: int) -> list[float]:
    """Multipliers of the optimizer's learning rate for blocks 0..k-1.

    ``"uniform"``: 1 for every block (the papers' setting). ``"ramp"``: ``min(1 + i / 2, 2)`` for
    block i, so 1, 1.5, 2, 2 for K=4 (see :data:`scpl.methods.BLOCK_LR_RULES` for the measurements
    behind it). A sequence: one finite positive multiplier per block, as given. With one block
    (BP) every rule but a sequence is 1.
    """
    if isinstance(rule, str):
        if rule == "uniform":
            return [1.0] * k
        if rule == "ramp":
            return [min(1.0 + i / 2, 2.0) for i in range(k)]
        raise ConfigError(f"unknown block_lr rule {rule!r}; choose one of {list(BLOCK_LR)} or give one "
                          "multiplier per block")
    scales = list(rule)
    if len(scales) != k or not all(is_multiplier(s) for s in scales):
        raise ConfigError(f"block_lr {scales} must be {k} positive multipliers, one per block (or a rule: "
                          f"{list(BLOCK_LR)})")
    return [float(s) for s in scales]


OptimizerFactory = Callable[..., torch.optim.Optimizer]


def scale_lr(factory: OptimizerFactory, scale: float) -> OptimizerFactory:
    """``factory`` whose optimizer trains at ``scale`` times its rate: every parameter group's
    ``lr`` is multiplied once, when the optimizer is built (before a scheduler reads it)."""
    if scale == 1.0:
        return factory

    def build(params):
        optimizer = factory(params)
        for group in optimizer.param_groups:
            group["lr"] *= scale
        return optimizer
    return build
