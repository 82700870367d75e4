"""Automatic balancing: cut a sequence of layers into K contiguous blocks of equal cost.

Each layer's forward+backward time and saved activation bytes are measured on a sample batch,
and so is the cost of a local head placed after each layer (a block ending there pays for its
head). A dynamic programme then picks the cut minimising the slowest block's predicted time,
which bounds a pipeline's throughput.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .flow import Flow, call_with_flow, detach_flow, map_flow
from .memory import count_saved_bytes, parameters_of

if TYPE_CHECKING:
    from .block import Block

HeadLossFactory = Callable[[Flow], nn.Module]
"""Given a layer's output, a module ``(output, labels) -> loss`` like a block's local head."""


@dataclass
class BalancedCut:
    """A chosen cut and its predicted per-block costs: ``counts`` of layers (the units of a
    traced model) per block, and for a traced model the ``points`` where blocks begin."""

    counts: list[int]
    block_seconds: list[float]
    block_saved_bytes: list[int]
    layer_seconds: list[float]
    head_seconds: list[float]
    layer_saved_bytes: list[int]
    measured: bool = False  # block_seconds measured on real block steps (True) or predicted
    points: Optional[list[str]] = None

    @property
    def cut(self) -> Union[list[int], list[str]]:
        """The cut as ``DecoupledModel`` takes it: split points, or layer counts."""
        return self.points if self.points is not None else self.counts

    def __str__(self) -> str:
        rows = [f"block {i}: {c:3d} layers  {s * 1e3:8.2f} ms  {b / 2**20:8.2f} MiB saved"
                for i, (c, s, b) in enumerate(zip(self.counts, self.block_seconds, self.block_saved_bytes))]
        slowest = max(self.block_seconds)
        kind = "measured" if self.measured else "predicted"
        rows.append(f"{kind} pipeline efficiency "
                    f"{sum(self.block_seconds) / (len(self.counts) * slowest):.3f} "
                    f"(block times {kind} per step on the sample batch)")
        return "\n".join(rows)


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _float_tensors(flow: Flow) -> list[Tensor]:
    items = [flow] if isinstance(flow, Tensor) else list(flow)
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def profile(layers: Sequence[nn.Module], sample: Flow, labels: Tensor, head: Optional[HeadLossFactory] = None,
            repeats: int = 3) -> tuple[list[float], list[float], list[int]]:
    """(layer seconds, head seconds after each layer, layer saved bytes), measured on copies."""
    layers = [copy.deepcopy(layer).train() for layer in layers]  # BatchNorm statistics stay untouched
    layer_s, head_s, saved = [], [], []
    flow = detach_flow(sample)
    for i, layer in enumerate(layers):
        def step(layer=layer, flow=flow, first=(i == 0)) -> Flow:
            inputs = flow if first else _requires_grad(flow)
            out = call_with_flow(layer, inputs)
            outs = [t for t in _float_tensors(out) if t.requires_grad]
            if outs:
                torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
            return out

        layer_s.append(_timed(step, repeats))
        with count_saved_bytes(parameters_of(layer)) as counter:
            out = step()
        saved.append(counter.total)
        flow = detach_flow(out)
        if head is not None and i < len(layers) - 1:
            module = head(flow)

            def head_step(module=module, flow=flow) -> None:
                module(flow, labels).backward()

            head_s.append(_timed(head_step, repeats))
        else:
            head_s.append(0.0)
    return layer_s, head_s, saved


def best_cut(layer_cost: Sequence[float], k: int, head_cost: Optional[Sequence[float]] = None) -> list[int]:
    """Layer counts of the K contiguous blocks minimising the largest block cost.

    A block covering layers a..b-1 costs ``sum(layer_cost[a:b]) + head_cost[b-1]`` (no head
    for the last block).
    """
    n = len(layer_cost)
    if not 1 <= k <= n:
        raise ConfigError(f"cannot cut {n} layers into {k} non-empty blocks")
    head_cost = list(head_cost) if head_cost is not None else [0.0] * n
    prefix = [0.0]
    for c in layer_cost:
        prefix.append(prefix[-1] + c)

    def cost(a: int, b: int) -> float:
        return prefix[b] - prefix[a] + (head_cost[b - 1] if b < n else 0.0)

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    choice = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for b in range(j, n - (k - j) + 1):
            for a in range(j - 1, b):
                value = max(best[j - 1][a], cost(a, b))
                if value < best[j][b]:
                    best[j][b], choice[j][b] = value, a
    counts, b = [], n
    for j in range(k, 0, -1):
        a = choice[j][b]
        counts.append(b - a)
        b = a
    return counts[::-1]


def profile_cut(layers: Sequence[nn.Module], k: int, sample: Flow, labels: Tensor,
            head: Optional[HeadLossFactory] = None, repeats: int = 3) -> BalancedCut:
    """Profile ``layers`` on ``sample`` and return the cut into ``k`` blocks with its predicted costs."""
    with torch.random.fork_rng(devices=[]):
        layer_s, head_s, saved = profile(layers, sample, labels, head, repeats)
    counts = best_cut(layer_s, k, head_s)
    block_s, start = [], 0
    for i, c in enumerate(counts):
        end = start + c
        block_s.append(sum(layer_s[start:end]) + (head_s[end - 1] if i < k - 1 else 0.0))
        start = end
    return BalancedCut(counts, block_s, _sum_by_block(saved, counts), layer_s, head_s, saved)


def time_blocks(blocks: Iterable[Block], sample: Flow, labels: Tensor, repeats: int = 3) -> list[float]:
    """Median seconds of one real ``train_step`` of each block (fed the previous block's output)."""
    seconds, flow = [], sample
    for block in blocks:
        out: list = []

        def step(block: Block = block, flow: Flow = flow) -> None:
            out.append(block.train_step(flow, labels)[0])

        seconds.append(_timed(step, repeats))
        flow = out[-1]
    return seconds


def sample_labels(sample: Flow, num_classes: int) -> Tensor:
    """Labels for profiling a batch: every class in turn, so contrastive losses find positives."""
    first = sample if isinstance(sample, Tensor) else sample[0]
    return torch.arange(first.shape[0]) % num_classes


BlockTimer = Callable[[list[int]], list[float]]
"""Given layer counts, the measured seconds of one real training step of each block."""


def refine(initial: BalancedCut, measure: BlockTimer, rounds: int = 3) -> BalancedCut:
    """Correct the per-layer profile with measured whole-block steps and re-cut.

    Per-layer timings miss what a real block step costs (its optimizer step, allocation,
    fusion across layers), by several percent. Each round measures the blocks of the current
    cut, scales the layer and head costs inside each block by measured/predicted and re-runs
    the cut; the cut with the smallest measured slowest block is kept.
    """
    layer_s, head_s = list(initial.layer_seconds), list(initial.head_seconds)
    counts, tried = initial.counts, set()
    best: Optional[tuple[list[int], list[float]]] = None
    k = len(counts)
    for _ in range(rounds):
        if tuple(counts) in tried:
            break
        tried.add(tuple(counts))
        measured = measure(counts)
        if best is None or max(measured) < max(best[1]):
            best = (counts, measured)
        start = 0
        for i, c in enumerate(counts):
            end = start + c
            predicted = sum(layer_s[start:end]) + (head_s[end - 1] if i < k - 1 else 0.0)
            factor = measured[i] / predicted if predicted > 0 else 1.0
            layer_s[start:end] = [v * factor for v in layer_s[start:end]]
            if i < k - 1:
                head_s[end - 1] *= factor
            start = end
        counts = best_cut(layer_s, k, head_s)
    if best is None:
        raise ConfigError(f"refine needs rounds >= 1, got {rounds}")
    counts, measured = best
    return BalancedCut(counts, measured, _sum_by_block(initial.layer_saved_bytes, counts), layer_s, head_s,
                   initial.layer_saved_bytes, measured=True)


def _sum_by_block(values: Sequence, counts: Sequence[int]) -> list:
    out, start = [], 0
    for c in counts:
        out.append(sum(values[start : start + c]))
        start += c
    return out


def _requires_grad(flow: Flow) -> Flow:
    return map_flow(lambda t: t.detach().requires_grad_(t.is_floating_point()), flow)


class HeadLoss(nn.Module):
    """A block's local head as ``(output, labels) -> loss``, for profiling."""

    def __init__(self, feat: nn.Module, proj: nn.Module, obj: nn.Module):
        super().__init__()
        self.feat, self.proj, self.obj = feat, proj, obj

    def forward(self, output: Flow, labels: Tensor) -> Tensor:
        """The head's loss on the block output ``output``."""
        return self.obj(self.proj(self.feat(output)), labels)


def choose_cut(layers: Sequence[nn.Module], k: int, sample: Flow, labels: Tensor,
               head: Optional[HeadLossFactory], measure: Optional[BlockTimer],
               rounds: int = 3) -> BalancedCut:
    """The cut of ``layers`` into ``k`` blocks minimising the slowest block's time: every layer
    and the local head after it are profiled on ``sample``, a min-max dynamic programme cuts, then
    ``rounds`` of real block steps (``measure``, if given) correct the profile (:func:`refine`).
    Under torch.distributed, rank 0 chooses and broadcasts, so every rank gets the same cut. The
    global RNG is left as it was."""
    def choose() -> BalancedCut:
        found = profile_cut(layers, k, sample, labels, head)
        if measure is None or k == 1:
            return found
        with torch.random.fork_rng(devices=[]):
            return refine(found, measure, rounds)

    return _agreed(choose)


def _agreed(choose: Callable[[], BalancedCut]) -> BalancedCut:
    """Under torch.distributed, rank 0 chooses and every rank receives its choice (timings
    differ between processes, so independent choices could disagree); else choose here."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return choose()
    box = [choose() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    chosen = box[0]
    assert chosen is not None  # rank 0's choice, received
    return chosen
