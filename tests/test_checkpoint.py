"""Per-block checkpoints: atomic files, restore, and the merged state_dict."""

import os

import pytest
import torch

from cases import CASES
from scpl import ConfigError
from scpl.checkpoint import atomic_save, load_blocks, merge_blocks, save_blocks


def test_save_load_blocks_continue_identically(tmp_path):
    model, loader, _, _ = CASES["cnn"]()
    model.fit(loader, epochs=1)
    save_blocks(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"block-{k}.pt{end}" for k in range(3) for end in ("", ".sha256")]
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "ckpt.pt.sha256"]


def test_a_damaged_checkpoint_is_named_not_loaded(tmp_path):
    model, loader, _, _ = CASES["cnn"]()
    save_blocks(model, tmp_path)
    path = tmp_path / "block-1.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch might still load it, silently wrong
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"block-1.pt is corrupted: its SHA-256 differs"):
        load_blocks(CASES["cnn"]()[0], tmp_path)
    path.write_bytes(bytes(data[:100]))  # truncated, and no checksum to compare with
    os.remove(tmp_path / "block-1.pt.sha256")
    with pytest.raises(ConfigError, match=r"block-1.pt cannot be read .* damaged or not a checkpoint"):
        load_blocks(CASES["cnn"]()[0], tmp_path)


def test_loading_blocks_of_another_model_is_refused_with_the_file_named(tmp_path):
    from conftest import tiny_cnn
    from scpl import DecoupledModel, seed_everything

    model, _, _, _ = CASES["cnn"]()  # scpl with exit classifiers
    save_blocks(model, tmp_path, 0)
    seed_everything(0)
    greedy = DecoupledModel(tiny_cnn(), [3, 3, 2], method="greedy", num_classes=4,
                            example_input=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError,
                       match=r"block-0.pt holds a block of a 'scpl' model; this model's method is 'greedy'"):
        load_blocks(greedy, tmp_path, 0)
    seed_everything(0)
    no_exits = DecoupledModel(tiny_cnn(), [3, 3, 2], method="scpl", num_classes=4,
                              example_input=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"block-0.pt does not fit block 0 of this model"):
        load_blocks(no_exits, tmp_path, 0)
