"""Bad input and faults through the Python API: a clear error or a handled case, never a silent
wrong number and never a hang."""

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import synthetic_loader, tiny_cnn
from scpl import ConfigError, DecoupledModel, StageError, seed_everything
from scpl.checkpoint import load_blocks, save_blocks
from scpl.executors import ThreadedExecutor
from scpl.objectives import CallableObjective

EXAMPLE = torch.zeros(2, 1, 8, 8)


def build(method="scpl", **kw):
    seed_everything(0)
    return DecoupledModel(tiny_cnn(), [3, 3, 2], method=method, num_classes=4, example_input=EXAMPLE, **kw)


def test_a_one_shot_iterator_an_empty_loader_and_bad_epoch_counts_are_refused():
    model = build()
    batches = (b for b in synthetic_loader())  # a generator: used up after one epoch
    with pytest.raises(ConfigError, match="epoch 2 had no batches.*one-shot iterator"):
        model.fit(batches, epochs=2, progress=False)
    with pytest.raises(ConfigError, match="epoch 1 had no batches"):
        model.fit([], progress=False)
    for epochs in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="epochs must be a positive integer"):
            model.fit(synthetic_loader(), epochs=epochs)


def test_one_class_is_not_a_classification_problem():
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
        DecoupledModel(tiny_cnn(1), [3, 3, 2], num_classes=1, example_input=EXAMPLE)


def test_nan_inputs_and_nan_weights_are_reported_at_evaluation():
    model = build()
    x, y = next(iter(synthetic_loader()))
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(ConfigError, match="inputs of batch 1 contain NaN or inf"):
        model.evaluate([(x, y), (bad, y)])
    with pytest.raises(ConfigError, match="inputs of batch 0 contain NaN"):
        model.predict(bad)
    with torch.no_grad():
        model.blocks[1].layers[0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ConfigError, match="outputs are NaN or inf .* weights are not finite"):
        model.evaluate([(x, y)])


def test_a_single_sample_batch_is_skipped_where_batchnorm_would_fail():
    model = build("deinforeg")  # BatchNorm in the layers and in DeInfoReg's projector
    x, y = next(iter(synthetic_loader(n=16, batch_size=16)))
    loader = [(x[:8], y[:8]), (x[8:9], y[8:9])]  # N % batch == 1: the last batch has one sample
    steps_before = model.blocks[0].steps
    with pytest.warns(RuntimeWarning, match="skipped a training batch of one sample"):
        history = model.fit(loader, progress=False)
    assert model.blocks[0].steps == steps_before + 1 and len(history) == 1
    no_bn = DecoupledModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4)), [3, 1],
                           method="greedy", num_classes=4, example_input=EXAMPLE)
    no_bn.fit([(x[:1], y[:1])], progress=False)  # nothing to skip without BatchNorm
    assert no_bn.blocks[0].steps == 1


def test_numpy_arrays_train_and_evaluate_like_tensors():
    x, y = next(iter(synthetic_loader(n=32, batch_size=32)))
    a, b = build(), build()
    a.fit([(x, y)], progress=False)
    b.fit([(x.numpy(), y.numpy())], progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a.predict(x), b.predict(x.numpy()))
    with pytest.raises(ConfigError, match="NumPy array of Python objects"):
        a.evaluate([(np.array([object()] * 4), y[:4])])


def test_one_module_in_two_models_warns():
    net = tiny_cnn()
    DecoupledModel(net, [3, 3, 2], num_classes=4, example_input=EXAMPLE)
    with pytest.warns(RuntimeWarning, match="already belong to another DecoupledModel"):
        DecoupledModel(net, [3, 3, 2], method="greedy", num_classes=4, example_input=EXAMPLE)


def test_fit_shows_one_line_per_epoch_unless_told_not_to(capsys):
    model = build()
    model.fit(synthetic_loader(), epochs=2, val_loader=synthetic_loader())
    err = capsys.readouterr().err
    assert "epoch 1/2  losses" in err and "epoch 2/2  losses" in err and "val 0." in err
    model.fit(synthetic_loader(), progress=False)
    assert capsys.readouterr().err == ""


def test_threads_surface_a_stage_error_while_the_data_loader_is_stuck():
    model = build()
    inner = model.blocks[1].objective

    def failing(f, y):
        raise KeyError("stage 1 broke")

    model.blocks[1].objective = CallableObjective(failing)
    release = threading.Event()

    def stuck():
        yield from list(synthetic_loader())[:2]
        release.wait(60)  # the user's loader hangs (a stuck file system, a dead worker)

    start = time.monotonic()
    with pytest.raises(StageError, match="stage 1 failed with KeyError"):
        model.fit(stuck(), executor=ThreadedExecutor(), progress=False)
    assert time.monotonic() - start < 10
    release.set()
    model.blocks[1].objective = inner


def test_save_blocks_takes_one_rank_as_an_int(tmp_path):
    model = build()
    save_blocks(model, tmp_path, 1)
    assert sorted(p.name for p in tmp_path.glob("block-*.pt")) == ["block-1.pt"]
    other = build()
    load_blocks(other, tmp_path, 1)
    assert all(torch.equal(a, b) for a, b in zip(model.blocks[1].state_dict().values(),
                                                 other.blocks[1].state_dict().values()))


def test_a_block_that_did_not_train_is_printed_as_absent_not_as_zero():
    from scpl.progress import epoch_line

    line = epoch_line(2, 8, [0.5, 0.25, None, None], None, 1.0, label="dascpl")
    assert line == "dascpl: epoch 2/8  losses 0.500 0.250 - -  1.0 s"  # no "val -" without a split
    assert "val 0.9000" in epoch_line(2, 8, [0.5], 0.9, 1.0)


def test_the_missing_data_message_names_where_data_is_looked_for(monkeypatch):
    from scpl.data.images import where_to_put

    monkeypatch.delenv("SCPL_DATA", raising=False)
    message = where_to_put("cifar10")
    assert message.startswith("~/.scpl/data/cifar10") and "once SCPL_DATA is set" in message
    monkeypatch.setenv("SCPL_DATA", "/data/sets")
    assert where_to_put("cifar10").startswith("$SCPL_DATA/cifar10 (SCPL_DATA=/data/sets)")
