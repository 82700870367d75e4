"""Automatic balancing: the min-max cut, and profiling a deliberately unbalanced model."""

import itertools
import random

import pytest
import torch
from torch import nn

from scpl import ConfigError, DecoupledModel, auto_cut, seed_everything
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


def test_auto_cut_finds_the_cut_a_deterministic_cost_model_calls_for(monkeypatch):
    """The balancing algorithm on known costs (timing stays in the benchmark, not in a test): the
    per-layer profile says all six layers cost the same, but real block steps show the first
    three cost twice as much; profiling alone cuts [3, 3], refinement must find [2, 4]."""
    import scpl.balance as B

    real = [2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    monkeypatch.setattr(B, "profile",
                        lambda layers, sample, labels, head=None, repeats=3: ([1.0] * 6, [0.0] * 6, [0] * 6))

    def measured(blocks, sample, labels, repeats=3):
        counts = [len(b.layers) for b in blocks]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [sum(real[a:a + c]) for a, c in zip(starts, counts)]

    monkeypatch.setattr(B, "time_blocks", measured)
    seed_everything(0)
    net = nn.Sequential(*[nn.Linear(8, 8) for _ in range(5)], nn.Linear(8, 4))
    found = auto_cut(net, 2, torch.randn(16, 8), num_classes=4, method="greedy")
    assert found.counts == [2, 4] and found.measured and found.block_seconds == [4.0, 5.0]
    assert "measured pipeline efficiency 0.900" in str(found)
    model = DecoupledModel(net, found, method="greedy", num_classes=4, example_input=torch.randn(16, 8))
    assert model.balanced_cut is found and [len(b.layers) for b in model.blocks] == [2, 4]


def test_auto_cut_runs_on_real_timings():
    seed_everything(0)
    model = DecoupledModel(nn.Sequential(*[nn.Linear(16, 16) for _ in range(5)], nn.Linear(16, 4)), "auto",
                           num_blocks=3, method="greedy", num_classes=4, example_input=torch.randn(32, 16))
    counts = model.balanced_cut.counts
    assert sum(counts) == 6 and len(model.blocks) == 3 and min(counts) >= 1
    model.fit([(torch.randn(32, 16), torch.arange(32) % 4)], progress=False)


def test_auto_does_not_disturb_initialisation_or_statistics():
    def net():
        seed_everything(0)
        return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))

    auto = DecoupledModel(net(), "auto", num_blocks=2, num_classes=3, example_input=torch.randn(16, 8))
    fixed = DecoupledModel(net(), auto.balanced_cut.counts, num_classes=3, example_input=torch.randn(16, 8))
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
