"""torch.compile per block: one graph per block, agreement with eager training within float
tolerance, bounded recompilation on variable text lengths. Compiling takes seconds per graph on
a CPU, so these tests are few and small."""

import pytest
import torch

from cases import Embed, Head, Mixer, VariableLengthBatches
from conftest import synthetic_loader
from scpl import DecoupledModel, seed_everything
from scpl.block import compile_report

pytest.importorskip("torch._inductor")


def pair(build):
    return build(False), build(True)


def close(a, b, rtol):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.is_floating_point():
            torch.testing.assert_close(x, y, rtol=rtol, atol=rtol, msg=k)


def test_a_compiled_cnn_trains_like_eager_with_one_graph_per_block():
    from torch._dynamo.utils import counters

    def build(compile):
        seed_everything(0)
        # no bias before BatchNorm: its gradient is rounding noise that Adam amplifies
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 4))
        return DecoupledModel(net, [3, 5], method="scpl", num_classes=4,
                              example_input=torch.zeros(2, 1, 8, 8), compile=compile)

    eager, compiled = pair(build)
    counters.clear()
    loader = synthetic_loader(n=64, batch_size=16)
    losses = [m.fit(loader, epochs=2, progress=False)[-1]["losses"] for m in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    close(eager, compiled, rtol=1e-4)  # inductor's fused kernels round differently: not bitwise
    assert compile_report() == {"graphs": 2, "recompilations": 0}


def test_variable_text_lengths_recompile_a_bounded_number_of_times():
    from torch._dynamo.utils import counters

    def build(compile):
        seed_everything(0)
        return DecoupledModel([Embed(), Mixer(), Head()], method="scpl", num_classes=3,
                              example_input=torch.ones(2, 4, dtype=torch.long), compile=compile)

    eager, compiled = pair(build)
    counters.clear()
    batches = VariableLengthBatches(batches=8)  # sequence lengths 3, 4, 5, 6, 3, ...
    for m in (eager, compiled):
        m.fit(batches, epochs=1, progress=False)
    close(eager, compiled, rtol=1e-4)
    report = compile_report()
    assert report["recompilations"] <= 3  # once per block to a dynamic length, then no more
