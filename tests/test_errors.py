"""Bad configurations and inputs raise errors that name the cause."""

import math

import pytest
import torch
from torch import nn

from conftest import tiny_cnn
from scpl import BlockInputError, ConfigError, DecoupledModel, LabelError, NonFiniteLossError, seed_everything
from scpl.objectives import CallableObjective

EXAMPLE = torch.zeros(2, 1, 8, 8)


def build(**kw):
    seed_everything(0)
    args = dict(method="scpl", num_classes=4, example_input=EXAMPLE)
    args.update(kw)
    blocks = args.pop("blocks", [3, 3, 2])
    return DecoupledModel(tiny_cnn(), blocks, **args)


def test_block_counts_must_sum_to_layers():
    with pytest.raises(ConfigError, match=r"sum to 7 but the model has 8 layers"):
        build(blocks=[3, 3, 1])
    with pytest.raises(ConfigError, match="at least one layer"):
        build(blocks=[4, 4, 0])


def test_unknown_method_objective_projector():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        build(method="nope")
    with pytest.raises(ConfigError, match="unknown objective 'triplet'"):
        build(objective="triplet")
    with pytest.raises(ConfigError, match="unknown projector 'huge'"):
        build(projector="huge")
    with pytest.raises(ConfigError, match="2 entries for 2 blocks|3 entries for 2 blocks"):
        build(objective=["supcon", "supcon", "supcon"])


def test_last_block_must_output_logits():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.raises(ConfigError, match=r"class logits of shape \(batch, 4\), got \(2, 5\)"):
        DecoupledModel(net, [2, 2], num_classes=4, example_input=EXAMPLE)


def test_labels_outside_range():
    model = build()
    x = torch.randn(4, 1, 8, 8)
    with pytest.raises(LabelError, match=r"labels must lie in \[0, 4\), got values from 0 to 4"):
        model.fit([(x, torch.tensor([0, 1, 2, 4]))])
    with pytest.raises(LabelError, match="got values from -1"):
        model.fit([(x, torch.tensor([0, 1, 2, -1]))])
    with pytest.raises(LabelError, match="integer tensor"):
        model.fit([(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))])
    with pytest.raises(LabelError, match="in \\[0, 4\\)"):
        model.evaluate([(x, torch.tensor([0, 1, 2, 9]))])


def test_batch_shape_rejected_by_first_block():
    model = build()
    with pytest.raises(BlockInputError,
                       match=r"block 0 failed on its input of shape \(4, 3, 8, 8\).*first layer") as info:
        model.fit([(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_bad_example_input_is_reported():
    with pytest.raises(BlockInputError, match="block 0 failed on its input"):
        build(example_input=torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_with_block_and_step(bad):
    model = build(method="greedy")
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    model.fit([(x, y), (x, y)])
    before = {k: v.clone() for k, v in model.blocks[1].state_dict().items()}
    model.blocks[1].objective = CallableObjective(lambda f, y: f.sum() * bad)
    with pytest.raises(NonFiniteLossError, match=r"block 1 local loss is (nan|inf) at step 2") as info:
        model.fit([(x, y)])
    assert (info.value.block, info.value.step) == (1, 2)
    after = model.blocks[1].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before
               if "running" not in k and "num_batches" not in k)


def test_split_points_errors():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.c(self.b(h)) + h[:, :2]

    with pytest.raises(ConfigError, match="skip connection crosses a split point"):
        DecoupledModel(Skip(), ["b", "c"], num_classes=2, example_input=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="'nope' is not a submodule"):
        DecoupledModel(Skip(), ["nope"], num_classes=2, example_input=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="not an nn.Sequential"):
        DecoupledModel(Skip(), None, num_classes=2, example_input=torch.zeros(2, 4))


def test_meta_inputs_a_file_for_save_blocks_and_compile_without_a_compiler_are_named(tmp_path, monkeypatch):
    from scpl.checkpoint import save_blocks

    model = DecoupledModel(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), [1, 1], num_classes=2,
                           example_input=torch.zeros(2, 4))
    meta = torch.zeros(3, 4, device="meta")
    with pytest.raises(ConfigError, match="batch 0 is on the meta device: meta tensors have shapes but no"):
        model.fit([(meta, torch.zeros(3, dtype=torch.long, device="meta"))], progress=False)
    a_file = tmp_path / "blocks.pt"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="save_blocks writes one file per block into a folder, and .* is a"):
        save_blocks(model, a_file)
    from torch._inductor.cpp_builder import cpp_compiler_search

    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ or clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    cpp_compiler_search.cache_clear()  # torch remembers the compiler it found earlier in this process
    try:
        with pytest.raises(ConfigError, match="compile: torch.compile builds CPU kernels with a C\\+\\+ "
                                              "compiler and finds none"):
            model.blocks[0].compile()
    finally:
        cpp_compiler_search.cache_clear()
