"""The sequential engine: every block, in order, on every batch. The oracle for all executors."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

from torch import Tensor

from ..block import Block
from ..flow import Flow, micro_batches

StepCallback = Callable[[int, list[float]], None]


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
        history = []
        for step, (inputs, labels) in enumerate(batches):
            losses = [0.0] * len(blocks)
            for j, (flow, piece_labels) in enumerate(micro_batches(inputs, labels, m)):
                for k, block in enumerate(blocks):
                    flow, loss = block.train_step(flow, piece_labels, j, m)
                    losses[k] += loss / m
            history.append(losses)
            if on_step is not None:
                on_step(step, losses)
        return history
