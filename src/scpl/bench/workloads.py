"""The benchmark workloads: models as flat ``nn.Sequential`` (so balancing may cut between any
layers), their seeded synthetic batches, and the models and batches of a benchmark's settings.

* ``cnn``: four 3x3 convolutions (64-64-128-128 channels) with BatchNorm on 28x28x1 inputs: compute
  heavy, few parameters (0.2M), the workload where data parallelism pays little for all-reduce.
* ``cnn_fc``: two convolutions and a 3136-2048-2048 fully connected head (10.6M parameters):
  BP with DistributedDataParallel all-reduces 42 MB of gradients every step.
* ``embed``: a 100,000 x 128 embedding table (12.8M parameters) averaged over 32 tokens, then a
  small MLP: almost no compute but 51 MB of dense embedding gradients per all-reduce, as in the
  text models of the papers (large vocabularies).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..model import DecoupledModel
from ..seed import seed_everything
from .settings import Settings

VOCAB, TOKENS = 100_000, 32


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def cnn(num_classes: int = 10) -> nn.Sequential:
    """The compute-heavy CNN of ``scpl bench pipeline``."""
    return nn.Sequential(
        *_conv(1, 64), *_conv(64, 64), nn.MaxPool2d(2),
        *_conv(64, 128), *_conv(128, 128), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


def cnn_fc(num_classes: int = 10) -> nn.Sequential:
    """A CNN whose parameters sit in a large fully connected head."""
    return nn.Sequential(
        *_conv(1, 32), nn.MaxPool2d(2), *_conv(32, 64), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
        nn.Linear(2048, num_classes),
    )


class MeanEmbedding(nn.Module):
    """Token ids (B, T) -> the mean of their embeddings (B, D)."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """The mean embedding (B, D) of the token ids ``tokens`` (B, T)."""
        return self.embed(tokens).mean(dim=1)


def embed(num_classes: int = 10) -> nn.Sequential:
    """A large embedding table and a small MLP."""
    return nn.Sequential(MeanEmbedding(VOCAB, 128), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, num_classes))


WORKLOADS: dict[str, Callable[[], nn.Sequential]] = {"cnn": cnn, "cnn_fc": cnn_fc, "embed": embed}
"""The workloads of :data:`scpl.bench.settings.WORKLOADS`, built."""


def example(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` inputs of workload ``name`` (random images or token ids)."""
    if name == "embed":
        return torch.randint(0, VOCAB, (n, TOKENS), generator=generator)
    return torch.randn(n, 1, 28, 28, generator=generator)


def make_batches(s: Settings) -> list[tuple[Tensor, Tensor]]:
    """The ``warmup + steps`` seeded synthetic (inputs, labels) batches every configuration trains on."""
    return batches(s.model, s.batch_size, s.warmup + s.steps, s.seed)


def build(s: Settings, method: str, counts: Optional[list[int]], compile: bool = False) -> DecoupledModel:
    """The workload, seeded, as a DecoupledModel cut by ``counts`` and trained by ``method``."""
    seed_everything(s.seed)
    return DecoupledModel(WORKLOADS[s.model](), counts, method=method, num_classes=10,
                          example_input=example(s.model, 2), compile=compile)


def sps(times: list[float], s: Settings) -> float:
    """Samples per second over the steps after the warm-up, from each step's end time."""
    return s.steps * s.batch_size / (times[-1] - times[s.warmup - 1])


def batches(name: str, batch_size: int, count: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` seeded (inputs, labels) batches: every configuration trains on the same ones."""
    g = torch.Generator().manual_seed(seed)
    return [(example(name, batch_size, g), torch.randint(0, 10, (batch_size,), generator=g))
            for _ in range(count)]
