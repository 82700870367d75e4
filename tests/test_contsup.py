"""ContSup: what each mode feeds a block, that context stays detached, and its cost report."""

import pytest
import torch
from torch import nn

from conftest import synthetic_loader
from scpl import ConfigError, DecoupledModel, seed_everything
from scpl.context import ContextSpec

X = torch.randn(4, 1, 8, 8)


def net():
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 3)),
    )


def build(mode):
    seed_everything(0)
    spec = ContextSpec("Rn", n=2) if mode == "R2" else mode
    return DecoupledModel(net(), num_classes=3, example_input=X[:2], contsup=spec)


def flows(model, x):
    model.eval()
    out, flow = [], x
    with torch.no_grad():
        for block in model.blocks:
            flow = block(flow)
            out.append(flow)
    return out


@pytest.mark.parametrize("mode,carried", [
    ("R0", lambda x, ins: []),
    ("E", lambda x, ins: [x]),
    ("R1", lambda x, ins: [ins[-1]]),
    ("R1E", lambda x, ins: [x, ins[-1]]),
    ("R2", lambda x, ins: [ins[-1], ins[-2]] if len(ins) > 1 else [ins[-1]]),
])
def test_each_mode_carries_the_specified_context(mode, carried):
    model = build(mode)
    outs = flows(model, X)
    inputs = [X]  # the main input each block received
    for k, out in enumerate(outs[:-1]):
        expected = carried(X, inputs)
        got = list(out[1:]) if isinstance(out, tuple) else []
        assert len(got) == len(expected), (mode, k)
        assert all(torch.equal(g, e) for g, e in zip(got, expected)), (mode, k)
        inputs.append(out[0] if isinstance(out, tuple) else out)
    assert outs[-1].shape == (4, 3)


def test_block_input_is_h_plus_projected_context():
    model = build("R1E")
    outs = flows(model, X)
    block = model.blocks[2].layers  # receives (h_2, x, h_1)
    seen = {}
    handle = block.inner.register_forward_pre_hook(lambda m, args: seen.setdefault("in", args[0]))
    with torch.no_grad():
        block(*outs[1])
    handle.remove()
    h, x, h_prev = outs[1]
    expected = h + block.encoder(x) + block.projections[0](h_prev)
    assert torch.allclose(seen["in"], expected)
    assert block.projections[0].conv.in_channels == h_prev.shape[1]


def test_context_projections_train_with_their_consumer_and_stay_isolated():
    base, perturbed = build("R1E"), build("R1E")

    class Scaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, f, y):
            return 5.0 * self.inner(f, y)

    perturbed.blocks[2].objective = Scaled(perturbed.blocks[2].objective)
    loader = synthetic_loader(n=32, num_classes=3, batch_size=16)
    base.fit(loader, epochs=2)
    perturbed.fit(loader, epochs=2)
    a, b = base.state_dict(), perturbed.state_dict()
    for k in a:
        if k.startswith(("blocks.0.", "blocks.1.")):
            assert torch.equal(a[k], b[k]), k  # context of block 2 never reaches blocks 0 and 1
    assert not torch.equal(a["blocks.2.layers.encoder.1.weight"], b["blocks.2.layers.encoder.1.weight"])
    owned = {id(p) for g in base.blocks[2].optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in base.blocks[2].layers.encoder.parameters()} <= owned


def test_context_cost_report():
    assert build("R0").context_cost(X)["params"] == 0
    e, r1, r1e = (build(m).context_cost(X) for m in ("E", "R1", "R1E"))
    assert r1e["params"] == e["params"] + r1["params"] > 0
    assert r1e["macs_per_sample"] == pytest.approx(e["macs_per_sample"] + r1["macs_per_sample"])
    assert 0 < r1["macs_fraction"] < e["macs_fraction"] < 1


def test_contsup_errors():
    with pytest.raises(ConfigError, match="R0, E, R1, R1E or Rn"):
        ContextSpec("R9")
    with pytest.raises(ConfigError, match="does not apply to method='bp'"):
        DecoupledModel(net(), num_classes=3, example_input=X[:2], contsup="E", method="bp")
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="4-D feature maps"):
        DecoupledModel(flat, [2, 1], num_classes=3, example_input=X[:2], contsup="R1")


def test_infopro_reconstruction_term():
    seed_everything(0)
    spec = ContextSpec("E", infopro=(1.0, 0.5))
    model = DecoupledModel(net(), num_classes=3, example_input=X[:2], contsup=spec)
    block = model.blocks[1]
    assert block.extra_loss is not None and model.blocks[-1].extra_loss is None
    outs = flows(model, X)
    block.train()
    with torch.no_grad():
        got = block.local_loss(outs[1], torch.tensor([0, 0, 1, 1]))
        h, x = outs[1][0], outs[1][1]
        task = block.objective(block.projector(block.features(outs[1])), torch.tensor([0, 0, 1, 1]))
        target = (x - x.amin((1, 2, 3), keepdim=True)) / (x.amax((1, 2, 3), keepdim=True)
                                                          - x.amin((1, 2, 3), keepdim=True))
        recon = nn.functional.binary_cross_entropy_with_logits(block.extra_loss.decoder(h), target)
    assert got.item() == pytest.approx(0.5 * task.item() + 1.0 * recon.item(), rel=1e-5)
    before = block.extra_loss.decoder[1].weight.clone()
    model.fit([(X, torch.tensor([0, 0, 1, 1]))])
    assert not torch.equal(before, block.extra_loss.decoder[1].weight)  # the decoder trains with its block
    with pytest.raises(ConfigError, match="two weights >= 0"):
        ContextSpec("R1", infopro=(-1.0, 1.0))


def test_infopro_alone_is_greedy_plus_reconstruction():
    """``infopro=w`` without a ContSup mode: x travels with the flow (mode R0, no encoder, no
    projections) and every block but the last reconstructs it with weight w."""
    seed_everything(0)
    model = DecoupledModel(net(), method="greedy", num_classes=3, example_input=X[:2], infopro=2.0)
    wrapped = [b.layers for b in model.blocks]
    assert all(w.spec.mode == "R0" and w.spec.infopro == (2.0, 1.0) for w in wrapped)
    assert all(w.encoder is None and len(w.projections) == 0 for w in wrapped)
    assert [b.extra_loss is not None for b in model.blocks] == [True, True, True, False]
    outs = flows(model, X)
    assert torch.equal(outs[0][1], X) and torch.equal(outs[1][1], X)  # x travels unchanged
    with pytest.raises(ConfigError, match="BP has none"):
        DecoupledModel(net(), method="bp", num_classes=3, example_input=X[:2], infopro=1.0)
