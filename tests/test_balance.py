"""Automatic balancing: the min-max cut, and profiling a deliberately unbalanced model."""

import itertools
import random

import pytest
import torch
from torch import nn

from scpl import ConfigError, DecoupledModel, seed_everything
from scpl.balance import best_cut
from scpl.memory import count_saved_bytes


def brute_force(costs, k, heads):
    n, best = len(costs), None
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        worst = max(sum(costs[a:b]) + (heads[b - 1] if b < n else 0) for a, b in zip(bounds, bounds[1:]))
        if best is None or worst < best[0]:
            best = (worst, [b - a for a, b in zip(bounds, bounds[1:])])
    return best[0]


@pytest.mark.parametrize("seed", range(20))
def test_best_cut_is_optimal(seed):
    rng = random.Random(seed)
    n, k = rng.randint(2, 9), None
    k = rng.randint(1, n)
    costs = [rng.random() for _ in range(n)]
    heads = [rng.random() * 0.3 for _ in range(n)]
    counts = best_cut(costs, k, heads)
    assert len(counts) == k and sum(counts) == n and min(counts) >= 1
    bounds = [0, *itertools.accumulate(counts)]
    worst = max(sum(costs[a:b]) + (heads[b - 1] if b < n else 0) for a, b in zip(bounds, bounds[1:]))
    assert worst == pytest.approx(brute_force(costs, k, heads))


def test_best_cut_rejects_impossible():
    with pytest.raises(ConfigError, match="cannot cut 2 layers into 3"):
        best_cut([1.0, 2.0], 3)


def heavy():
    return nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 64))


def test_auto_balances_a_deliberately_unbalanced_model():
    torch.set_num_threads(1)
    seed_everything(0)
    # Eight cheap layers, then two expensive ones: an even count split would put both heavy
    # layers in the last block; the balanced cut must give each heavy layer its own block.
    layers = [nn.Linear(64, 64) for _ in range(8)] + [heavy(), heavy(), nn.Linear(64, 4)]
    model = DecoupledModel(nn.Sequential(*layers), "auto", num_blocks=2, method="greedy", num_classes=4,
                           example_input=torch.randn(256, 64))
    counts = model.balance.counts
    assert counts == [9, 2], str(model.balance)
    assert len(model.blocks) == 2
    seconds = model.balance.block_seconds
    assert max(seconds) / min(seconds) < 2.0
    # The even split's slowest block is far slower than the balanced one's.
    layer_s = model.balance.layer_seconds
    assert sum(layer_s[5:]) > 1.5 * max(seconds)
    assert model.balance.measured and "measured pipeline efficiency" in str(model.balance)
    x, y = torch.randn(32, 64), torch.arange(32) % 4
    model.fit([(x, y)])


def test_auto_does_not_disturb_initialisation_or_statistics():
    def net():
        seed_everything(0)
        return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))

    auto = DecoupledModel(net(), "auto", num_blocks=2, num_classes=3, example_input=torch.randn(16, 8))
    fixed = DecoupledModel(net(), auto.balance.counts, num_classes=3, example_input=torch.randn(16, 8))
    for (ka, va), (kb, vb) in zip(auto.state_dict().items(), fixed.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_auto_needs_num_blocks_and_sequential():
    with pytest.raises(ConfigError, match="needs num_blocks"):
        DecoupledModel(nn.Sequential(nn.Linear(4, 2)), "auto", num_classes=2, example_input=torch.zeros(2, 4))


def test_count_saved_bytes_counts_activations_not_parameters():
    lin = nn.Linear(100, 50)
    x = torch.randn(32, 100, requires_grad=True)
    with count_saved_bytes(lin.parameters()) as counter:
        y = torch.relu(lin(x))
    # Linear saves its input (32x100 floats); ReLU saves its output (32x50 floats); the weight is excluded.
    assert counter.total == (32 * 100 + 32 * 50) * 4
    y.sum().backward()
