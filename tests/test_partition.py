"""Splitting user models into blocks: counts, module lists, traced split points, tuple flows."""

import pytest
import torch
from torch import nn

from cases import Embed, Head, Mixer
from scpl import ConfigError, DecoupledModel, seed_everything, split_model
from scpl.heads import PooledFeatures, masked_mean


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.layer1 = nn.Sequential(Residual(4), Residual(4))
        self.layer2 = nn.Sequential(Residual(4), Residual(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


def run(blocks, x):
    for b in blocks:
        x = b(*x) if isinstance(x, tuple) else b(x)
    return x


def test_sequential_counts_and_children():
    net = nn.Sequential(*[nn.Linear(3, 3) for _ in range(5)])
    assert [len(b) for b in split_model(net, [2, 3])] == [2, 3]
    assert [len(b) for b in split_model(net, 2)] == [3, 2]
    assert split_model(net, None)[0] is net[0]
    mods = [nn.Linear(2, 2), nn.Linear(2, 2)]
    assert split_model(mods) == mods


@pytest.mark.parametrize("training", [True, False])
def test_split_points_trace_and_share_parameters(training):
    torch.manual_seed(0)
    model = TinyResNet()
    blocks = split_model(model, ["layer1", "layer2.1", "fc"], torch.zeros(2, 1, 6, 6))
    assert len(blocks) == 4
    ids = {id(p) for b in blocks for p in b.parameters()}
    assert ids == {id(p) for p in model.parameters()}
    x = torch.randn(5, 1, 6, 6)
    model.train(training)
    for b in blocks:
        b.train(training)
    expected = model(x)
    assert torch.equal(run(blocks, x), expected)


def test_split_points_train_a_decoupled_model():
    seed_everything(0)
    model = DecoupledModel(TinyResNet(), ["layer1", "layer2"], num_classes=3,
                           example_input=torch.zeros(2, 1, 6, 6))
    x, y = torch.randn(8, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    hist = model.fit([(x, y)] * 3, epochs=2)
    assert len(model.blocks) == 3 and len(hist[0]["losses"]) == 3


def test_tuple_flows_between_module_list_blocks():
    seed_everything(0)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 1], [2, 2, 0, 0, 0], [5, 1, 0, 0, 0]])
    y = torch.tensor([0, 1, 2, 0])
    model = DecoupledModel([Embed(), Mixer(), Head()], method="scpl", num_classes=3, example_input=tokens[:2])
    before = model.blocks[1].layers.lin.weight.clone()
    model.fit([(tokens, y)] * 2)
    assert not torch.equal(before, model.blocks[1].layers.lin.weight)
    assert model.predict(tokens).shape == (4,)
    # Padding must not change the result: extra padding positions are masked out.
    padded = torch.cat([tokens, torch.zeros(4, 3, dtype=torch.long)], dim=1)
    model.eval()
    assert torch.allclose(model(tokens), model(padded), atol=1e-5)


def test_masked_mean_and_pooled_features():
    seq = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(seq, mask).item() == 2.0
    assert PooledFeatures()((seq, mask)).item() == 2.0
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    assert PooledFeatures(grid=2)(maps).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert PooledFeatures()(torch.ones(3, 7)).shape == (3, 7)


def test_a_split_point_inside_a_residual_unit_is_refused():
    from scpl import ConfigError
    from scpl.models import create_model

    images = torch.zeros(2, 3, 32, 32)
    for point in ("6.bn1", "6.shortcut"):  # the unit's input would cross the cut as a second output
        with pytest.raises(ConfigError, match=r"lies inside '6'.*skip connection crosses a split point"):
            DecoupledModel(create_model("resnet32", num_classes=10, width=4), [point], num_classes=10,
                           example_input=images)
    # between units, also between the units of one nn.Sequential stage, is fine
    assert len(DecoupledModel(create_model("resnet32", num_classes=10, width=4), ["6", "11"], num_classes=10,
                              example_input=images).blocks) == 3
    assert len(DecoupledModel(create_model("resnet18", num_classes=10, width=4), ["1.1", "2"], num_classes=10,
                              example_input=images).blocks) == 3


def test_a_list_of_modules_takes_its_own_count_as_blocks_and_refuses_another():
    layers = [nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)]
    assert split_model(layers, 3) == layers and split_model(nn.ModuleList(layers)) == layers
    refusal = r"a list of 3 modules is already one block per module; leave `blocks` unset \(or 3\)"
    with pytest.raises(ConfigError, match=refusal):
        split_model(layers, 2)
    with pytest.raises(ConfigError, match="already one block per module"):
        split_model(layers, [1, 2])
