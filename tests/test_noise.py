"""Symmetric label noise: seeded, at the requested rate, never keeping the label when it flips."""

import pytest
import torch
from torch.utils.data import TensorDataset

from scpl.data.noise import NoisyLabels, symmetric_noise


def test_rate_seed_and_flips():
    labels = torch.arange(20000) % 10
    noisy = symmetric_noise(labels, 0.4, 10, seed=1)
    assert (noisy != labels).float().mean().item() == pytest.approx(0.4, abs=0.015)
    assert torch.equal(noisy, symmetric_noise(labels, 0.4, 10, seed=1))
    assert not torch.equal(noisy, symmetric_noise(labels, 0.4, 10, seed=2))
    assert torch.equal(symmetric_noise(labels, 0.0, 10), labels)
    # flipped labels are spread over the other classes
    flipped = noisy[noisy != labels]
    assert set(flipped.tolist()) == set(range(10))
    assert noisy.min() >= 0 and noisy.max() < 10


@pytest.mark.parametrize("rate", [1.0, 20, -0.1])
def test_rate_must_be_a_fraction(rate):
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\)"):
        symmetric_noise(torch.zeros(3, dtype=torch.long), rate, 10)


def test_noisy_dataset_keeps_clean_labels():
    ds = TensorDataset(torch.randn(100, 2), torch.arange(100) % 4)
    noisy = NoisyLabels(ds, 0.2, 4, seed=0)
    assert torch.equal(noisy.clean_labels, torch.arange(100) % 4)
    assert torch.equal(torch.stack([noisy[i][1] for i in range(100)]), noisy.labels)
