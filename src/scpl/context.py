"""ContSup context supply: detached context added to each block's input by a learned projection.

Modes (Luo et al., "ContSup", and InfoPro's setting): ``"R0"`` none; ``"E"`` a small encoder
of the raw input x (two 3x3 conv+BN+ReLU) at every boundary; ``"R1"`` a projection of the
previous block's own input (a detached skip around it); ``"R1E"`` both; ``"Rn"`` the inputs of
the last n blocks, one projection each. Block k+1 receives ``(h_k, x?, h_{k-1}, ..., h_{k-n+1})``
(all detached, as every flow between blocks) and computes

    input = h_k + sum_c P_c(context_c)

before its layers; every projection belongs to the consuming block and is trained by its loss.
Optional InfoPro term (``infopro=(lambda_x, lambda_y)``, any mode; with "R0" it is InfoPro
itself, Wang et al., ICLR 2021: greedy local learning plus reconstruction): x travels with the
flow to every block, and a decoder on each block but the last reconstructs x from h_k; its
local loss becomes ``lambda_x * BCE(recon, x) + lambda_y * L``. A projection matches shape by
element-wise addition: adaptive average pooling to the target size, then a 1x1 conv + BatchNorm
(``pool_first=True``, cheaper, the default), or the conv first.
The context branches stay in the network at test time: :func:`context_cost` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .flow import flow_to


@dataclass(frozen=True)
class ContextSpec:
    """A ContSup configuration: the context ``mode`` (``n``: history length of "Rn"), the projection
    order (``pool_first``) and the optional InfoPro weights ``infopro``.
    """

    mode: str = "R0"
    n: int = 1  # history length for "Rn"
    pool_first: bool = True
    infopro: Optional[tuple[float, float]] = None  # (lambda_x, lambda_y): InfoPro reconstruction term

    def __post_init__(self):
        if self.mode not in ("R0", "E", "R1", "R1E", "Rn"):
            raise ConfigError(f"ContSup mode must be R0, E, R1, R1E or Rn, got {self.mode!r}")
        if self.n < 1:
            raise ConfigError("ContSup Rn needs n >= 1")
        if self.infopro is not None and not (len(self.infopro) == 2 and all(w >= 0 for w in self.infopro)):
            raise ConfigError(f"infopro is (lambda_x, lambda_y), two weights >= 0, got {self.infopro!r}")

    @property
    def uses_x(self) -> bool:
        """Whether blocks add an encoding of the raw input x to their input (modes E and R1E)."""
        return self.mode in ("E", "R1E")

    @property
    def carries_x(self) -> bool:
        """Whether the raw input x travels with the flow (for the E branch or the InfoPro term)."""
        return self.uses_x or self.infopro is not None

    @property
    def history(self) -> int:
        """How many previous block inputs each block receives (0, 1 or ``n``)."""
        return {"R0": 0, "E": 0, "R1": 1, "R1E": 1, "Rn": self.n}[self.mode]


class Projection(nn.Module):
    """Context (B, C, H, W) -> target (B, C', H', W'): pool + 1x1 conv + BN (or conv first)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], pool_first: bool = True):
        super().__init__()
        self.size, self.pool_first = size, pool_first
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` projected to the target's channels and spatial size."""
        if self.pool_first:
            return self.bn(self.conv(nn.functional.adaptive_avg_pool2d(x, self.size)))
        return nn.functional.adaptive_avg_pool2d(self.bn(self.conv(x)), self.size)


def encoder(c_in: int, c_out: int, size: tuple[int, int], pool_first: bool = True) -> nn.Module:
    """ContSup's E branch: two 3x3 conv+BN+ReLU on the raw input, then pooled to ``size``."""
    mid = max(c_out // 2, 1)
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(size) if pool_first else nn.Identity(),
        nn.Conv2d(c_in, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Identity() if pool_first else nn.AdaptiveAvgPool2d(size),
    )


class ContextBlock(nn.Module):
    """A block's layers with ContSup context: ``(h, x?, history...) -> (h', x?, h, history[:n-1])``.

    Block 0 receives x alone. The last block returns only its layers' output (class logits).
    """

    def __init__(self, inner: nn.Module, spec: ContextSpec, first: bool, last: bool,
                 main_shape: Optional[torch.Size] = None, x_shape: Optional[torch.Size] = None,
                 history_shapes: tuple = ()):
        super().__init__()
        self.inner, self.spec, self.first, self.last = inner, spec, first, last
        self.encoder: Optional[nn.Module] = None
        self.projections = nn.ModuleList()
        if not first:
            if main_shape is None:
                raise ConfigError("ContextBlock: a block after the first needs main_shape")
            c, size = main_shape[1], (main_shape[2], main_shape[3])  # (B, C, H, W): wrap checked it
            if spec.uses_x:
                if x_shape is None:
                    raise ConfigError("ContextBlock: a context that uses the input needs x_shape")
                self.encoder = encoder(x_shape[1], c, size, spec.pool_first)
            for shape in history_shapes:
                self.projections.append(Projection(shape[1], c, size, spec.pool_first))

    def forward(self, *flow: Tensor):
        """Run the layers on ``h`` plus its projected context; return the output and the context to
        hand on (the output alone in the last block).
        """
        x: Optional[Tensor]
        history: tuple[Tensor, ...]
        if self.first:
            h, x, history = flow[0], flow[0], ()
            inputs = h
        else:
            h = flow[0]
            x = flow[1] if self.spec.carries_x else None
            history = flow[2:] if self.spec.carries_x else flow[1:]
            inputs = h
            if self.encoder is not None:
                inputs = inputs + self.encoder(x)
            for proj, ctx in zip(self.projections, history):
                inputs = inputs + proj(ctx)
        out = self.inner(inputs)
        if self.last:
            return out
        carried = ((x,) if self.spec.carries_x else ()) + ((h,) + tuple(history))[: self.spec.history]
        return (out, *carried)


def wrap(layers: nn.Module, spec: ContextSpec, flow, first: bool, last: bool) -> ContextBlock:
    """``layers`` as a :class:`ContextBlock`, its projections sized from the incoming (example) ``flow``."""
    tensors = (flow,) if isinstance(flow, Tensor) else tuple(flow)
    if any(t.dim() != 4 for t in tensors):
        raise ConfigError("ContSup needs conv blocks whose outputs are 4-D feature maps (B, C, H, W)")
    if first:
        return ContextBlock(layers, spec, first=True, last=last)
    main = tensors[0].shape
    x_shape = tensors[1].shape if spec.carries_x else None
    history = tuple(t.shape for t in tensors[2 if spec.carries_x else 1:])
    return ContextBlock(layers, spec, first=False, last=last, main_shape=main, x_shape=x_shape,
                        history_shapes=history)


class InfoProTerm(nn.Module):
    """InfoPro's local loss on a context flow ``(h_k, x, ...)``:
    ``lambda_y * L + lambda_x * BCE(decoder(h_k), x01)``, x01 being x min-max scaled to [0, 1]
    per sample (scpl's inputs are standardised). A :class:`scpl.block.LossTerm`.
    """

    def __init__(self, decoder: nn.Module, lambda_x: float, lambda_y: float = 1.0):
        super().__init__()
        self.decoder, self.lambda_x, self.lambda_y = decoder, lambda_x, lambda_y

    def forward(self, loss: Tensor, outputs) -> Tensor:
        """``loss`` weighted with the reconstruction loss of x (``outputs[1]``) from h_k (``outputs[0]``)."""
        h, x = outputs[0], outputs[1]
        flat = x.flatten(1)
        lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
        target = ((flat - lo) / (hi - lo).clamp(min=1e-12)).view_as(x)
        recon = nn.functional.binary_cross_entropy_with_logits(self.decoder(h), target)
        return self.lambda_y * loss + self.lambda_x * recon


def context_cost(blocks, example_input) -> dict[str, float]:
    """Parameters and multiply-accumulates per sample of the ContSup context branches of a
    model's ``blocks`` (run on ``example_input``), absolute and as a fraction of the whole
    backbone (heads excluded).
    """
    branches = [m for b in blocks if isinstance(b.layers, ContextBlock)
                for m in ([b.layers.encoder] if b.layers.encoder is not None else [])
                         + list(b.layers.projections)]
    params = sum(p.numel() for m in branches for p in m.parameters())
    total_params = sum(p.numel() for b in blocks for p in b.layers.parameters())
    first = example_input if isinstance(example_input, Tensor) else example_input[0]
    chain = _Forward(blocks).eval()
    macs_all = count_macs(chain, example_input) / first.shape[0]
    macs_ctx = sum(count_macs(chain, example_input, only=m) for m in branches) / first.shape[0]
    return {"params": params, "params_fraction": params / total_params,
            "macs_per_sample": macs_ctx, "macs_fraction": macs_ctx / macs_all if macs_all else 0.0}


class _Forward(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = blocks

    def forward(self, inputs):
        flow = inputs
        for block in self.blocks:
            flow = block(flow_to(flow, block.device))
        return flow


def decoder(c_in: int, x_shape: torch.Size) -> nn.Module:
    """InfoPro's reconstruction head: upsample h_k to x's size, conv+BN+ReLU, conv to x's channels
    (logits).
    """
    mid = max(min(c_in, 32), 4)
    return nn.Sequential(
        nn.Upsample(size=tuple(x_shape[2:]), mode="bilinear", align_corners=False),
        nn.Conv2d(c_in, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, x_shape[1], 3, padding=1),
    )


def count_macs(module: nn.Module, *inputs, only: Optional[nn.Module] = None) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers in one forward of ``module`` (of
    those inside ``only``, if given), for the whole batch of ``inputs``.
    """
    total = [0]

    def hook(m: nn.Module, args, out: Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features

    scope = only if only is not None else module
    handles = [m.register_forward_hook(hook) for m in scope.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]
