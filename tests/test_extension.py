"""Dynamic extension: old blocks frozen bit for bit, new blocks trained, side inputs used."""

import pytest
import torch
from torch import nn

from cases import CASES
from scpl import ConfigError, seed_everything
from scpl.checkpoint import load_blocks, save_blocks
from scpl.executors import SequentialExecutor, ThreadedExecutor
from scpl.extension import extend


def trained_base(tmp_path):
    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=2)
    save_blocks(model, tmp_path)
    fresh, _, _, _ = CASES["cnn"]()
    load_blocks(fresh, tmp_path)  # "load a trained model"
    return fresh, loader


@pytest.mark.parametrize("executor", [SequentialExecutor, ThreadedExecutor])
def test_extension_trains_only_new_blocks(executor, tmp_path):
    base, loader = trained_base(tmp_path)
    old = {k: v.clone() for k, v in base.state_dict().items()}
    seed_everything(1)
    model = extend(base, [nn.Sequential(nn.Linear(4, 16), nn.ReLU()), nn.Linear(16, 4)],
                   example_input=torch.zeros(2, 1, 8, 8), method="greedy", exits=True)
    assert len(model.blocks) == 5 and [b.mode for b in model.blocks] == ["frozen"] * 3 + ["train"] * 2
    new_before = {k: v.clone() for k, v in model.blocks[3:].state_dict().items()}
    hist = model.fit(loader, epochs=2, executor=executor(2))
    after = model.state_dict()
    for k, v in old.items():  # every old tensor, BatchNorm statistics included
        assert torch.equal(after[k], v), k
    assert not all(torch.equal(new_before[k], v) for k, v in model.blocks[3:].state_dict().items())
    assert hist[-1]["losses"][:3] == [None, None, None] and hist[-1]["losses"][3] > 0  # frozen: not trained
    exits = model.evaluate_exits(loader)
    assert len(exits) == 5 and exits[2] == base.evaluate(loader)["accuracy"]  # the old output is an exit


def test_extend_leaves_the_trained_model_unchanged(tmp_path):
    base, loader = trained_base(tmp_path)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    preds = base.predict(loader)
    base.train()
    model = extend(base, [nn.Linear(4, 4)], example_input=torch.zeros(2, 1, 8, 8), side_inputs=0,
                   method="greedy")
    assert base.training and [b.mode for b in base.blocks] == ["train"] * 3
    assert all(b.optimizer is not None for b in base.blocks)
    # frozen copies carry no optimizer
    assert [b.optimizer is None for b in model.blocks] == [True] * 3 + [False]
    after = base.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert torch.equal(base.predict(loader), preds)
    base.fit(loader, epochs=1)  # still trainable: its blocks are not frozen
    assert not all(torch.equal(base.state_dict()[k], v) for k, v in before.items())


class UsesSide(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4 + 4, 4)

    def forward(self, logits, side):
        return self.fc(torch.cat([logits, side], dim=1))


def test_side_inputs_travel_with_the_flow_and_help(tmp_path):
    base, loader = trained_base(tmp_path)
    base_acc = base.evaluate(loader)["accuracy"]
    old = {k: v.clone() for k, v in base.state_dict().items()}
    # side features: a noisy one-hot of the label, which the new block can learn to read
    g = torch.Generator().manual_seed(0)
    batches = [((x, nn.functional.one_hot(y, 4).float() + 0.1 * torch.randn(len(y), 4, generator=g)), y)
               for x, y in loader]
    seed_everything(1)
    model = extend(base, [UsesSide()], example_input=batches[0][0], side_inputs=1,
                   optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    model.fit(batches, epochs=20)
    after = model.state_dict()
    for k, v in old.items():  # the old layers now sit inside a Carry wrapper (.inner)
        name = k.replace(".layers.", ".layers.inner.").replace(".features.", ".features.inner.")
        assert torch.equal(after[name], v), k
    acc = model.evaluate(batches)["accuracy"]
    assert acc > max(base_acc + 0.2, 0.9)


def test_extension_errors():
    base, _, _, _ = CASES["cnn"]()
    with pytest.raises(ConfigError, match="at least one new block"):
        extend(base, [], example_input=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="must be a tuple"):
        extend(base, [UsesSide()], example_input=torch.zeros(2, 1, 8, 8), side_inputs=1)
