"""Reference models: shapes, splits, text details, and one training step in every executor."""

import pytest
import torch

from launch import run_ranks
from model_cases import LABELS, SPECS, build
from scpl.executors import SequentialExecutor, ThreadedExecutor
from scpl.models import MODELS, CifarResNet, TextClassifier, create_model
from scpl.models.text import sinusoidal_positions


def test_registry_has_every_reference_model():
    assert set(SPECS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_and_one_step_sequential_equals_threads(name):
    runs = []
    for executor in (SequentialExecutor(2), ThreadedExecutor(2)):
        model, x = build(name)
        assert len(model.blocks) == 4
        assert model(x).shape == (8, 4)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.fit([(x, LABELS)], executor=executor)
        after = model.state_dict()
        for k, block in enumerate(model.blocks):  # every block trained
            assert any(not torch.equal(before[n], after[n])
                       for n in after if n.startswith(f"blocks.{k}.layers")), (name, k)
        runs.append(after)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.slow
def test_every_model_one_step_on_four_ranks_equals_sequential(tmp_path):
    codes, outputs, _ = run_ranks("dist_models.py", 4, str(tmp_path / "out"), timeout=300)
    assert codes == [0] * 4, outputs
    saved = [torch.load(tmp_path / f"out.{r}") for r in range(4)]
    for name in SPECS:
        model, x = build(name)
        model.fit([(x, LABELS)], executor=SequentialExecutor(2))
        for r in range(4):
            ref = model.blocks[r].state_dict()
            assert all(torch.equal(ref[k], saved[r][name][k]) for k in ref), (name, r)


def test_vgg8_layout():
    net = create_model("vgg8")
    assert len(net) == 4
    assert ([m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
            == [128, 256, 256, 512, 512, 512])
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_cifar_resnet_depths_and_cuts():
    r32, r110 = CifarResNet(32), CifarResNet(110)
    assert len(r32) == 1 + 15 + 1 and len(r110) == 1 + 54 + 1
    assert r32.block_counts(16) == [1] * 15 + [2]
    assert r32.block_counts(4) == [4, 4, 4, 5]
    mem = r110.block_counts(4, "memory")
    assert sum(mem) == len(r110) and mem != r110.block_counts(4)
    assert mem[0] < mem[-1]  # early units hold larger maps: fewer of them per block
    with pytest.raises(Exception, match="depth 6n\\+2"):
        CifarResNet(33)


def test_text_models_padding_and_vectors():
    vectors = torch.randn(50, 12)
    lstm = TextClassifier(50, 4, "lstm", dim=12, hidden=6, vectors=vectors)
    assert torch.equal(lstm[0].embed.weight, vectors)
    tokens = torch.randint(1, 50, (3, 5))
    padded = torch.cat([tokens, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    for model in (lstm, TextClassifier(50, 4, "transformer", dim=12, heads=2, dropout=0.0)):
        model.eval()
        assert torch.allclose(model(tokens), model(padded), atol=1e-5)  # packed LSTM / masked attention
    pe = sinusoidal_positions(10, 6)
    assert pe.shape == (10, 6) and torch.allclose(pe[0], torch.tensor([0.0, 1, 0, 1, 0, 1]))
    with pytest.raises(Exception, match="expected \\(50, 12\\)"):
        TextClassifier(50, 4, "lstm", dim=12, vectors=torch.randn(49, 12))


def test_lstm_input_norm_makes_a_block_blind_to_the_scale_of_its_input():
    torch.manual_seed(0)
    plain = TextClassifier(50, 4, "lstm", dim=12, hidden=6, layers=2, input_norm=False)
    normed = TextClassifier(50, 4, "lstm", dim=12, hidden=6, layers=2)  # the default
    assert plain[1].norm is None and isinstance(normed[1].norm, torch.nn.LayerNorm)
    assert isinstance(normed[2].block.norm, torch.nn.LayerNorm)  # the last block's LSTM too
    seq, mask = torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    small, _ = normed[1](seq * 0.1, mask)
    large, _ = normed[1](seq, mask)
    assert torch.allclose(small, large, atol=1e-3)  # LayerNorm removed the scale
    plain_small, _ = plain[1](seq * 0.1, mask)
    assert not torch.allclose(plain_small, plain[1](seq, mask)[0], atol=1e-3)
    with torch.no_grad():  # a normalised padding position is not zero: it must still stay out
        for block in (normed[1], normed[2].block):
            block.norm.bias.fill_(0.5)
    tokens = torch.randint(1, 50, (3, 5))
    padded = torch.cat([tokens, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    normed.eval()
    assert torch.allclose(normed(tokens), normed(padded), atol=1e-5)
    with pytest.raises(Exception, match="input_norm is an option of LSTM blocks"):
        TextClassifier(50, 4, "transformer", dim=12, heads=2, input_norm=False)
