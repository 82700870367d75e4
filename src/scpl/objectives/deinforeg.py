"""DeInfoReg: information-regularised local loss.

Decoupled supervised learning with information regularisation (DeInfoReg); the terms follow
VICReg (Bardes et al., ICLR 2022) with a label-correlation invariance term.
For a projected batch z (N x D) with zn = z / ||z|| row-wise and one-hot labels Y (N x C)::

    inv = mean_{i,j} (C(Y)_ij - C(zn)_ij)^2        # C(.) = row-centred, unit-norm Gram matrix
    var = mean_d relu(gamma - sqrt(Var(z_d) + eps))
    cov = sum_{d != e} Cov(zn)_de^2 / D
    L   = a * inv + b * var + c * cov

C(Y)_ij is 1 for a same-class pair and -1/(C-1) otherwise.

Default behaviour fixes a defect of the original code, which computed the variance term on
the unit-norm rows zn and divided it by the batch size, so that the hinge could never be
satisfied and the term contributed almost nothing. ``original=True`` restores that variant.
All tensors stay on the device and dtype of ``features``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


def sample_correlation(x: Tensor) -> Tensor:
    """N x N correlation between the rows of ``x``: each row centred over its features, unit norm."""
    centred = x - x.mean(dim=1, keepdim=True)
    centred = nn.functional.normalize(centred, dim=1)
    return centred @ centred.T


class DeInfoRegLoss(nn.Module):
    """DeInfoReg loss on projected features ``(N, D)`` and labels ``(N,)``; returns a scalar."""

    pairwise = True  # compares samples with each other: replicas compute it on the gathered batch

    def __init__(
        self,
        num_classes: int,
        inv_weight: float = 1.0,
        var_weight: float = 1.0,
        cov_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        original: bool = False,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"DeInfoRegLoss needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.inv_weight, self.var_weight, self.cov_weight = inv_weight, var_weight, cov_weight
        self.gamma, self.eps, self.original = gamma, eps, original

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """The scalar loss ``L`` (see the module); 0, with a warning, for a batch of one sample."""
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            raise ValueError(
                f"DeInfoRegLoss expects features (N, D) and labels (N,), got {tuple(features.shape)} "
                f"and {tuple(labels.shape)}"
            )
        n, d = features.shape
        if n < 2:
            warnings.warn("DeInfoRegLoss: a batch of one sample has no variance or covariance; the loss "
                          "is 0. Use batches of at least 2 (drop_last=True).", RuntimeWarning, stacklevel=2)
            return features.sum() * 0.0
        zn = nn.functional.normalize(features, dim=1)
        one_hot = nn.functional.one_hot(labels, self.num_classes).to(features.dtype)
        inv = (sample_correlation(one_hot) - sample_correlation(zn)).pow(2).mean()

        var_input = zn if self.original else features
        std = torch.sqrt(var_input.var(dim=0) + self.eps)
        var = torch.relu(self.gamma - std).mean()
        if self.original:
            var = var / n

        centred = zn - zn.mean(dim=0)
        cov = centred.T @ centred / max(n - 1, 1)
        off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
        cov_term = off_diagonal.pow(2).sum() / d
        return self.inv_weight * inv + self.var_weight * var + self.cov_weight * cov_term
