"""Per-block checkpoints: atomic files, restore, and the merged state_dict."""

import os

import pytest
import torch

from scpl import ConfigError
from scpl.checkpoint import atomic_save, load_blocks, merge_blocks, save_blocks

from cases import CASES


def test_save_load_blocks_continue_identically(tmp_path):
    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=1)
    save_blocks(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block-0.pt", "block-1.pt", "block-2.pt"]
    resumed, _, _, _ = CASES["cnn"]()
    load_blocks(resumed, tmp_path)
    model.fit(loader, epochs=1)
    resumed.fit(loader, epochs=1)
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [b.steps for b in resumed.blocks] == [b.steps for b in model.blocks]


def test_merge_blocks_gives_the_model_state_dict(tmp_path):
    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=1)
    for k in range(3):  # as three ranks would, one block each
        save_blocks(model, tmp_path, [k])
    merged = merge_blocks(tmp_path, 3)
    assert merged.keys() == model.state_dict().keys()
    fresh, _, _, _ = CASES["cnn"]()
    fresh.load_state_dict(merged)
    x, _ = next(iter(loader))
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))
    os.remove(tmp_path / "block-1.pt")
    with pytest.raises(ConfigError, match="block-1.pt is missing"):
        merge_blocks(tmp_path, 3)


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"v": Unpicklable()}, path)
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
