"""Local heads: how a block's output becomes the B x D vector its local loss sees.

A head is ``features`` (block output -> B x D, no parameters by default) followed by a
``projector`` (B x D -> B x out). Conv maps are pooled to a small grid before flattening so
that projectors stay small (the SCPL and DeInfoReg research code flattened full-resolution
maps and built heads of 34M and 142M parameters for one block).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from torch import Tensor, nn

from .errors import ConfigError
from .flow import Flow

def masked_mean(seq: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean over positions of ``seq`` (B, T, D); ``mask`` (B, T) is True at valid positions."""
    if mask is None:
        return seq.mean(dim=1)
    weights = mask.to(seq.dtype).unsqueeze(-1)
    return (seq * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class PooledFeatures(nn.Module):
    """Default feature extractor.

    * (B, C, H, W) conv maps: adaptive average pooling to ``grid`` x ``grid``, then flatten.
    * (B, T, D) sequences: mean over positions; with a tuple ``(seq, mask, ...)`` the mean is
      masked (mask True at valid tokens).
    * (B, D): unchanged. Anything else: flattened.
    """

    def __init__(self, grid: int = 2):
        super().__init__()
        self.grid = grid

    def forward(self, out: Flow) -> Tensor:
        mask = None
        if isinstance(out, (tuple, list)):
            out, mask = out[0], (out[1] if len(out) > 1 else None)
        if out.dim() == 4:
            return nn.functional.adaptive_avg_pool2d(out, self.grid).flatten(1)
        if out.dim() == 3:
            return masked_mean(out, mask)
        if out.dim() == 2:
            return out
        return out.flatten(1)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


def mlp(dims: Sequence[int], batch_norm: bool = False) -> nn.Sequential:
    """Linear layers through ``dims`` with (BatchNorm +) ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


ProjectorSpec = Union[str, nn.Module, Callable[[int], nn.Module], None]

PROJECTORS = ("identity", "linear", "mlp", "mlp_bn", "deinforeg")


def build_projector(spec: ProjectorSpec, in_dim: int, out_dim: int, hidden: int = 512) -> nn.Module:
    """Build a projector from ``in_dim`` features.

    ``spec``: ``"identity"`` (or None), ``"linear"`` (in->out), ``"mlp"`` (in->hidden->out, ReLU),
    ``"mlp_bn"`` (same with BatchNorm), ``"deinforeg"`` (in->hidden->hidden->hidden with
    BatchNorm+ReLU between, as in DeInfoReg with a configurable width instead of 2048), an
    ``nn.Module`` (used as is) or a factory ``in_dim -> nn.Module``.
    """
    if spec is None or spec == "identity":
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        if spec == "linear":
            return nn.Linear(in_dim, out_dim)
        if spec == "mlp":
            return mlp([in_dim, hidden, out_dim])
        if spec == "mlp_bn":
            return mlp([in_dim, hidden, out_dim], batch_norm=True)
        if spec == "deinforeg":
            return mlp([in_dim, hidden, hidden, hidden], batch_norm=True)
        raise ConfigError(f"unknown projector {spec!r}; choose one of {list(PROJECTORS)} or pass a module/factory")
    if callable(spec):
        module = spec(in_dim)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"projector factory must return an nn.Module, got {type(module).__name__}")
        return module
    raise ConfigError(f"projector must be a name, an nn.Module or a factory, got {type(spec).__name__}")
