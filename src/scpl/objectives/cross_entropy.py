"""Cross-entropy on logits, the local objective of greedy local learning.

Belilovsky et al., "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019, and
"Decoupled Greedy Learning of CNNs" (DGL), ICML 2020: each block's head maps its features
to class logits and is trained with L = -mean_i log softmax(f_i)[y_i].
"""

from __future__ import annotations

from torch import Tensor, nn


class CrossEntropyLoss(nn.Module):
    """Cross-entropy on logits ``(N, C)`` and labels ``(N,)``; returns a scalar."""

    pairwise = False  # a mean over samples: replicas compute it on their own shard

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the logits ``features`` against ``labels``, with the label smoothing."""
        return nn.functional.cross_entropy(features, labels, label_smoothing=self.label_smoothing)
