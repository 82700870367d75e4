"""Local heads: feature extractors by name, per-kind defaults, SCPL's contrastive last block."""

import pytest
import torch
from torch import nn

from conftest import synthetic_loader, tiny_cnn
from scpl import ConfigError, DecoupledModel, seed_everything
from scpl.heads import ConvFeatures, HeadFactory, PooledFeatures, build_features, output_kind
from scpl.methods import METHODS
from scpl.progressive import BlockSchedule

EXAMPLE = torch.zeros(2, 1, 8, 8)


def test_features_by_name_shape_conv_maps_and_leave_other_outputs_alone():
    maps = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert build_features("pool4", maps)(maps).shape == (2, 3 * 16)
    assert build_features("pool1", maps)(maps).shape == (2, 3)
    assert torch.equal(build_features("pool1", maps)(maps), maps.mean(dim=(2, 3)))
    conv = build_features("conv", maps)
    assert isinstance(conv, ConvFeatures) and conv(maps).shape == (2, 3 * 4)
    deeper = build_features("conv2", maps)
    convs = [m for m in deeper.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.in_channels == c.out_channels == 3 for c in convs)
    assert deeper(maps).shape == (2, 3 * 4)
    assert sum(isinstance(m, nn.Conv2d) for m in conv.modules()) == 1
    flat = torch.randn(2, 5)
    assert isinstance(build_features("conv", flat), PooledFeatures)  # no maps: no conv
    with pytest.raises(ConfigError, match="unknown features 'pool3'"):
        build_features("pool3", maps)


def test_output_kinds():
    assert output_kind(torch.zeros(2, 3, 4, 4)) == "conv"
    assert output_kind((torch.zeros(2, 7, 5), torch.ones(2, 7, dtype=torch.bool))) == "sequence"
    assert output_kind(torch.zeros(2, 5)) == "flat"


def test_per_kind_projector_defaults_follow_the_block_output():
    factory = HeadFactory.for_method(METHODS["scpl"], 4, 2, projector={"conv": "mlp", "flat": "linear"})
    conv_head = factory(0, torch.zeros(2, 3, 4, 4))
    flat_head = factory(1, torch.zeros(2, 6))
    assert isinstance(conv_head.projector, nn.Sequential) and isinstance(flat_head.projector, nn.Linear)
    assert flat_head.projector.in_features == 6 and flat_head.projector.out_features == 128


def test_contrastive_last_block_trains_its_body_contrastively_and_its_classifier_on_detached_input():
    seed_everything(0)
    net = nn.Sequential(*list(tiny_cnn())[:-1], nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 4))
    model = DecoupledModel(net, [3, 3, 4], method="scpl", num_classes=4, example_input=EXAMPLE,
                           last_block="contrastive")
    last = model.blocks[-1]
    assert last.classifier is last.layers[-1]  # the final Linear, shared with the forward path
    x, y = next(iter(synthetic_loader()))
    with torch.no_grad():
        h = nn.Sequential(*list(last.layers)[:-1])(model.blocks[1](model.blocks[0](x)))
    # the loss is the contrastive objective on the classifier's input plus its cross-entropy
    last.train()
    out = last(model.blocks[1](model.blocks[0](x)).detach())
    loss = last.local_loss(out, y)
    expected = last.objective(last.projector(h), y) + nn.functional.cross_entropy(last.classifier(h), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the classifier's cross-entropy never reaches the body: scaling it changes only the classifier
    grads = {}
    for weight in (1.0, 5.0):
        last.zero_grad(set_to_none=True)
        last.classifier_weight = weight
        last.local_loss(last(model.blocks[1](model.blocks[0](x)).detach()), y).backward()
        grads[weight] = {n: p.grad.clone() for n, p in last.layers.named_parameters() if p.grad is not None}
    body = [n for n in grads[1.0] if not n.startswith("3.")]
    assert body and all(torch.equal(grads[1.0][n], grads[5.0][n]) for n in body)
    assert not torch.equal(grads[1.0]["3.weight"], grads[5.0]["3.weight"])
    model.fit(synthetic_loader(), epochs=1)
    assert model.evaluate(synthetic_loader())["accuracy"] > 0.0
    with pytest.raises(ConfigError, match="BP has none"):
        DecoupledModel(tiny_cnn(), method="bp", num_classes=4, example_input=EXAMPLE,
                       last_block="contrastive")
    no_classifier = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 8), nn.Linear(8, 4),
                                  nn.Flatten())
    with pytest.raises(ConfigError, match="nn.Linear with 3 outputs"):
        DecoupledModel(no_classifier, [2, 3], num_classes=3, example_input=EXAMPLE, last_block="contrastive")


def test_progressive_span_switches_every_block_on_within_the_span():
    assert BlockSchedule.progressive(4, 200).activate == [0, 50, 100, 150]
    assert BlockSchedule.progressive(4, 20, span=0.5).activate == [0, 2, 5, 7]
    assert BlockSchedule.progressive(3, 10, span=0.0).activate == [0, 0, 0]
    with pytest.raises(ConfigError, match="fraction of the epochs"):
        BlockSchedule.progressive(4, 20, span=1.5)


def test_dascpl_by_name_has_exits_and_a_progressive_schedule():
    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 3, 2], method="dascpl", num_classes=4, example_input=EXAMPLE)
    assert all(b.classifier is not None for b in model.blocks[:-1])
    assert model.default_block_schedule(24).activate == [0, 2, 4]  # every block on within 1/4 of the epochs
    steps = [b.steps for b in model.blocks]
    model.fit(synthetic_loader(), epochs=8, progress=False)  # [0, 0, 1]: block 2 sits out epoch 0's 4 steps
    assert [b.steps - s for b, s in zip(model.blocks, steps)] == [32, 32, 28]
    contsup = DecoupledModel(tiny_cnn(), [3, 3, 2], method="contsup", num_classes=4, example_input=EXAMPLE)
    assert contsup.context_cost(EXAMPLE)["params"] > 0


def test_a_narrow_flat_block_gets_a_projector_twice_its_width_and_maps_keep_theirs():
    """SCPL and DeInfoReg read a 16-unit block through a 32-wide projector; greedy's
    cross-entropy head and every head on conv maps keep 512 (benchmarks/narrow_blocks.py)."""
    from scpl import DecoupledModel

    def first_width(net, example, method):
        head = DecoupledModel(net, [2, 2], method=method, num_classes=4, example_input=example).blocks[0]
        return head.projector[0].out_features

    def mlp():
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU())

    def cnn():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4))

    flat, maps = torch.zeros(2, 8), torch.zeros(2, 1, 8, 8)
    assert first_width(mlp(), flat, "scpl") == first_width(mlp(), flat, "deinforeg") == 32
    assert first_width(mlp(), flat, "greedy") == 512
    assert first_width(cnn(), maps, "scpl") == first_width(cnn(), maps, "deinforeg") == 512
