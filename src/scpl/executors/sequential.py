"""The sequential engine: every block, in order, on every batch. The oracle for all executors."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

from torch import Tensor

from ..block import Block
from ..flow import Flow

StepCallback = Callable[[int, list[float]], None]


class SequentialExecutor:
    """Run ``Block.train_step`` for block 0..K-1 on each batch before taking the next batch."""

    name = "sequential"

    def train_epoch(
        self,
        blocks: Sequence[Block],
        batches: Iterable[tuple[Flow, Tensor]],
        on_step: Optional[StepCallback] = None,
    ) -> list[list[float]]:
        """Train on every batch; return the local losses, one list (per block) per step."""
        history = []
        for step, (inputs, labels) in enumerate(batches):
            flow, losses = inputs, []
            for block in blocks:
                flow, loss = block.train_step(flow, labels)
                losses.append(float(loss))
            history.append(losses)
            if on_step is not None:
                on_step(step, losses)
        return history
