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


@pytest.mark.slow
def test_every_one_of_many_blocks_with_exits_trains_compiled_and_agrees_with_eager():
    """Each block compiles a function of its own: when blocks shared one, torch's budget of 8
    cache entries per function ran out at the ninth block, and the blocks after it trained
    eagerly. Ten blocks with exit classifiers: ten graphs, and the parameters of eager training
    to float rounding. SGD, because Adam magnifies rounding where a gradient is near zero: with
    Adam the same two runs end up to 5e-3 apart, with exits or without (1e-2), with SGD 3e-8."""
    from torch._dynamo.utils import counters

    def build(compile):
        seed_everything(0)
        layers = [m for _ in range(10) for m in (torch.nn.Linear(16, 16), torch.nn.ReLU())]
        net = torch.nn.Sequential(torch.nn.Flatten(), *layers, torch.nn.Linear(16, 4))
        return DecoupledModel(net, [3] + [2] * 8 + [3], method="scpl", exits=True, num_classes=4,
                              example_input=torch.zeros(2, 16), compile=compile,
                              optimizer=lambda params: torch.optim.SGD(params, lr=0.05))

    eager, compiled = pair(build)
    counters.clear()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 16, generator=g), torch.arange(16) % 4) for _ in range(4)]
    for m in (eager, compiled):
        m.fit(batches, epochs=2, progress=False)
    assert compile_report()["graphs"] == 10
    close(eager, compiled, rtol=1e-6)
