"""Early exit decides per sample, skips exited samples, and equals the full path when it cannot fire."""

import pytest
import torch
from torch import nn

from cases import CASES
from conftest import synthetic_loader, tiny_cnn
from scpl import DecoupledModel, seed_everything
from scpl.early_exit import Confidence, PatienceCosine, early_exit


class Recorder(nn.Module):
    """Identity that records the batch sizes it sees."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2, bias=False)
        nn.init.eye_(self.lin.weight)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.lin(x)


def handcrafted():
    """Block exits: block 0 gives logits x, block 1 gives (x0, -x1), the last block gives x.

    Sample (3, 0): blocks 0 and 1 agree (class 0, cosine 1) -> exits after block 1.
    Sample (0, 3): block 0 says class 1, block 1 says class 0 -> goes on to the last block.
    """
    blocks = [Recorder(), Recorder(), Recorder()]
    model = DecoupledModel(blocks, method="greedy", num_classes=2, example_input=torch.zeros(2, 2),
                           exits=True, projector="identity")
    with torch.no_grad():
        model.blocks[0].classifier.weight.copy_(torch.eye(2)), model.blocks[0].classifier.bias.zero_()
        model.blocks[1].classifier.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, -1.0]])), model.blocks[1].classifier.bias.zero_()
    for b in blocks:
        b.sizes.clear()
    return model, blocks


def test_easy_and_hard_samples_exit_at_different_blocks_and_skip_compute():
    model, blocks = handcrafted()
    x = torch.tensor([[3.0, 0.0], [0.0, 3.0], [2.0, 0.1]])
    report = early_exit(model, [(x, torch.tensor([0, 1, 0]))], PatienceCosine(patience=1, threshold=0.8))
    assert report.exit_block.tolist() == [1, 2, 1]
    assert report.exits == [0, 2, 1]
    assert [b.sizes for b in blocks] == [[3], [3], [1]]  # the last block never saw the exited samples
    assert report.block_samples == [3, 3, 1]
    assert report.compute_saved == pytest.approx(1 - 7 / 9)
    assert report.predictions.tolist() == [0, 1, 0]


def test_patience_two_needs_two_agreements():
    model, blocks = handcrafted()
    x = torch.tensor([[3.0, 0.0]])
    report = early_exit(model, [(x, torch.tensor([0]))], PatienceCosine(patience=2))
    assert report.exit_block.tolist() == [2]  # only one comparison (blocks 0,1) before the last block


def test_confidence_rule():
    model, _ = handcrafted()
    x = torch.tensor([[5.0, 0.0], [0.2, 0.0]])  # softmax max 0.993 vs 0.55 at block 0
    report = early_exit(model, [(x, torch.tensor([0, 0]))], Confidence(0.9))
    assert report.exit_block.tolist() == [0, 2]


@pytest.mark.parametrize("policy", [PatienceCosine(threshold=1.0), PatienceCosine(patience=5),
                                    Confidence(1.0)])
def test_unreachable_thresholds_equal_the_full_path(policy):
    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 3, 2], num_classes=4, example_input=torch.zeros(2, 1, 8, 8),
                           exits=True)
    loader = synthetic_loader()
    model.fit(loader, epochs=2)
    report = early_exit(model, loader, policy)
    assert torch.equal(report.predictions, model.predict(loader))
    assert report.exits == [0, 0, 64] and report.compute_saved == 0.0
    assert report.accuracy == model.evaluate(loader)["accuracy"]


def test_the_tradeoff_sweep_decides_exactly_as_early_exit():
    from scpl.early_exit import Confidence, PatienceCosine, early_exit, exit_logits, simulate, tradeoff

    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=2, progress=False)
    logits, labels = exit_logits(model, loader)
    for policy in (PatienceCosine(1, 0.5), PatienceCosine(2, 0.2), Confidence(0.3), Confidence(0.99)):
        direct, simulated = early_exit(model, loader, policy), simulate(logits, labels, policy)
        assert torch.equal(direct.predictions, simulated.predictions)
        assert torch.equal(direct.exit_block, simulated.exit_block)
        assert (direct.block_samples, direct.accuracy) == (simulated.block_samples, simulated.accuracy)
    rows = tradeoff(model, loader, block_costs=[1.0, 3.0, 0.0])
    assert len(rows) == 17 and {r["rule"] for r in rows} == {"patience", "confidence"}
    assert all(0.0 <= r["compute_saved"] < 1.0 and sum(r["exits"]) == labels.numel() for r in rows)
    for row in rows:  # by time: the calls saved after block 1 weigh 3, those after block 2 nothing
        n, first = labels.numel(), row["exits"][0]
        assert row["compute_saved_by_time"] == pytest.approx(3.0 * first / (4.0 * n))
    assert "compute_saved_by_time" not in tradeoff(model, loader)[0]


@pytest.mark.parametrize("make, message", [
    (lambda: PatienceCosine(threshold=1.5), "PatienceCosine: threshold is in \\[0, 1\\], got 1.5"),
    (lambda: PatienceCosine(threshold=-0.2), "got -0.2"),
    (lambda: PatienceCosine(patience=0), "patience counts agreeing blocks, a whole number >= 1, got 0"),
    (lambda: PatienceCosine(patience=1.5), "got 1.5"),
    (lambda: Confidence(-0.2), "Confidence: threshold is in \\[0, 1\\], got -0.2"),
    (lambda: Confidence(float("nan")), "got nan"),
])
def test_exit_rules_outside_their_range_are_refused(make, message):
    from scpl import ConfigError

    with pytest.raises(ConfigError, match=message):
        make()


def test_early_exit_on_an_empty_loader_says_so():
    from scpl import ConfigError

    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 3, 2], num_classes=4, example_input=torch.zeros(2, 1, 8, 8),
                           exits=True)
    with pytest.raises(ConfigError, match="early_exit\\(\\) got an empty loader"):
        early_exit(model, [])
