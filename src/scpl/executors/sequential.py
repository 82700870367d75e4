"""The sequential engine: every block, in order, on every batch. The oracle for all executors."""

from __future__ import annotations

from typing import Optional, Sequence

from ..block import Block
from .base import FlowBatches, InProcessInference, StepCallback, StepLosses, check_sizes, pieces


class SequentialExecutor(InProcessInference):
    """Run ``Block.train_step`` for block 0..K-1 on each (micro-)batch before taking the next.

    Args:
        micro_batches: cut each batch into this many pieces; every block accumulates their
            gradients and steps once per batch. Reported losses are means over the pieces.
    """

    name = "sequential"

    def __init__(self, micro_batches: int = 1):
        check_sizes(micro_batches)
        self.micro_batches = micro_batches

    def train_epoch(self, blocks: Sequence[Block], batches: FlowBatches,
                    on_step: Optional[StepCallback] = None) -> list[list[float]]:
        """Train on every batch; return the local losses, one list (per block) per step."""
        m = self.micro_batches
        record = StepLosses(len(blocks), m, on_step)
        for step, micro, flow, labels in pieces(batches, m):
            losses = []
            for block in blocks:
                flow, loss = block.train_step(flow, labels, micro, m)
                losses.append(loss)
            record.add(step, micro, losses)
        return record.history
