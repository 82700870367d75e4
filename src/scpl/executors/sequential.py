"""The sequential engine: every block, in order, on every batch. The oracle for all executors."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

from torch import Tensor

from ..block import Block
from ..flow import Flow, micro_batches

StepCallback = Callable[[int, list[float]], None]


class StepLosses:
    """Averages each step's micro-batch losses per block and calls ``on_step`` when a step is done.

    Every executor reports through it, so all report the same numbers in the same order.
    """

    def __init__(self, num_blocks: int, micro_batches: int, on_step: Optional[StepCallback] = None):
        self.k, self.m, self.on_step = num_blocks, micro_batches, on_step
        self.history: list[list[float]] = []
        self._partial = [0.0] * num_blocks

    def add(self, step: int, micro: int, losses: Sequence[float]) -> None:
        for i, loss in enumerate(losses):
            self._partial[i] += loss / self.m
        if micro == self.m - 1:
            self.history.append(self._partial)
            self._partial = [0.0] * self.k
            if self.on_step is not None:
                self.on_step(step, self.history[-1])


class SequentialExecutor:
    """Run ``Block.train_step`` for block 0..K-1 on each (micro-)batch before taking the next.

    Args:
        micro_batches: cut each batch into this many pieces; every block accumulates their
            gradients and steps once per batch. Reported losses are means over the pieces.
    """

    name = "sequential"

    def __init__(self, micro_batches: int = 1):
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.micro_batches = micro_batches

    def train_epoch(
        self,
        blocks: Sequence[Block],
        batches: Iterable[tuple[Flow, Tensor]],
        on_step: Optional[StepCallback] = None,
    ) -> list[list[float]]:
        """Train on every batch; return the local losses, one list (per block) per step."""
        m = self.micro_batches
        record = StepLosses(len(blocks), m, on_step)
        for step, (inputs, labels) in enumerate(batches):
            for j, (flow, piece_labels) in enumerate(micro_batches(inputs, labels, m)):
                losses = []
                for block in blocks:
                    flow, loss = block.train_step(flow, piece_labels, j, m)
                    losses.append(loss)
                record.add(step, j, losses)
        return record.history
