"""Precise BatchNorm statistics (scpl.batchnorm): recomputed with the current weights, on the
path evaluation takes, nothing else touched; and the runner's precise_bn setting."""

import pytest
import torch
from torch import nn

from conftest import synthetic_loader
from scpl import ConfigError, DecoupledModel, seed_everything
from scpl.batchnorm import recompute_batchnorm
from test_train import _run


def _model(method="deinforeg"):
    seed_everything(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(6 * 4 * 4, 4))
    return DecoupledModel(net, blocks=[4, 6], method=method, num_classes=4,
                          example_input=torch.zeros(2, 1, 8, 8))


def test_statistics_are_the_mean_of_the_batch_statistics_of_the_current_weights():
    model, loader = _model(), synthetic_loader(n=96, batch_size=32)
    model.fit(loader, epochs=1, progress=False)
    layers = [model.blocks[0].layers, model.blocks[1].layers]
    bn1, bn2 = layers[0][1], layers[1][1]
    head_norms = [m for m in model.blocks[0].projector.modules() if isinstance(m, nn.BatchNorm1d)]
    assert head_norms  # DeInfoReg's projector has BatchNorm: it must keep its statistics
    head_before = [m.running_mean.clone() for m in head_norms]
    bn1.running_mean.fill_(100.0)  # stale averages
    model.train()
    assert recompute_batchnorm(model, loader, max_batches=2) == 2
    # by hand: batch statistics of the first two batches, dropout off, averaged
    means1, means2, vars2 = [], [], []
    with torch.no_grad():
        for x, _ in list(loader)[:2]:
            h = layers[0][0](x)
            means1.append(h.mean((0, 2, 3)))
            b1 = (h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False,
                                                                              keepdim=True) + bn1.eps)
            b1 = b1 * bn1.weight.view(1, -1, 1, 1) + bn1.bias.view(1, -1, 1, 1)
            h2 = layers[1][0](torch.relu(b1))
            means2.append(h2.mean((0, 2, 3)))
            vars2.append(h2.var((0, 2, 3), unbiased=True))
    torch.testing.assert_close(bn1.running_mean, torch.stack(means1).mean(0))
    torch.testing.assert_close(bn2.running_mean, torch.stack(means2).mean(0))
    torch.testing.assert_close(bn2.running_var, torch.stack(vars2).mean(0))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(head_norms, head_before))
    assert model.training and all(m.training for m in model.modules())  # flags restored
    assert bn1.momentum == 0.1 and bn2.momentum == 0.1


def test_nothing_to_do_without_batchnorm_and_errors_keep_the_old_statistics():
    seed_everything(0)
    plain = DecoupledModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4)),
                           blocks=[2, 2], method="scpl", num_classes=4, example_input=torch.zeros(2, 1, 8, 8))
    assert recompute_batchnorm(plain, synthetic_loader(), 4) == 0
    model = _model("scpl")
    before = model.blocks[0].layers[1].running_mean.clone()
    with pytest.raises(ValueError, match="no batches given"):
        recompute_batchnorm(model, [], 3)
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        recompute_batchnorm(model, synthetic_loader(), 0)
    assert torch.equal(model.blocks[0].layers[1].running_mean, before)


def test_precise_bn_in_a_run_recomputes_before_every_evaluation(tmp_path):
    summary = _run(tmp_path, "precise", precise_bn=3, epochs=2)
    _run(tmp_path, "plain", epochs=2)
    # the last epoch's checkpoint (model.pt is the epoch selected on validation, which may differ)
    weights = lambda name: torch.load(tmp_path / name / "epochs" / "2" / "block-0.pt")["state"]  # noqa: E731
    a, b = weights("precise"), weights("plain")
    stats = [k for k in a if k.startswith("layers.") and k.endswith("running_mean")]
    trained = [k for k in a if k.endswith(".weight")]
    assert stats and all(torch.equal(a[k], b[k]) for k in trained)  # same training ...
    assert not all(torch.equal(a[k], b[k]) for k in stats)  # ... other statistics
    assert 0 <= summary["val_accuracy"] <= 1
    with pytest.raises(ConfigError, match="precise_bn needs every block in one process"):
        _run(tmp_path, "dist", precise_bn=2, executor="distributed")
    with pytest.raises(ConfigError, match="precise_bn is a number of batches"):
        _run(tmp_path, "neg", precise_bn=-1)
