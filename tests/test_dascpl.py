"""DASCPL: exits on detached features, blocks switched on and frozen by epoch, accuracy per exit."""

import pytest
import torch

from cases import CASES
from scpl import ConfigError
from scpl.executors import SequentialExecutor, ThreadedExecutor
from scpl.progressive import BlockSchedule


def snapshot(model):
    return [{k: v.clone() for k, v in b.state_dict().items()} for b in model.blocks]


def changed(before, after):
    return [any(not torch.equal(before[k][n], after[k][n]) for n in before[k]) for k in range(len(before))]


def test_progressive_activation_runs_exactly_the_scheduled_blocks():
    model, loader, _, _ = CASES["cnn"]()
    schedule = BlockSchedule(activate=[0, 1, 2])
    seen = []
    for epoch in range(3):
        before = snapshot(model)
        model.fit(loader, epochs=1, block_schedule=schedule, start_epoch=epoch)
        seen.append(changed(before, snapshot(model)))
    assert seen == [[True, False, False], [True, True, False], [True, True, True]]


def test_reverse_variant_freezes_blocks():
    model, loader, _, _ = CASES["cnn"]()
    schedule = BlockSchedule(freeze=[1, 2, None])
    seen = []
    for epoch in range(3):
        before = snapshot(model)
        hist = model.fit(loader, epochs=1, block_schedule=schedule, start_epoch=epoch)
        seen.append(changed(before, snapshot(model)))
    assert seen == [[True, True, True], [False, True, True], [False, False, True]]  # BN statistics frozen too
    assert hist[-1]["losses"][:2] == [None, None]  # frozen blocks did not train: no loss


def test_scheduled_training_is_the_same_under_threads():
    runs = []
    for executor in (SequentialExecutor(2), ThreadedExecutor(2)):
        model, loader, _, _ = CASES["cnn"]()
        model.fit(loader, epochs=3, block_schedule=BlockSchedule(activate=[0, 1, 1], freeze=[2, None, None]),
                  executor=executor)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_schedule_is_validated():
    model, loader, _, _ = CASES["cnn"]()
    with pytest.raises(ConfigError, match="start at 0 and never decrease"):
        model.fit(loader, block_schedule=BlockSchedule(activate=[0, 2, 1]))
    with pytest.raises(ConfigError, match="2 entries for 3 blocks"):
        model.fit(loader, block_schedule=BlockSchedule(freeze=[1, 2]))


def test_accuracy_at_every_exit():
    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=15)
    accs = model.evaluate_exits(loader)
    assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
    assert accs[-1] == model.evaluate(loader)["accuracy"]
    # the exit classifiers learn something beyond chance (0.25) on this easy data
    assert max(accs[:2]) > 0.4
