"""Optimizers and schedules of the recipes: LARS's update rule, cosine with warm-up, precision, clipping."""

import math

import pytest
import torch
from torch import nn

from conftest import tiny_cnn
from scpl import ConfigError, DecoupledModel
from scpl.optim import LARS, build_optimizer, build_scheduler


def test_lars_step_follows_the_rule():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer("lars", [w, b], lr=0.1, weight_decay=0.5, momentum=0.9)
    assert isinstance(opt, LARS)
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([2.0])
    opt.step()
    g = torch.tensor([[0.6, 0.8]]) + 0.5 * torch.tensor([[3.0, 4.0]])  # decay added: ||g|| = 2.5 * ... below
    rate = 0.001 * 5.0 / torch.linalg.vector_norm(g)
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * rate * g)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.1 * 2.0]))  # 1-D: no decay, no adaptation
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([2.0])
    opt.step()  # momentum: buffer = 0.9 * 2.0 + 2.0 for the bias
    assert torch.allclose(b.detach(), torch.tensor([0.8 - 0.1 * 3.8]))


def test_cosine_schedule_with_warmup_reaches_min_lr():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.8)
    sched = build_scheduler("cosine", opt, epochs=10, warmup_epochs=2, min_lr=0.008)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.4) and lrs[1] == pytest.approx(0.8) and lrs[2] == pytest.approx(0.8)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.008)
    assert lrs[6] == pytest.approx(0.008 + (0.8 - 0.008) * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert build_scheduler("constant", opt, 10) is None
    warm = build_scheduler("constant", torch.optim.SGD([p], lr=0.5), epochs=5, warmup_epochs=2)
    assert [f(e) for f in warm.lr_lambdas for e in range(4)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="min_lr"):
        build_scheduler("cosine", torch.optim.SGD([p], lr=0.001), 10, min_lr=0.01)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_scheduler("cosine", opt, 3, warmup_epochs=3)
    with pytest.raises(ConfigError, match="unknown schedule"):
        build_scheduler("step", opt, 10)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer("rmsprop", [p], 0.1)


def test_bf16_autocast_in_training_fp32_weights():
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,))
    model = DecoupledModel(tiny_cnn(), [3, 5], num_classes=4, example_input=x, precision="bf16")
    seen = []
    for block in model.blocks:
        block.layers[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.fit([(x, y)], epochs=1)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    model.evaluate([(x, y)])  # inference stays fp32
    assert seen == [torch.float32, torch.float32]
    with pytest.raises(ConfigError, match="unknown precision"):
        DecoupledModel(tiny_cnn(), [3, 5], num_classes=4, example_input=x, precision="fp8")


def test_clip_grad_norm_bounds_the_step():
    x, y = torch.randn(32, 1, 8, 8) * 100, torch.randint(0, 4, (32,))
    def sgd(params):
        return torch.optim.SGD(params, lr=1.0)
    model = DecoupledModel(tiny_cnn(), [8], method="bp", num_classes=4, example_input=x, optimizer=sgd,
                           clip_grad_norm=0.01)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    model.fit([(x, y)], epochs=1)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # SGD lr 1: step = clipped gradient
    assert 0.009 < torch.linalg.vector_norm(after - before) <= 0.01 + 1e-6
