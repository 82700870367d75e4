"""Symmetric label noise for robustness experiments."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import num_samples


def symmetric_noise(labels: Tensor, rate: float, num_classes: int, seed: int = 0) -> Tensor:
    """Each label, with probability ``rate``, replaced by a uniformly drawn *other* class.

    ``rate`` is a fraction in [0, 1); the draw is seeded, so the same call gives the same labels.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise rate must be a fraction in [0, 1), got {rate} (20% is 0.2)")
    if num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(labels.shape, generator=g) < rate
    offset = torch.randint(1, num_classes, labels.shape, generator=g)
    return torch.where(flip, (labels.long() + offset) % num_classes, labels.long())


class NoisyLabels(Dataset):
    """A dataset of (x, y) whose labels carry seeded symmetric noise; ``clean_labels`` keeps the truth."""

    def __init__(self, dataset: Dataset, rate: float, num_classes: int, seed: int = 0):
        self.dataset = dataset
        self.clean_labels = torch.tensor([int(dataset[i][1]) for i in range(num_samples(dataset))])
        self.labels = symmetric_noise(self.clean_labels, rate, num_classes, seed)

    def __len__(self) -> int:
        return num_samples(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i][0], self.labels[i]
