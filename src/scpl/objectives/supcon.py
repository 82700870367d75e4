"""Supervised contrastive loss, the local objective of SCPL.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020; used per block by
Wang et al., "Supervised Contrastive Parallel Learning" (SCPL), 2022.

With z_i = f_i / ||f_i||, s_ij = z_i . z_j / tau and P(i) = {p != i : y_p = y_i}::

    L = -(1/N') sum_{i : |P(i)| > 0} (1/|P(i)|) sum_{p in P(i)} [ s_ip - log sum_{a != i} exp(s_ia) ]

where N' counts the anchors that have at least one positive. Anchors without a positive
are skipped; a batch with no positive pair at all gives 0 (with a warning), never NaN.

``original=True`` reproduces the SCPL research code: it divides by |P(i)| + 1 and averages
over all N anchors, positive-less ones included.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


class SupConLoss(nn.Module):
    """SupCon loss on projected features ``(N, D)`` and integer labels ``(N,)``; returns a scalar."""

    pairwise = True  # compares samples with each other: replicas compute it on the gathered batch

    def __init__(self, temperature: float = 0.1, original: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.original = original

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """The scalar loss ``L`` (see the module); 0, with a warning, if no sample has a positive."""
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            raise ValueError(
                f"SupConLoss expects features (N, D) and labels (N,), got {tuple(features.shape)} "
                f"and {tuple(labels.shape)}"
            )
        n = features.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
        positives = (labels[:, None] == labels[None, :]) & ~self_mask
        num_pos = positives.sum(dim=1)
        anchors = num_pos > 0
        if not torch.compiler.is_compiling() and not bool(anchors.any()):  # (a compiled graph has no branch)
            warnings.warn(
                "SupConLoss: no sample in this batch has a positive (all labels distinct); the loss "
                "is 0. Use larger batches or a class-balanced sampler.",
                RuntimeWarning,
                stacklevel=2,
            )
        z = nn.functional.normalize(features, dim=1)
        sim = z @ z.T / self.temperature
        sim = sim - sim.max(dim=1, keepdim=True).values.detach()
        log_denominator = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1)
        log_prob = sim - log_denominator[:, None]
        pos_log_prob = (log_prob * positives).sum(dim=1)
        if self.original:
            return -(pos_log_prob / (num_pos + 1)).mean()
        # mean over the anchors with a positive, without data-dependent shapes (one compiled graph);
        # no anchor at all: 0 (0 / 1)
        per_anchor = torch.where(anchors, pos_log_prob / num_pos.clamp(min=1), torch.zeros_like(pos_log_prob))
        return -per_anchor.sum() / anchors.sum().clamp(min=1)
